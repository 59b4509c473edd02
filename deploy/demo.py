"""`make demo`: the whole service on this machine, from nothing to a report.

Starts the embedded stack, migrates, starts the API (gunicorn), Celery workers
and celery beat in the background (deploy.processes, so `make stop` stops them), enrolls four known
people, indexes a sample archive built from package-shipped images through the
same services the REST API uses, prints the per-identity report, and leaves
API, admin and worker running with their URLs printed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from deploy import processes
from deploy.processes import REPO_ROOT, log_tail
from deploy.sample_archive import build
from deploy.stack import Stack

API_HOST = "127.0.0.1"
API_PORT = int(os.environ.get("FACEINDEX_API_PORT", "8000"))
# Independent solo-pool workers, one per core: cv2.dnn was seen to hang in a
# forked prefork child, and a solo worker holds its models exactly once.
WORKER_COUNT = int(os.environ.get("FACEINDEX_WORKERS", str(os.cpu_count() or 1)))
DEMO_OWNER = "demo"
# The demo user signs in to the web app at / with this password.
DEMO_PASSWORD = os.environ.get("FACEINDEX_DEMO_PASSWORD", "faceindex-demo")
ADMIN_USER, ADMIN_PASSWORD = "admin", os.environ.get("FACEINDEX_ADMIN_PASSWORD", "faceindex-admin")


def manage(*args: str, env: dict, capture: bool = False) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, check=True,
                            stdout=subprocess.PIPE if capture else None, text=True)
    return result.stdout if capture else ""


def wait_http(url: str, name: str, var_dir: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except OSError:
            if not processes.is_running(name, var_dir):
                break
            time.sleep(0.3)
    raise SystemExit(f"{name} did not come up at {url}\n{log_tail(processes.log_file(name, var_dir))}")


def main() -> int:
    started = time.monotonic()
    stack = Stack.from_env()
    print("starting the embedded stack (PostgreSQL+pgvector, Redis, S3)…", flush=True)
    stack.start()
    env = {**os.environ, **stack.env(), "DJANGO_SETTINGS_MODULE": "backend.config.settings_dev"}
    # The web app's "import from a folder" can read the demo's sample photos.
    env.setdefault("FACEINDEX_IMPORT_ROOTS", str(stack.var_dir / "demo-sample"))
    # One worker per core: each keeps its models to a fair share of the cores.
    env.setdefault("FACEINDEX_WORKER_THREADS", str(max(1, (os.cpu_count() or 1) // WORKER_COUNT)))
    manage("migrate", "--noinput", "-v", "0", env=env)
    manage("shell", "-v", "0", "-c", (
        "from django.contrib.auth import get_user_model; U = get_user_model();\n"
        f"a, _ = U.objects.get_or_create(username='{ADMIN_USER}', defaults=dict(is_staff=True, is_superuser=True));\n"
        f"a.is_staff = a.is_superuser = True; a.set_password('{ADMIN_PASSWORD}'); a.save();\n"
        f"d, _ = U.objects.get_or_create(username='{DEMO_OWNER}'); d.set_password('{DEMO_PASSWORD}'); d.save()"), env=env)
    token = manage("drf_create_token", DEMO_OWNER, env=env, capture=True).split()[2]

    manage("collectstatic", "--noinput", "-v", "0", env=env)  # WhiteNoise serves them (DEBUG is off)
    # gunicorn as in docker-compose: bounded threads, a DB pool per process, a sized backlog.
    processes.start_background("api", [sys.executable, "-m", "gunicorn", "-c", "python:backend.config.gunicorn",
                                       "--bind", f"{API_HOST}:{API_PORT}", "backend.config.wsgi"],
                               env=env, var_dir=stack.var_dir)
    hostname = os.uname().nodename
    for index in range(WORKER_COUNT):
        # A fixed node name per slot: a restarted worker re-queues what its predecessor held.
        # Niced: indexing is background work; API requests beside it get the CPU first.
        processes.start_background(f"worker-{index}", ["nice", "-n", "10", sys.executable, "-m", "celery", "-A", "workers",
                                                       "worker", "--loglevel=INFO", "--pool=solo",
                                                       "-n", f"demo-worker-{index}@{hostname}"],
                                   env=env, var_dir=stack.var_dir)
    # One beat per deployment: it sends the periodic sweeps (lost messages,
    # stalled listings, missed webhooks) that any worker then runs.
    processes.start_background("beat", [sys.executable, "-m", "celery", "-A", "backend.config.celery", "beat",
                                        "--loglevel=INFO", "-s", str(stack.var_dir / "celerybeat-schedule")],
                               env=env, var_dir=stack.var_dir)
    # /readyz, not the schema: building the OpenAPI schema is slow on a busy machine, and a
    # readiness loop re-asking for it raced two first builds inside drf-spectacular.
    wait_http(f"http://{API_HOST}:{API_PORT}/readyz", "api", stack.var_dir)

    sample = build(stack.var_dir / "demo-sample")
    print(f"indexing the sample archive {sample.archive_dir} …", flush=True)
    index_started = time.monotonic()
    manage("index", str(sample.archive_dir), "--enroll", str(sample.enroll_dir), "--owner", DEMO_OWNER, "--wait", env=env)
    index_seconds = time.monotonic() - index_started

    base = f"http://{API_HOST}:{API_PORT}"
    print(f"""
faceindex is running (demo wall time {time.monotonic() - started:.0f}s, indexing incl. enrollment {index_seconds:.1f}s)
  web app    {base}/               sign in as '{DEMO_OWNER}', password '{DEMO_PASSWORD}'
             (folder imports allowed under {env['FACEINDEX_IMPORT_ROOTS']})
  API        {base}/api/v1/          token for user '{DEMO_OWNER}': {token}
             curl -H 'Authorization: Token {token}' {base}/api/v1/reports/identities
  API docs   {base}/api/v1/docs
  admin      {base}/admin/           user '{ADMIN_USER}', password '{ADMIN_PASSWORD}'
  workers    {WORKER_COUNT}, logs: {processes.log_file('worker-0', stack.var_dir)} …
  beat       sweeps every {env.get('FACEINDEX_SWEEP_INTERVAL_S', '300')} s, log: {processes.log_file('beat', stack.var_dir)}
Index your own photos:  eval "$(.venv/bin/python -m deploy.stack env)"
                        .venv/bin/python manage.py index PATH --enroll PEOPLE_DIR --wait
Stop everything:        make stop""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
