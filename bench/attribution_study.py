"""Which attribution map: every ``attribution_target`` of the VAE attribution model on the real sets
and on a synthetic "part moved and rotated on a backdrop" set, with the registry's default settings.

    .venv/bin/python bench/attribution_study.py                       # every set, every target
    .venv/bin/python bench/attribution_study.py --sets bottle --targets elbo,residual

For each set the VAE is fitted once (the targets differ only in what the map explains, so they
share the fitted VAE: one fit time per set) and every target maps the whole test folder through
the engine's own preprocessing onto the run's evaluation canvas (``runner._geometry``); the
threshold-free metrics are the engine's (``metrics.threshold_free``, image AUROC on each target's
own image score, the maximum of its map). Sets:

* ``bottle``: MVTec AD bottle (``mvtec_ad/bottle``, its own split: 209 train, 83 test);
* ``kolektorsdd``: train = the defect-free parts of kos01-kos14, test = every part of kos15-kos20
  plus every defective part of kos01-kos14 (the README's convention); ``kos13/kos08`` is a copy
  of ``kos08`` and left out, as the import leaves out duplicates;
* ``bsdata``: the polygons layout rasterised as on import (``annotator.layouts.scan_dataset``)
  and split by the import's no-split rule (``resolve_images``: seed 0, 20 % of the defect-free
  images held out, every annotated image in test);
* ``moved_part``: made here, seeded: a textured asymmetric part (an L-shaped bracket with a round
  boss) pasted at a random position and angle on a textured backdrop, 256 px; defects on the part
  (a dark pit, a bright scratch, a coloured stain, a chipped-off corner showing the backdrop),
  the mask being the pixels that changed. These are not the engine's synthetic defects
  (``inference.engine.synthetic``), so a model trained against those is not tested on its own kind.

``--models fcdd`` adds the FCDD model when it is registered. Writes
``bench/results/<date>-attribution-study.json`` (``--output`` to change it).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path("/work/shared/data") if Path("/work/shared/data").is_dir() else REPO.parent / "shared" / "data"
SETS = ("bottle", "kolektorsdd", "bsdata", "moved_part")


# --- data ------------------------------------------------------------------------------------------
def bottle_samples(data: Path):
    from annotator.layouts import scan_dataset
    from inference.engine import samples_from_scan

    scan = scan_dataset(data / "mvtec_ad" / "bottle", layout="mvtec")
    return samples_from_scan(scan.images, key=scan.relative)


def kolektor_samples(data: Path):
    from inference.engine import Sample
    from inference.engine.pixels import decode_mask

    root = data / "kolektorsdd"
    train, test = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        number = int(folder.name[3:])
        for image in sorted(folder.glob("Part*.jpg")):  # direct children only: kos13/kos08 is a copy
            mask = image.with_name(image.stem + "_label.bmp")
            defective = decode_mask(mask).defect_pixels > 0
            key = f"{folder.name}/{image.name}"
            sample = Sample(str(image), str(mask) if defective else None, "crack" if defective else "good", key=key)
            if defective or number >= 15:
                test.append(sample)
            else:
                train.append(sample)
    return train, test


def bsdata_samples(data: Path, mask_dir: Path):
    from annotator.layouts import ScanResult, resolve_images, scan_dataset
    from inference.engine import samples_from_scan
    from inference.engine.pixels import decode_mask

    scan = scan_dataset(data / "bsdata", layout="polygons", mask_dir=mask_dir)
    checksums = {i.image_path: hashlib.sha256(Path(i.image_path).read_bytes()).hexdigest() for i in scan.images}
    pixels = {i.mask_path: decode_mask(i.mask_path).defect_pixels for i in scan.images if i.mask_path}
    resolution = resolve_images(scan, checksums=checksums, defect_pixels=pixels)
    return samples_from_scan(ScanResult(scan.layout, scan.root, resolution.images).images, key=scan.relative)


def _part_picture(rng: np.random.Generator, size: int = 150):
    """The part (RGB, brushed-metal stripes with grain) and its alpha: an L-bracket with a boss."""
    from PIL import Image, ImageDraw

    alpha = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(alpha)
    draw.rectangle([15, 55, 135, 88], fill=255)
    draw.rectangle([102, 15, 135, 88], fill=255)
    draw.ellipse([25, 95, 70, 140], fill=255)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = 150 + 25 * np.sin(xx / 3.0 + 0.4 * np.sin(yy / 11.0)) + rng.normal(0, 6, (size, size))
    rgb = np.stack([stripes, stripes * 0.97, stripes * 0.9], -1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb), alpha


def _backdrop(rng: np.random.Generator, size: int) -> np.ndarray:
    """A mottled table top (smoothed noise at two scales), float RGB."""
    from PIL import Image, ImageFilter

    coarse = Image.fromarray((rng.normal(128, 40, (size // 8, size // 8))).clip(0, 255).astype(np.uint8))
    coarse = np.asarray(coarse.resize((size, size), Image.BICUBIC), np.float32)
    fine = np.asarray(Image.fromarray(rng.normal(128, 60, (size, size)).clip(0, 255).astype(np.uint8))
                      .filter(ImageFilter.GaussianBlur(1.2)), np.float32)
    grey = 45 + 0.15 * (coarse - 128) + 0.12 * (fine - 128)
    return np.stack([grey * 0.9, grey, grey * 1.1], -1)


def _scene(rng: np.random.Generator, size: int):
    """A backdrop with the part at a random place and angle; the picture (uint8) and the part's mask."""
    from PIL import Image

    part, alpha = _part_picture(rng)
    angle = float(rng.uniform(0, 360))
    part = part.rotate(angle, expand=True, resample=Image.BILINEAR)
    alpha = alpha.rotate(angle, expand=True, resample=Image.BILINEAR)
    canvas = _backdrop(rng, size)
    w, h = part.size
    x0, y0 = (int(v) for v in rng.integers(0, size - max(w, h) + 1, 2))
    a = np.asarray(alpha, np.float32)[..., None] / 255
    region = canvas[y0:y0 + h, x0:x0 + w]
    canvas[y0:y0 + h, x0:x0 + w] = a * np.asarray(part, np.float32) + (1 - a) * region
    on_part = np.zeros((size, size), bool)
    on_part[y0:y0 + h, x0:x0 + w] = a[..., 0] > 0.99
    return canvas.clip(0, 255).astype(np.uint8), on_part


