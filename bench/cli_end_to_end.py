#!/usr/bin/env python3
"""End to end, as a user runs it: our PaDiM CLI against anomalib 2.7's PaDiM on MVTec AD bottle.

Both sides with their defaults (squash to 256 px, EfficientNet-Lite0 strides 4/8/16, torch's /
the CLI's default threads), each a fresh process timed from start to exit by this driver, one
after the other in one invocation (``--rounds`` alternates them that many times and keeps every
wall time, so a busy moment of the shared CPU shows as spread instead of hiding in one number):

* ours: ``manage.py benchmark --data-root <bottle> --product bottle --model padim`` — the whole
  report (threshold-free metrics with intervals, every threshold technique, cross-fitting,
  decision intervals, breakdowns, synthetic anomalies);
* anomalib: ``bench/run_bench.py``'s anomalib PaDiM worker (``Padim`` with the same Lite0
  weights injected, Lightning ``Engine.fit`` + ``predict``, its own default threads), in the
  bench venv (see bench/README.md).

Metrics: our report's whole-folder figures; anomalib's maps through ``inference/engine/metrics.py``
(what ``run_bench.py`` does). Peak memory: each process's ``ru_maxrss`` and its peak anonymous RSS
(``RssAnon``, sampled every 50 ms from ``/proc/<pid>/status``: mapped library pages depend on the
page cache, anonymous memory is the work). Writes ``bench/results/<date>-cli-end-to-end.json``.

Usage (from the repo root)::

    .venv/bin/python bench/cli_end_to_end.py --anomalib-python /work/bench-venv/bin/python
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle"
METRICS = ("image_auroc", "pixel_auroc", "aupro")


def _rss_anon_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _timed(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; wall seconds, exit code, peak RssAnon (sampled), the tail of its output."""
    peak = [0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def sample():
        while proc.poll() is None:
            value = _rss_anon_kb(proc.pid)
            if value:
                peak[0] = max(peak[0], value)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    return {"wall_seconds": wall, "returncode": proc.returncode, "peak_rss_anon_mb": peak[0] / 1024,
            "output_tail": output[-2000:]}


def run_ours(args, out_json: Path) -> dict:
    cmd = [args.python, "manage.py", "benchmark", "--data-root", str(args.data), "--product", "bottle",
           "--model", "padim", "--output", str(out_json), "--no-progress"]
    result = _timed(cmd, dict(os.environ))
    if result["returncode"] == 0:
        report = json.loads(out_json.read_text())
        result["metrics"] = {k: report["whole_folder"][k] for k in METRICS}
        result["threads"] = report["threads"]
        result["engine_timing"] = report["timing"]
        result["config"] = {k: report["config"].get(k) for k in ("image_size", "resize", "backbone",
                                                                  "eval_max_pixels")}
    result["command"] = " ".join(cmd[1:])
    return result


def run_anomalib(args, out_json: Path) -> dict:
    cmd = [args.anomalib_python, str(REPO / "bench" / "run_bench.py"), "--worker", "anomalib_padim",
           "--worker-out", str(out_json), "--data", str(args.data), "--image-size", "256", "--threads", "0"]
    result = _timed(cmd, dict(os.environ, PYTHONPATH=str(REPO)))
    if result["returncode"] == 0:
        worker = json.loads(out_json.read_text())
        result["metrics"] = {k: worker["threshold_free"][k] for k in METRICS}
        result["fit_seconds"], result["test_seconds"] = worker["fit_seconds"], worker["test_seconds"]
        result["threads"] = "torch default"
    result["command"] = "bench/run_bench.py --worker anomalib_padim --threads 0 (torch's default threads)"
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"), help="our interpreter")
    parser.add_argument("--anomalib-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--rounds", type=int, default=1, help="ours then anomalib, this many times")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)

    load_start = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            ours = run_ours(args, Path(tmp) / f"ours-{index}.json")
            theirs = run_anomalib(args, Path(tmp) / f"anomalib-{index}.json")
            rounds.append({"ours": ours, "anomalib": theirs,
                           "wall_ratio": ours["wall_seconds"] / theirs["wall_seconds"]})
            print(f"round {index + 1}: ours {ours['wall_seconds']:.1f} s, anomalib {theirs['wall_seconds']:.1f} s, "
                  f"ratio {rounds[-1]['wall_ratio']:.2f}", flush=True)
    ok = [r for r in rounds if r["ours"]["returncode"] == 0 and r["anomalib"]["returncode"] == 0]
    summary = {}
    if ok:
        ratios = sorted(r["wall_ratio"] for r in ok)
        summary = {
            "wall_ratio_median": ratios[len(ratios) // 2], "wall_ratios": ratios,
            "metric_differences": {k: ok[-1]["ours"]["metrics"][k] - ok[-1]["anomalib"]["metrics"][k] for k in METRICS},
        }
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%MZ"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "data": str(args.data), "rounds": rounds, "summary": summary,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dt.date.today().isoformat()}-cli-end-to-end.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}: {json.dumps(summary)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
