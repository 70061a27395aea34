"""gunicorn settings (``gunicorn -c config/gunicorn.conf.py config.wsgi:application``).

Workers are recycled after a bounded number of requests (with jitter, so they do not all restart
at once): a slow leak in a long-lived worker can never grow without bound.
"""
import os

# This machine only unless told: a proxy in front (or the port mapping of a container, whose
# image sets GUNICORN_BIND=0.0.0.0:8000) decides who reaches the app.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "100"))
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
# Seconds an idle client connection is kept open. A kept-alive connection stays with the worker
# process that accepted it, so a few busy clients can pile onto one process while others idle;
# behind a proxy that opens a connection per request this does not arise.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "2"))
# With GUNICORN_ACCESS_LOG: the default line plus the time taken, in microseconds, and the worker.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s pid=%(p)s'


def post_worker_init(worker):
    """Move everything loaded at start-up (Django, the app, DRF: some 160 000 objects) out of the
    garbage collector's reach. A full collection otherwise walks them all (about 90 ms on a
    2-core machine) now and then in the middle of a request; after the freeze it walks only what
    requests left behind."""
    import gc

    gc.collect()
    gc.freeze()
