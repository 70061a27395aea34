"""Benchmark one product straight from a dataset folder (no database): a thin CLI over the engine.

    python manage.py benchmark --data-root ../shared/data/mvtec_ad --product bottle --model padim \
        --labels ../shared/data/labels/mvtec_bottle_reference.csv --output report.json

The folder is read with ``annotator.layouts.scan_dataset``. The optional label CSV (the format of
``annotator.label_format``: ``image_path,background,defect_category``, paths such as
``bottle/test/broken_large/000.png``) is matched to the images by path suffix, so the per-category
and per-background breakdowns get filled; a CSV with any bad row is refused, with its errors.
``--labels`` given several times reads one CSV per annotator: an image counts with the label its
annotators agree on (as on the site, none while they disagree), and where they disagree the
breakdowns also come weighted by their votes (``label_uncertainty``).
A progress bar goes to stderr; Ctrl-C cancels cleanly (the engine stops at its next batch and
nothing is written); a second Ctrl-C aborts at once.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotator.label_format import SuffixIndex, match_rows, parse_label_csv
from annotator.layouts import LAYOUTS
from inference.engine import registry
from inference.engine.regions import MIN_OVERLAP
from inference.engine.report import estimate_text, mask_coverage, pixel_estimate_text
from inference.engine.split import split_problems
from inference.engine.types import BenchmarkConfig

# Every technique the engine ships (its default); no torch import at start-up.
TECHNIQUES = BenchmarkConfig().techniques

MAX_LISTED_ERRORS = 20


def read_scan_labels(path: Path, scan, product: str) -> dict[Path, tuple[bool, str]]:
    """``{image_path: (background, category)}`` for ``product``'s images from a label CSV.

    The CSV may cover other products of the scanned folder (their rows are checked, then
    skipped). Like ``import_labels``, any row error, unknown or ambiguous path, label on an image
    that is not an anomalous test image, or second row for one image refuses the whole file.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CommandError(f"--labels {path}: {error.strerror or error}.")
    rows, errors = parse_label_csv(data)
    images = {image.image_path: image for image in scan.images}
    index = SuffixIndex({
        image_path: [image_path.relative_to(base).as_posix() for base in (scan.root.parent, scan.root)]
        for image_path in images
    })
    matches, match_errors = match_rows(
        rows, index.find, lambda image_path: images[image_path].split == "test" and images[image_path].is_anomalous,
    )
    errors += match_errors
    if errors:
        errors.sort(key=lambda error: error.line)
        listed = [f"  {error}" for error in errors[:MAX_LISTED_ERRORS]]
        if len(errors) > MAX_LISTED_ERRORS:
            listed.append(f"  ... and {len(errors) - MAX_LISTED_ERRORS} more")
        if match_errors and len(scan.products) == 1:
            listed.append(f"(image paths are matched by suffix against the images under {scan.root} only; "
                          "for a CSV that covers other products, give --data-root the folder that holds them all)")
        raise CommandError(f"--labels {path}: {len(errors)} error(s), nothing benchmarked:\n" + "\n".join(listed))
    return {
        image_path: (row.background, row.category)
        for row, image_path in matches if images[image_path].product == product
    }


def annotators_labels(per_annotator: list[dict[Path, tuple[bool, str]]]):
    """The final labels and, where annotators disagree, their vote shares, from one
    ``read_scan_labels`` mapping per annotator: ``({path: (background, category)},
    {path: (category_shares, background_shares)})``. The site's rule decides the final label
    (``resolve_label``: the label they all agree on, none while they disagree)."""
    from annotator.services.labels import resolve_label, vote_shares

    votes: dict[Path, list[tuple[bool, str]]] = {}
    for labels in per_annotator:
        for image_path, value in labels.items():
            votes.setdefault(image_path, []).append(value)
    final, shares = {}, {}
    for image_path, values in votes.items():
        label = resolve_label(values)
        if label is not None:
            final[image_path] = (label.background, label.category)
        image_shares = vote_shares(values)
        if image_shares is not None:
            shares[image_path] = (image_shares.category, image_shares.background)
    return final, shares


class _Cancel:
    """First Ctrl-C asks the engine to stop at its next batch; the second one aborts."""

    def __init__(self, stderr):
        self.requested = False
        self.stderr = stderr

    def __call__(self) -> bool:
        return self.requested

    def on_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.stderr.write("\nCancelling after the current batch (Ctrl-C again to abort at once)...\n")


def progress_bar():
    from inference.engine.cli_progress import TextProgressBar

    return TextProgressBar(stream=sys.stderr)


