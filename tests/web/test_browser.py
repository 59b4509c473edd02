"""The web app end to end in headless Chromium: a live server, real workers, real models.

One owner's whole session, step by step (each step saves a screenshot under
var/test/screenshots/ when it fails), then a second owner who sees none of it.
"""
from __future__ import annotations

import contextlib
import io
import re
import time
import zipfile

import pytest

from helpers.web import SCREENSHOTS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# The photo page as the README shows it (docs/img/photo-page.png is a copy), a small palette PNG.
README_SCREENSHOT = SCREENSHOTS / "photo-page.png"
JOB_TIMEOUT_MS = 180_000


@contextlib.contextmanager
def step(page, name: str):
    try:
        yield
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        raise


def sign_in(page, base: str, username: str) -> None:
    page.goto(base + "/")
    assert "/login/" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "secret-pw")
    page.click("button[type=submit]")
    page.wait_for_selector("#sign-out")


def box_x(page, name: str) -> float:
    return page.locator(".box", has_text=name).bounding_box()["x"]


def face_count(page) -> int:
    return page.locator(".photo .box").count()


def fits_a_phone(page) -> bool:
    """At 390 px wide (a phone), the page needs no sideways scrolling."""
    size = page.viewport_size
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        return page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        page.set_viewport_size(size)


def save_readme_screenshot(page) -> None:
    from PIL import Image

    png = page.locator("main").screenshot()
    small = Image.open(io.BytesIO(png)).convert("RGB")
    small.thumbnail((720, 720))
    README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(colors=64).save(README_SCREENSHOT, optimize=True)


@pytest.fixture
def owners(transactional_db):
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    return users.create_user("alice", password="secret-pw"), users.create_user("bob", password="secret-pw")


