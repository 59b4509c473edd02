"""The Celery app (cookiecutter-django's layout): reads Django settings with the CELERY_ prefix.

It imports no app code, so any module may use it without a cycle; services
send tasks by name through ``celery.current_app``. The worker's runtime
(model preload, thread caps, restart recovery) lives in workers/.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings_production")

app = Celery("faceindex")
app.config_from_object("django.conf:settings", namespace="CELERY")
# backend.<app>.tasks of every installed app.
app.autodiscover_tasks()
