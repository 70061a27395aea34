#!/usr/bin/env python3
"""Fit and inference cost per megapixel, per model and resize mode (issue 18: tiles cost time).

A fixed slice of MVTec AD bottle (the first ``--train`` defect-free training images, the first
``--test`` test images sorted by path, defect-free and anomalous mixed; 900 x 900 px each, so
0.81 MP an image) goes through ``inference.engine.run_benchmark`` once per model and resize mode
the model accepts (position-specific models refuse tiles, see ``registry``): ``squash`` and
``keep_aspect`` at the default 256 px, ``tiles`` of 256 px at native resolution (25 % overlap:
16 tiles an image). Reported per run, from the report's own timing: fit seconds per training
megapixel (native pixels, what a user's images cost), inference milliseconds per test megapixel,
and the model inputs each image became. Epoch-trained models run ``--epochs`` epochs (stated in
the JSON: their fit grows linearly with it). One process, one after the other, ``--threads``
torch threads. Writes ``bench/results/<date>-speed-per-megapixel.json``.

    .venv/bin/python bench/speed_per_megapixel.py --threads 2
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads do not spin

DEFAULT_DATA = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle"
MODES = {"squash": {}, "keep_aspect": {}, "tiles": {"tile_size": 256, "tile_overlap": 0.25, "scale": 1.0}}
EPOCH_MODELS = ("reconstruction", "attribution", "cflow", "fcdd")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--train", type=int, default=20)
    parser.add_argument("--test", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--models", default="")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)

    from annotator.layouts import scan_dataset  # Django-free
    from inference.engine import BenchmarkConfig, registry, run_benchmark, samples_from_scan
    from inference.engine.pixels import upright_size

    scan = scan_dataset(Path(args.data), layout="mvtec")
    train, test = samples_from_scan(scan.images, key=scan.relative)
    train = sorted(train, key=lambda s: s.image_path)[: args.train]
    test = sorted(test, key=lambda s: s.image_path)
    test = [s for s in test if not s.is_anomalous][: args.test // 2] + [s for s in test if s.is_anomalous][: args.test - args.test // 2]

    def megapixels(samples):
        return sum(w * h for w, h in (upright_size(s.image_path) for s in samples)) / 1e6

    train_mp, test_mp = megapixels(train), megapixels(test)
    models = [m for m in (args.models.split(",") if args.models else registry.MODELS)]
    runs = []
    for model in models:
        spec = registry.get(model)
        for mode, extra in MODES.items():
            if mode == "tiles" and spec.position_specific:
                runs.append({"model": model, "resize": mode, "refused": "position-specific: needs one geometry"})
                continue
            settings = dict(model=model, device="cpu", num_threads=args.threads, resize=mode, **extra)
            if model in EPOCH_MODELS:
                settings["epochs"] = args.epochs
            if model == "cflow":
                settings["early_stopping_patience"] = args.epochs
            started = time.perf_counter()
            try:
                report = run_benchmark(train, test, BenchmarkConfig(**settings))
            except Exception as error:  # noqa: BLE001 - a refusal or failure is a result too
                runs.append({"model": model, "resize": mode, "error": f"{type(error).__name__}: {error}"})
                print(f"{model:15s} {mode:12s} error: {error}", flush=True)
                continue
            timing = report["timing"]
            row = {
                "model": model, "resize": mode, "settings": {k: v for k, v in settings.items() if k != "device"},
                "fit_seconds": timing["fit_seconds"],
                "fit_seconds_per_train_megapixel": timing["fit_seconds"] / train_mp,
                "inference_ms_per_image": timing["inference_ms_per_image"],
                "inference_ms_per_megapixel": timing["inference_ms_per_image"] * len(test) / test_mp,
                "evaluation_seconds": timing["evaluation_seconds"],
                "process_seconds": time.perf_counter() - started,
                "pixel_auroc": report["whole_folder"]["pixel_auroc"],
            }
            runs.append(row)
            print(f"{model:15s} {mode:12s} fit {row['fit_seconds_per_train_megapixel']:7.2f} s/MP  "
                  f"inference {row['inference_ms_per_megapixel']:8.1f} ms/MP", flush=True)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%MZ"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "threads": args.threads,
        "loadavg": os.getloadavg(), "data": str(args.data),
        "train_images": len(train), "test_images": len(test), "train_megapixels": train_mp,
        "test_megapixels": test_mp, "epochs_of_epoch_trained_models": args.epochs,
        "note": "pixel AUROC on this small slice only shows the run worked; it is no quality figure",
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dt.date.today().isoformat()}-speed-per-megapixel.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
