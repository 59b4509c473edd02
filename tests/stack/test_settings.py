"""Settings read only the environment; production refuses unsafe defaults (each case in a fresh interpreter)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import settings as base_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text()
REAL_KEY = "k" * 50
SHOW = ("from django.conf import settings; import json; print(json.dumps({name: getattr(settings, name) for name in "
        "['DEBUG', 'ALLOWED_HOSTS', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_SSL_REDIRECT', "
        "'SECURE_HSTS_SECONDS', 'FACEINDEX_CLUSTER_SIMILARITY', 'FACEINDEX_IMPORT_ROOTS', "
        "'FACEINDEX_THROTTLE_SEARCH']}))")


def load(module: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FACEINDEX_"))}
    return subprocess.run([sys.executable, "-c", SHOW], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env={**clean, "DJANGO_SETTINGS_MODULE": f"backend.config.{module}", **env})


@pytest.mark.parametrize("env, variable", [
    ({"DJANGO_ALLOWED_HOSTS": "faces.example.org"}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_ALLOWED_HOSTS": "faces.example.org", "DJANGO_SECRET_KEY": "change-me-django-secret-key"}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_ALLOWED_HOSTS": "faces.example.org", "DJANGO_SECRET_KEY": "short"}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_SECRET_KEY": REAL_KEY}, "DJANGO_ALLOWED_HOSTS"),
])
def test_production_refuses_to_start_without_a_real_secret_and_hosts(env, variable):
    result = load("settings_production", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and variable in result.stderr.splitlines()[-1]


def test_production_with_its_variables_set_runs_https_only_and_without_debug():
    result = load("settings_production", DJANGO_SECRET_KEY=REAL_KEY, DJANGO_ALLOWED_HOSTS="faces.example.org, api.example.org")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["DEBUG"] is False
    assert values["ALLOWED_HOSTS"] == ["faces.example.org", "api.example.org"]
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"] and values["SECURE_SSL_REDIRECT"]
    assert values["SECURE_HSTS_SECONDS"] > 0


def test_debug_is_off_unless_asked_for_and_tunables_come_from_the_environment():
    values = json.loads(load("settings_dev").stdout)
    assert values["DEBUG"] is False and values["FACEINDEX_CLUSTER_SIMILARITY"] == 0.45
    values = json.loads(load("settings_dev", DJANGO_DEBUG="true", FACEINDEX_CLUSTER_SIMILARITY="0.5",
                             FACEINDEX_IMPORT_ROOTS="/a,/b").stdout)
    assert values["DEBUG"] is True and values["FACEINDEX_CLUSTER_SIMILARITY"] == 0.5
    assert values["FACEINDEX_IMPORT_ROOTS"] == ["/a", "/b"]


def test_a_throttle_is_on_by_default_and_off_only_when_asked():
    assert json.loads(load("settings_dev").stdout)["FACEINDEX_THROTTLE_SEARCH"] == "120/minute"
    # An empty variable is the default, as for every tunable; "off" lifts the limit.
    assert json.loads(load("settings_dev", FACEINDEX_THROTTLE_SEARCH="").stdout)["FACEINDEX_THROTTLE_SEARCH"] == "120/minute"
    assert json.loads(load("settings_dev", FACEINDEX_THROTTLE_SEARCH="off").stdout)["FACEINDEX_THROTTLE_SEARCH"] == ""


def test_every_tunable_is_declared_once_and_listed_in_the_readme():
    names = [tunable.name for tunable in base_settings.TUNABLES]
    assert len(names) == len(set(names))
    assert all(tunable.meaning for tunable in base_settings.TUNABLES)
    missing = [name for name in names if f"`{name}`" not in README]
    assert not missing, f"README's settings table lacks {missing}"


def test_no_faceindex_setting_bypasses_the_tunables_table():
    from django.conf import settings

    constants = {"FACEINDEX_LISTING_QUEUE", "FACEINDEX_GPU_QUEUE"}  # queue names, not tunables
    declared = {tunable.name for tunable in base_settings.TUNABLES}
    undeclared = [name for name in dir(settings) if name.startswith("FACEINDEX_") and name not in declared | constants]
    assert not undeclared, f"declare these in TUNABLES (backend/config/settings.py): {undeclared}"


def test_djangos_deployment_check_finds_only_the_opt_in_hsts_preload():
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FACEINDEX_"))}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--tag", "security"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**clean, "DJANGO_SETTINGS_MODULE": "backend.config.settings_production",
                                 "DJANGO_SECRET_KEY": REAL_KEY + "-not-repeated-0123456789",
                                 "DJANGO_ALLOWED_HOSTS": "faces.example.org"})
    warnings = sorted(set(line.split(")")[0].lstrip("?: (") for line in result.stderr.splitlines() + result.stdout.splitlines()
                          if line.startswith("?: (security.")))
    # Preloading HSTS binds the domain for months: the operator opts in, not the default.
    assert warnings == ["security.W021"], result.stdout + result.stderr