def _defect(image: np.ndarray, on_part: np.ndarray, kind: str, rng: np.random.Generator, size: int):
    from PIL import Image, ImageDraw

    ys, xs = np.nonzero(on_part)
    k = int(rng.integers(len(ys)))
    cy, cx = int(ys[k]), int(xs[k])
    out = image.astype(np.float32)
    if kind in ("pit", "stain"):
        r = float(rng.uniform(4, 10) if kind == "pit" else rng.uniform(8, 16))
        yy, xx = np.mgrid[0:size, 0:size]
        blob = ((yy - cy) / r) ** 2 + ((xx - cx) / (r * rng.uniform(0.6, 1.4))) ** 2 <= 1
        if kind == "pit":
            out[blob] = out[blob] * 0.25
        else:
            out[blob] = 0.45 * out[blob] + 0.55 * np.array([150.0, 90.0, 40.0])  # rust-coloured
    elif kind == "scratch":
        length, angle = float(rng.uniform(20, 50)), float(rng.uniform(0, math.pi))
        pic = Image.new("L", (size, size), 0)
        ImageDraw.Draw(pic).line([cx - length / 2 * math.cos(angle), cy - length / 2 * math.sin(angle),
                                  cx + length / 2 * math.cos(angle), cy + length / 2 * math.sin(angle)],
                                 fill=255, width=2)
        stroke = (np.asarray(pic) > 0) & on_part
        out[stroke] = np.minimum(out[stroke] + 90, 255)
    else:  # chip: a piece of the part broken off, the backdrop showing through
        r = float(rng.uniform(10, 18))
        yy, xx = np.mgrid[0:size, 0:size]
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        out[blob & on_part] = _backdrop(rng, size)[blob & on_part]
    made = out.clip(0, 255).round().astype(np.uint8)
    mask = (np.abs(made.astype(np.int16) - image.astype(np.int16)) > 8).any(-1)
    return made, mask


DEFECT_KINDS = ("pit", "scratch", "stain", "chip")