def test_an_owner_indexes_names_and_curates_people_and_another_owner_sees_none_of_it(
        owners, web_server, browser, sample_archive, tmp_path, celery_worker_process):
    base = web_server.url
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(sample_archive.archive_dir.rglob("*")):
            if path.is_file():
                zf.write(path, str(path.relative_to(sample_archive.archive_dir)))

    context = browser.new_context(viewport={"width": 1000, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()

    with step(page, "01-sign-in"):
        sign_in(page, base, "alice")

    with step(page, "02-enroll"):
        for person, file_name in (("Tom Hanks", "hanks.png"), ("Eileen Collins", "astronaut.jpg")):
            page.goto(base + "/people/")
            page.fill("#new-person input[name=name]", person)
            page.set_input_files("#new-person input[name=files]", str(sample_archive.enroll_dir / person / file_name))
            page.click("#new-person button[type=submit]")
            page.wait_for_selector("#person-name")
            assert page.inner_text("#person-name") == person
            assert "Enrolled 1 photo" in page.inner_text(".messages")

    with step(page, "03-upload-zip"):
        page.goto(base + "/")
        page.set_input_files("#upload-files", str(archive))
        page.click("#upload-submit")
        page.wait_for_url(re.compile(r"/jobs/\d+/$"))
        job_url = page.url
        # The page follows the job live and reloads once it has finished.
        page.wait_for_function("document.querySelector('#job-status').textContent.startsWith('completed')",
                               timeout=JOB_TIMEOUT_MS)
        page.wait_for_selector("#job-images a")
        failures = page.inner_text("[data-field=failures]")
        assert "broken/notes.txt" in failures and "broken/truncated.jpg" in failures
        assert page.inner_text("[data-field=done]") == page.inner_text("[data-field=total]") == "11"

    with step(page, "04-photo-names-the-right-faces"):
        page.click("text=2021/hanks-and-collins.jpg")
        page.wait_for_selector("#photo .box")
        page.wait_for_function("document.querySelector('#photo img').complete && document.querySelector('#photo img').naturalWidth > 0")
        # Tom Hanks is on the left of this side-by-side photo, Eileen Collins on the right.
        assert box_x(page, "Tom Hanks") < box_x(page, "Eileen Collins")
        assert re.search(r"Tom Hanks [01]\.\d\d", page.locator(".box", has_text="Tom Hanks").inner_text())
        save_readme_screenshot(page)
        assert fits_a_phone(page)

    with step(page, "05-draw-a-box-to-tag-a-face"):
        faces = face_count(page)
        collins = page.locator(".box", has_text="Eileen Collins").bounding_box()
        page.click("#draw-toggle")
        page.mouse.move(collins["x"] + 2, collins["y"] + 2)
        page.mouse.down()
        page.mouse.move(collins["x"] + collins["width"] / 2, collins["y"] + collins["height"] / 2)
        page.mouse.move(collins["x"] + collins["width"] - 2, collins["y"] + collins["height"] - 2)
        page.mouse.up()
        page.click("#tag-form button[type=submit]")
        page.wait_for_selector(".messages")
        assert "Tagged a face: Eileen Collins" in page.inner_text(".messages")  # the drawn box is embedded and matched
        assert face_count(page) == faces + 1
        assert "tagged by hand" in page.inner_text(".faces")

    with step(page, "06-name-an-unknown-cluster"):
        deadline = time.monotonic() + 60  # clustering runs in the background after indexing
        page.goto(base + "/unknown/")
        while page.locator(".cluster").count() == 0 and time.monotonic() < deadline:
            time.sleep(1)
            page.reload()
        cluster = page.locator(".cluster").first
        size = int(cluster.locator("h2").inner_text().split()[0])
        assert size >= 2
        cluster.locator("input[name=person]").fill("Stranger One")
        cluster.locator("button", has_text="Name").click()
        page.wait_for_selector("#person-name")
        assert page.inner_text("#person-name") == "Stranger One"
        assert page.locator("#appearances .thumb").count() >= size  # re-matching may add look-alikes later
        page.wait_for_function("document.querySelector('#timeline').complete")
        assert page.evaluate("document.querySelector('#timeline').naturalWidth") > 0  # the API's chart, with the session
        assert fits_a_phone(page)
        stranger_url = page.url

    with step(page, "07-assign-a-face"):
        page.locator("#appearances .thumb").first.click()
        page.wait_for_selector("#photo .box")
        photo_url = page.url.split("#")[0]
        faces_before = face_count(page)
        unknown = page.locator(".box.unknown")
        assert unknown.count() >= 2
        first, second = unknown.nth(0).get_attribute("data-face"), unknown.nth(1).get_attribute("data-face")
        # A new person from one unknown face...
        unknown.nth(0).click()
        card = page.locator(f"#face-{first}")
        card.locator("input[name=name]").fill("Guest Centre")
        card.locator("button", has_text="Create new person").click()
        page.wait_for_selector(f".box[data-face='{first}']:has-text('Guest Centre')")
        # ...then another face assigned to that person with the type-ahead.
        page.click(f".box[data-face='{second}']")
        card = page.locator(f"#face-{second}")
        card.locator("input[name=person]").press_sequentially("Guest C")
        page.wait_for_function("[...document.querySelectorAll('#people-list option')].some(o => o.value === 'Guest Centre')")
        card.locator("input[name=person]").fill("Guest Centre")
        card.locator("button", has_text="Assign").click()
        page.wait_for_selector(f".box[data-face='{second}']:has-text('Guest Centre')")
        assert "This face is now Guest Centre" in page.inner_text(".messages")

    with step(page, "08-merge-and-undo"):
        assert celery_worker_process.wait_idle()  # re-matching after the new person's enrollment has settled
        page.goto(base + "/people/?q=Guest")
        page.click("text=Guest Centre")
        page.wait_for_selector("#person-name")
        # Its two faces, and those re-matched to its new template in the background.
        guest_faces = page.locator("#appearances .thumb").count()
        assert guest_faces >= 2
        page.fill("#merge-form input[name=person]", "Stranger One")
        page.click("#merge-form button[type=submit]")
        page.wait_for_selector("#person-name")
        assert page.inner_text("#person-name") == "Stranger One"
        assert "Merged Guest Centre into Stranger One" in page.inner_text(".messages")
        page.goto(base + "/people/")
        assert "Guest Centre" not in page.inner_text("#people-grid")
        page.goto(base + "/merges/")
        page.locator("#merges tr", has_text="Guest Centre").locator("button", has_text="Undo").click()
        page.wait_for_selector("#person-name")
        assert page.inner_text("#person-name") == "Guest Centre"
        assert page.locator("#appearances .thumb").count() == guest_faces

    with step(page, "09-delete-with-purge"):
        assert celery_worker_process.wait_idle()
        page.goto(stranger_url)
        stranger_faces = page.locator("#appearances .thumb").count()
        page.click("#delete-person")
        page.check("#purge-faces")
        page.click("#confirm-delete")
        page.wait_for_url(base + "/people/")
        assert f"{stranger_faces} face(s) erased" in page.inner_text(".messages")
        assert "Stranger One" not in page.inner_text("#people-grid")
        page.goto(photo_url)
        page.wait_for_selector("#photo")
        assert face_count(page) == faces_before - 1  # this photo's Stranger One face is gone

    with step(page, "10-drag-and-drop-a-photo"):
        page.goto(base + "/")
        photo = (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()
        # What a drop from the file manager delivers: a DataTransfer holding the file.
        page.evaluate("""([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "image/jpeg" }));
            document.querySelector("[data-dropzone]").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
        }""", ["dropped.jpg", list(photo)])
        page.wait_for_url(re.compile(r"/jobs/\d+/$"))
        assert page.url != job_url
        page.wait_for_function("document.querySelector('#job-status').textContent.startsWith('completed')", timeout=JOB_TIMEOUT_MS)
        assert "dropped.jpg" in page.inner_text("#job-images")

    with step(page, "11-sign-out"):
        page.click("#sign-out")
        page.wait_for_url(re.compile(r"/login/"))

    other = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    with step(other, "12-second-owner-sees-nothing"):
        sign_in(other, base, "bob")
        assert "No jobs yet" in other.inner_text("main")
        other.goto(base + "/people/")
        other.wait_for_selector("#no-people")
        other.goto(base + "/unknown/")
        other.wait_for_selector("#no-clusters")
        for url in (photo_url, job_url, stranger_url):
            assert other.goto(url).status == 404, url
    context.close()
