"""Django settings for DefectBench.

Everything that differs between a laptop, CI and production comes from the environment.
Without any variable set the app runs on embedded defaults: SQLite and Celery's filesystem
broker under ``var/``, so ``make run`` needs no database or broker server.
"""
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DEFECTBENCH_VAR_DIR", BASE_DIR / "var")).resolve()


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str], separator: str = ",") -> list[str]:
    """A list from the environment: comma-separated (hosts, origins); folders use os.pathsep."""
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(separator) if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"{name} must be an integer, not {value!r}.") from None


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "dev-only-insecure-key-never-use-in-production"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS (production behind TLS; see the README's production section) --------------------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    # The proxy terminates TLS and says so in X-Forwarded-Proto (set it there, strip it from clients).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "annotator",
    "api",
    "inference",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response (the policy: CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs login unless a view is explicitly marked @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if not DEBUG:
    # Production serves collected static files itself; in development runserver does.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Content-Security-Policy (django-csp) ---------------------------------------------------
# Scripts and styles come only from this site's own static files: no inline <script>, no
# on...= handlers, no style= attributes, no eval. Markup that slips into a page through data (a
# dataset folder named "<img src=x onerror=...>") then cannot run. Pages set styles from script
# (element.style), which CSP allows. Third-party pages comply too: the admin as it is, Swagger
# through drf-spectacular's split view (api/urls.py), the browsable API without its inline
# <style> (api/renderers.py). No page needs an exception.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

# --- Database -----------------------------------------------------------------------------
# DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test) selects PostgreSQL; without it
# an SQLite file under var/. The SQLite test database is a file too (not :memory:) so that a
# real Celery worker process started by a test can open the same database.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        # Persistent connections save a PostgreSQL connect per request (production: e.g. 60).
        conn_max_age=env_int("DJANGO_DB_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
    # Web server and worker write to the same file: wait for locks instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache --------------------------------------------------------------------------------
# Queue progress figures are cached for a few seconds and adjusted in place when a label
# completes an image. With several web processes they must share one cache (DJANGO_CACHE_URL,
# e.g. redis://127.0.0.1:6379/1); without it each process keeps its own in memory.
if os.environ.get("DJANGO_CACHE_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": os.environ["DJANGO_CACHE_URL"]}}

AUTH_USER_MODEL = "annotator.User"
# Every password set through a form (admin's add-user and password pages) must pass all four.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in ("UserAttributeSimilarityValidator", "MinimumLengthValidator",
                 "CommonPasswordValidator", "NumericPasswordValidator")
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Logins and API tokens ---------------------------------------------------------------
# django-axes counts failed logins (login page, admin login, POST /api/auth/token/) per client
# address in the database, so all web processes share one count. A client with
# DEFECTBENCH_LOGIN_FAILURE_LIMIT failures, none more than DEFECTBENCH_LOGIN_LOCKOUT_SECONDS after
# the one before, is refused for that many seconds after the last of them. Its backend
# (LockoutBackend) comes first and refuses before any password is hashed, so guessing cannot tie
# up the web processes. The address is locked, not the account: nobody can lock a person out from
# elsewhere, and rotating usernames gains a guesser nothing (an IPv6 client counts as its /64).
# Behind the TLS proxy (DJANGO_BEHIND_TLS_PROXY) the address is the one the proxy appended to
# X-Forwarded-For (annotator/lockout.py).
DEFECTBENCH_LOGIN_FAILURE_LIMIT = env_int("DEFECTBENCH_LOGIN_FAILURE_LIMIT", 10)
DEFECTBENCH_LOGIN_LOCKOUT_SECONDS = env_int("DEFECTBENCH_LOGIN_LOCKOUT_SECONDS", 60)
if DEFECTBENCH_LOGIN_FAILURE_LIMIT < 1 or DEFECTBENCH_LOGIN_LOCKOUT_SECONDS < 1:
    raise RuntimeError("DEFECTBENCH_LOGIN_FAILURE_LIMIT and DEFECTBENCH_LOGIN_LOCKOUT_SECONDS "
                       "must be at least 1.")
INSTALLED_APPS.append("axes")
# Last, so that it sees the outcome of the view: a lockout becomes the lockout page.
MIDDLEWARE.append("axes.middleware.AxesMiddleware")
AUTHENTICATION_BACKENDS = [
    "annotator.lockout.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# The database, not a cache: the count holds across web processes with or without DJANGO_CACHE_URL.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = DEFECTBENCH_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=DEFECTBENCH_LOGIN_LOCKOUT_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "annotator.lockout.client_address"
DEFECTBENCH_CLIENT_ADDRESS_FROM_PROXY = env_bool("DJANGO_BEHIND_TLS_PROXY", False)
AXES_LOCKOUT_CALLABLE = "annotator.lockout.lockout_response"
# A refused attempt is not recorded: the lockout ends on time (at most LIMIT guesses per
# LOCKOUT_SECONDS, however fast a client tries), and a client hammering away costs one count query
# per attempt instead of a write that grows its row without bound.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A successful login does not clear the count: a guesser with an account of their own could
# otherwise log in to it between guesses at someone else's.
AXES_RESET_ON_SUCCESS = False
# Only failures are stored (and dropped once they are older than the lockout); no row per login.
AXES_DISABLE_ACCESS_LOG = True
# No start-up banner in every manage.py, worker and web process.
AXES_VERBOSE = False
# An API token lasts until it is revoked or replaced, or its owner's password changes; with a
# maximum age, an older token is refused with 401 "Token expired" (0: no maximum age).
DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS = env_int("DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS", 0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Uploaded files (dataset zips and what they unpack to, benchmark artifacts) live here and are
# only ever served through views that check login, never as public static files.
MEDIA_ROOT = Path(os.environ.get("DEFECTBENCH_MEDIA_ROOT", VAR_DIR / "media")).resolve()

# --- DefectBench --------------------------------------------------------------------------
# Datasets are referenced in place (no copy of a 5 GB dataset); only folders under these roots
# may be imported or served. Separate several with the OS path separator (':' on Linux).
DEFECTBENCH_DATA_ROOTS = [
    Path(p).resolve()
    for p in env_list(
        "DEFECTBENCH_DATA_ROOTS",
        [str(BASE_DIR.parent / "shared" / "data"), str(VAR_DIR / "datasets"), str(MEDIA_ROOT)],
        separator=os.pathsep,
    )
]
# Images above this many pixels are refused (decompression-bomb guard, also Pillow's limit).
DEFECTBENCH_MAX_IMAGE_PIXELS = int(os.environ.get("DEFECTBENCH_MAX_IMAGE_PIXELS", 40_000_000))
# Pixels one inspect request (up to 32 images) may decode in all; a larger request is refused from
# the files' headers before any decoding. Images are decoded and scored one at a time, so memory
# does not grow with this (it is that of the largest image); time does. The default, 32 images at
# the default 40-megapixel limit, is what the other limits already allow; it took 47 s (RGB) and
# 95 s (RGBA) on a shared, loaded 2-core machine (bench/inspect_memory_bench.py), inside
# gunicorn's 120 s timeout: lower it with a shorter timeout or a slower machine.
DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST = env_int("DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST", 1_280_000_000)
# Largest accepted dataset upload (zip) and its unpacked size, in bytes.
DEFECTBENCH_MAX_UPLOAD_BYTES = int(os.environ.get("DEFECTBENCH_MAX_UPLOAD_BYTES", 2 * 1024**3))
DEFECTBENCH_MAX_UNPACKED_BYTES = int(
    os.environ.get("DEFECTBENCH_MAX_UNPACKED_BYTES", 8 * 1024**3)
)
# An annotator's claim on an image lapses after this many seconds (the queue hands it on).
DEFECTBENCH_CLAIM_TIMEOUT_SECONDS = env_int("DEFECTBENCH_CLAIM_TIMEOUT_SECONDS", 600)
# Largest label CSV accepted for import (about 200 000 rows); larger files are refused unread.
DEFECTBENCH_MAX_LABEL_CSV_BYTES = env_int("DEFECTBENCH_MAX_LABEL_CSV_BYTES", 10 * 1024**2)
# A mask PNG saved by the mask editor (a binary mask compresses well: 40 MP of detailed mask is a few MB).
DEFECTBENCH_MAX_MASK_UPLOAD_BYTES = env_int("DEFECTBENCH_MAX_MASK_UPLOAD_BYTES", 64 * 1024**2)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    # The browsable API without its inline <style> (see the Content-Security-Policy section).
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "api.renderers.BrowsableAPIRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: a request without valid credentials gets 401 with
        # "WWW-Authenticate: Token" (DRF asks the first class), not a bare 403.
        "api.authentication.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's parsers, with a JSON parser that refuses deep nesting and lone surrogates (api/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "DefectBench API",
    "DESCRIPTION": "Label anomalous images product-agnostically and benchmark anomaly localization.",
    "VERSION": "0.1.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_error_responses",
    ],
    # One schema name per choice set, wherever a serializer uses it.
    "ENUM_NAME_OVERRIDES": {
        "DefectCategoryEnum": "annotator.models.Label.Category",
        "BenchmarkModelEnum": "inference.models.ModelName",
        "ThresholdTechniqueEnum": "inference.models.Technique",
        "FeedbackKindEnum": "inference.models.FeedbackKind",
    },
}

# --- Celery -------------------------------------------------------------------------------
# CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0) selects a broker server; without it kombu's
# filesystem transport passes messages through folders under var/, so a real worker process
# runs with no server at all.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # Broadcast/control messages (worker pings, revokes) also go to files, not to ./control.
        "control_folder": str(_broker_dir / "control"),
    }
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
# Group/chord results need a result backend: Redis when the broker is Redis, else files.
CELERY_RESULT_BACKEND = os.environ.get(
    "CELERY_RESULT_BACKEND",
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else f"file://{VAR_DIR / 'celery-results'}",
)
if CELERY_RESULT_BACKEND.startswith("file://"):
    Path(CELERY_RESULT_BACKEND[len("file://"):]).mkdir(parents=True, exist_ok=True)