def moved_part_samples(folder: Path, size: int = 256, n_train: int = 80, n_good: int = 20,
                       n_per_kind: int = 8, seed: int = 0):
    """The synthetic set written to ``folder`` (PNG images and masks); seeded."""
    from PIL import Image

    from inference.engine import Sample

    rng = np.random.default_rng([seed, 2024])
    folder.mkdir(parents=True, exist_ok=True)
    train, test = [], []

    def write(name, picture, mask=None):
        path = folder / f"{name}.png"
        Image.fromarray(picture).save(path)
        if mask is None:
            return str(path), None
        mask_path = folder / f"{name}_mask.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
        return str(path), str(mask_path)

    for i in range(n_train):
        path, _ = write(f"train_{i:03d}", _scene(rng, size)[0])
        train.append(Sample(path, None, "good", key=f"train/good/{i:03d}"))
    for i in range(n_good):
        path, _ = write(f"good_{i:03d}", _scene(rng, size)[0])
        test.append(Sample(path, None, "good", key=f"test/good/{i:03d}"))
    for kind in DEFECT_KINDS:
        for i in range(n_per_kind):
            for _ in range(20):
                image, on_part = _scene(rng, size)
                made, mask = _defect(image, on_part, kind, rng, size)
                if mask.sum() >= 8:
                    break
            path, mask_path = write(f"{kind}_{i:03d}", made, mask)
            test.append(Sample(path, mask_path, kind, key=f"test/{kind}/{i:03d}"))
    return train, test


# --- measurement -----------------------------------------------------------------------------------
def _map_test(model, test, geo, config):
    """Every test image's map on the canvas and its image score, as a run maps them."""
    from inference.engine.data import make_input_loader
    from inference.engine.geometry import resize_map
    from inference.engine.runner import _map_inputs

    prep, canvas = geo["prep"], geo["canvas"]
    maps = np.empty((len(test), *canvas), dtype=np.float32)
    scores = np.empty(len(test), dtype=np.float64)

    def on_image(i, amap, score):
        maps[i] = resize_map(amap, canvas)
        scores[i] = score

    loader = make_input_loader(test, prep, geo["test_sizes"], config.batch_size, config.num_workers)
    _map_inputs(model, loader, loader.dataset.owner, len(test),
                lambda i, m, sc: prep.assemble(m, sc, geo["test_sizes"][i]), on_image)
    return maps, scores


def _metrics(maps, scores, masks, labels) -> dict:
    from inference.engine import metrics

    tf = metrics.threshold_free(maps, masks, labels, scores=scores)
    # the paper's image score for FCDD (the mean of its output), as an aside for every method
    tf["image_auroc_mean_of_map"] = metrics.image_auroc(maps.reshape(len(maps), -1).mean(1), labels)
    return {k: (None if v is None else round(float(v), 4)) for k, v in tf.items()}


