"""The production wiring a newcomer relies on: docker-compose services, env-driven settings."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_docker_compose_parses_and_wires_services_by_env():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker", "postgres", "redis"} <= set(services)
    assert "gunicorn" in services["web"]["command"]
    assert "celery" in services["worker"]["command"] and "worker" in services["worker"]["command"]
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert env["DJANGO_DEBUG"] == "0"


def _settings_in_subprocess(env_overrides: dict, expression: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}}
    env.update(env_overrides)
    code = f"import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup(); from django.conf import settings; print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_embedded_defaults_without_env(tmp_path):
    out = _settings_in_subprocess(
        {"DEFECTBENCH_VAR_DIR": str(tmp_path)},
        "settings.DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL, settings.CELERY_RESULT_BACKEND",
    )
    assert "sqlite3" in out and "filesystem://" in out and f"file://{tmp_path}" in out
    assert (tmp_path / "broker" / "queue").is_dir()


def test_env_selects_postgres_and_redis(tmp_path):
    out = _settings_in_subprocess(
        {
            "DEFECTBENCH_VAR_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        },
        "settings.DATABASES['default']['ENGINE'], settings.DATABASES['default']['NAME'], settings.CELERY_BROKER_URL, settings.CELERY_RESULT_BACKEND",
    )
    assert out.split()[:2] == ["django.db.backends.postgresql", "test"]
    assert out.count("redis://127.0.0.1:6379/0") == 2


def test_production_refuses_to_start_without_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env.update({"DJANGO_DEBUG": "0", "DEFECTBENCH_VAR_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup()"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "x7$kq!2vR9#mZp@4LwT8&nYc6^bHs0Ue+Jd3Gf5*Aa1Qo-Xi_w8Lr%Kt",
    "DJANGO_ALLOWED_HOSTS": "defectbench.example.com,[::1]",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://defectbench.example.com",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SECURE_COOKIES": "1",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
    "DJANGO_BEHIND_TLS_PROXY": "1",
}


def test_check_deploy_is_clean_with_the_documented_production_variables(tmp_path):
    # Browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process; a deployment never has it.
    leave_out = {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in leave_out}
    env.update(PRODUCTION_ENV, DEFECTBENCH_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    readme = (REPO_ROOT / "README.md").read_text()
    production = readme[readme.index("## Production"):]
    for name in PRODUCTION_ENV:
        assert f"`{name}`" in production, f"{name} is not in the README's production section"


def test_allowed_hosts_and_origins_are_comma_separated(tmp_path):
    out = _settings_in_subprocess(
        {**PRODUCTION_ENV, "DEFECTBENCH_VAR_DIR": str(tmp_path),
         "DJANGO_ALLOWED_HOSTS": "example.com, [::1] ,10.0.0.5"},
        "settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS",
    )
    assert out == "['example.com', '[::1]', '10.0.0.5'] ['https://defectbench.example.com']"


def test_claim_timeout_is_read_from_the_environment(tmp_path):
    out = _settings_in_subprocess(
        {"DEFECTBENCH_VAR_DIR": str(tmp_path), "DEFECTBENCH_CLAIM_TIMEOUT_SECONDS": "42"},
        "settings.DEFECTBENCH_CLAIM_TIMEOUT_SECONDS",
    )
    assert out == "42"


def test_the_wsgi_entry_point_runs_with_debug_off_unless_told(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DJANGO_DEBUG"}}
    env.update({"DEFECTBENCH_VAR_DIR": str(tmp_path), "DJANGO_SECRET_KEY": PRODUCTION_ENV["DJANGO_SECRET_KEY"]})
    code = "import config.wsgi; from django.conf import settings; print(settings.DEBUG)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "False"


def test_gunicorn_recycles_its_workers():
    import runpy

    config = runpy.run_path(str(REPO_ROOT / "config" / "gunicorn.conf.py"))
    assert config["max_requests"] > 0 and config["max_requests_jitter"] > 0
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert "-c config/gunicorn.conf.py" in compose["services"]["web"]["command"]
    assert "config/gunicorn.conf.py" in (REPO_ROOT / "Dockerfile").read_text()


def test_gunicorn_workers_keep_start_up_objects_out_of_garbage_collection():
    import gc
    import runpy

    config = runpy.run_path(str(REPO_ROOT / "config" / "gunicorn.conf.py"))
    assert config["keepalive"] >= 1  # an idle connection is kept a moment, then freed
    before = gc.get_freeze_count()
    try:
        config["post_worker_init"](worker=None)
        assert gc.get_freeze_count() > before  # what is alive after start-up is never walked again
    finally:
        gc.unfreeze()


def test_web_processes_share_a_redis_cache_when_told(tmp_path):
    location = _settings_in_subprocess({"DJANGO_CACHE_URL": "redis://127.0.0.1:6379/9", "DEFECTBENCH_VAR_DIR": str(tmp_path)},
                                       "settings.CACHES['default']['BACKEND'], settings.CACHES['default']['LOCATION']")
    assert "RedisCache" in location and "redis://127.0.0.1:6379/9" in location
    local = _settings_in_subprocess({"DJANGO_CACHE_URL": "", "DEFECTBENCH_VAR_DIR": str(tmp_path)},
                                    "settings.CACHES['default']['BACKEND']")
    assert "LocMemCache" in local
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["web"]["environment"]["DJANGO_CACHE_URL"].startswith("redis://redis:6379/")


def test_gunicorn_listens_on_this_machine_only_unless_told(monkeypatch):
    import runpy

    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    assert runpy.run_path(str(REPO_ROOT / "config" / "gunicorn.conf.py"))["bind"] == "127.0.0.1:8000"
    monkeypatch.setenv("GUNICORN_BIND", "0.0.0.0:9000")
    assert runpy.run_path(str(REPO_ROOT / "config" / "gunicorn.conf.py"))["bind"] == "0.0.0.0:9000"
    # In the image (docker compose runs it too) the published port must reach gunicorn.
    assert "ENV GUNICORN_BIND=0.0.0.0:8000" in (REPO_ROOT / "Dockerfile").read_text()


def test_login_limits_and_token_age_come_from_the_environment(tmp_path):
    out = _settings_in_subprocess(
        {"DEFECTBENCH_VAR_DIR": str(tmp_path), "DEFECTBENCH_LOGIN_FAILURE_LIMIT": "3",
         "DEFECTBENCH_LOGIN_LOCKOUT_SECONDS": "900", "DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS": "86400"},
        "settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME.total_seconds(), "
        "settings.DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS, settings.AXES_HANDLER, settings.AXES_LOCKOUT_PARAMETERS",
    )
    # Counted in the database (one count for all web processes), per client address.
    assert out == "3 900.0 86400 axes.handlers.database.AxesDatabaseHandler ['ip_address']"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}}
    env.update({"DEFECTBENCH_VAR_DIR": str(tmp_path), "DEFECTBENCH_LOGIN_FAILURE_LIMIT": "0"})
    result = subprocess.run([sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']="
                             "'config.settings'; django.setup()"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "DEFECTBENCH_LOGIN_FAILURE_LIMIT" in result.stderr
    production = (REPO_ROOT / "README.md").read_text().split("## Production", 1)[1]
    for name in ("DEFECTBENCH_LOGIN_FAILURE_LIMIT", "DEFECTBENCH_LOGIN_LOCKOUT_SECONDS",
                 "DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS", "GUNICORN_BIND"):
        assert f"`{name}`" in production, name
