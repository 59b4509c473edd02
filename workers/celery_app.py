"""The Celery app: reads Django settings with the CELERY_ prefix."""
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings")
# Workers connect without a pool (see DATABASES in settings): one connection per
# thread, two threads per worker. Only takes effect where this module loads the
# settings first, i.e. in the `celery worker` process.
os.environ.setdefault("DB_POOL_MAX_SIZE", "0")

app = Celery("faceindex")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")
app.autodiscover_tasks(["workers"], related_name="gallery_tasks")


@worker_process_init.connect
def load_models(**_):
    # Load the face models once per worker process, before the first task,
    # instead of paying for it inside a task's time limit.
    from django.conf import settings

    from backend.core.pipeline import get_pipeline
    from ml.threads import limit_threads

    get_pipeline()
    limit_threads(settings.FACEINDEX_WORKER_THREADS)  # after loading: torch-backed models import torch


@worker_ready.connect
def requeue_abandoned(sender=None, **_):
    from backend.jobs.services import requeue_orphans

    requeue_orphans(worker_name=sender.hostname)