# One queue for everything; a test worker gets a queue of its own (and sends chord callbacks there).
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Tests may run tasks in-process; production and `make run` always use a real worker.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}

# --- Benchmarks and the other background jobs ---
# A benchmark task is stopped (SoftTimeLimitExceeded, run marked failed) after the soft limit
# and killed after the hard one. Every running job of every kind (benchmark, inspection, dataset
# import, nearest references) writes a heartbeat every BENCHMARK_HEARTBEAT_SECONDS; the beat task
# inference.sweep_stale_jobs ends a running job whose heartbeat is older than
# BENCHMARK_STALE_SECONDS as failed ("worker lost") or, when a cancel was asked, cancelled.
# Tasks are acks_late + reject_on_worker_lost, so a message whose worker
# died is redelivered: on Redis after visibility_timeout, which must exceed the hard limit or a
# long run would be handed to a second worker while the first still works on it.
BENCHMARK_SOFT_TIME_LIMIT = int(os.environ.get("DEFECTBENCH_BENCHMARK_SOFT_TIME_LIMIT", 4 * 3600))
BENCHMARK_HARD_TIME_LIMIT = BENCHMARK_SOFT_TIME_LIMIT + 120
BENCHMARK_HEARTBEAT_SECONDS = float(os.environ.get("DEFECTBENCH_BENCHMARK_HEARTBEAT_SECONDS", 2))
BENCHMARK_STALE_SECONDS = int(os.environ.get("DEFECTBENCH_BENCHMARK_STALE_SECONDS", 60))
# Celery beat runs the periodic work; readers never write. ``make run`` embeds beat in its worker
# (``--beat``); docker-compose runs it as its own service.
DEFECTBENCH_STATISTICS_REFRESH_SECONDS = env_int("DEFECTBENCH_STATISTICS_REFRESH_SECONDS", 15)
DEFECTBENCH_STATISTICS_MAX_AGE_SECONDS = env_int("DEFECTBENCH_STATISTICS_MAX_AGE_SECONDS", 120)
# Category suggestions: features of new images and a refit when labels changed, this often.
DEFECTBENCH_SUGGESTIONS_REFRESH_SECONDS = env_int("DEFECTBENCH_SUGGESTIONS_REFRESH_SECONDS", 30)
CELERY_BEAT_SCHEDULE = {
    "refresh-category-suggestions": {
        "task": "annotator.refresh_suggestions",
        "schedule": float(DEFECTBENCH_SUGGESTIONS_REFRESH_SECONDS),
    },
    "refresh-dataset-statistics": {
        "task": "annotator.refresh_statistics",
        "schedule": float(DEFECTBENCH_STATISTICS_REFRESH_SECONDS),
    },
    # Every third of the stale window, so a dead worker's job ends within 1 1/3 windows.
    "sweep-stale-jobs": {
        "task": "inference.sweep_stale_jobs",
        "schedule": max(1.0, BENCHMARK_STALE_SECONDS / 3),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Torch/OpenMP threads of a benchmark run in the worker. 0 = the CPU cores divided by the
# worker's concurrency (DEFECTBENCH_WORKER_CONCURRENCY, `make run` starts 1), so concurrent runs
# do not oversubscribe the cores; OMP_WAIT_POLICY=PASSIVE (config/celery.py) keeps idle threads
# from spinning on a shared CPU. The report records the number used ("threads").
BENCHMARK_WORKER_CONCURRENCY = max(1, int(os.environ.get("DEFECTBENCH_WORKER_CONCURRENCY", 1)))
BENCHMARK_THREADS = int(os.environ.get("DEFECTBENCH_BENCHMARK_THREADS", 0)) or max(
    1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
) // BENCHMARK_WORKER_CONCURRENCY or 1
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **globals().get("CELERY_BROKER_TRANSPORT_OPTIONS", {}),
        "visibility_timeout": BENCHMARK_HARD_TIME_LIMIT + 600,
    }
