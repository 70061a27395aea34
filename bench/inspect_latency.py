"""Inspection latency of a deployed PaDiM on the CPU, against the backbone's forward pass alone.

PaDiM (EfficientNet-Lite0, 256 px, 100 features) is fitted on the real bottle's training images
(``--train`` of them: latency does not depend on how many), then, at batch 1 and batch 16, the
median time per image of:

* ``backbone``: the frozen backbone's forward on uint8 images (normalisation included);
* ``maps``: the whole map computation (backbone, embedding, Mahalanobis, upsampling, blur);
* ``inspect``: what a deployed inspector does per image given a decoded image of the original
  size: resize, maps, verdict, defect area and connected components;
* ``onnx``: the exported ONNX graph in onnxruntime (maps and scores).

Writes ``bench/results/<date>-inspect-latency.json``; the goal is ``maps`` <= 1.3x ``backbone``
at batch 1.

    .venv/bin/python bench/inspect_latency.py --data ../shared/data/mvtec_ad/bottle --threads 1
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _interleaved(fns: dict, batch: int, repeats: int) -> dict:
    """Median and minimum ms per image of each function, run in turn within every repeat so that
    the load of a shared machine falls on all of them alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000.0 / batch)
    return {name: (statistics.median(v), min(v)) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train", type=int, default=30, help="training images to fit on")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")

    torch.set_num_threads(args.threads)
    from inference.engine.backbones import Backbone
    from inference.engine.data import load_image
    from inference.engine.onnx_export import export_onnx
    from inference.engine.package import Inspector
    from inference.engine.padim import Padim

    size = args.image_size
    train = sorted((args.data / "train" / "good").glob("*.png"))[: args.train]
    test = sorted((args.data / "test").rglob("*.png"))[:16]
    if not train or len(test) < 16:
        raise SystemExit(f"no bottle images under {args.data}")
    backbone = Backbone("tf_efficientnet_lite0", device="cpu")
    model = Padim(backbone, n_features=100, seed=0, image_size=size)
    batch = torch.from_numpy(np.stack([load_image(str(p), size) for p in train]).transpose(0, 3, 1, 2).copy())
    model.fit([(batch, None)])
    model.keep_unpacked()  # as load_package does for a deployed inspector
    manifest = {"model": {"name": "padim"}, "preprocessing": {"image_size": size},
                "thresholds": {"pixel": {"iou_curve": {"value": 10.0}}, "pixel_technique": "iou_curve",
                               "image": {"value": 12.0}}}
    inspector = Inspector(model, manifest)
    originals = [Image.open(p).convert("RGB") for p in test]  # decoded, original size (900 px)
    resized = np.stack([load_image(str(p), size) for p in test])
    chw = torch.from_numpy(resized.transpose(0, 3, 1, 2).copy())

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(inspector, Path(tmp) / "padim.onnx")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    results = {}
    for b in (1, 16):
        x = chw[:b]
        measured = _interleaved({
            "backbone": lambda: backbone(x),
            "maps": lambda: model.predict(x),
            "inspect": lambda: inspector.inspect(originals[:b], batch_size=b),
            "onnx": lambda: session.run(None, {"images": np.ascontiguousarray(resized[:b].transpose(0, 3, 1, 2))}),
        }, b, args.repeats)
        timings = {name: median for name, (median, _) in measured.items()}
        timings.update({f"{name}_min": low for name, (_, low) in measured.items()})
        for name in ("maps", "inspect", "onnx"):
            timings[f"{name}_over_backbone"] = timings[name] / timings["backbone"]
            timings[f"{name}_over_backbone_min"] = timings[f"{name}_min"] / timings["backbone_min"]
        results[f"batch_{b}"] = {k: round(v, 3) for k, v in timings.items()}
        print(f"batch {b:2d}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[f"batch_{b}"].items()), flush=True)

    out = {
        "what": "ms per image (median of repeats, and _min: the fastest); PaDiM EfficientNet-Lite0 100 features",
        "image_size": size, "threads": args.threads, "repeats": args.repeats, "train_images": len(train),
        "goal": "maps <= 1.3x backbone at batch 1",
        "goal_met": results["batch_1"]["maps_over_backbone_min"] <= 1.3,
        "results": results,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()
                    or platform.machine(), "cores": __import__("os").cpu_count()},
        "date": datetime.date.today().isoformat(),
    }
    output = args.output or REPO / "bench" / "results" / f"{out['date']}-inspect-latency.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