class Command(BaseCommand):
    help = ("Benchmark a model (" + ", ".join(m.label for m in registry.MODELS.values())
            + ") on one product of a dataset folder and write a JSON report.")
    # No database, no URLs: Django's system checks (they import every view and URL module) cost
    # 3.6 s of CPU before the first image was read. `manage.py check` still runs them.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--data-root", required=True, help="dataset folder (or one product folder)")
        parser.add_argument("--product", required=True, help="product folder name, e.g. bottle")
        parser.add_argument("--model", required=True, choices=list(registry.MODELS),
                            help="; ".join(f"{m.name}: {m.label}, {m.summary}" for m in registry.MODELS.values()))
        parser.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS])
        parser.add_argument("--seed", type=int, default=BenchmarkConfig().seed)
        # One option per registry setting (--image-size, --n-features, --coreset-ratio, ...); left out,
        # the engine's default applies.
        for setting in registry.SETTINGS.values():
            models = [m.label for m in registry.MODELS.values() if setting.name in m.settings]
            bounds = (f"; {setting.low:g}..{setting.high:g}" if setting.low is not None else "")
            parser.add_argument(f"--{setting.name.replace('_', '-')}", dest=f"setting_{setting.name}",
                                type=_argument_type(setting), default=None,
                                choices=list(setting.choices) if setting.choices else None,
                                help=f"{setting.help} (default {setting.default}{bounds})"
                                     + (f"; {', '.join(models)} only" if models else ""))
        parser.add_argument("--threads", type=int, default=None,
                            help="torch threads (default: the cores this process may use, as a worker with "
                                 "concurrency 1 takes; idle threads wait passively, OMP_WAIT_POLICY=PASSIVE, "
                                 "so a busy CPU slows the run instead of stalling it)")
        parser.add_argument("--techniques", default=",".join(TECHNIQUES),
                            help="comma-separated threshold techniques")
        parser.add_argument("--labels", type=Path, action="append", default=None,
                            help="label CSV (image_path,background,defect_category); repeat it for one CSV per "
                                 "annotator (disagreements are weighted by their votes in the breakdowns)")
        parser.add_argument("--output", required=True, type=Path, help="where to write the JSON report")
        parser.add_argument("--artifacts", type=Path, default=None, help="folder for heat maps and curves")
        parser.add_argument("--save-model", type=Path, default=None, metavar="DIR",
                            help="keep the fitted model as a package folder (manage.py inspect / export_model read it)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args, **options):
        from annotator.layouts import UnknownLayoutError, scan_dataset
        from django.conf import settings as django_settings

        from annotator.polygon_masks import masks_dir
        from inference.engine import BenchmarkCancelled, BenchmarkConfig, run_benchmark, samples_from_scan

        own = {s.name for s in registry.settings_of(options["model"])}
        settings = {}
        for setting in registry.SETTINGS.values():
            value = options[f"setting_{setting.name}"]
            if value is None:
                continue
            option = f"--{setting.name.replace('_', '-')}"
            if setting.name not in own:
                raise CommandError(f"{option} does not apply to {registry.label(options['model'])}.")
            try:
                settings[setting.name] = setting.clean(value)
            except ValueError as error:
                raise CommandError(str(error).replace(f"Setting {setting.name}", option))
        root = Path(options["data_root"]).expanduser().resolve()
        if not root.is_dir() and not (root.is_file() and options["layout"] in ("auto", "manifest")):
            raise CommandError(f"--data-root {root} is not a folder.")
        try:
            # Masks drawn from annotation files (polygons layout) go under the media root, as on import.
            scan = scan_dataset(root, layout=options["layout"], mask_dir=masks_dir(django_settings.MEDIA_ROOT, root))
        except UnknownLayoutError as error:
            raise CommandError(str(error))
        root = scan.root
        scan = _resolved(scan, self.stderr)
        for problem in scan.errors[:20]:
            self.stderr.write(f"warning: {problem}")
        images = [i for i in scan.images if i.product == options["product"]]
        if not images:
            products = sorted({i.product for i in scan.images})
            raise CommandError(
                f"No images of product {options['product']!r} under {root} (products found: {', '.join(products) or 'none'})."
            )
        label_files = options["labels"] or []
        labels, shares = annotators_labels([read_scan_labels(path, scan, options["product"]) for path in label_files])
        train, test = samples_from_scan(images, key=scan.relative, labels=labels, shares=shares)
        n_anomalous = sum(s.is_anomalous for s in test)
        n_unmasked = sum(s.is_anomalous and s.mask_path is None for s in test)
        self.stderr.write(
            f"{options['product']}: {len(train)} train, {len(test) - n_anomalous} good test, {n_anomalous} anomalous test"
            + (f" ({n_unmasked} without mask: image-level evidence only)" if n_unmasked else "")
            + (f" ({len(labels)} labelled from {', '.join(path.name for path in label_files)}"
               + (f"; the annotators disagree on {len(shares)}" if len(label_files) > 1 else "") + ")"
               if label_files else "")
        )
        if not train:
            raise CommandError("No defect-free training images: the model learns normality from them.")
        problems = split_problems(test)
        if problems:
            raise CommandError("Cannot benchmark: " + " ".join(problems))
        if options["threads"] is None:
            from django.conf import settings as django_settings

            options["threads"] = django_settings.BENCHMARK_THREADS
        if options["threads"] < 1:
            raise CommandError("--threads must be at least 1.")
        techniques = tuple(t for t in options["techniques"].split(",") if t)
        unknown = [t for t in techniques if t not in TECHNIQUES]
        if unknown:
            raise CommandError(f"Unknown technique(s) {', '.join(unknown)}; expected {', '.join(TECHNIQUES)}.")
        config = BenchmarkConfig(model=options["model"], seed=options["seed"], techniques=techniques,
                                 num_threads=options["threads"], **settings)

        save_model = None
        if options["save_model"] is not None:
            from inference.engine.package import save_package

            def save_model(model, report):
                save_package(model, report, options["save_model"],
                             source={"data_root": str(root), "product": options["product"]})

        cancel = _Cancel(self.stderr)
        previous = signal.signal(signal.SIGINT, cancel.on_sigint) if _main_thread() else None
        try:
            report = run_benchmark(
                train, test, config,
                progress=None if options["no_progress"] else progress_bar(),
                should_cancel=cancel, artifacts_dir=options["artifacts"], save_model=save_model,
            )
        except BenchmarkCancelled:
            raise CommandError("Cancelled: no report written.", returncode=130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        report["source"] = {"data_root": str(root), "product": options["product"]}
        output = Path(options["output"])
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))  # the engine's report is plain JSON data
        self.stdout.write(f"Wrote {output}")
        if options["save_model"] is not None:
            self.stdout.write(f"Saved the fitted model to {options['save_model']}")
        self.stdout.write(summary_text(report))


