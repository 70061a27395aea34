"""What the decision intervals (thresholds refitted on redrawn validation images) cost on real bottle.

PaDiM at 256 px (squash), one thread, seed 0: the model is fitted and the 83 test-folder images
mapped once; then, on those maps and the run's own split, this times

* ``fixed_intervals``: every technique fitted once on the validation part and its test metrics
  bootstrapped with the threshold held fixed (what the report had before);
* ``decision_intervals``: :func:`decision_intervals.decision_estimates`, the same 1000 resamples
  with the validation part redrawn and every technique refitted in each;

each the best of ``--repeats``. Writes ``bench/results/<date>-decision-interval-cost.json``.

    .venv/bin/python bench/decision_interval_cost.py --data ../shared/data/mvtec_ad/bottle
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from annotator.layouts import scan_dataset
    from inference.engine import decision_intervals, evaluation, registry
    from inference.engine.backbones import Backbone
    from inference.engine.data import load_masks, make_loader
    from inference.engine.split import split_validation_test
    from inference.engine.thresholds import ThresholdError
    from inference.engine.types import BenchmarkConfig, samples_from_scan

    scan = scan_dataset(args.data, layout="mvtec")
    train, test = samples_from_scan(scan.images, key=scan.relative)
    config = BenchmarkConfig(model="padim", image_size=256, device="cpu", num_threads=args.threads)
    backbone = Backbone(config.backbone, layers=registry.backbone_layers(config), weights="pretrained", device="cpu")
    model = registry.build(config, backbone)
    t0 = time.perf_counter()
    model.fit(make_loader(train, config.image_size, config.batch_size))
    maps = np.concatenate([model.anomaly_maps(x)[0] for x, _ in make_loader(test, config.image_size, 16)])
    fit_and_map = time.perf_counter() - t0
    masks = load_masks(test, config.image_size)
    labels = np.array([s.is_anomalous for s in test])
    val_idx, test_idx = split_validation_test(test, config.val_fraction, config.seed)
    vi, ti = np.array(val_idx), np.array(test_idx)
    val = evaluation.ValidationData(maps[vi], masks[vi], labels[vi])
    techniques = [t for t in config.techniques if t != "synthetic"]  # its maps need a second pass
    fitted = {}
    for name in techniques:
        try:
            fitted[name] = val.fit(name, np.arange(len(vi)), config.normal_fpr_target)
        except ThresholdError:
            pass
    resampler = evaluation.Resampler(labels[ti], config.seed)

    def fixed():
        out = {}
        for name, t in fitted.items():
            c = evaluation.PixelCounts.at(maps[ti], masks[ti], t)
            out[name] = evaluation.segmentation_estimates(c, labels[ti], resampler).iou
        return out

    def refitted(point):
        return decision_intervals.decision_estimates(val, fitted, maps[ti], masks[ti], resampler.weights,
                                                     point, config.normal_fpr_target, config.seed)

    def best_of(fn, *a):
        times, result = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = fn(*a)
            times.append(time.perf_counter() - t0)
        return min(times), result

    fixed_s, fixed_iou = best_of(fixed)
    decision_s, decision = best_of(refitted, {k: v.value for k, v in fixed_iou.items()})
    result = {
        "date": datetime.date.today().isoformat(), "data": str(args.data), "model": "padim", "image_size": 256,
        "backbone": config.backbone, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "n_validation": len(vi), "n_test_part": len(ti),
        "resamples": evaluation.RESAMPLES, "techniques": sorted(fitted),
        "seconds": {"fit_and_map": fit_and_map, "fixed_intervals": fixed_s, "decision_intervals": decision_s},
        "decision_share_of_fit_and_map": decision_s / fit_and_map,
        "iou": {name: {"value": fixed_iou[name].value,
                       "fixed": [fixed_iou[name].low, fixed_iou[name].high],
                       "refitted": [decision[name].iou.low, decision[name].iou.high]} for name in sorted(fitted)},
    }
    out = args.output or REPO / "bench" / "results" / f"{result['date']}-decision-interval-cost.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
