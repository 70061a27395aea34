"""Shared fixtures. In CI (``CI`` set) the suite refuses to run unless PostgreSQL and Redis answer."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_BOTTLE = REPO_ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"
REAL_KOLEKTOR = REPO_ROOT.parent / "shared" / "data" / "kolektorsdd"
REAL_BSDATA = REPO_ROOT.parent / "shared" / "data" / "bsdata"
REAL_LABELS_CSV = REPO_ROOT.parent / "shared" / "data" / "labels" / "mvtec_bottle_reference.csv"
CHROMIUM = "/usr/bin/chromium"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=3):
            return True
    except OSError:
        return False


def pytest_configure(config):
    if not os.environ.get("CI"):
        return
    database_url = os.environ.get("DATABASE_URL", "")
    broker_url = os.environ.get("CELERY_BROKER_URL", "")
    problems = []
    if not database_url.startswith(("postgres://", "postgresql://")):
        problems.append(f"CI must test against PostgreSQL, but DATABASE_URL is {database_url!r}")
    elif not _reachable(database_url, 5432):
        problems.append(f"PostgreSQL at {database_url} does not answer")
    if not broker_url.startswith("redis://"):
        problems.append(f"CI must test against Redis, but CELERY_BROKER_URL is {broker_url!r}")
    elif not _reachable(broker_url, 6379):
        problems.append(f"Redis at {broker_url} does not answer")
    if problems:
        pytest.exit("Refusing to run the suite in CI: " + "; ".join(problems), returncode=3)


def pytest_report_header(config):
    from django.conf import settings

    db = settings.DATABASES["default"]
    test_name = (db.get("TEST") or {}).get("NAME") or f"test_{db['NAME']}"
    return [
        f"defectbench database: {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('HOST') or 'local file'}"
        f" (test database {test_name})",
        f"defectbench celery broker: {settings.CELERY_BROKER_URL}",
    ]


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path):
    """Uploads and display caches of one test never leak into another."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()


@pytest.fixture(autouse=True)
def _no_heartbeat_thread_in_process(settings):
    """Jobs run in-process share the test's SQLite transaction: no second connection beating.

    (A worker process reads its own settings, so the worker tests still get heartbeats.)
    """
    settings.BENCHMARK_HEARTBEAT_SECONDS = 0


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Cached figures (queue progress) of one test never show in another."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def make_user(db, django_user_model):
    def make(username: str, role: str = "annotator", password: str = "pass-for-tests", **extra):
        user = django_user_model.objects.create_user(
            username=username, password=password, role=role, **extra
        )
        user.raw_password = password
        return user

    return make