def _argument_type(setting):
    if setting.kind is bool:
        return setting.clean
    return setting.kind


def _resolved(scan, stderr):
    """``scan`` with duplicates left out and, where the folder leaves them open (beside,
    manifest), anomaly decided by the masks and the split made, as an import does."""
    from django.conf import settings

    from annotator.layouts import ScanResult, resolve_images
    from annotator.services.image_checks import check_many

    results = check_many([(i.image_path, i.mask_path, scan.relative(i.image_path),
                           scan.relative(i.mask_path) if i.mask_path else None) for i in scan.images],
                         max_pixels=settings.DEFECTBENCH_MAX_IMAGE_PIXELS,
                         # The engine decodes every image right after (a damaged one fails the run
                         # naming its file): decoding each twice cost a bottle run 8 of its 68 s.
                         decode_images=False)
    errors = list(scan.errors)
    valid = []
    for image, result in zip(scan.images, results):
        errors.extend(result.errors)
        if not result.errors:
            valid.append((image, result))
    resolution = resolve_images(
        ScanResult(scan.layout, scan.root, [image for image, _ in valid]),
        checksums={image.image_path: result.image.checksum for image, result in valid},
        defect_pixels={image.mask_path: result.mask.defect_pixels for image, result in valid if result.mask},
    )
    errors += [f"{scan.relative(path)}: {problem}" for path, problem in resolution.problems]
    for copy, kept in resolution.duplicates:
        stderr.write(f"duplicate left out: {scan.relative(copy)} (same content as {scan.relative(kept)})")
    if resolution.split_made:
        made = resolution.split_made
        stderr.write(f"split made (none given): seed {made['seed']}, {made['test_share']:.0%} of the "
                     f"defect-free images in test ({made['test_good']} test, {made['train']} train)")
    return ScanResult(scan.layout, scan.root, resolution.images, errors, scan.manifest)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"


def _regions_text(regions: dict | None) -> str:
    """What an inspector counts at the technique's threshold, as one clause."""
    if not regions:
        return ""
    return (f"; defect regions found {regions['found']}/{regions['defect_regions']}, "
            f"false alarms per good image {estimate_text(regions['false_alarms_per_good_image'], 2)}")


def size_lines(report: dict) -> list[str]:
    """The chosen technique's detection rate per defect-size class (``regions.by_size``), the
    classes missed more often than the best one flagged; none for a report without size classes."""
    chosen = report["selection"]["chosen"]
    by_size = (((report["techniques"].get(chosen or "") or {}).get("regions")) or {}).get("by_size") or []
    classes = [f"{c['size_class']} {c['detected']}/{c['regions']} {estimate_text(c['detection_rate'])}"
               f"{'  MISSED MORE OFTEN' if c['lower_than_best'] else ''}" for c in by_size if c["regions"]]
    if not classes:
        return []
    return [f"Defect size ({chosen}; regions covered >= {MIN_OVERLAP:.0%} by the prediction, "
            "per share of the image): " + "; ".join(classes)]


