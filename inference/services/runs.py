"""Launching, cancelling, retrying benchmark runs and noticing runs whose worker died.

Launch checks that the run can be meaningful, snapshots the images and the labels it will use,
and enqueues its Celery task(s) only once the transaction commits (a worker never sees a row
that does not exist yet).

Worker loss is handled in two layers:

* The tasks are ``acks_late`` with ``reject_on_worker_lost``: a message whose worker process
  dies is given back to the broker and redelivered (at once when only the pool child dies; on
  Redis after ``visibility_timeout`` when the whole worker dies). A redelivered task finds its
  part still "running" and restarts it cleanly (artifacts wiped, ``attempts`` + 1).
* Every running task beats a heartbeat into its rows every ``BENCHMARK_HEARTBEAT_SECONDS``.
  The periodic sweep of every job kind (``inference.services.sweep``, Celery beat; pages and the
  API only read) settles parts whose heartbeat is older than ``BENCHMARK_STALE_SECONDS`` through
  ``execution.settle_stale_runs``: failed ("worker lost", with the time it stopped responding),
  or cancelled when a cancel was asked. A failed part is final: a message redelivered later does
  not redo it; the retry button launches a fresh run with the same settings.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from annotator.models import Dataset, Image, Label, Product
from annotator.paths import mask_file
from inference.engine.split import split_problems
from inference.engine import registry
from inference.engine.types import Sample as EngineSample
from annotator.services.background import nothing_to_cancel, stale_before, stale_filter
from annotator.services.labels import effective_labels, vote_shares_of
from inference.models import (
    ACTIVE_STATUSES,
    BenchmarkRun,
    ModelName,
    ProductRun,
    RunSample,
    Status,
    Technique,
)

DEFAULT_TECHNIQUES = [t.value for t in Technique]

# Recorded on every run so its settings page says what ran (the engine's defaults, from the registry).
RECORDED_SETTINGS = ("backbone", "image_size")
# The backbones a launch may name (the registry's vocabulary); the form offers those with weights here.
BACKBONES = list(registry.BACKBONE_NAMES)


_WEIGHTS_CACHE: dict[str, tuple[float, str | None]] = {}
WEIGHTS_CACHE_SECONDS = 60


def backbone_problem(name: str) -> str | None:
    """Why a run on backbone ``name`` with pretrained weights cannot start here, or None.

    Weights are never downloaded, so a backbone whose weights file is absent would only fail in
    the worker after the run was queued. Answers are kept a minute (a file may be added).
    """
    if name not in BACKBONES:
        return f"Unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}."
    now = time.monotonic()
    cached = _WEIGHTS_CACHE.get(name)
    if cached and now - cached[0] < WEIGHTS_CACHE_SECONDS:
        return cached[1]
    from inference.engine import backbone_weights  # looks at files only: no torch in the web process

    problem = None
    try:
        backbone_weights.weights_file(name)
    except backbone_weights.BackboneWeightsError as error:
        problem = f"Backbone {name} has no weights on this server, so the run could not start. {error}"
    _WEIGHTS_CACHE[name] = (now, problem)
    return problem


def available_backbones() -> list[str]:
    """The backbones whose pretrained weights are present (what the launch form offers)."""
    return [name for name in BACKBONES if backbone_problem(name) is None]


class LaunchRefused(ValueError):
    """The run could not be meaningful; ``messages`` says why (one line each)."""

    def __init__(self, messages: list[str]):
        self.messages = list(messages)
        super().__init__(" ".join(self.messages))


@dataclass
class ProductSelection:
    product: Product
    train: list[Image] = field(default_factory=list)
    test_good: list[Image] = field(default_factory=list)
    # (image, effective label or None)
    anomalous: list[tuple[Image, object]] = field(default_factory=list)
    by_category: Counter = field(default_factory=Counter)
    unlabelled: int = 0
    excluded: int = 0  # anomalous images the subset filters out
    # of the unlabelled: without a mask (image-level evidence: image AUROC, the image decision)
    without_mask: int = 0


def _subset_text(categories, background) -> str:
    parts = [", ".join(categories) if categories else "all categories"]
    if background is True:
        parts.append("with background")
    elif background is False:
        parts.append("without background")
    return "; ".join(parts)


def select_images(product: Product, categories, background) -> ProductSelection:
    """The images a run on ``product`` with this label subset uses.

    Training: the defect-free train images. Test: every defect-free test image (AUROC and the
    normal-based thresholds need them) plus the anomalous images whose effective label matches
    the subset. With no category and no background filter ("all anomalous") unlabelled anomalous
    images are included too; with a filter an image needs an effective label that matches. An
    anomalous image without a mask has no label (a category needs a mask): it enters "all
    anomalous" runs as image-level evidence, never a category subset.
    """
    categories = list(categories or [])
    selection = ProductSelection(product=product)
    images = list(product.images.all().order_by("split", "defect_type", "path"))
    anomalous = [i for i in images if i.is_anomalous]
    labels = effective_labels([i.pk for i in anomalous]) if anomalous else {}
    filtered = bool(categories) or background is not None
    for image in images:
        if not image.is_anomalous:
            (selection.train if image.split == Image.Split.TRAIN else selection.test_good).append(image)
            continue
        label = labels.get(image.pk)
        if label is None:
            if filtered:
                selection.excluded += 1
                continue
            selection.unlabelled += 1
            selection.without_mask += not image.mask_path
            selection.anomalous.append((image, None))
            continue
        if categories and label.category not in categories:
            selection.excluded += 1
            continue
        if background is not None and label.background != background:
            selection.excluded += 1
            continue
        selection.by_category[label.category] += 1
        selection.anomalous.append((image, label))
    return selection


def problems_of(selection: ProductSelection, categories, background, techniques) -> list[str]:
    """Why a run on this selection could not be meaningful (empty when it can)."""
    name = selection.product.name
    problems = []
    if not selection.train:
        problems.append(
            f"{name} has no defect-free training images: the model learns what normal looks like from them."
        )
    # The engine's own check of its validation/test split: refused here exactly when the run would fail.
    test = [EngineSample("", None, "good") for _ in selection.test_good]
    test += [EngineSample("", None, image.defect_type or "anomalous") for image, _ in selection.anomalous]
    subset = _subset_text(categories, background)
    if not selection.anomalous:
        problems.append(f"No anomalous images of {name} match the subset ({subset}): there is nothing to localize.")
        test += [EngineSample("", None, "anomalous")] * 2  # the defect-free side is still checked
    problems += [f"{name} ({subset}): {problem}" for problem in split_problems(test)]
    return problems


def _clean_choice_list(values, allowed, what) -> list[str]:
    values = [v for v in (values or []) if v not in ("", None)]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise LaunchRefused([f"Unknown {what}: {', '.join(map(str, unknown))}; expected {', '.join(allowed)}."])
    # Keep the canonical order, drop duplicates.
    return [v for v in allowed if v in values]


def parse_background(value) -> bool | None:
    if value in (None, "", "any", "all"):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "with"}:
        return True
    if text in {"0", "false", "no", "without"}:
        return False
    raise LaunchRefused([f"Background must be yes, no or any, not {value!r}."])


# The seed is stored in an IntegerField (32-bit signed on PostgreSQL) and fed to numpy/torch.
SEED_MAX = 2**31 - 1


def clean_seed(seed) -> int:
    try:
        seed = registry.whole_number(seed)
    except (TypeError, ValueError, OverflowError):
        raise LaunchRefused([f"Seed must be a whole number, not {seed!r}."]) from None
    if not 0 <= seed <= SEED_MAX:
        raise LaunchRefused([f"Seed must lie between 0 and {SEED_MAX}, not {seed}."])
    return seed


def clean_config(model: str, config: dict | None) -> dict:
    """The run's engine settings, checked against the model registry (types, bounds, choices).

    Unknown names are refused; a setting of another model is left out (a form shows every
    model's settings). The common recorded ones and the model's own settings keep their defaults.
    """
    if model not in registry.MODELS:
        raise LaunchRefused([f"Unknown model {model!r}; expected one of {', '.join(registry.MODELS)}."])
    own = {s.name: s for s in registry.settings_of(model)}
    cleaned = {name: registry.SETTINGS[name].default for name in RECORDED_SETTINGS + registry.get(model).settings}
    problems = []
    for key, value in (config or {}).items():
        if value in (None, ""):
            continue
        if key not in registry.SETTINGS:
            problems.append(f"Unknown setting {key!r}.")
            continue
        if key not in own:
            continue
        try:
            cleaned[key] = own[key].clean(value)
        except ValueError as error:
            problems.append(str(error))
    # Weights are never downloaded: a backbone without them would only fail in the worker.
    if not problems and cleaned.get("pretrained", True) and cleaned.get("backbone"):
        problem = backbone_problem(cleaned["backbone"])
        if problem:
            problems.append(problem)
    if problems:
        raise LaunchRefused(problems)
    return cleaned


def alignment_warning(product: Product, measured: dict, models) -> str | None:
    """Why the picked position-specific models would do poorly on ``product``, or None."""
    if measured["aligned"] is not False:
        return None
    picked = [registry.get(m) for m in models if m in registry.MODELS]
    specific = [spec.label for spec in picked if spec.position_specific]
    if not specific:
        return None
    suggestion = registry.label(ModelName.PATCHCORE)  # position-free, and the strongest of those measured here
    return (f"{product.name}: its defect-free images are not aligned (only {measured['aligned_share']:.0%} of "
            "the structure they share once registered is at the same pixels: parts are moved or rotated). "
            f"{', '.join(specific)} learn{'s' if len(specific) == 1 else ''} what is normal at each position "
            f"and need{'s' if len(specific) == 1 else ''} aligned images; try {suggestion}, which compares "
            "patches wherever they are.")


def subset_counts(products, categories=(), background=None, techniques=None, models=()) -> dict:
    """Live counts for the launch form, with the problems a launch would be refused for and the
    warnings it would not be refused for (position-specific ``models`` on unaligned products)."""
    from annotator.services.alignment import alignment_of

    categories = _clean_choice_list(categories, Label.Category.values, "category")
    techniques = _clean_choice_list(techniques, Technique.values, "technique") if techniques else DEFAULT_TECHNIQUES
    models = _clean_choice_list(models, list(registry.MODELS), "model")
    rows, problems, warnings = [], [], []
    total = Counter()
    for product in products:
        sel = select_images(product, categories, background)
        measured = alignment_of(product)
        warning = alignment_warning(product, measured, models)
        if warning:
            warnings.append(warning)
        rows.append({
            "id": product.pk,
            "name": product.name,
            "train_good": len(sel.train),
            "test_good": len(sel.test_good),
            "anomalous": len(sel.anomalous),
            "by_category": dict(sel.by_category),
            "unlabelled": sel.unlabelled,
            "excluded": sel.excluded,
            "without_mask": sel.without_mask,
            "alignment": measured,
        })
        total.update({"train_good": len(sel.train), "test_good": len(sel.test_good),
                      "anomalous": len(sel.anomalous), "unlabelled": sel.unlabelled,
                      "excluded": sel.excluded, "without_mask": sel.without_mask})
        for cat, n in sel.by_category.items():
            total[f"cat:{cat}"] += n
        problems += problems_of(sel, categories, background, techniques)
    by_category = {c: total[f"cat:{c}"] for c in Label.Category.values if total[f"cat:{c}"]}
    parts = [f"{n} {c}" for c, n in by_category.items()]
    if total["unlabelled"] - total["without_mask"]:
        parts.append(f"{total['unlabelled'] - total['without_mask']} unlabelled")
    if total["without_mask"]:
        parts.append(f"{total['without_mask']} without mask (image-level only: pixel metrics need masks)")
    # The count first, so that its noun agrees with it: "5 images match: 4 structural, 1 unlabelled",
    # never "4 structural, 1 unlabelled images match".
    matching = sum(by_category.values()) + total["unlabelled"]
    summary = (f"{matching} image{'s' if matching != 1 else ''} match{'' if matching != 1 else 'es'}: "
               + ", ".join(parts)) if parts else "No anomalous images match"
    if not products:
        problems = ["Pick at least one product."]
    return {
        "products": rows,
        "total": {"train_good": total["train_good"], "test_good": total["test_good"],
                  "anomalous": total["anomalous"], "unlabelled": total["unlabelled"],
                  "excluded": total["excluded"], "without_mask": total["without_mask"], "by_category": by_category},
        "summary": summary,
        "problems": problems,
        "warnings": warnings,
        "ok": not problems,
    }


def launch_run(
    user,
    dataset: Dataset,
    products,
    categories=(),
    background=None,
    model: str = ModelName.PADIM,
    config: dict | None = None,
    techniques=None,
    seed: int = 0,
    retry_of: BenchmarkRun | None = None,
    **settings_kwargs,
) -> BenchmarkRun:
    """Create a run (status queued), snapshot its images and labels, enqueue it on commit.

    Raises ``PermissionDenied`` for non-admins and ``LaunchRefused`` (with one message per
    problem) when the run could not be meaningful.
    """
    if user is None or not getattr(user, "is_admin_role", False):
        raise PermissionDenied("Only admins launch benchmarks.")
    products = list(products)
    if not products:
        raise LaunchRefused(["Pick at least one product."])
    foreign = [p.name for p in products if p.dataset_id != dataset.pk]
    if foreign:
        raise LaunchRefused([f"Product(s) {', '.join(foreign)} do not belong to dataset {dataset.name}."])
    categories = _clean_choice_list(categories, Label.Category.values, "category")
    background = parse_background(background)
    techniques = _clean_choice_list(techniques, Technique.values, "technique") if techniques else list(DEFAULT_TECHNIQUES)
    config = clean_config(model, {**(config or {}), **settings_kwargs})
    seed = clean_seed(seed)

    selections = [select_images(p, categories, background) for p in products]
    problems = [msg for sel in selections for msg in problems_of(sel, categories, background, techniques)]
    if problems:
        raise LaunchRefused(problems)

    with transaction.atomic():
        run = BenchmarkRun.objects.create(
            created_by=user, dataset=dataset, categories=categories, background=background,
            model=model, config=config, techniques=techniques, seed=seed, retry_of=retry_of,
            stage="queued",
        )
        run.artifacts_path = f"benchmarks/{run.pk}"
        multi = len(selections) > 1
        run.celery_task_id = str(uuid.uuid4())
        run.save(update_fields=["artifacts_path", "celery_task_id"])
        root = dataset.root_path
        for sel in selections:
            part = ProductRun.objects.create(
                run=run, product=sel.product,
                celery_task_id=str(uuid.uuid4()) if multi else run.celery_task_id,
            )
            part.artifacts_path = f"benchmarks/{run.pk}/{sel.product.pk}-{_slug(sel.product.name)}"
            part.save(update_fields=["artifacts_path"])
            rows = []
            for image in sel.train:
                rows.append(_sample(part, image, root, RunSample.Role.TRAIN, None))
            for image in sel.test_good:
                rows.append(_sample(part, image, root, RunSample.Role.TEST, None))
            shares = vote_shares_of([image.pk for image, _ in sel.anomalous])
            for image, label in sel.anomalous:
                rows.append(_sample(part, image, root, RunSample.Role.TEST, label, shares.get(image.pk)))
            RunSample.objects.bulk_create(rows, batch_size=500)
        run_id = run.pk
        transaction.on_commit(lambda: enqueue_run(run_id))
    return run


def launch_runs(user, dataset, products, models, config: dict | None = None, **kwargs) -> list[BenchmarkRun]:
    """One run per model on the same products, subset, techniques and seed (so on the same test
    images), all or none: a refusal of any leaves nothing launched. ``config`` may hold several
    models' settings; each run keeps its own model's."""
    models = [m for m in dict.fromkeys(models or []) if m]
    if not models:
        raise LaunchRefused(["Pick at least one model."])
    with transaction.atomic():
        return [launch_run(user, dataset, products, model=model, config=config, **kwargs) for model in models]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60] or "product"


def _sample(part, image, dataset_root, role, label, shares=None) -> RunSample:
    """The row of one image; ``shares``: its annotators' ``VoteShares`` where they disagree."""
    root = image.files_root_in(dataset_root)
    return RunSample(
        product_run=part, image=image, role=role,
        path=str(root / image.path),
        mask_path=str(mask_file(root, image.path, image.mask_path)) if image.mask_path else "",
        defect_type=image.defect_type, is_anomalous=image.is_anomalous,
        background=label.background if label else None,
        category=label.category if label else "",
        category_shares=shares.category if shares else None,
        # JSON keys are text: "true" / "false" (engine_samples turns them back into booleans)
        background_shares={str(b).lower(): v for b, v in shares.background.items()} if shares else None,
    )


def enqueue_run(run_id: int) -> None:
    """Send the run's task(s): one task for one product, a chord for several."""
    from celery import chord

    from inference import tasks

    run = BenchmarkRun.objects.get(pk=run_id)
    parts = list(run.product_runs.order_by("pk"))
    if len(parts) == 1:
        tasks.run_product.apply_async(args=(parts[0].pk,), kwargs={"finalize": True},
                                      task_id=parts[0].celery_task_id)
        return
    header = [
        tasks.run_product.si(part.pk, finalize=False).set(task_id=part.celery_task_id)
        for part in parts
    ]
    chord(header)(tasks.finalize_run.si(run.pk).set(task_id=run.celery_task_id))


def cancel_run(run: BenchmarkRun, user) -> BenchmarkRun:
    """Queued: cancelled at once. Running: the task stops at its next batch and ends cancelled; a
    part whose worker stopped responding is settled cancelled here (no worker would notice).
    Ended: ``NothingToCancel`` saying how it ended."""
    from inference.services import execution

    if user is None or not getattr(user, "is_admin_role", False):
        raise PermissionDenied("Only admins cancel benchmarks.")
    now = timezone.now()
    with transaction.atomic():
        run = BenchmarkRun.objects.select_for_update().get(pk=run.pk)
        if run.status not in ACTIVE_STATUSES:
            raise nothing_to_cancel(f"Run {run.pk}", run.get_status_display())
        run.cancel_requested = True
        fields = ["cancel_requested"]
        if run.status == Status.QUEUED:
            run.status, run.stage, run.finished_at = Status.CANCELLED, "cancelled", now
            fields += ["status", "stage", "finished_at"]
        run.save(update_fields=fields)
        run.product_runs.filter(status=Status.QUEUED).update(
            status=Status.CANCELLED, stage="cancelled", finished_at=now
        )
    if run.status == Status.RUNNING:
        execution.settle_dead_parts(run.product_runs.filter(stale_filter(stale_before(now))), now)
        execution.finalize_run(run.pk)  # settles the run once no part is active any more
        run.refresh_from_db()
    return run


def retry_run(run: BenchmarkRun, user) -> BenchmarkRun:
    """A fresh run with the same dataset, products, subset and settings (labels as they are now)."""
    if run.status in ACTIVE_STATUSES:
        raise LaunchRefused([f"Run {run.pk} is still {run.status}; cancel it first."])
    return launch_run(
        user, run.dataset, list(run.products.all()), categories=run.categories,
        background=run.background, model=run.model, config=dict(run.config),
        techniques=run.techniques, seed=run.seed, retry_of=run,
    )


def sees_per_image_results(user) -> bool:
    """What each role sees of a run. Everyone logged in sees its status, settings and aggregate
    metrics (threshold-free, per technique, per category and background, curves). Per-image
    results carry the labels annotators gave (each image's category, its heat map and mask), so
    only reviewers and admins, who see every label anyway, get them: the gallery, the per-image
    lists of the JSON download and the files under a part's ``images/`` folder (and report.json)."""
    return bool(getattr(user, "is_reviewer_role", False))


def is_aggregate_artifact(relpath: str) -> bool:
    """Artifact files anyone may read: the curve plots (``<part>/curves/...`` or ``curves/...``)."""
    parts = relpath.split("/")
    return "curves" in parts[:2] and parts[-1] != "report.json"
