"""Archive-scale indexing benchmark through the real stack, against face_recognition.

    .venv/bin/python benchmarks/bench_archive.py [--archive synthetic|large] [--images 2000] [--workers 1 2]
        [--fr-processes 2] [--fr-images 300] [--fr-upsample N] [--port-base 15700] [--batch-size 8]
        [--worker-threads N] [--kill-node] [--skip-face-recognition]

--archive large builds 12 MP and 4 MP photos instead (build_large_archive)
plus one 108 MP scan, and counts the faces each system found against the
faces placed. Unknown-face clustering is replayed batch by batch after each
run and reported as ms per image next to the write stage. CPU seconds per
image (user+sys) of the worker processes and of PostgreSQL, S3 and Redis are
printed with the load average: on a shared host they, not the wall times,
compare between runs.

1. Builds a synthetic archive of N photos from package-shipped faces (scikit-
   image's astronaut, insightface's Tom Hanks portrait and the six people of
   its t1.jpg group photo): face tiles transformed (scale, flip, rotation,
   brightness) and composited 1-4 per scene on generated backgrounds, whole
   group photos re-shot, EXIF DateTimeOriginal spread over six years, and 2%
   exact duplicates (dedup must link them). Ground truth is kept per file.
2. Starts its own embedded stack (distinct ports: --port-base), enrolls four
   people and indexes the archive as a server-side folder import with 1 and
   then 2 Celery worker processes (solo pool each) (a fresh owner each run, so nothing is
   linked across runs). Prints images/s, faces/s, mean per-stage seconds per
   image (decode, detect, embed, match, write; from Image.timings), peak RSS
   per worker process, and the report's precision/recall against ground truth.
3. Runs the classic `face_recognition` library (dlib HOG detector + 128-d
   ResNet, match at distance 0.6) on the same files (an evenly spaced sample
   of --fr-images of them: it is ~5x slower) with the same number of
   processes, and prints the throughput ratio.

Needs (not in requirements.txt): dlib-bin==20.0.1.post1,
face-recognition-models==0.3.0, face_recognition==1.3.0 (--no-deps).
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from ml.pkg_resources_shim import provide_pkg_resources  # noqa: E402

# The stage names the worker times (backend/jobs/processing.py STAGES); kept
# literal so this module imports without Django settings.
STAGES = ("decode", "detect", "embed", "attributes", "match", "write")
FACE_RECOGNITION_TOLERANCE = 0.6  # the library's documented default


# -- synthetic archive ------------------------------------------------------------

def _face_pool(enroll_names: set[str]) -> list[tuple[str | None, np.ndarray]]:
    """(identity or None for a stranger, face tile with context) from package images."""
    from deploy.sample_archive import T1_GUESTS, _crop_with_margin
    from ml.package_images import astronaut_bgr, read_package_image
    from ml.pipeline import FacePipeline
    from ml.subject import iou as _iou

    pipeline = FacePipeline.from_manifest()
    group = read_package_image("t1.jpg")
    pool = []
    for face in pipeline.detect(group):
        name = next((n for n, box in T1_GUESTS.items() if _iou(face.box, box) > 0.5), None)
        pool.append((name if name in enroll_names else None, _crop_with_margin(group, face.box, 0.6)))
    astronaut = astronaut_bgr()
    best = pipeline.detect(astronaut)[0]
    pool.append(("Eileen Collins", _crop_with_margin(astronaut, best.box, 0.6)))
    hanks = read_package_image("Tom_Hanks_54745.png")
    pool.append(("Tom Hanks", cv2.resize(hanks, (224, 224), interpolation=cv2.INTER_CUBIC)))
    return pool


def _jpeg_with_date(img: np.ndarray, taken: datetime, quality: int, orientation: int | None = None) -> bytes:
    """JPEG with EXIF DateTimeOriginal; with ``orientation`` 6 or 8 the pixels are stored
    turned so that only a reader honouring EXIF sees ``img`` upright."""
    from PIL import Image

    if orientation == 6:
        img = cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    elif orientation == 8:
        img = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    pil = Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = taken.strftime("%Y:%m:%d %H:%M:%S")
    if orientation:
        exif[0x0112] = orientation
    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def _background(rng: random.Random, width: int, height: int) -> np.ndarray:
    a = np.array([rng.randint(40, 220) for _ in range(3)], np.float32)
    b = np.array([rng.randint(40, 220) for _ in range(3)], np.float32)
    t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(a * (1 - t) + b * t, (height, width, 3)).copy()
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _transformed(rng: random.Random, tile: np.ndarray, height: int) -> np.ndarray:
    scale = height / tile.shape[0]
    out = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)
    angle = rng.uniform(-10, 10)
    matrix = cv2.getRotationMatrix2D((out.shape[1] / 2, out.shape[0] / 2), angle, 1.0)
    out = cv2.warpAffine(out, matrix, (out.shape[1], out.shape[0]), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * rng.uniform(0.75, 1.2), 0, 255).astype(np.uint8)


def build_archive(dest: Path, count: int, seed: int = 5) -> tuple[Path, Path, dict[str, set[str]]]:
    """Returns (enroll dir, archive dir, ground truth: file -> enrolled people in it)."""
    from deploy.sample_archive import build as build_sample
    from ml.package_images import read_package_image

    sample = build_sample(dest / "sample")
    enroll_names = {p.name for p in sample.enroll_dir.iterdir()}
    pool = _face_pool(enroll_names)
    group = read_package_image("t1.jpg")
    group_people = {name for name, _ in pool[:-2] if name}
    rng = random.Random(seed)
    archive = dest / "archive"
    truth: dict[str, set[str]] = {}
    written: list[tuple[str, bytes]] = []
    start = datetime(2015, 1, 1)
    for i in range(count):
        rel = f"{2015 + i % 6}/img-{i:05d}.jpg"
        taken = start + timedelta(days=rng.randint(0, 6 * 365), seconds=rng.randint(0, 86399))
        if written and rng.random() < 0.02:  # an exact copy: dedup must link it
            source_rel, data = written[rng.randrange(len(written))]
            people = truth[source_rel]
        elif rng.random() < 0.1:  # the group photo, re-shot
            scale = rng.uniform(0.6, 1.0)
            img = cv2.resize(group, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            img = cv2.flip(img, 1) if rng.random() < 0.5 else img
            data, people = _jpeg_with_date(img, taken, rng.randint(70, 92)), set(group_people)
        else:
            width, height = 800, 600
            scene = _background(rng, width, height)
            people = set()
            cells = rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], rng.randint(1, 4))
            for cx, cy in cells:
                name, tile = pool[rng.randrange(len(pool))]
                tile = _transformed(rng, tile, rng.randint(130, 240))
                th, tw = tile.shape[:2]
                x = cx * width // 2 + rng.randint(0, max(0, width // 2 - tw))
                y = cy * height // 2 + rng.randint(0, max(0, height // 2 - th))
                th, tw = min(th, height - y), min(tw, width - x)
                scene[y:y + th, x:x + tw] = tile[:th, :tw]
                if name:
                    people.add(name)
            data = _jpeg_with_date(scene, taken, rng.randint(75, 92))
        path = archive / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        truth[rel] = people
        written.append((rel, data))
    return sample.enroll_dir, archive, truth


# Large photos: phone (12 MP, 4000x3000) and compact-camera (4 MP, 2304x1728) frames.
LARGE_SIZES = ((4000, 3000), (2304, 1728))
SCAN_SIZE = (12000, 9000)  # a 10x8-inch print at ~1200 dpi: 108 MP


def build_large_archive(dest: Path, count: int, seed: int = 7, scan: bool = True):
    """Returns (enroll dir, archive dir, ground truth people per file, faces per file).

    Package faces composited, 1-4 per scene, into 12 MP and 4 MP frames (half
    each), face heights 8-30% of the frame's short side, EXIF DateTimeOriginal,
    a quarter stored rotated with EXIF Orientation 6 or 8. With ``scan`` one
    108 MP archive scan (``scan/print-0001.jpg``) is added: the largest photo.
    """
    from deploy.sample_archive import build as build_sample

    sample = build_sample(dest / "sample")
    enroll_names = {p.name for p in sample.enroll_dir.iterdir()}
    pool = _face_pool(enroll_names)
    rng = random.Random(seed)
    archive = dest / "archive"
    truth: dict[str, set[str]] = {}
    face_count: dict[str, int] = {}
    start = datetime(2015, 1, 1)

    def scene(width: int, height: int, faces: int) -> tuple[np.ndarray, set[str]]:
        img = cv2.resize(_background(rng, width // 8, height // 8), (width, height), interpolation=cv2.INTER_LINEAR)
        people: set[str] = set()
        cells = rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], faces)
        for cx, cy in cells:
            name, tile = pool[rng.randrange(len(pool))]
            # The tiles carry context around the face (0.6 margin): the face is ~half the tile.
            tile = _transformed(rng, tile, int(min(width, height) * rng.uniform(0.16, 0.45)))
            th, tw = tile.shape[:2]
            x = cx * width // 2 + rng.randint(0, max(0, width // 2 - tw))
            y = cy * height // 2 + rng.randint(0, max(0, height // 2 - th))
            th, tw = min(th, height - y), min(tw, width - x)
            img[y:y + th, x:x + tw] = tile[:th, :tw]
            if name:
                people.add(name)
        return img, people

    for i in range(count):
        width, height = LARGE_SIZES[i % 2]
        rel = f"{2015 + i % 6}/large-{i:05d}.jpg"
        taken = start + timedelta(days=rng.randint(0, 6 * 365), seconds=rng.randint(0, 86399))
        faces = rng.randint(1, 4)
        img, people = scene(width, height, faces)
        orientation = rng.choice([6, 8]) if rng.random() < 0.25 else None
        path = archive / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg_with_date(img, taken, rng.randint(80, 92), orientation))
        truth[rel], face_count[rel] = people, faces
    if scan:
        rel = "scan/print-0001.jpg"
        img, people = scene(*SCAN_SIZE, 4)
        path = archive / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg_with_date(img, start, 85))
        del img
        truth[rel], face_count[rel] = people, 4
    return sample.enroll_dir, archive, truth, face_count


# -- faceindex through the real stack ------------------------------------------------

def _worker_tree_rss(process: subprocess.Popen, peaks: dict[int, int]) -> None:
    import psutil

    try:
        root = psutil.Process(process.pid)
        for proc in [root, *root.children(recursive=True)]:
            peaks[proc.pid] = max(peaks.get(proc.pid, 0), proc.memory_info().rss)
    except psutil.NoSuchProcess:
        pass


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process, its live descendants and the children it has reaped.

    Independent of how busy the machine is, unlike wall time: the figure to
    compare between runs on a shared host.
    """
    import psutil

    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in root.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


