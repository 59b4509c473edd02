"""python manage.py index PATH|s3://bucket/prefix [--in-place] [--enroll DIR [--box PERSON/FILE=x,y,w,h ...]] [--wait] [--json]

Submits a folder or zip (uploaded), an S3 prefix or, with --in-place, a
server-side folder under FACEINDEX_IMPORT_ROOTS (read where it lies) through
the same services the REST API uses, waits with a progress bar (done/total,
images/s, ETA, faces, failures), and prints the per-identity report.
"""
import sys
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from backend.core.errors import ServiceError
from backend.gallery import services as gallery_services
from backend.gallery.models import Identity
from backend.jobs import services
from backend.jobs.models import Job
from backend.reports import selectors
from backend.reports.text import format_report


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def parse_boxes(values) -> dict[str, str]:
    """--box PERSON/FILE=x,y,w,h values as {PERSON/FILE: "x,y,w,h"} (the box is checked by enrollment)."""
    boxes = {}
    for value in values:
        photo, sep, box = value.partition("=")
        if not sep or not photo.strip() or not box.strip():
            raise CommandError(f"--box {value!r}: expected PERSON/FILE=x,y,w,h")
        boxes[photo.strip()] = box.strip()
    return boxes


class Command(BaseCommand):
    help = "Index a folder or zip of photos and print the per-identity report."

    def add_arguments(self, parser):
        parser.add_argument("path", help="folder or .zip of photos, or s3://bucket/prefix")
        parser.add_argument("--in-place", action="store_true",
                            help="index the folder where it lies (must be under FACEINDEX_IMPORT_ROOTS) instead of uploading it")
        parser.add_argument("--webhook-url", default="", help="completion webhook for this job")
        parser.add_argument("--enroll", type=Path, help="folder with one sub-folder of photos per known person")
        parser.add_argument("--box", action="append", default=[], metavar="PERSON/FILE=x,y,w,h",
                            help="with --enroll: the face to enroll from that photo, where no face dominates "
                                 "(no_dominant_face lists the boxes found); repeatable")
        parser.add_argument("--owner", default="demo", help="username that owns the job (created if missing)")
        parser.add_argument("--wait", action="store_true", help="wait for the job and print the report")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most")

    def handle(self, *args, path: str, enroll: Path | None, owner: str, wait: bool, json: bool, timeout: float,
               in_place: bool = False, webhook_url: str = "", box: list[str] = (), **_):
        user, _ = get_user_model().objects.get_or_create(username=owner)
        log = sys.stderr
        if enroll:
            self._enroll(user, enroll, log, boxes=parse_boxes(box))
        if path.startswith("s3://") or in_place:
            source = path if path.startswith("s3://") else str(Path(path).resolve())
            job, _ = services.submit_import(owner=user, source=source, webhook_url=webhook_url)
        else:
            job = self._upload(user, Path(path), webhook_url)
        more = " so far (the rest of the source is listed in the background)" if job.listing else ""
        print(f"job {job.pk}: {job.total_images} images queued{more}", file=log)
        if not wait:
            return
        job = self._wait(job, timeout, log)
        report = {"summary": selectors.job_summary(job=job), "report": selectors.identity_report(owner=user, job=job)}
        if json:
            self.stdout.write(__import__("json").dumps(report, indent=2, default=str))
        else:
            self.stdout.write(format_report(report))

    def _upload(self, user, path: Path, webhook_url: str) -> Job:
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        uploads = [services.Upload(str(p.relative_to(path)), p.open("rb"), p.stat().st_size) for p in files_under(path)] \
            if path.is_dir() else [services.Upload(path.name, path.open("rb"), path.stat().st_size)]
        try:
            job, _ = services.submit_job(owner=user, uploads=uploads, webhook_url=webhook_url)
        finally:
            for upload in uploads:
                upload.fileobj.close()
        return job

    def _enroll(self, user, root: Path, log, *, boxes: dict[str, str]) -> None:
        person_dirs = sorted(p for p in root.iterdir() if p.is_dir())
        photos = {f"{d.name}/{p.relative_to(d)}" for d in person_dirs for p in files_under(d)}
        if unknown := sorted(set(boxes) - photos):
            raise CommandError(f"--box names photos not under {root}: {', '.join(unknown)}")
        for person_dir in person_dirs:
            identity = Identity.objects.filter(owner=user, name=person_dir.name).first() \
                or gallery_services.create_identity(owner=user, name=person_dir.name)
            files = files_under(person_dir)
            # A photo with an explicit box is enrolled on its own (a box picks a face in one photo).
            batches = [([p], boxes[key]) for p in files if (key := f"{person_dir.name}/{p.relative_to(person_dir)}") in boxes]
            boxed = {p for batch, _ in batches for p in batch}
            batches.insert(0, ([p for p in files if p not in boxed], None))
            results, enrolled = [], 0
            for batch, box in batches:
                if not batch:
                    continue
                uploads = [services.Upload(p.name, p.open("rb"), p.stat().st_size) for p in batch]
                try:
                    summary = gallery_services.enroll_from_uploads(identity=identity, uploads=uploads, box=box)
                except ServiceError as exc:  # a malformed --box
                    raise CommandError(f"--box for {person_dir.name}/{batch[0].name}: {exc.message}")
                finally:
                    for upload in uploads:
                        upload.fileobj.close()
                results += summary.results
                enrolled += summary.enrolled
            errors = [f"{r.name}: {r.error['code']}: {r.error['message']}"
                      + (f" boxes found: {r.error['boxes']} (pick one: --box {person_dir.name}/{r.name}=x,y,w,h)"
                         if r.error.get("boxes") else "")
                      for r in results if r.error]
            print(f"enrolled {identity.name}: {enrolled}/{len(files)} photos" + (f" ({'; '.join(errors)})" if errors else ""), file=log)

    def _wait(self, job: Job, timeout: float, log) -> Job:
        from tqdm import tqdm

        deadline = time.monotonic() + timeout
        started = time.monotonic()
        with tqdm(total=job.total_images, unit="img", file=log, desc=f"job {job.pk}") as bar:
            while True:
                job.refresh_from_db()
                bar.total = job.total_images  # grows while a large import source is still being listed
                bar.n = job.done_images
                # tqdm's own rate and ETA count from the bar's start; linked (deduplicated) images count as done.
                bar.set_postfix(failed=job.failed_images, faces=job.faces_found, linked=job.linked_images,
                                **({"listing": "on"} if job.listing else {}))
                bar.refresh()
                if job.status in (Job.Status.COMPLETED, Job.Status.CANCELLED):
                    break
                if time.monotonic() > deadline:
                    raise CommandError(f"job {job.pk} not finished after {timeout:.0f}s ({job.done_images}/{job.total_images})")
                time.sleep(0.5)
        elapsed = time.monotonic() - started
        print(f"job {job.pk} {job.status} in {elapsed:.1f}s ({job.total_images / max(elapsed, 1e-6):.2f} images/s)", file=log)
        return job
