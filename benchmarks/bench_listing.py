"""How fast an import source becomes a job: the request, then the background listing.

Builds a folder of --files image files (empty: listing never reads them),
starts its own embedded stack (distinct ports: --port-base; no workers),
and times:

1. the request part, `services.submit_import` (what POST /api/v1/jobs
   with {"source": ...} runs): it lists the first FACEINDEX_IMPORT_LIST_CHUNK
   files and answers;
2. the background listing, `listing.continue_listing` (what the
   faceindex.list_source task runs), to the end: files/s and chunks/s;
3. a resume: the cursor is moved back one chunk's worth as a killed lister
   would leave it (rows of the last chunk rolled back), and the listing
   finishes again without a duplicate row.

The queued batch messages go to the benchmark's own Redis, which is thrown
away with the stack.

    .venv/bin/python -m benchmarks.bench_listing --files 100000
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_folder(root: Path, files: int, per_dir: int = 500) -> Path:
    folder = root / "archive"
    for i in range(files):
        directory = folder / f"{i // per_dir:05d}"
        if i % per_dir == 0:
            directory.mkdir(parents=True)
        (directory / f"IMG_{i:07d}.jpg").touch()
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--port-base", type=int, default=15800)
    parser.add_argument("--var-dir", type=Path, default=REPO_ROOT / "var" / "bench-listing")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="faceindex-listing-"))
    started = time.perf_counter()
    folder = build_folder(work, args.files)
    print(f"built {args.files} files in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)

    from deploy.ports import StackPorts
    from deploy.stack import Stack

    stack = Stack(args.var_dir, StackPorts.from_base(args.port_base))
    stack.start()
    os.environ.update({**stack.env(), "DJANGO_SETTINGS_MODULE": "backend.config.settings_dev",
                       "FACEINDEX_IMPORT_ROOTS": str(work), "FACEINDEX_SWEEP_INTERVAL_S": "0"})
    try:
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import transaction

        from backend.jobs import listing, queueing, services
        from backend.jobs.models import Image, Job

        call_command("migrate", verbosity=0)
        user, _ = get_user_model().objects.get_or_create(username="bench-listing")

        started = time.perf_counter()
        job, _ = services.submit_import(owner=user, source=str(folder))
        request_s = time.perf_counter() - started
        first_chunk = job.total_images

        job.refresh_from_db()
        started = time.perf_counter()
        while listing.continue_listing(job.pk, job.listing_task, seconds=3600):
            pass
        background_s = time.perf_counter() - started
        job.refresh_from_db()
        listed = job.total_images
        rows = Image.objects.filter(job=job).count()

        # A killed lister: its last chunk never committed, the cursor is one chunk back.
        chunk = min(1000, listed)
        with transaction.atomic():
            last = list(Image.objects.filter(job=job).order_by("-id").values_list("id", flat=True)[:chunk])
            Image.objects.filter(id__in=last).delete()
            Job.objects.filter(pk=job.pk).update(total_images=listed - chunk, listed_files=listed - chunk,
                                                 listing=True)
        queueing.send_listing_task(job.pk)
        job.refresh_from_db()
        started = time.perf_counter()
        while listing.continue_listing(job.pk, job.listing_task, seconds=3600):
            pass
        resume_s = time.perf_counter() - started
        job.refresh_from_db()
        names = Image.objects.filter(job=job).values_list("original_name", flat=True)
        duplicates = names.count() - names.distinct().count()
        services.cancel_job(job)

        result = {
            "files": args.files, "request_seconds": round(request_s, 3), "listed_in_request": first_chunk,
            "background_seconds": round(background_s, 2), "background_files_per_second": round((listed - first_chunk) / background_s),
            "rows": rows, "resume_seconds_last_chunk": round(resume_s, 2),
            "rows_after_resume": job.total_images, "duplicate_rows": duplicates,
        }
        print(f"request (POST jobs {{source}}): {request_s * 1000:.0f} ms, {first_chunk} files listed in it")
        print(f"background listing: {listed - first_chunk} files in {background_s:.1f}s "
              f"= {result['background_files_per_second']} files/s; rows {rows} of {args.files}")
        print(f"resume after a lost chunk: {resume_s:.1f}s (re-walk to the cursor + one chunk); "
              f"rows {job.total_images}, duplicates {duplicates}")
        print(json.dumps(result))
        return 0 if rows == args.files == job.total_images and not duplicates else 1
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
