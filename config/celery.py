"""The Celery application shared by the web process and the workers."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Idle OpenMP threads sleep instead of spin-waiting. Read once by libgomp when torch is first
# imported, so it is set here, before any task module imports torch. On a shared CPU spinning
# threads made the same PaDiM run 13x slower (238 s busy vs 18.6 s quiet); bench/busy_cpu.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = Celery("defectbench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
