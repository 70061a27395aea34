"""How long the launch form (/benchmarks/new/) takes on its first visit after the web process starts.

The page asks which backbones have weights on this server; that check once imported the ML
stack (torch, timm) in the web process and the first visit took 12.4 s. This builds the demo in a
throw-away variable folder, starts ``manage.py runserver --noreload`` (a fresh process), logs in
as the demo admin and times the first and the second GET of the page.

Writes ``bench/results/<date>-launch-first-visit.json``.

    .venv/bin/python bench/launch_first_visit.py
"""

from __future__ import annotations

import argparse
import datetime
import http.cookiejar
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="launch-first-visit-") as var:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
        env.update(DEFECTBENCH_VAR_DIR=var, DEFECTBENCH_DEMO_ADMIN_PASSWORD=password)
        manage = [sys.executable, str(REPO / "manage.py")]
        subprocess.run(manage + ["migrate", "--no-input"], env=env, check=True, capture_output=True)
        subprocess.run(manage + ["setup_demo"], env=env, check=True, capture_output=True)
        started = time.perf_counter()
        server = subprocess.Popen(manage + ["runserver", "--noreload", f"127.0.0.1:{args.port}"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{args.port}"
        try:
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            for _ in range(240):
                try:
                    login = opener.open(f"{base}/accounts/login/").read().decode()
                    break
                except OSError:
                    time.sleep(0.25)
            else:
                raise SystemExit("the web server did not answer")
            ready = time.perf_counter() - started
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
            form = urllib.parse.urlencode({"username": "admin", "password": password,
                                           "csrfmiddlewaretoken": token}).encode()
            opener.open(urllib.request.Request(f"{base}/accounts/login/", form,
                                               headers={"Referer": f"{base}/accounts/login/"}))
            visits = []
            for _ in range(2):
                t0 = time.perf_counter()
                page = opener.open(f"{base}/benchmarks/new/")
                body = page.read().decode()
                visits.append(time.perf_counter() - t0)
            if page.url.rstrip("/") != f"{base}/benchmarks/new" or 'id="launch-button"' not in body:
                raise SystemExit(f"not the launch form: {page.url}")
        finally:
            server.terminate()
            server.wait(timeout=10)
    result = {
        "date": datetime.date.today().isoformat(), "python": sys.version.split()[0],
        "server": "manage.py runserver --noreload (fresh process), SQLite, demo dataset",
        "server_ready_seconds": ready, "first_visit_seconds": visits[0], "second_visit_seconds": visits[1],
        "before_the_fix_seconds": 12.4,
    }
    out = args.output or REPO / "bench" / "results" / f"{result['date']}-launch-first-visit.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
