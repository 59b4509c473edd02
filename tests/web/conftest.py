"""Browser fixtures: a live server on 127.0.0.1 and headless Chromium from the system (never downloaded)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "var" / "test" / "screenshots"


def chromium_path() -> str | None:
    return os.environ.get("FACEINDEX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def web_server(transactional_db):
    """The app served by a threaded WSGI server on 127.0.0.1 (a free port), in this process."""
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("127.0.0.1:0")
    yield server
    server.stop()


@pytest.fixture
def browser(monkeypatch):
    """Headless Chromium driven by Playwright; the system's Chromium, never a downloaded one."""
    path = chromium_path()
    if path is None:
        message = "no Chromium: apt-get install chromium (.ci/run does), or set FACEINDEX_CHROMIUM"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    # Playwright's sync API keeps an event loop in this thread; Django would
    # then refuse ORM calls made by the test itself (none run concurrently).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=["--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()
