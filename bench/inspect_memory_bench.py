"""Peak memory of a web worker serving one maximal inspect request.

In a temporary folder: a SQLite database with the demo dataset (imported, labelled from its
``labels.csv``), a PaDiM (EfficientNet-Lite0, ``--image-size`` px, 100 features) fitted on its
widget and deployed, then gunicorn (``config/gunicorn.conf.py``, DEBUG off, one worker, one thread).
The worker is warmed up with a one-image request (the model is loaded then, as after a production
worker's first inspection), then gets ONE request of ``--images`` PNGs, each exactly at the
per-image pixel limit (``DEFECTBENCH_MAX_IMAGE_PIXELS``) and of one colour, so that the request is
small on the wire and decodes to the most the limits allow. While it runs, the worker's
``/proc/<pid>/status`` is sampled every few milliseconds (VmRSS, RssAnon) and its VmHWM, reset
through ``/proc/<pid>/clear_refs`` just before, is read after.

Writes ``bench/results/<date>-inspect-memory.json``; the goal is a peak RSS growth under 300 MB.

    .venv/bin/python bench/inspect_memory_bench.py --threads 1
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
GOAL_MB = 300


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images in the measured request")
    parser.add_argument("--image-size", type=int, default=256, help="the model's input size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (fit and web worker)")
    parser.add_argument("--mode", default="RGB", choices=("RGB", "RGBA", "L", "I;16"),
                        help="pixel mode of the PNGs sent")
    parser.add_argument("--timeout", type=int, default=600, help="gunicorn's worker timeout, s")
    parser.add_argument("--note", default="", help="written into the result (e.g. which code was measured)")
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, VmHWM of a process, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def worker_pid(master: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


class Sampler(threading.Thread):
    """Samples a process's VmRSS and RssAnon until stopped; keeps the maxima."""

    def __init__(self, pid: int, interval: float = 0.005):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop_event = threading.Event()
        self.peak = {"VmRSS": 0, "RssAnon": 0}
        self.samples = 0

    def run(self):
        while not self.stop_event.is_set():
            values = status_kb(self.pid)
            for key in self.peak:
                self.peak[key] = max(self.peak[key], values[key])
            self.samples += 1
            time.sleep(self.interval)


def png(width: int, height: int, mode: str) -> bytes:
    from PIL import Image

    colour = {"RGB": (90, 140, 200), "RGBA": (90, 140, 200, 255), "L": 140, "I;16": 36000}[mode]
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_images(port: int, token: str, path: str, files: list[tuple[str, bytes]], timeout: float):
    body, content_type = multipart(files)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    connection.request("POST", path, body=body, headers={
        "Host": "127.0.0.1", "Authorization": f"Token {token}", "Content-Type": content_type})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, payload, time.monotonic() - started, len(body)