WORKER_THREADS = 0  # --worker-threads; 0: the cores shared out among the workers of a run


def _start_node(node: str, workers: int, env: dict, log_dir: Path) -> subprocess.Popen:
    """One worker "node": its own node name, var dir and log, sharing only the database, broker and S3."""
    var_dir = log_dir.parent / "nodes" / node.split("@")[0]
    var_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{node.split('@')[0]}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool=solo", "-n", node,
         "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO_ROOT, env={"FACEINDEX_WORKER_THREADS": str(WORKER_THREADS or max(1, (os.cpu_count() or 1) // workers)), **env,
                            "FACEINDEX_VAR_DIR": str(var_dir), "TMPDIR": str(var_dir)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run_faceindex(workers: int, enroll_dir: Path, archive: Path, env: dict, log_dir: Path,
                  kill_at: float | None = None, service_pids: dict[str, int | None] | None = None) -> dict:
    """Index the archive with ``workers`` nodes; with ``kill_at`` the last node is SIGKILLed once that
    share of the images is done and started again under its name 5 s later (as a supervisor would)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from backend.gallery import services as gallery_services
    from backend.jobs import services
    from backend.jobs.models import Image, Job
    from backend.core.uploads import Upload
    from backend.reports import selectors
    from backend.config.celery import app

    user = get_user_model().objects.create_user(username=f"bench-{workers}w-{int(time.time())}")
    for person in sorted(p for p in enroll_dir.iterdir() if p.is_dir()):
        identity = gallery_services.create_identity(owner=user, name=person.name)
        uploads = [Upload.from_bytes(p.name, p.read_bytes()) for p in sorted(person.iterdir())]
        gallery_services.enroll_from_uploads(identity=identity, uploads=uploads)

    # N independent solo-pool workers rather than one prefork pool: cv2.dnn in
    # a forked pool child was seen to spin forever in SFace's forward pass.
    tag = f"{workers}{'k' if kill_at else ''}"
    nodes = [f"node{i}-{tag}@bench-host{i}" for i in range(workers)]
    procs = [_start_node(node, workers, env, log_dir) for node in nodes]
    peaks: dict[int, int] = {}
    killed = None
    try:
        deadline = time.monotonic() + 120
        while len(app.control.ping(destination=nodes, timeout=0.5)) < len(nodes):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {log_dir}")
        # (the solo pool loads the models in worker_process_init, before it answers pings)
        wall_started = time.monotonic()
        load_at_start = os.getloadavg()[0]
        # CPU from here on: the models are loaded (before the workers answer pings).
        worker_cpu_start = [_cpu_seconds(p.pid) for p in procs]
        service_cpu_start = {name: _cpu_seconds(pid) for name, pid in (service_pids or {}).items()}
        job, _ = services.submit_import(owner=user, source=str(archive))
        last_print = 0.0
        while True:
            for worker in procs:
                _worker_tree_rss(worker, peaks)
            job.refresh_from_db()
            if time.monotonic() - last_print > 15:
                print(f"  {workers} worker(s): {job.done_images}/{job.total_images}", file=sys.stderr, flush=True)
                last_print = time.monotonic()
            if job.status in (Job.Status.COMPLETED, Job.Status.CANCELLED):
                break
            if kill_at is not None and killed is None and job.done_images >= kill_at * job.total_images:
                import signal

                victim = procs[-1]
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait()
                killed = {"node": nodes[-1], "at_done_images": job.done_images,
                          "processing_when_killed": Image.objects.filter(job=job, status=Image.Status.PROCESSING,
                                                                         worker=nodes[-1]).count()}
                print(f"  killed {nodes[-1]} at {job.done_images}/{job.total_images} images", file=sys.stderr, flush=True)
                time.sleep(5)
                procs[-1] = _start_node(nodes[-1], workers, env, log_dir)
            time.sleep(0.5)
        wall = time.monotonic() - wall_started
        # Follow-up work the indexing queued (unknown-face clustering) runs on
        # the same workers: wait for it so the next run starts on an idle stack.
        broker = app.connection_for_write().default_channel.client
        queues = ("celery", settings.FACEINDEX_LISTING_QUEUE)
        while any(broker.llen(q) for q in queues) or any(
                (app.control.inspect(destination=nodes, timeout=1.0).active() or {}).values()):
            for worker in procs:
                _worker_tree_rss(worker, peaks)
            time.sleep(0.5)
        drained = time.monotonic() - wall_started
        worker_cpu = [_cpu_seconds(p.pid) - start for p, start in zip(procs, worker_cpu_start)]
        service_cpu = {name: _cpu_seconds(pid) - service_cpu_start[name] for name, pid in (service_pids or {}).items()}
        load_at_end = os.getloadavg()[0]
    finally:
        for worker in procs:
            worker.terminate()
        for worker in procs:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    job.refresh_from_db()
    seconds = (job.finished_at - job.started_at).total_seconds()
    stage_sums = {stage: 0.0 for stage in STAGES}
    timed = 0
    for timings in Image.objects.filter(job=job, linked_from__isnull=True, status=Image.Status.DONE).values_list("timings", flat=True):
        timed += 1
        for stage in STAGES:
            stage_sums[stage] += timings.get(stage, 0.0)
    report = selectors.identity_report(owner=user, job=job)
    found = {}
    for row in report["identities"]:
        for face in row["faces"]:
            found.setdefault(face["image"], set()).add(row["name"])
    return {
        "workers": workers,
        "killed": killed,
        "owner_id": user.pk,
        "job": job,
        "images": job.total_images,
        "processed": job.processed_images,
        "failed": job.failed_images,
        "linked": job.linked_images,
        "faces": job.faces_found,
        "seconds": seconds,
        "wall_seconds": wall,
        "drained_seconds": drained,
        "images_per_s": job.total_images / seconds,
        "faces_per_s": job.faces_found / seconds,
        "stage_ms": {stage: 1000 * total / max(timed, 1) for stage, total in stage_sums.items()},
        "peak_rss_mb": [round(peaks[p.pid] / 2**20) for p in procs if p.pid in peaks],
        # A killed node's CPU before the kill is lost: no CPU figures for that run.
        "worker_cpu_s_per_image": None if killed else [round(c / job.total_images, 4) for c in worker_cpu],
        "service_cpu_s_per_image": {name: round(c / job.total_images, 4) for name, c in service_cpu.items()},
        "load_average": [round(load_at_start, 1), round(load_at_end, 1)],
        "found": found,
        "report": report,
    }


def replay_clustering(owner_id: int, batch_size: int) -> dict:
    """Cluster the run's unknown faces again, batch by batch as the workers queued them; ms per image.

    The workers cluster in background tasks interleaved with indexing, so
    their cost is not in Image.timings: here it is measured on its own, on
    the same faces, in this process.
    """
    from backend.gallery import clustering
    from backend.gallery.models import Face, UnknownCluster

    Face.objects.filter(owner_id=owner_id).update(cluster=None, cluster_checked=False)
    UnknownCluster.objects.filter(owner_id=owner_id).delete()
    by_image: dict[int, list[int]] = {}
    for face_id, image_id in (Face.objects.filter(owner_id=owner_id, identity__isnull=True)
                              .order_by("image_id", "id").values_list("id", "image_id")):
        by_image.setdefault(image_id, []).append(face_id)
    images = Face.objects.filter(owner_id=owner_id).values("image_id").distinct().count()
    image_ids = sorted(by_image)
    started = time.perf_counter()
    for start in range(0, len(image_ids), batch_size):
        clustering.cluster_faces(owner_id, [f for i in image_ids[start:start + batch_size] for f in by_image[i]])
    seconds = time.perf_counter() - started
    return {"cluster_ms_per_image": 1000 * seconds / max(images, 1), "unknown_faces": sum(map(len, by_image.values())),
            "clusters": UnknownCluster.objects.filter(owner_id=owner_id).count()}


# -- face_recognition on the same files ---------------------------------------------------

def _import_face_recognition():
    provide_pkg_resources()
    import face_recognition

    return face_recognition


_known: tuple[list[str], np.ndarray] | None = None
_upsample = 1


def _fr_init(known_names, known_encodings, upsample: int = 1) -> None:
    global _known, _upsample
    cv2.setNumThreads(1)
    _known = (known_names, np.asarray(known_encodings))
    _upsample = upsample


def _fr_one(path: str) -> tuple[str, int, list[str]]:
    face_recognition = _import_face_recognition()
    img = face_recognition.load_image_file(path)
    locations = face_recognition.face_locations(img, number_of_times_to_upsample=_upsample)  # HOG
    encodings = face_recognition.face_encodings(img, locations)
    names = []
    known_names, known = _known
    for encoding in encodings:
        distances = np.linalg.norm(known - encoding, axis=1)
        best = int(np.argmin(distances))
        if distances[best] <= FACE_RECOGNITION_TOLERANCE:
            names.append(known_names[best])
    return path, len(encodings), names


def run_face_recognition(processes: int, enroll_dir: Path, archive: Path, limit: int | None = None,
                         upsample: int = 1, exclude: set[str] = frozenset()) -> dict:
    face_recognition = _import_face_recognition()
    known_names, known_encodings = [], []
    for person in sorted(p for p in enroll_dir.iterdir() if p.is_dir()):
        for photo in sorted(person.iterdir()):
            img = face_recognition.load_image_file(str(photo))
            encodings = face_recognition.face_encodings(img)
            if encodings:
                known_names.append(person.name)
                known_encodings.append(encodings[0])
    files = sorted(str(p) for p in archive.rglob("*.jpg") if str(p.relative_to(archive)) not in exclude)
    if limit and limit < len(files):  # an evenly spaced sample: HOG takes ~1.5 s per image on 2 cores
        files = files[:: len(files) // limit][:limit]
    started = time.monotonic()
    found: dict[str, set[str]] = {}
    faces = 0
    with multiprocessing.get_context("spawn").Pool(processes, _fr_init, (known_names, known_encodings, upsample)) as pool:
        for path, count, names in pool.imap_unordered(_fr_one, files, chunksize=4):
            faces += count
            if names:
                found[str(Path(path).relative_to(archive))] = set(names)
    seconds = time.monotonic() - started
    return {"processes": processes, "images": len(files), "files": [str(Path(f).relative_to(archive)) for f in files], "faces": faces, "seconds": seconds,
            "images_per_s": len(files) / seconds, "faces_per_s": faces / seconds, "found": found,
            "enrolled": sorted(set(known_names))}


# -- scoring and printing ----------------------------------------------------------------

def precision_recall(found: dict[str, set[str]], truth: dict[str, set[str]]) -> tuple[float, float]:
    true_pos = sum(len(found.get(f, set()) & people) for f, people in truth.items())
    predicted = sum(len(v) for v in found.values())
    actual = sum(len(v) for v in truth.values())
    return true_pos / max(predicted, 1), true_pos / max(actual, 1)


def check_report_matches_database(result: dict) -> None:
    from backend.gallery.models import Face
    from backend.jobs.selectors import job_faces

    job = result["job"]
    faces = job_faces(job)
    report = result["report"]
    assert report["total_faces"] == faces.count() == job.faces_found, (report["total_faces"], faces.count(), job.faces_found)
    assert sum(r["appearances"] for r in report["identities"]) == faces.filter(identity__isnull=False).count()
    assert report["unknown_faces"] == faces.filter(identity__isnull=True).count()
    assert Face.objects.filter(image__job=job, image__linked_from__isnull=False).count() == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", choices=("synthetic", "large"), default="synthetic",
                        help="synthetic: 800x600 scenes; large: 12 MP and 4 MP photos (+ one 108 MP scan)")
    parser.add_argument("--images", type=int, default=None, help="archive size (default 2000 synthetic, 300 large)")
    parser.add_argument("--fr-upsample", type=int, default=None,
                        help="face_recognition HOG upsampling (default 1, its own; 0 for --archive large, where faces are big)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--fr-processes", type=int, default=2, help="face_recognition processes (0: skip)")
    parser.add_argument("--fr-images", type=int, default=300,
                        help="face_recognition runs on an evenly spaced sample of this many images (0: all)")
    parser.add_argument("--skip-face-recognition", action="store_true")
    parser.add_argument("--kill-node", action="store_true",
                        help="also run 2 nodes and SIGKILL one a third of the way through (restarted under its name)")
    parser.add_argument("--batch-size", type=int, default=None, help="FACEINDEX_BATCH_SIZE for the workers")
    parser.add_argument("--worker-threads", type=int, default=0,
                        help="FACEINDEX_WORKER_THREADS of every worker (default: CPU cores // workers of the run, "
                             "so 1 worker uses 2 threads on 2 cores and 2 workers 1 each)")
    parser.add_argument("--port-base", type=int, default=15700)
    parser.add_argument("--var-dir", type=Path, default=REPO_ROOT / "var" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the stack and archive afterwards")
    args = parser.parse_args()

    global WORKER_THREADS
    WORKER_THREADS = args.worker_threads
    large = args.archive == "large"
    args.images = args.images or (300 if large else 2000)
    work = Path(tempfile.mkdtemp(prefix="faceindex-bench-"))
    print(f"building a {args.images}-image {args.archive} archive in {work} ...", file=sys.stderr, flush=True)
    built = time.monotonic()
    if large:
        enroll_dir, archive, truth, face_truth = build_large_archive(work, args.images)
    else:
        enroll_dir, archive, truth = build_archive(work, args.images)
        face_truth = None
    print(f"  built in {time.monotonic() - built:.0f}s", file=sys.stderr, flush=True)

    from deploy.ports import StackPorts
    from deploy.stack import Stack

    stack = Stack(args.var_dir, StackPorts.from_base(args.port_base))
    stack.start()
    service_pids = {"postgres": stack.postgres.pid(), "s3": stack.s3.pid(), "redis": stack.redis.pid()}
    env = {**os.environ, **stack.env(), "DJANGO_SETTINGS_MODULE": "backend.config.settings_dev",
           "FACEINDEX_IMPORT_ROOTS": str(work), "FACEINDEX_SWEEP_INTERVAL_S": "0", "PYTHONUNBUFFERED": "1"}
    if args.batch_size:
        env["FACEINDEX_BATCH_SIZE"] = str(args.batch_size)
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    import redis
    call_command("migrate", verbosity=0)
    redis.Redis.from_url(stack.redis.url()).flushdb()
    # An earlier run stopped half-way leaves live jobs behind; a starting
    # worker would resume them (jobs.services.requeue_orphans) before ours.
    from backend.jobs.models import Job

    Job.objects.filter(status__in=(Job.Status.PENDING, Job.Status.RUNNING)).update(status=Job.Status.CANCELLED)
    log_dir = args.var_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        results = []
        for workers in args.workers:
            print(f"indexing with {workers} worker process(es) ...", file=sys.stderr, flush=True)
            result = run_faceindex(workers, enroll_dir, archive, env, log_dir, service_pids=service_pids)
            check_report_matches_database(result)
            result.update(replay_clustering(result["owner_id"], settings.FACEINDEX_BATCH_SIZE))
            results.append(result)
        kill_run = None
        if args.kill_node:
            print("indexing with 2 nodes, one killed a third of the way ...", file=sys.stderr, flush=True)
            kill_run = run_faceindex(2, enroll_dir, archive, env, log_dir, kill_at=1 / 3)
            check_report_matches_database(kill_run)
        fr = None
        if not args.skip_face_recognition and args.fr_processes > 0:
            print(f"face_recognition with {args.fr_processes} process(es) ...", file=sys.stderr, flush=True)
            upsample = args.fr_upsample if args.fr_upsample is not None else (0 if large else 1)
            # The 108 MP scan is left out: HOG on it takes minutes and gigabytes.
            fr = run_face_recognition(args.fr_processes, enroll_dir, archive, args.fr_images or None, upsample=upsample,
                                      exclude={f for f in truth if f.startswith("scan/")})
            fr["upsample"] = upsample
    finally:
        if not args.keep:
            stack.stop()
            shutil.rmtree(work, ignore_errors=True)

    cpu = os.cpu_count()
    what = ("12 MP and 4 MP photos, a quarter EXIF-rotated, + one 108 MP scan" if large
            else "800x600 scenes + group photos, 2% exact duplicates")
    print(f"\nArchive benchmark: {len(truth)} images ({what}), "
          f"{cpu} CPU cores, batch size {settings.FACEINDEX_BATCH_SIZE}\n")
    header = f"{'system':<26}{'procs':>6}{'images/s':>10}{'faces/s':>9}{'seconds':>9}{'+clust':>8}{'faces':>7}{'linked':>7}{'failed':>7}{'prec':>6}{'recall':>7}  peak RSS MB"
    print(header)
    print("-" * len(header))
    for r in results:
        p, rc = precision_recall(r["found"], truth)
        print(f"{'faceindex (YuNet+SFace)':<26}{r['workers']:>6}{r['images_per_s']:>10.1f}{r['faces_per_s']:>9.1f}"
              f"{r['seconds']:>9.1f}{r['drained_seconds']:>8.1f}{r['faces']:>7}{r['linked']:>7}{r['failed']:>7}{p:>6.3f}{rc:>7.3f}  "
              f"{' '.join(map(str, r['peak_rss_mb']))}")
    if fr:
        sampled = {f: truth[f] for f in fr["files"]}
        p, rc = precision_recall(fr["found"], sampled)
        print(f"{'face_recognition (HOG)':<26}{fr['processes']:>6}{fr['images_per_s']:>10.1f}{fr['faces_per_s']:>9.1f}"
              f"{fr['seconds']:>9.1f}{'-':>8}{fr['faces']:>7}{'-':>7}{'-':>7}{p:>6.3f}{rc:>7.3f}")
    print("(seconds: job start to last image indexed; +clust: wall time until the queued unknown-face "
          "clustering also finished)")
    if face_truth:
        placed = sum(face_truth.values())
        print(f"\nFaces in the archive (ground truth): {placed}; faceindex found "
              + ", ".join(f"{r['faces']} ({r['workers']} worker(s))" for r in results))
        if fr:
            sampled_faces = sum(face_truth[f] for f in fr["files"])
            print(f"face_recognition found {fr['faces']} of the {sampled_faces} faces in its {fr['images']} images "
                  f"(HOG, upsample {fr['upsample']})")
    print("\nPer-stage mean ms per indexed image (detect/embed are per image; embed is one batched call per task;"
          " cluster: the unknown-face clustering replayed batch by batch):")
    print(f"{'procs':>6}" + "".join(f"{s:>9}" for s in STAGES) + f"{'cluster':>9}{'wr+cl':>9}")
    for r in results:
        print(f"{r['workers']:>6}" + "".join(f"{r['stage_ms'][s]:>9.1f}" for s in STAGES)
              + f"{r['cluster_ms_per_image']:>9.1f}{r['stage_ms']['write'] + r['cluster_ms_per_image']:>9.1f}")
    print("\nCPU seconds per image (user+sys; independent of the load, unlike the wall times above), "
          "and the 1-minute load average at the start and end of each run:")
    print(f"{'procs':>6}{'workers':>9}{'per worker':>16}{'postgres':>10}{'s3':>8}{'redis':>8}{'total':>8}  load")
    for r in results:
        svc = r["service_cpu_s_per_image"]
        total = sum(r["worker_cpu_s_per_image"]) + sum(svc.values())
        print(f"{r['workers']:>6}{sum(r['worker_cpu_s_per_image']):>9.3f}{' '.join(f'{c:.3f}' for c in r['worker_cpu_s_per_image']):>16}"
              f"{svc.get('postgres', 0):>10.3f}{svc.get('s3', 0):>8.3f}{svc.get('redis', 0):>8.3f}{total:>8.3f}  "
              f"{r['load_average'][0]} -> {r['load_average'][1]}")
    if kill_run:
        job = kill_run["job"]
        print(f"\nnode kill: {kill_run['killed']}; job {job.status}: {kill_run['processed']} processed, "
              f"{kill_run['failed']} failed of {kill_run['images']}, {kill_run['faces']} faces "
              f"(uninterrupted runs: {', '.join(str(r['faces']) for r in results)}), {kill_run['images_per_s']:.2f} images/s")
        summary_kill = {k: kill_run[k] for k in ("killed", "processed", "failed", "images", "faces", "images_per_s")}
    else:
        summary_kill = None
    if len(results) > 1:
        print(f"\nscaling: {results[-1]['workers']} workers = {results[-1]['images_per_s'] / results[0]['images_per_s']:.2f}x "
              f"the images/s of {results[0]['workers']}")
    summary = {"archive": args.archive, "images": len(truth), "faces_placed": sum(face_truth.values()) if face_truth else None,
               "cpu_cores": cpu, "faceindex": [
        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k not in ("job", "found", "report")}
        for r in results]}
    summary["node_kill"] = summary_kill
    if fr:
        same = next((r for r in results if r["workers"] == fr["processes"]), results[-1])
        ratio = same["images_per_s"] / fr["images_per_s"]
        print(f"\nfaceindex with {same['workers']} worker(s) vs face_recognition with {fr['processes']} process(es) "
              f"(on {fr['images']} of the images): {ratio:.1f}x the images/s")
        summary["face_recognition"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in fr.items() if k not in ("found", "files")}
        summary["ratio_images_per_s"] = round(ratio, 2)
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
