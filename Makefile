# The two commands a newcomer types are `make run` and `make test`; each sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test venv migrate

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

migrate: venv
	$(PY) manage.py migrate --no-input

# The app on embedded defaults: SQLite, Celery's filesystem broker, a real worker process beside
# the web server; demo users and the demo dataset are created on first start. The worker embeds
# Celery beat (--beat) for the periodic tasks, e.g. failing runs whose worker died. It runs in its
# own process group so Ctrl-C reaches it only through the trap, as a warm shutdown.
run: migrate
	$(PY) manage.py setup_demo
	@set -m; \
	log=$${DEFECTBENCH_VAR_DIR:-var}/worker.log; \
	$(VENV)/bin/celery -A config worker --beat --loglevel=INFO --concurrency=1 --pool=prefork \
	  --logfile=$$log & worker=$$!; \
	trap 'kill -TERM $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	echo "Celery worker with beat started (pid $$worker, log $$log)"; \
	echo "DefectBench is running at http://$(HOST):$(PORT)/  (Ctrl-C stops web server and worker)"; \
	$(PY) manage.py runserver --noreload $(HOST):$(PORT)

# The whole suite. With DATABASE_URL / CELERY_BROKER_URL set (CI does) it runs against
# PostgreSQL and Redis; without them on SQLite and the filesystem broker.
test: venv
	DEFECTBENCH_VAR_DIR=$(CURDIR)/var/test $(PY) -m pytest $(PYTEST_ARGS)
