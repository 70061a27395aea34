"""What the decision protocol costs on top of a run: PaDiM on real bottle at 256 px, one thread.

Times, in one process on the same maps, the parts of a run:

* ``fit_and_map``: fitting PaDiM and mapping the 83 test-folder images (what the peer bench
  compares with anomalib);
* ``metrics_before``: what a run computed before the decision protocol (threshold-free metrics
  on the whole folder and the test part, every technique fitted on the validation part and
  measured on the test part, the breakdowns);
* ``decision_protocol``: what it adds: bootstrap intervals, cross-fitted technique choice,
  the few-shot study, the image decision, and mapping the synthetic anomalies of the ``synthetic``
  technique.

Writes ``bench/results/<date>-decision-overhead.json``.

    .venv/bin/python bench/decision_overhead.py --data ../shared/data/mvtec_ad/bottle
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
    parser.add_argument("--repeats", type=int, default=3, help="time the evaluation parts this many times (min kept)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from annotator.layouts import scan_dataset
    from inference.engine import evaluation, metrics, runner, synthetic
    from inference.engine.backbones import Backbone
    from inference.engine.common import peak_rss_mb
    from inference.engine.data import load_canvas_masks, load_image
    from inference.engine.geometry import area_resample_mask, resize_map
    from inference.engine.split import split_validation_test
    from inference.engine.types import BenchmarkConfig, samples_from_scan

    scan = scan_dataset(args.data, layout="mvtec")
    train, test = samples_from_scan(scan.images, key=scan.relative)
    config = BenchmarkConfig(model="padim", image_size=256, device="cpu", num_threads=args.threads)
    labels = np.array([s.is_anomalous for s in test])
    val_idx, test_idx = split_validation_test(test, config.val_fraction, config.seed)
    vi, ti = np.array(val_idx), np.array(test_idx)
    backbone = Backbone(config.backbone, layers=config.layers, weights="pretrained", device="cpu")
    model = runner.build_model(config, backbone)
    progress = runner._Progress(None, None, runner._STAGES)
    geo = runner._geometry(train, test, config)  # the evaluation canvas, as a run makes it
    canvas = geo["canvas"]

    t0 = time.perf_counter()
    mapped = runner._fit_and_map(model, train, test, val_idx, labels, None, config, progress, (0.0, 1.0), geo)
    fit_and_map = time.perf_counter() - t0
    maps = mapped["maps"]
    good = [i for i in range(len(test)) if not labels[i]]
    t0 = time.perf_counter()
    base = np.stack([load_image(test[i].image_path, config.image_size) for i in good])
    syn_images, syn_masks, source, _ = synthetic.synthetic_defects(base, config.seed, runner.SYNTHETIC_PER_IMAGE)
    syn_maps = np.concatenate([model.predict(torch.from_numpy(np.ascontiguousarray(
        syn_images[k:k + 16].transpose(0, 3, 1, 2)))) for k in range(0, len(syn_images), 16)])
    syn_maps = np.stack([resize_map(m, canvas) for m in syn_maps])  # onto the canvas, as the runner does
    syn_masks = np.stack([area_resample_mask(m, canvas) for m in syn_masks])
    synthetic_mapping = time.perf_counter() - t0
    masks = load_canvas_masks(test, canvas)

    def before():
        metrics.threshold_free(maps, masks)
        metrics.threshold_free(maps[ti], masks[ti])
        val = evaluation.ValidationData(maps[vi], masks[vi], labels[vi])
        _, _, counts, _ = runner._technique_results(val, maps, masks, labels, ti, config, None)
        runner._breakdowns(test, val_idx, test_idx, maps, masks, labels, counts)

    def protocol():
        pos = {int(i): n for n, i in enumerate(vi)}
        keep = np.array([int(s) in pos for s in np.array(good)[source]])
        val = evaluation.ValidationData(maps[vi], masks[vi], labels[vi], syn_maps[keep], syn_masks[keep],
                                        np.array([pos[int(s)] for s in np.array(good)[source][keep]]))
        resampler = evaluation.Resampler(labels[ti], config.seed)
        evaluation.threshold_free_estimates(maps[ti], masks[ti], labels[ti], resampler)
        for name in config.techniques:
            try:
                t = val.fit(name, np.arange(len(vi)), config.normal_fpr_target)
            except Exception:
                continue
            evaluation.segmentation_estimates(evaluation.PixelCounts.at(maps[ti], masks[ti], t), labels[ti], resampler)
        scores = metrics.image_scores(maps)
        t = evaluation.fit_image_threshold(scores[vi], labels[vi])
        evaluation.image_estimates(scores[ti], labels[ti], t, resampler)
        evaluation.cross_fitted_selection(val, [test[i].report_key for i in vi], config.techniques,
                                          config.normal_fpr_target, config.seed)
        evaluation.few_shot_study(val, maps[ti], masks[ti], config.techniques, config.normal_fpr_target, config.seed)

    def best_of(fn):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    metrics_before = best_of(before)
    decision = best_of(protocol) + synthetic_mapping
    run_before = fit_and_map + metrics_before
    result = {
        "date": datetime.date.today().isoformat(),
        "data": str(args.data), "model": "padim", "image_size": 256, "backbone": config.backbone,
        "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "n_train": len(train), "n_test": len(test),
        "seconds": {"fit_and_map": fit_and_map, "metrics_before": metrics_before,
                    "synthetic_mapping": synthetic_mapping, "decision_protocol": decision},
        "decision_protocol_share_of_run": decision / run_before,
        "peak_rss_mb": peak_rss_mb(),
        "note": "decision_protocol = bootstrap intervals + cross-fitting + few-shot study + image decision + "
                "synthetic anomalies (mapping included); share relative to fit_and_map + metrics_before",
    }
    out = args.output or REPO / "bench" / "results" / f"{result['date']}-decision-overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
