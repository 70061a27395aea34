"""Load benchmark of the labelling workflow at scale (not a test: run it by hand, once).

It builds a 100 000-image dataset in its own PostgreSQL database, with 100 000 labels already
given (50 000 images labelled twice, some disagreeing, so the reviewer pages have real work),
starts gunicorn on 127.0.0.1 with DEBUG off and a Celery worker with beat (it renews the
reviewer statistics snapshot every 15 s), then for ``--seconds`` runs

* 8 annotators, each a loop of ``POST /api/queue/next/`` then ``POST /api/labels/`` (token auth),
* 2 reviewers, each a loop over the dashboard, ``/api/agreement/``, ``/review/`` and
  ``/api/review/`` (session login, as in a browser),

every loop stopping by itself at the deadline. Afterwards it checks the database: every label
the API answered 201 for is stored (lost), no (image, annotator) twice (duplicates), no image
with more labels than its overlap (over-assigned), no annotator holding several claims.
Writes ``bench/results/load-<date>.json`` and drops the database unless ``--keep``.

    .venv/bin/python bench/load_bench.py --seconds 60
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "load-bench-password"
CATEGORIES = ["structural", "surface", "contamination", "combined"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=10)
    parser.add_argument("--prelabelled", type=int, default=50_000, help="images labelled twice before the load")
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--reviewers", type=int, default=2)
    parser.add_argument("--think", type=float, default=0.5,
                        help="seconds an annotator looks at an image before submitting (a person needs several)")
    parser.add_argument("--review-think", type=float, default=1.0, help="seconds a reviewer reads a page")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--database", default="loadbench")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--cache", default="redis://127.0.0.1:6379/5",
                        help="DJANGO_CACHE_URL the web processes share (emptied first); '' for per-process memory")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin_sql(pg: str, sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(f"{pg}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


# --- building the data ---------------------------------------------------------------------
def build(args, data_root: Path) -> dict:
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from annotator.models import Dataset, Image, Label, LabelHistory, Product, User, rebuild_annotator_progress

    rng = random.Random(13)
    started = time.monotonic()
    dataset = Dataset.objects.create(name="load", layout="folder", root=str(data_root), label_overlap=2)
    annotators = [User.objects.create_user(f"annotator{i}", password=PASSWORD, role="annotator")
                  for i in range(args.annotators)]
    reviewers = [User.objects.create_user(f"reviewer{i}", password=PASSWORD, role="reviewer")
                 for i in range(args.reviewers)]
    per_product = args.images // args.products
    images = []
    for p in range(args.products):
        product = Product.objects.create(dataset=dataset, name=f"product{p:02d}", kind="object")
        for i in range(5):
            images.append(Image(product=product, split="train", is_anomalous=False, defect_type="good",
                                path=f"product{p:02d}/train/good/{i:06d}.png", width=256, height=256, checksum="0" * 64))
        for i in range(per_product):
            defect = ("crack", "scratch", "stain", "hole")[i % 4]
            images.append(Image(product=product, split="test", is_anomalous=True, defect_type=defect,
                                path=f"product{p:02d}/test/{defect}/{i:06d}.png",
                                mask_path=f"product{p:02d}/ground_truth/{defect}/{i:06d}_mask.png",
                                width=256, height=256, checksum="0" * 64))
    with transaction.atomic():
        Image.objects.bulk_create(images, batch_size=5000)
    anomalous = list(Image.objects.filter(product__dataset=dataset, is_anomalous=True).order_by("?")
                     .values_list("pk", flat=True)[: args.prelabelled])
    labels, history, disagreeing = [], [], []
    now = dt.datetime.now(dt.timezone.utc)
    for n, image_id in enumerate(anomalous):
        first, second = rng.sample(annotators, 2)
        value = (rng.random() < 0.7, rng.choice(CATEGORIES))
        other = value if rng.random() < 0.85 else (value[0], rng.choice(CATEGORIES))
        if other != value:
            disagreeing.append(image_id)
        for user, (background, category) in ((first, value), (second, other)):
            labels.append(Label(image_id=image_id, annotator=user, background=background, category=category))
            history.append(LabelHistory(image_id=image_id, annotator=user, changed_by=user, action="created",
                                        after={"background": background, "category": category}, source="api"))
    with transaction.atomic():
        Label.objects.bulk_create(labels, batch_size=5000)
        LabelHistory.objects.bulk_create(history, batch_size=5000)
        for start in range(0, len(anomalous), 5000):
            Image.objects.filter(pk__in=anomalous[start:start + 5000]).update(label_count=2, needs_labels=False)
        for start in range(0, len(disagreeing), 5000):
            Image.objects.filter(pk__in=disagreeing[start:start + 5000]).update(disagrees=True)
    LabelHistory.objects.update(changed_at=now)
    rebuild_annotator_progress(dataset)  # the counters save_label keeps, for the bulk-created labels
    tokens = {user.username: Token.objects.create(user=user).key for user in annotators}
    with __import__("django.db", fromlist=["connection"]).connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "dataset": dataset.pk, "tokens": tokens, "reviewers": [u.username for u in reviewers],
        "warm_image": Image.objects.filter(product__dataset=dataset, is_anomalous=True).order_by("pk")
        .values_list("pk", flat=True).first(),
        "images": Image.objects.filter(product__dataset=dataset, is_anomalous=True).count(),
        "labels_before": Label.objects.count(), "disagreements": len(disagreeing),
        "build_seconds": round(time.monotonic() - started, 1),
    }


# --- HTTP clients ----------------------------------------------------------------------------
class Client:
    def __init__(self, port: int, token: str | None = None):
        self.port, self.token, self.cookies = port, token, {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: dict | str | None = None, form: bool = False):
        headers = {"Host": "127.0.0.1"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            if form:
                data = urlencode(body)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                headers["Referer"] = f"http://127.0.0.1:{self.port}/accounts/login/"
            else:
                data = json.dumps(body)
                headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.connection.request(method, path, body=data, headers=headers)
                response = self.connection.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return response.status, payload

    def login(self, username: str) -> None:
        self.request("GET", "/accounts/login/")
        status, _ = self.request("POST", "/accounts/login/", {
            "username": username, "password": PASSWORD, "csrfmiddlewaretoken": self.cookies.get("csrftoken", ""),
        }, form=True)
        if status != 302:
            raise RuntimeError(f"login of {username} answered {status}")


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.statuses: dict[str, dict[int, int]] = {}
        self.submitted: list[tuple[str, int]] = []

    def add(self, name: str, seconds: float, status: int) -> None:
        with self.lock:
            self.latencies.setdefault(name, []).append(seconds)
            counts = self.statuses.setdefault(name, {})
            counts[status] = counts.get(status, 0) + 1


def timed(recorder: Recorder, name: str, call):
    started = time.perf_counter()
    status, payload = call()
    recorder.add(name, time.perf_counter() - started, status)
    return status, payload


def annotator_loop(port, username, token, dataset, deadline, recorder, errors, think):
    rng = random.Random(username)
    client = Client(port, token)
    # People do not all ask for their first image in the same millisecond: each starts within
    # one think time (otherwise the first round measures 8 simultaneous requests, not the load).
    time.sleep(think * rng.uniform(0, 1))
    try:
        while time.monotonic() < deadline:
            status, payload = timed(recorder, "next_image", lambda: client.request(
                "POST", "/api/queue/next/", {"dataset": dataset}))
            if status == 204:
                break
            if status != 200:
                errors.append(f"{username} next {status} {payload[:200]!r}")
                continue
            image = json.loads(payload)["image"]["id"]
            time.sleep(think * rng.uniform(0.5, 1.5))
            status, payload = timed(recorder, "label_submit", lambda: client.request(
                "POST", "/api/labels/",
                {"image": image, "background": rng.random() < 0.7, "category": rng.choice(CATEGORIES)}))
            if status == 201:
                with recorder.lock:
                    recorder.submitted.append((username, image))
            else:
                errors.append(f"{username} label {status} {payload[:200]!r}")
    except Exception as error:  # noqa: BLE001 - reported in the results
        errors.append(f"{username}: {error!r}")


def reviewer_loop(client, username, dataset, deadline, recorder, errors, think):
    pages = [
        ("dashboard", f"/datasets/{dataset}/dashboard/"),
        ("agreement_api", f"/api/agreement/?dataset={dataset}"),
        ("review_page", f"/review/?dataset={dataset}"),
        ("review_api", f"/api/review/?dataset={dataset}"),
    ]
    try:
        index = 0
        while time.monotonic() < deadline:
            name, path = pages[index % len(pages)]
            index += 1
            status, payload = timed(recorder, name, lambda: client.request("GET", path))
            if status != 200:
                errors.append(f"{username} {name} {status} {payload[:200]!r}")
            time.sleep(think)
    except Exception as error:  # noqa: BLE001
        errors.append(f"{username}: {error!r}")


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q):
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(values), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(1000 * ordered[-1], 1), "mean_ms": round(1000 * statistics.mean(values), 1)}


def check_database(recorder: Recorder, dataset_id: int, overlap: int) -> dict:
    from django.db.models import Count

    from annotator.models import Claim, Label

    stored = set(Label.objects.filter(image__product__dataset_id=dataset_id)
                 .values_list("annotator__username", "image_id"))
    submitted = recorder.submitted
    per_image = Label.objects.filter(image__product__dataset_id=dataset_id).values("image_id").annotate(n=Count("id"))
    return {
        "labels_submitted": len(submitted),
        "labels_lost": sum(1 for pair in set(submitted) if pair not in stored),
        "duplicate_submissions": len(submitted) - len(set(submitted)),
        "duplicate_labels_in_db": Label.objects.values("image_id", "annotator_id").annotate(n=Count("id"))
        .filter(n__gt=1).count(),
        "over_assigned_images": per_image.filter(n__gt=overlap).count(),
        "annotators_with_several_claims": Claim.objects.values("annotator_id").annotate(n=Count("id"))
        .filter(n__gt=1).count(),
        "labels_after": Label.objects.count(),
    }


def main():
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="defectbench-load-"))
    data_root = work / "data"
    data_root.mkdir()
    port = args.port or free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"{args.pg}/{args.database}",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "load-bench-" + "k" * 40 + str(random.random()),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_DB_CONN_MAX_AGE": "60",
        "DJANGO_CACHE_URL": args.cache,
        "DEFECTBENCH_VAR_DIR": str(work / "var"),
        "DEFECTBENCH_DATA_ROOTS": str(data_root),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(args.workers),
        "GUNICORN_THREADS": str(args.threads),
        "GUNICORN_MAX_REQUESTS": "0",
    }
    env.pop("CELERY_BROKER_URL", None)
    if not args.cache:
        env.pop("DJANGO_CACHE_URL")
    else:  # a fresh database reuses ids: cached figures of an earlier run must not survive
        import redis

        redis.Redis.from_url(args.cache).flushdb()
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(REPO))
    admin_sql(args.pg, f'DROP DATABASE IF EXISTS "{args.database}"')
    admin_sql(args.pg, f'CREATE DATABASE "{args.database}"')
    server = beat = None
    try:
        manage = [sys.executable, str(REPO / "manage.py")]
        subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], cwd=REPO, env=env, check=True)
        subprocess.run([*manage, "collectstatic", "--no-input", "-v", "0"], cwd=REPO, env=env, check=True)
        import django

        django.setup()
        print("building the dataset ...", flush=True)
        built = build(args, data_root)
        print(f"built in {built['build_seconds']} s: {built['images']} images, {built['labels_before']} labels", flush=True)
        from django.db import connections

        connections.close_all()
        # The first statistics snapshot (what beat's first tick does); beat renews it during the load.
        from annotator.services import statistics

        statistics.refresh()
        connections.close_all()
        celery = Path(sys.executable).with_name("celery")
        beat = subprocess.Popen([str(celery), "-A", "config", "worker", "--beat", "--concurrency=1",
                                 "--loglevel=WARNING", f"--logfile={work / 'worker.log'}"],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        gunicorn = Path(sys.executable).with_name("gunicorn")
        server = subprocess.Popen([str(gunicorn), "-c", "config/gunicorn.conf.py", "config.wsgi:application"],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "gunicorn.log", "w"),
                                  start_new_session=True)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        # Warm every worker up (imports, URL and serializer set-up, first queries) before measuring:
        # each request on a new connection, so that the workers share them. The workspace of an
        # image runs the same code as a hand-out, without claiming anything.
        token = next(iter(built["tokens"].values()))
        warm_image = built["warm_image"]
        for _ in range(args.workers * args.threads * 2):
            warm = Client(port, token)
            warm.request("GET", f"/api/images/{warm_image}/workspace/")
            warm.connection.close()
        # Reviewers log in before the clock starts (a password hash costs about a second of CPU,
        # once a day, and is not what this measures).
        reviewer_clients = {}
        for name in built["reviewers"]:
            reviewer_clients[name] = Client(port)
            reviewer_clients[name].login(name)
        recorder, errors = Recorder(), []
        deadline = time.monotonic() + args.seconds
        threads = [threading.Thread(target=annotator_loop, args=(port, name, token, built["dataset"], deadline,
                                                                 recorder, errors, args.think))
                   for name, token in built["tokens"].items()]
        threads += [threading.Thread(target=reviewer_loop, args=(client, name, built["dataset"], deadline, recorder,
                                                             errors, args.review_think))
                    for name, client in reviewer_clients.items()]
        load_before = os.getloadavg()
        started = time.monotonic()
        print(f"load: {args.annotators} annotators, {args.reviewers} reviewers for {args.seconds:.0f} s", flush=True)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.seconds + 120)
        elapsed = time.monotonic() - started
        checks = check_database(recorder, built["dataset"], overlap=2)
        result = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "note": "shared 2-core machine; client and server on it",
                        "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in os.getloadavg()]},
            "setup": {k: v for k, v in vars(args).items() if k not in ("output", "pg")} | {
                "images": built["images"], "labels_before": built["labels_before"],
                "disagreements_before": built["disagreements"], "build_seconds": built["build_seconds"]},
            "elapsed_seconds": round(elapsed, 1),
            "latency": {name: percentiles(values) for name, values in sorted(recorder.latencies.items())},
            "throughput_per_second": {name: round(len(values) / elapsed, 1)
                                      for name, values in sorted(recorder.latencies.items())},
            "statuses": recorder.statuses,
            "database_checks": checks,
            "errors": errors[:50],
            "error_count": len(errors),
        }
        output = args.output or REPO / "bench" / "results" / f"load-{dt.date.today().isoformat()}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({"latency": result["latency"], "throughput_per_second": result["throughput_per_second"],
                          "database_checks": checks, "error_count": len(errors)}, indent=2))
        print(f"written {output}")
    finally:
        for process in (server, beat):
            if process is None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001
            pass
        if not args.keep:
            admin_sql(args.pg, f'DROP DATABASE IF EXISTS "{args.database}"')
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
