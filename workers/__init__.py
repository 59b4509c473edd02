"""The Celery worker's runtime: `celery -A workers worker`.

The app and the tasks live in backend (backend/config/celery.py, backend/*/tasks.py);
this package adds only what a worker process needs around them: its models
loaded once per process, its thread caps, and recovery when it restarts.
"""
import django

from backend.config.celery import app

# The signal handlers use the models: the app registry must be ready first.
django.setup()

from . import signals  # noqa: E402,F401  (connects the worker's signal handlers)

__all__ = ["app"]
