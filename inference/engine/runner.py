"""``run_benchmark``: the protocol, end to end, returning a JSON-serialisable report.

Protocol
--------
1. The model is fitted on ``train`` (defect-free images only).
2. ``test`` (good and anomalous) is split into a validation part and a test part,
   stratified by defect type and seeded (:func:`data.split_validation_test`).
   CFLOW's early stopping and every threshold technique use the validation part only.
3. Threshold-free metrics are reported on the whole test folder (comparable to
   published numbers) and on the test part; threshold-dependent metrics on the
   test part only, for each technique's validation-fitted threshold.
4. ``recommended_technique`` = the technique with the highest dataset-level IoU on
   the VALIDATION part (never the test part, to avoid leakage). Note that
   ``iou_curve`` is itself tuned on validation IoU, so it is favoured by design.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .backbones import Backbone
from .common import peak_rss_mb, seed_everything
from .data import load_masks, make_loader, split_summary, split_validation_test
from .thresholds import TECHNIQUES, ThresholdError, fit_threshold
from .types import BenchmarkCancelled, BenchmarkConfig, Sample

CATEGORIES = ("structural", "surface", "contamination", "combined")

# Share of the overall progress given to each stage (sums to 1).
_STAGES = {"setup": 0.03, "fit": 0.55, "inference": 0.25, "metrics": 0.12, "artifacts": 0.05}


class _Progress:
    """Maps (stage, fraction of stage) to a monotone overall fraction and checks cancellation."""

    def __init__(self, callback, should_cancel, stages: dict[str, float]):
        self.callback = callback
        self.should_cancel = should_cancel
        self.starts: dict[str, float] = {}
        acc = 0.0
        for name, w in stages.items():
            self.starts[name] = acc
            acc += w
        self.weights = stages
        self.last = 0.0

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise BenchmarkCancelled("benchmark cancelled")

    def __call__(self, stage: str, frac: float) -> None:
        self.check_cancel()
        overall = self.starts[stage] + self.weights[stage] * min(max(frac, 0.0), 1.0)
        overall = max(self.last, min(overall, 1.0))
        self.last = overall
        if self.callback is not None:
            self.callback(stage, overall)

    def finish(self) -> None:
        self.last = 1.0
        if self.callback is not None:
            self.callback("done", 1.0)


def _clean(obj):
    """Make the report JSON-serialisable (numpy scalars -> Python, NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def build_model(config: BenchmarkConfig, backbone: Backbone):
    if config.model == "padim":
        from .padim import Padim

        return Padim(backbone, n_features=config.n_features, seed=config.seed, image_size=config.image_size)
    if config.model == "cflow":
        from .cflow import Cflow

        return Cflow(backbone, config)
    raise ValueError(f"unknown model {config.model!r}; expected 'padim' or 'cflow'")


def _validate(train: Sequence[Sample], test: Sequence[Sample], config: BenchmarkConfig) -> None:
    if not train:
        raise ValueError("no training images")
    if not test:
        raise ValueError("no test images")
    bad = [s.report_key for s in train if s.defect_type != "good"]
    if bad:
        raise ValueError(f"training images must be defect-free; got anomalous: {bad[:3]}")
    unknown = [t for t in config.techniques if t not in TECHNIQUES]
    if unknown:
        raise ValueError(f"unknown threshold techniques {unknown}; known: {sorted(TECHNIQUES)}")
    keys = [s.report_key for s in test]
    if len(set(keys)) != len(keys):
        raise ValueError("test sample keys must be unique")


def _subset_report(maps, masks, labels, idx, thresholds) -> dict:
    sub_maps, sub_masks = maps[idx], masks[idx]
    tf = metrics.threshold_free(sub_maps, sub_masks) if len(idx) else {}
    inf = {}
    for name, thr in thresholds.items():
        if isinstance(thr, dict):  # technique failed to fit
            inf[name] = thr
        else:
            inf[name] = metrics.threshold_metrics(sub_maps, sub_masks, thr, labels[idx])
    return {"threshold_free": tf, "inference": inf, "n_images": int(len(idx)),
            "n_anomalous": int(labels[idx].sum())}


def _breakdowns(test, test_idx, maps, masks, labels, thresholds) -> tuple[dict, dict, dict]:
    """Metrics per defect type, category and background value.

    Each subset is the defect-free images plus that subset's anomalous images. Threshold-free
    metrics are given on the test part and (``whole_folder_threshold_free``) on the whole test
    folder, so a small subset whose images all fell in the validation part (a single "combined"
    image, say) still gets an entry; its test-part metrics are then empty, with a ``note``.
    """
    all_idx = list(range(len(test)))
    test_set = set(test_idx)

    def report(pred) -> dict:
        in_test = sorted(i for i in test_idx if not labels[i] or pred(test[i]))
        whole = [i for i in all_idx if not labels[i] or pred(test[i])]
        n_anomalous_test = sum(1 for i in in_test if labels[i])
        if n_anomalous_test:
            entry = _subset_report(maps, masks, labels, in_test, thresholds)
        else:
            n_val = sum(1 for i in whole if labels[i] and i not in test_set)
            entry = {"threshold_free": {}, "inference": {}, "n_images": 0, "n_anomalous": 0,
                     "note": f"all {n_val} anomalous image(s) of this subset are in the validation part"}
        entry["whole_folder_threshold_free"] = metrics.threshold_free(maps[whole], masks[whole])
        return entry

    anomalous = [test[i] for i in all_idx if labels[i]]
    by_type = {dt: report(lambda s, dt=dt: s.defect_type == dt)
               for dt in sorted({s.defect_type for s in anomalous})}
    cats = {s.category for s in anomalous if s.category is not None}
    by_cat = {c: report(lambda s, c=c: s.category == c)
              for c in [c for c in CATEGORIES if c in cats] + sorted(cats - set(CATEGORIES))}
    by_bg = {str(b): report(lambda s, b=b: s.background is b)
             for b in (True, False) if any(s.background is b for s in anomalous)}
    return by_type, by_cat, by_bg


def run_benchmark(
    train: list[Sample],
    test: list[Sample],
    config: BenchmarkConfig,
    progress: Callable[[str, float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    artifacts_dir: str | Path | None = None,
) -> dict:
    """Fit ``config.model`` on ``train``, evaluate on ``test``; see the module docstring."""
    old_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    try:
        return _run(train, test, config, progress, should_cancel, artifacts_dir)
    finally:
        torch.set_num_threads(old_threads)


def _run(train, test, config: BenchmarkConfig, progress, should_cancel, artifacts_dir) -> dict:
    t_start = time.perf_counter()
    _validate(train, test, config)
    prog = _Progress(progress, should_cancel, _STAGES)
    prog("setup", 0.0)
    seed_everything(config.seed)
    on_cuda = str(config.device).startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()

    val_idx, test_idx = split_validation_test(test, config.val_fraction, config.seed)
    backbone = Backbone(
        config.backbone, layers=config.layers, weights="pretrained" if config.pretrained else "random",
        weights_path=config.weights_path, device=config.device,
    )
    model = build_model(config, backbone)
    size = config.image_size
    labels = np.array([s.is_anomalous for s in test], dtype=bool)
    prog("setup", 1.0)

    # ---- fit -------------------------------------------------------------------------------
    t_fit = time.perf_counter()
    train_loader = make_loader(train, size, config.batch_size, config.num_workers)
    if config.model == "cflow":
        val_good = [test[i] for i in val_idx if not labels[i]]
        val_loader = make_loader(val_good, size, config.batch_size, config.num_workers) if val_good else None
        model.fit(train_loader, val_loader, step=lambda f: prog("fit", f))
    else:
        n_train = len(train)
        model.fit(train_loader, step=lambda n: prog("fit", n / n_train))
    fit_seconds = time.perf_counter() - t_fit

    # ---- inference (every test-folder image, each independently) --------------------------
    t_inf = time.perf_counter()
    maps = np.empty((len(test), size, size), dtype=np.float32)
    done = 0
    for images, idx in make_loader(test, size, config.batch_size, config.num_workers):
        maps[idx.numpy()] = model.predict(images)
        done += len(idx)
        prog("inference", done / len(test))
    inference_seconds = time.perf_counter() - t_inf
    model_memory_mb = model.memory_bytes() / 2**20
    model_info = model.describe() if hasattr(model, "describe") else {}
    del model, backbone
    cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None

    # ---- metrics --------------------------------------------------------------------------
    masks = load_masks(test, size)
    prog("metrics", 0.05)
    vi, ti = np.array(val_idx, dtype=int), np.array(test_idx, dtype=int)
    whole = metrics.threshold_free(maps, masks)
    prog("metrics", 0.25)
    test_tf = metrics.threshold_free(maps[ti], masks[ti])
    prog("metrics", 0.4)
    val_maps, val_masks = maps[vi], masks[vi]
    thresholds: dict[str, float | dict] = {}
    for name in config.techniques:
        try:
            thresholds[name] = fit_threshold(name, val_maps, val_masks, config.normal_fpr_target)
        except ThresholdError as exc:
            thresholds[name] = {"error": str(exc)}
    prog("metrics", 0.55)
    inference, val_inference = {}, {}
    for name, thr in thresholds.items():
        if isinstance(thr, dict):
            inference[name] = thr
            continue
        inference[name] = metrics.threshold_metrics(maps[ti], masks[ti], thr, labels[ti])
        val_inference[name] = metrics.threshold_metrics(val_maps, val_masks, thr, labels[vi])
    fitted = {k: v for k, v in val_inference.items() if v.get("iou") is not None}
    recommended = max(fitted, key=lambda k: fitted[k]["iou"]) if fitted else None
    prog("metrics", 0.65)
    by_type, by_cat, by_bg = _breakdowns(test, test_idx, maps, masks, labels, thresholds)
    prog("metrics", 1.0)

    # ---- per image + artifacts ------------------------------------------------------------
    scores = metrics.image_scores(maps)
    per_image = []
    art_tech = recommended or ("iou_curve" if not isinstance(thresholds.get("iou_curve", {}), dict) else None)
    art_thr = thresholds[art_tech] if art_tech else None
    curves = {}
    if artifacts_dir is not None:
        from .artifacts import save_curves

        adir = Path(artifacts_dir)
        # colour scale shared by all overlays: validation scores' 1st..99.9th percentile
        lo, hi = (float(v) for v in np.percentile(maps[vi] if len(vi) else maps, [1, 99.9]))
        curves = save_curves(adir / "curves", maps[ti], masks[ti], val_maps, val_masks,
                             {k: v for k, v in thresholds.items() if not isinstance(v, dict)})
    for n, i in enumerate(test_idx):
        s = test[i]
        entry = {
            "key": s.report_key, "defect_type": s.defect_type, "category": s.category,
            "background": s.background, "score": float(scores[i]),
            "iou": {name: (metrics.per_image_iou(maps[i], masks[i], thr) if not isinstance(thr, dict) else None)
                    for name, thr in thresholds.items()},
            "predicted_anomalous": {name: bool(scores[i] >= thr) for name, thr in thresholds.items()
                                    if not isinstance(thr, dict)},
        }
        if artifacts_dir is not None:
            from .artifacts import save_image_artifacts

            thr = art_thr if art_thr is not None else float(np.inf)
            entry["artifacts"] = save_image_artifacts(
                Path(artifacts_dir) / "images", f"{n:04d}", s.image_path, maps[i], thr, lo, hi, size)
            prog("artifacts", (n + 1) / len(test_idx))
        per_image.append(entry)

    total_seconds = time.perf_counter() - t_start
    report = {
        "config": config.to_dict(),
        "device": str(torch.device(config.device) if config.device != "auto"
                      else ("cuda" if torch.cuda.is_available() else "cpu")),
        "model_info": model_info,
        "threshold_free": whole,
        "test_threshold_free": test_tf,
        "thresholds": {k: (v if not isinstance(v, dict) else None) for k, v in thresholds.items()},
        "inference": inference,
        "validation_inference": val_inference,
        "recommended_technique": recommended,
        "recommended_technique_rule": "highest dataset-level IoU on the validation part",
        "artifact_technique": art_tech,
        "by_defect_type": by_type,
        "by_category": by_cat,
        "by_background": by_bg,
        "split": {"val_fraction": config.val_fraction, "seed": config.seed,
                  **split_summary(test, val_idx, test_idx)},
        "per_image": per_image,
        "curves": curves,
        "timing": {
            "fit_seconds": fit_seconds,
            "inference_ms_per_image": 1000.0 * inference_seconds / len(test),
            "total_seconds": total_seconds,
        },
        # process peak RSS (ru_maxrss: since process start, so it includes earlier work of
        # a long-lived worker) + CUDA peak allocated during this run when on GPU
        "peak_memory_mb": peak_rss_mb() + (cuda_peak_mb or 0.0),
        "peak_rss_mb": peak_rss_mb(),
        "cuda_peak_memory_mb": cuda_peak_mb,
        "model_memory_mb": model_memory_mb,
        "n_train": len(train),
        "n_test": len(test),
    }
    prog.finish()
    return _clean(report)