def study_set(name, train, test, targets, backbone, threads, epochs=None, models=()):
    import torch

    from inference.engine import registry, runner
    from inference.engine.data import load_canvas_masks, make_input_loader
    from inference.engine.types import BenchmarkConfig

    out = {"n_train": len(train), "n_test": len(test), "n_anomalous": int(sum(s.is_anomalous for s in test)),
           "results": {}}
    labels = np.array([s.is_anomalous for s in test])
    overrides = {"epochs": epochs} if epochs else {}
    config = BenchmarkConfig(model="attribution", device="cpu", num_threads=threads, **overrides)
    geo = runner._geometry(train, test, config)
    out["canvas"] = list(geo["canvas"])
    masks = load_canvas_masks(test, geo["canvas"])
    model = runner.build_model(config, backbone)
    if targets:
        t0 = time.perf_counter()
        model.fit(make_input_loader(train, geo["prep"], geo["train_sizes"], config.batch_size, config.num_workers))
        fit = time.perf_counter() - t0
        print(f"{name}: VAE fitted in {fit:.0f} s (loss {model.history[0]:.3f} -> {model.history[-1]:.3f})",
              flush=True)
    for target in targets:
        model.target = target
        t0 = time.perf_counter()
        maps, scores = _map_test(model, test, geo, config)
        seconds = time.perf_counter() - t0
        row = {"epochs": config.epochs, **_metrics(maps, scores, masks, labels), "fit_seconds": round(fit, 1),
               "inference_seconds": round(seconds, 1), "inference_ms_per_image": round(1000 * seconds / len(test), 1),
               "genuine_attribution": target not in registry.ATTRIBUTION_BASELINES}
        out["results"][target] = row
        print(f"  {target}: {row}", flush=True)
    for other in models:
        config = BenchmarkConfig(model=other, device="cpu", num_threads=threads, **overrides)
        geo = runner._geometry(train, test, config)
        m = runner.build_model(config, backbone)
        t0 = time.perf_counter()
        m.fit(make_input_loader(train, geo["prep"], geo["train_sizes"], config.batch_size, config.num_workers))
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        maps, scores = _map_test(m, test, geo, config)
        seconds = time.perf_counter() - t0
        row = {"epochs": config.epochs, **_metrics(maps, scores, masks, labels), "fit_seconds": round(fit, 1),
               "inference_seconds": round(seconds, 1), "inference_ms_per_image": round(1000 * seconds / len(test), 1),
               "genuine_attribution": True}
        out["results"][other] = row
        print(f"  {other}: {row}", flush=True)
        del m
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def main() -> None:
    from inference.engine import registry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--targets", default=",".join(registry.ATTRIBUTION_TARGETS))
    parser.add_argument("--models", default="", help="other registered models to measure beside (e.g. fcdd)")
    parser.add_argument("--epochs", type=int, default=None, help="override the registry's epochs (uniformly)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--merge", type=Path, action="append", default=[],
                        help="an earlier results file of this script: its rows for sets and methods not "
                             "measured now are kept (each row keeps its own times)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from inference.engine import BenchmarkConfig
    from inference.engine.backbones import Backbone

    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in registry.ATTRIBUTION_TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; expected {', '.join(registry.ATTRIBUTION_TARGETS)}")
    models = [m for m in args.models.split(",") if m]
    for m in models:
        registry.get(m)
    config = BenchmarkConfig(model="attribution", device="cpu")
    backbone = Backbone(config.backbone, layers=config.layers, weights="pretrained", device="cpu")
    report = {"date": datetime.date.today().isoformat(), "threads": args.threads, "machine": platform.processor()
              or platform.machine(), "cpu_count": __import__("os").cpu_count(), "torch": torch.__version__,
              "settings": {k: getattr(config, k) for k in ("image_size", "latent_dim", "epochs", "learning_rate",
                                                           "seed", "backbone", "resize", "eval_max_pixels")},
              "default_target": config.attribution_target, "sets": {}}
    if args.epochs:
        report["settings"]["epochs"] = args.epochs
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        loaders = {"bottle": lambda: bottle_samples(args.data),
                   "kolektorsdd": lambda: kolektor_samples(args.data),
                   "bsdata": lambda: bsdata_samples(args.data, Path(tmp) / "bsdata-masks"),
                   "moved_part": lambda: moved_part_samples(Path(tmp) / "moved_part")}
        for name in [s for s in args.sets.split(",") if s]:
            train, test = loaders[name]()
            print(f"{name}: {len(train)} train, {len(test)} test ({sum(s.is_anomalous for s in test)} anomalous)",
                  flush=True)
            report["sets"][name] = study_set(name, train, test, targets, backbone, args.threads, args.epochs, models)
    report["total_seconds"] = round(time.perf_counter() - t_all, 1)
    for path in args.merge:
        earlier = json.loads(path.read_text())
        for name, entry in earlier["sets"].items():
            mine = report["sets"].setdefault(name, {**entry, "results": {}})
            for method, row in entry["results"].items():
                mine["results"].setdefault(method, {"epochs": earlier["settings"]["epochs"], **row,
                                                    "merged_from": path.name})
        report.setdefault("merged", []).append({"file": path.name, "total_seconds": earlier.get("total_seconds")})
    names = [s for s in SETS if s in report["sets"]]
    report["sets"] = {s: report["sets"][s] for s in names}
    methods = [m for m in (*registry.ATTRIBUTION_TARGETS, *registry.MODELS)
               if all(m in report["sets"][s]["results"] for s in names)]
    summary = {}
    for method in methods:
        values = [report["sets"][s]["results"][method]["image_auroc"] for s in names]
        summary[method] = {"min_image_auroc": min(values), "mean_image_auroc": round(float(np.mean(values)), 4),
                           "genuine_attribution": method not in registry.ATTRIBUTION_BASELINES}
    report["summary"] = summary
    genuine = {m: v for m, v in summary.items() if v["genuine_attribution"]}
    report["rule"] = ("the default is the genuine attribution with the best minimum image AUROC over the sets "
                      "(the residual only as the baseline)")
    report["best_by_rule"] = max(genuine, key=lambda m: genuine[m]["min_image_auroc"]) if genuine else None
    output = args.output or REPO / "bench" / "results" / f"{report['date']}-attribution-study.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"best by the rule: {report['best_by_rule']}; wrote {output}")


if __name__ == "__main__":
    main()
