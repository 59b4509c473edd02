"""The Celery worker's runtime: `celery -A workers worker`.

The app and the tasks live in backend (backend/config/celery.py, backend/*/tasks.py);
this package adds only what a worker process needs around them: its models
loaded once per process, its thread caps, and recovery when it restarts.
"""
import os

import django

from backend.config.celery import app

# Workers connect without a pool (see DATABASES in settings): one connection
# per thread, and Celery's solo-pool fixup would hand a pooled connection's
# closed socket back to the pool. Set before the settings load just below.
os.environ.setdefault("DB_POOL_MAX_SIZE", "0")
# One connection kept across tasks (checked before each task's first query:
# CONN_HEALTH_CHECKS), instead of a new PostgreSQL backend per batch.
os.environ.setdefault("DB_CONN_MAX_AGE", "300")
# The signal handlers use the models: the app registry must be ready first.
django.setup()

from . import signals  # noqa: E402,F401  (connects the worker's signal handlers)

__all__ = ["app"]