def summary_text(report: dict) -> str:
    """What a person reads first: the test-part numbers with intervals, the choice and how it was made."""
    free = report["test_part"]
    coverage = mask_coverage(report)

    def pixel(estimate, digits=3):
        return pixel_estimate_text(estimate, coverage, digits)

    lines = [f"Test part (95 % intervals): image AUROC {estimate_text(free['image_auroc'])}, "
             f"pixel AUROC {pixel(free['pixel_auroc'])}, AUPRO {pixel(free['aupro'])}, "
             f"AUPIMO {pixel(free['aupimo'])}"]
    if coverage:
        lines.append(coverage["text"].capitalize())
    aupimo = report["aupimo"]
    lines.append(f"AUPIMO not reported: {aupimo['note']}" if aupimo["note"] else
                 f"AUPIMO per anomalous test image ({aupimo['n_images']}): median {_fmt(aupimo['median'])}, "
                 f"quartiles {_fmt(aupimo['q25'])}–{_fmt(aupimo['q75'])}")
    selection = report["selection"]
    lines.append(f"Technique chosen by cross-fitting ({selection['method']}): {selection['chosen'] or 'none'}")
    for entry in selection["entries"]:
        result = report["techniques"][entry["technique"]]
        if result["failure"]:
            lines.append(f"  {entry['technique']:<14} failed: {result['failure']['message']}")
            continue
        cv = (f"cross-validated IoU {_fmt(entry['cv_iou'])} (pooled over {entry['folds_scored']} held-out folds)"
              if entry["cv_iou"] is not None else "not cross-validated")
        decision = (result.get("decision") or {}).get("iou") or {}
        refitted = (f", {_fmt(decision['low'])}–{_fmt(decision['high'])} with the threshold refitted"
                    if decision.get("low") is not None else "")
        lines.append(f"  {entry['technique']:<14} {cv}; test IoU {pixel(result['test']['iou'])}{refitted}"
                     f"{_regions_text(result.get('regions')) if not coverage or coverage['test_has_masks'] else ''}")
    lines += size_lines(report)
    decision = report["image_decision"]
    if decision["test"]:
        lines.append(f"Image decision: accuracy {estimate_text(decision['test']['accuracy'])}, "
                     f"recall {estimate_text(decision['test']['recall'])}, precision {estimate_text(decision['test']['precision'])}")
    curves = {c["technique"]: c for c in report["few_shot"]["curves"]}
    chosen = curves.get(selection["chosen"] or "")
    if chosen and chosen["needs_anomalous"] and chosen["enough"] is not None:
        lines.append(f"Few-shot: {chosen['enough']} of {report['few_shot']['n_available']} anomalous validation "
                     f"images give a test IoU within {report['few_shot']['tolerance']} of using all of them")
    lines += _disputed_label_lines(report)
    if report.get("repeats"):
        r = report["repeats"]
        iou = r["metrics"].get("chosen_technique.iou") or {}
        lines.append(f"Repeated on seeds {r['seeds']}: chosen {', '.join(str(c) for c in r['chosen'])}; "
                     f"test IoU of the chosen technique {_fmt(iou.get('mean'))} ± {_fmt(iou.get('std'))}")
    return "\n".join(lines)


def _disputed_label_lines(report: dict) -> list[str]:
    """Per category / background value where annotators disagreed: the chosen technique's test
    IoU by final labels (with its interval) and weighted by the annotators' votes, and the flag."""
    lines = []
    names = {"True": "with background", "False": "without background"}
    for key in ("by_category", "by_background"):
        for subset, block in ((report.get("breakdowns") or {}).get(key) or {}).items():
            uncertainty = block.get("label_uncertainty")
            technique = (uncertainty or {}).get("technique")
            if not technique or not uncertainty["n_disputed"]:  # no disputed test image: nothing moves
                continue
            weighted = (uncertainty["weighted"].get(technique) or {}).get("iou")
            flag = "  DEPENDS ON DISPUTED LABELS" if uncertainty["depends_on_disputed_labels"] else ""
            lines.append(f"  {names.get(subset, subset) if key == 'by_background' else subset}: "
                         f"{technique} IoU {estimate_text(uncertainty['final_iou'])} by final labels, "
                         f"{_fmt(weighted)} weighted by votes ({uncertainty['n_disputed']} disputed){flag}")
    if lines:
        lines.insert(0, "Where annotators disagreed (test IoU per subset, final labels vs weighted by their votes):")
    return lines
