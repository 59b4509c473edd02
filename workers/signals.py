"""Worker process signals: load the models before the first task; re-queue a killed predecessor's work."""
from celery.signals import worker_process_init, worker_ready
from django.conf import settings

from backend.core.pipeline import get_pipeline
from backend.jobs.services import requeue_orphans
from ml.threads import limit_threads


@worker_process_init.connect
def load_models(**_):
    # Load the face models once per worker process, before the first task,
    # instead of paying for it inside a task's time limit.
    get_pipeline()
    limit_threads(settings.FACEINDEX_WORKER_THREADS)  # after loading: torch-backed models import torch


@worker_ready.connect
def requeue_abandoned(sender=None, **_):
    requeue_orphans(worker_name=sender.hostname)
