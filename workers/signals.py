"""Worker process signals: load the models before the first task; re-queue a killed
predecessor's work; a GPU worker announces itself so batches are routed to it."""
import logging
import threading

from celery.signals import worker_process_init, worker_ready, worker_shutdown
from django.conf import settings

from backend.core.pipeline import get_pipeline, runs_on_gpu
from backend.jobs import routing
from backend.jobs.services import requeue_orphans
from ml.threads import limit_threads

log = logging.getLogger(__name__)


@worker_process_init.connect
def load_models(**_):
    # Load the face models once per worker process, before the first task,
    # instead of paying for it inside a task's time limit.
    get_pipeline()
    limit_threads(settings.FACEINDEX_WORKER_THREADS)  # after loading: torch-backed models import torch


@worker_ready.connect
def requeue_abandoned(sender=None, **_):
    requeue_orphans(worker_name=sender.hostname)


# -- GPU workers: a heartbeat that routes batches to them (backend/jobs/routing.py) --

_heartbeat_stop = threading.Event()


def _beat_forever(app, node_name: str) -> None:
    while True:
        try:
            with app.connection_for_write() as connection:
                routing.beat(connection.default_channel.client, node_name)
        except Exception:  # the broker is down: the key expires and work goes to CPU workers meanwhile
            log.warning("GPU worker heartbeat failed", exc_info=True)
        if _heartbeat_stop.wait(routing.HEARTBEAT_S):
            return


@worker_ready.connect
def start_gpu_heartbeat(sender=None, **_):
    if not runs_on_gpu():
        return
    # ``sender`` is the worker's consumer: take from the GPU queue too (CPU workers never do)
    # before announcing this worker, so nothing is routed to a queue no one reads.
    sender.add_task_queue(settings.FACEINDEX_GPU_QUEUE)
    threading.Thread(target=_beat_forever, args=(sender.app, sender.hostname),
                     name="faceindex-gpu-heartbeat", daemon=True).start()


@worker_shutdown.connect
def stop_gpu_heartbeat(sender=None, **_):
    if not _heartbeat_stop.is_set():
        _heartbeat_stop.set()
        try:
            with sender.app.connection_for_write() as connection:
                routing.stop_beating(connection.default_channel.client, sender.hostname)
        except Exception:  # the key expires on its own
            log.warning("could not clear the GPU worker heartbeat", exc_info=True)