@pytest.fixture
def admin_account(make_user):
    return make_user("ada", role="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def reviewer_account(make_user):
    return make_user("rita", role="reviewer")


@pytest.fixture
def annotator_account(make_user):
    return make_user("ann", role="annotator")


def require_real_data(path: Path) -> Path:
    """``path`` under ../shared/data: CI must have it (the test fails); elsewhere it is skipped when absent."""
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI expects the real data at {path}")
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture
def real_bottle_root() -> Path:
    """The real MVTec AD bottle folder."""
    return require_real_data(REAL_BOTTLE)


@pytest.fixture
def real_kolektor_root() -> Path:
    """The KolektorSDD folders as distributed."""
    return require_real_data(REAL_KOLEKTOR)


@pytest.fixture
def real_bsdata_root() -> Path:
    """BSData ball-screw images with their LabelMe polygons, as published."""
    return require_real_data(REAL_BSDATA)


@pytest.fixture
def real_labels_csv() -> Path:
    if not REAL_LABELS_CSV.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI expects the reference labels at {REAL_LABELS_CSV}")
        pytest.skip(f"reference labels not found at {REAL_LABELS_CSV}")
    return REAL_LABELS_CSV


def _database_url_of_test_db() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class CeleryProcess:
    """A started ``celery worker`` process: ``.process``, ``.log_path``, ``.queue``, ``.stop(sig)``."""

    def __init__(self, process: subprocess.Popen, log_path: Path, queue: str):
        self.process, self.log_path, self.queue = process, log_path, queue

    def stop(self, sig=15):
        process = self.process
        if process.poll() is None:
            if sig == 9:
                os.killpg(process.pid, 9)
            else:
                # Warm shutdown: the signal to the main process only, which stops its pool children
                # itself. (TERM to the whole group killed the children under it and left the main
                # process waiting for them until the 20 s timeout below.)
                process.send_signal(sig)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
        # Pool children outlive a main process that died alone (killed, crashed): end them too.
        try:
            os.killpg(process.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass

    def wait_until_ready(self, timeout: float = 90) -> None:
        """Until the worker answers a ping, so tests time their own work, not start-up."""
        from config.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"Celery worker exited early:\n{log}")
            if app.control.ping(destination=[f"{self.queue}@{socket.gethostname()}"], timeout=1.0):
                return
        raise RuntimeError(f"Celery worker did not answer within {timeout} s")


def start_celery_process(settings, log_path: Path, queue: str, env: dict | None = None,
                         args: tuple = ()) -> CeleryProcess:
    """A real ``celery worker`` process on the configured broker, reading the test database and
    consuming only ``queue`` (which is also its default queue: chord callbacks and the tasks its
    embedded beat sends go there). Not waited for: see ``CeleryProcess.wait_until_ready``."""
    full_env = dict(os.environ)
    full_env["DATABASE_URL"] = _database_url_of_test_db()
    full_env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    full_env["CELERY_RESULT_BACKEND"] = settings.CELERY_RESULT_BACKEND
    full_env["DEFECTBENCH_MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    full_env["CELERY_TASK_ALWAYS_EAGER"] = "0"
    full_env["CELERY_TASK_DEFAULT_QUEUE"] = queue
    full_env.update(env or {})
    command = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO",
        "--concurrency=1", "--pool=prefork", "-Q", queue, f"--hostname={queue}@%h",
        f"--logfile={log_path}", *args,
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=full_env, start_new_session=True)
    return CeleryProcess(process, log_path, queue)


def new_test_queue(name: str = "test") -> str:
    """A queue of its own per test so stale messages from other runs can never reach its worker."""
    return f"{name}-{os.getpid()}-{time.monotonic_ns()}"


@pytest.fixture
def celery_worker_process(transactional_db, settings, tmp_path):
    """A real ``celery worker`` process on the configured broker, reading the test database.

    Yields a handle with ``.process`` and ``.stop()``; the worker is killed at teardown.
    """
    queue = new_test_queue()
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    from config.celery import app

    previous_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    handle = start_celery_process(settings, tmp_path / "worker.log", queue)
    started = False
    try:
        handle.wait_until_ready()
        started = True
        yield handle
    finally:
        # Also when start-up failed: no orphan worker left behind, and later tests send to the
        # queue that was the default before (not a hard-coded "celery", not this dead queue).
        handle.stop() if started else handle.stop(9)
        app.conf.task_default_queue = previous_queue


# Reports every Content-Security-Policy violation of a page to the test (run before the page's own
# scripts on every document; init scripts are not subject to the page's CSP).
_REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__defectbenchCspViolation({
    directive: event.effectiveDirective || event.violatedDirective,
    blocked: event.blockedURI, source: event.sourceFile, line: event.lineNumber,
    sample: event.sample, page: document.location.href,
  });
});
"""


def _watch_csp_violations(page) -> list:
    """Violations the page reports (securitypolicyviolation events and Chromium's console errors)."""
    violations = []
    page.expose_function("__defectbenchCspViolation", lambda violation: violations.append(violation))
    page.add_init_script(_REPORT_CSP_VIOLATIONS)
    page.on("console", lambda message: violations.append({"console": message.text, "page": page.url})
            if "Content Security Policy" in message.text else None)
    return violations


@pytest.fixture
def browser_page(live_server):
    """A Playwright page in Debian's chromium (never a downloaded browser).

    The test fails when a page it visits breaks the Content-Security-Policy: every page of the app
    must work with scripts and styles from its own static files only. (So ``wait_for_function``
    takes a function, ``"() => ..."``: Playwright runs a bare expression through eval, which the
    policy refuses.)
    """
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI expects Debian's chromium at {CHROMIUM}")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between page actions are still synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(20_000)
        csp_violations = _watch_csp_violations(page)
        yield page
        browser.close()
        # ORM calls the test made while Playwright's loop was set up opened connections of their
        # own context; close them here or PostgreSQL refuses to drop the test database at the end.
        from django.db import connections

        connections.close_all()
    if csp_violations:
        pytest.fail(f"Content-Security-Policy violations: {csp_violations}")


@pytest.fixture
def test_output_dir(request) -> Path:
    """Where a test leaves what a person may want to look at (screenshots): test-output/<test>."""
    path = REPO_ROOT / "test-output" / request.node.name.replace("/", "_")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def login_as(live_server):
    """``login_as(page, user)`` logs ``user`` in through the real login form."""

    def login(page, user):
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", user.raw_password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/accounts/login/" not in url)

    return login


@pytest.fixture(scope="session")
def demo_dataset_dir(tmp_path_factory) -> Path:
    """The synthetic demo dataset (MVTec layout: widget + fabric), generated once per session.

    Read-only by convention: tests that change files must generate their own copy.
    """
    from annotator.services.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo-data") / "demo")


@pytest.fixture
def demo_dataset(db, settings, demo_dataset_dir):
    """The demo dataset imported into the test database (its folder added to the data roots)."""
    from annotator.services.importing import import_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, demo_dataset_dir.parent]
    return import_dataset(demo_dataset_dir).dataset