def build(image_size: int, threads: int) -> dict:
    """The demo dataset imported and labelled, a PaDiM fitted on widget and deployed; a token."""
    import torch
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from annotator.services import label_csv
    from annotator.services.demo import generate_demo_dataset
    from annotator.services.importing import import_dataset
    from inference.models import Status
    from inference.services import deploy
    from inference.services.execution import execute_product_run
    from inference.services.runs import launch_run

    torch.set_num_threads(threads)
    started = time.monotonic()
    admin = get_user_model().objects.create_user("bench-admin", password=secrets.token_urlsafe(16), role="admin")
    root = generate_demo_dataset(Path(os.environ["DEFECTBENCH_DATA_ROOTS"]) / "demo")
    import_dataset(root, name="demo")
    from annotator.models import Dataset

    dataset = Dataset.objects.get(root=str(root))
    label_csv.import_labels((root / "labels.csv").read_bytes(), dataset=dataset, importer=admin)
    widget = dataset.products.get(name="widget")
    run = launch_run(admin, dataset, [widget], model="padim",
                     config={"image_size": image_size, "n_features": 100, "batch_size": 16}, seed=1)
    part = run.product_runs.get()
    if execute_product_run(part.pk, finalize=True) != Status.SUCCEEDED:
        part.refresh_from_db()
        raise RuntimeError(f"the PaDiM run failed: {part.error}")
    part.refresh_from_db()
    deploy.deploy(part, part.report["selection"]["chosen"], admin)
    warm = next(p for p in (root / "widget" / "test" / "good").glob("*.png"))
    return {"token": Token.objects.create(user=admin).key, "product": widget.pk, "warm_image": warm.read_bytes(),
            "fit_seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="defectbench-inspect-memory-"))
    (work / "data").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "inspect-memory-bench-" + secrets.token_hex(24),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DEFECTBENCH_VAR_DIR": str(work / "var"),
        "DEFECTBENCH_DATA_ROOTS": str(work / "data"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "1",
        "GUNICORN_MAX_REQUESTS": "0",
        "GUNICORN_TIMEOUT": str(args.timeout),
        "OMP_NUM_THREADS": str(args.threads),
    }
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_CACHE_URL"):
        env.pop(name, None)  # SQLite in the temporary folder; nothing shared with other runs
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(REPO))
    server = None
    try:
        subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "--no-input", "-v", "0"],
                       cwd=REPO, env=env, check=True)
        import django

        django.setup()
        from django.conf import settings
        from django.db import connections

        print("fitting and deploying a PaDiM on the demo widget ...", flush=True)
        built = build(args.image_size, args.threads)
        connections.close_all()
        limit = settings.DEFECTBENCH_MAX_IMAGE_PIXELS
        width = math.isqrt(limit * 8 // 5)
        height = limit // width
        picture = png(width, height, args.mode)
        files = [(f"max-{k:02d}.png", picture) for k in range(args.images)]

        gunicorn = Path(sys.executable).with_name("gunicorn")
        server = subprocess.Popen([str(gunicorn), "-c", "config/gunicorn.conf.py", "config.wsgi:application"],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(work / "gunicorn.log", "w"), start_new_session=True)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        pid = worker_pid(server.pid)
        path = f"/api/products/{built['product']}/inspect/"
        warm_status, warm_body, _, _ = post_images(port, built["token"], path, [("warm.png", built["warm_image"])], 120)
        if warm_status != 201:
            raise RuntimeError(f"the warm-up request answered {warm_status}: {warm_body[:500]!r}")
        time.sleep(1.0)
        before = status_kb(pid)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS, so it holds this request's peak
        sampler = Sampler(pid)
        sampler.start()
        load_before = os.getloadavg()
        print(f"one request of {args.images} {args.mode} PNGs of {width}x{height} "
              f"({len(picture):,} bytes each) ...", flush=True)
        status, payload, seconds, wire = post_images(port, built["token"], path, files, args.timeout + 60)
        sampler.stop_event.set()
        sampler.join()
        after = status_kb(pid)
        body = json.loads(payload) if payload.startswith(b"{") else {}
        peak_rss = max(after["VmHWM"], sampler.peak["VmRSS"])
        growth_mb = (peak_rss - before["VmRSS"]) / 1024
        result = {
            "what": "peak memory growth of one gunicorn worker serving one inspect request of images at the "
                    "per-image pixel limit (after a one-image warm-up that loaded the model)",
            "date": dt.date.today().isoformat(),
            "note": args.note,
            "goal": f"peak RSS growth < {GOAL_MB} MB",
            "goal_met": status == 201 and growth_mb < GOAL_MB,
            "request": {
                "images": args.images, "mode": args.mode, "width": width, "height": height,
                "pixels_per_image": width * height, "pixels_total": width * height * args.images,
                "per_image_limit": limit,
                "per_request_limit": getattr(settings, "DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST", None),
                "bytes_per_file": len(picture), "bytes_on_wire": wire, "status": status,
                "seconds": round(seconds, 1), "seconds_per_image": round(seconds / args.images, 2),
                "results": len(body.get("results", [])),
                "detail": body.get("detail", "") if status != 201 else "",
            },
            "worker_mb": {
                "rss_before": round(before["VmRSS"] / 1024, 1),
                "rss_anon_before": round(before["RssAnon"] / 1024, 1),
                "peak_rss_growth": round(growth_mb, 1),
                "peak_rss_anon_growth": round((sampler.peak["RssAnon"] - before["RssAnon"]) / 1024, 1),
                "vmhwm_growth": round((after["VmHWM"] - before["VmRSS"]) / 1024, 1),
                "rss_after": round(after["VmRSS"] / 1024, 1),
                "samples": sampler.samples,
            },
            "model": {"name": "padim", "backbone": "tf_efficientnet_lite0", "image_size": args.image_size,
                      "n_features": 100, "fit_and_setup_seconds": built["fit_seconds"]},
            "server": {"gunicorn": "config/gunicorn.conf.py, DEBUG off, 1 worker x 1 thread",
                       "timeout_s": args.timeout, "omp_threads": args.threads, "database": "SQLite"},
            "machine": {"python": platform.python_version(), "cores": os.cpu_count(),
                        "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in os.getloadavg()],
                        "note": "shared machine; client and server on it"},
        }
        output = args.output or REPO / "bench" / "results" / f"{result['date']}-inspect-memory.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({"request": result["request"], "worker_mb": result["worker_mb"],
                          "goal_met": result["goal_met"]}, indent=2))
        print(f"wrote {output}")
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
