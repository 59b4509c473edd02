"""docker-compose.yml and the embedded stack must hand the app the same settings."""
from pathlib import Path

import yaml

from deploy.stack import Stack

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
DJANGO_ONLY = {"DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS"}


def test_api_and_worker_get_the_embedded_stacks_variable_names():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    stack_names = set(Stack.for_tests().env())
    for service in ("api", "worker"):
        assert set(services[service]["environment"]) == stack_names | DJANGO_ONLY, service


def test_worker_runs_celery_and_api_runs_gunicorn():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert services["worker"]["command"][:3] == ["celery", "-A", "workers.celery_app"]
    assert "gunicorn backend.config.wsgi" in " ".join(services["api"]["command"])
    assert services["db"]["image"].startswith("pgvector/pgvector:")


def test_gpu_worker_is_an_opt_in_profile_with_a_gpu_reservation():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]  # `docker compose up` alone starts no GPU worker
    assert set(gpu["environment"]) == set(Stack.for_tests().env()) | DJANGO_ONLY | {"FACEINDEX_DEVICE"}
    assert gpu["environment"]["FACEINDEX_DEVICE"].startswith("cuda")
    assert gpu["command"][:3] == ["celery", "-A", "workers.celery_app"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1]
