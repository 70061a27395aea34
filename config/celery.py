"""The Celery application shared by the web process and the workers."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("defectbench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
