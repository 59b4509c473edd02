"""Open-set identification through the real stack (enroll -> index -> report), against face_recognition.

    .venv/bin/python benchmarks/bench_openset.py --root DIR [--every 1] [--port-base 16100]
        [--target-fpir 0.01] [--skip-face-recognition] [--fr-processes 2]

DIR is a folder-per-identity tree in LFW layout (lfw-dev/images). The protocol
is ml.eval openset's: enroll the first photo of every person with >= 3 photos,
index their other photos plus the one photo of every person who has only one
(never enrolled); a photo's answer is the face nearest its centre.
``--every K`` keeps every K-th person of each group (a subset, for speed).

1. Starts its own embedded stack (--port-base), enrolls each person through
   gallery.services.enroll_from_uploads (the dominant-face rule: refusals are
   counted), indexes the probes as a folder import with one Celery worker,
   waits for the background re-match, and reads the answers from the database.
   Prints identification_rate, misidentified, false_accept_rate among the
   never-enrolled, and identification_rate at FPIR 0.1% / 1% / 5% (from the
   best identity scores, matching.identity_scores), as JSON on the last line.
2. Runs the classic ``face_recognition`` library (HOG detector, dlib ResNet)
   on the same files: the same figures at its default tolerance (0.6) and at
   the tolerance that gives the FPIR faceindex measured.

Needs for step 2 (not in requirements.txt): requirements-bench.txt and
face_recognition==1.3.0 --no-deps (``make bench-deps``).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bench_archive import _import_face_recognition  # noqa: E402
from ml.eval.images import identity_folders  # noqa: E402
from ml.eval.openset import FPIR_POINTS, _cut_at_fpir, split_protocol  # noqa: E402

FACE_RECOGNITION_TOLERANCE = 0.6  # the library's documented default


def protocol(root: Path, every: int):
    enroll, known, unknown = split_protocol(identity_folders(root))
    keep_enrolled = set(sorted(enroll)[::every])
    enroll = {n: p for n, p in enroll.items() if n in keep_enrolled}
    known = [(n, p) for n, p in known if n in keep_enrolled]
    unknown = unknown[::every]
    return enroll, known, unknown


def figures(known_right, known_named, known_top, unknown_named, unknown_top) -> dict:
    known_right, known_named = np.asarray(known_right, bool), np.asarray(known_named, bool)
    known_top, unknown_top = np.asarray(known_top, float), np.asarray(unknown_top, float)
    at = {}
    for fpir in FPIR_POINTS:
        cut = _cut_at_fpir(unknown_top, fpir)
        at[f"{fpir:g}"] = {"identification_rate": round(float((known_right & (known_top >= cut)).mean()), 4),
                           "measurable": bool(len(unknown_top) * fpir >= 1)}
    return {
        "identification_rate": round(float((known_named & known_right).mean()), 4),
        "misidentified": round(float((known_named & ~known_right).mean()), 4),
        "false_accept_rate": round(float(np.mean(unknown_named)), 4),
        "identification_rate_at_fpir": at,
    }


# -- faceindex through the stack ---------------------------------------------------------------

def run_faceindex(enroll: dict, known, unknown, work: Path, env: dict, log_dir: Path) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from backend.gallery import matching
    from backend.gallery import services as gallery_services
    from backend.gallery.models import Face
    from backend.jobs import services
    from backend.jobs.models import Image, Job
    from backend.jobs.services import Upload
    from backend.config.celery import app

    user = get_user_model().objects.create_user(username=f"bench-openset-{int(time.time())}")
    refused, accepted, name_of = {}, 0, {}
    started = time.monotonic()
    for name, path in sorted(enroll.items()):
        identity = gallery_services.create_identity(owner=user, name=name)
        result = gallery_services.enroll_from_uploads(identity=identity, uploads=[Upload.from_bytes(path.name, path.read_bytes())]).results[0]
        name_of[identity.pk] = name
        if result.template_id:
            accepted += 1
        else:
            refused[name] = result.error["code"]
    enroll_seconds = time.monotonic() - started

    probes = work / "probes"
    for name, path in known + unknown:
        (probes / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, probes / name / path.name)
    log = open(log_dir / "worker-openset.log", "ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool=solo", "-n", "bench-openset@faceindex",
         "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not app.control.ping(destination=["bench-openset@faceindex"], timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {log_dir}")
        started = time.monotonic()
        job, _ = services.submit_import(owner=user, source=str(probes))
        last = 0.0
        while True:
            job.refresh_from_db()
            if time.monotonic() - last > 30:
                print(f"  {job.done_images}/{job.total_images}", file=sys.stderr, flush=True)
                last = time.monotonic()
            if job.status in (Job.Status.COMPLETED, Job.Status.CANCELLED):
                break
            time.sleep(1)
        index_seconds = time.monotonic() - started
        broker = app.connection_for_write().default_channel.client
        queues = ("celery", settings.FACEINDEX_LISTING_QUEUE)
        while any(broker.llen(q) for q in queues) or any((app.control.inspect(destination=["bench-openset@faceindex"], timeout=1.0).active() or {}).values()):
            time.sleep(1)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()

    rule = matching.match_rule(user.pk)
    answers = {}
    for image in Image.objects.filter(job=job).only("id", "original_name", "width", "height"):
        faces = list(Face.objects.filter(image=image).only("id", "box_x", "box_y", "box_w", "box_h", "identity_id", "embedding", "mask_state"))
        if not faces:
            answers[image.original_name] = (None, None, -1.0)
            continue
        face = min(faces, key=lambda f: (f.box_x + f.box_w / 2 - image.width / 2) ** 2 + (f.box_y + f.box_h / 2 - image.height / 2) ** 2)
        scores = matching.identity_scores(user.pk, face.embedding, probe_masked=face.mask_state not in ("", "no_mask", None))
        top = max(scores.items(), key=lambda kv: kv[1]) if scores else (None, -1.0)
        answers[image.original_name] = (name_of.get(face.identity_id), name_of.get(top[0]), float(top[1]))

    def answer(name, path):
        return answers.get(f"{name}/{path.name}", (None, None, -1.0))

    k = [answer(n, p) for n, p in known]
    u = [answer(n, p) for n, p in unknown]
    out = figures([a[1] == n for a, (n, _) in zip(k, known)], [a[0] is not None for a in k], [a[2] for a in k],
                  [a[0] is not None for a in u], [a[2] for a in u])
    # a named face is right only if named as its own person
    out["misidentified"] = round(float(np.mean([a[0] is not None and a[0] != n for a, (n, _) in zip(k, known)])), 4)
    out["identification_rate"] = round(float(np.mean([a[0] == n for a, (n, _) in zip(k, known)])), 4)
    out.update(enrolled=accepted, enrollment_refused=len(refused), enrollment_refusals=refused,
               threshold=round(rule.threshold, 4), target_fpir=rule.target_fpir,
               probes_enrolled=len(known), probes_never_enrolled=len(unknown),
               enroll_seconds=round(enroll_seconds, 1), index_seconds=round(index_seconds, 1),
               images_per_s=round(job.total_images / index_seconds, 2))
    return out


# -- face_recognition on the same files ----------------------------------------------------------

def _fr_encode(path: str):
    face_recognition = _import_face_recognition()
    img = face_recognition.load_image_file(path)
    locations = face_recognition.face_locations(img)  # HOG, one upsample (the defaults)
    if not locations:
        return path, None
    h, w = img.shape[:2]
    # (top, right, bottom, left): the face nearest the centre, as for faceindex
    loc = min(locations, key=lambda b: ((b[1] + b[3]) / 2 - w / 2) ** 2 + ((b[0] + b[2]) / 2 - h / 2) ** 2)
    return path, face_recognition.face_encodings(img, [loc])[0]


def run_face_recognition(enroll: dict, known, unknown, processes: int, faceindex_fpir: float) -> dict:
    files = sorted({str(p) for p in enroll.values()} | {str(p) for _, p in known + unknown})
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        encoded = dict(pool.imap_unordered(_fr_encode, files, chunksize=8))
    seconds = time.monotonic() - started
    names = [n for n, p in sorted(enroll.items()) if encoded[str(p)] is not None]
    gallery = np.stack([encoded[str(enroll[n])] for n in names])

    def best(probes):
        out = []
        for name, path in probes:
            e = encoded[str(path)]
            if e is None:
                out.append((None, np.inf))
                continue
            d = np.linalg.norm(gallery - e, axis=1)
            i = int(np.argmin(d))
            out.append((names[i], float(d[i])))
        return out

    k, u = best(known), best(unknown)
    right = [b[0] == n for b, (n, _) in zip(k, known)]
    # scores as similarities (higher = closer) for the FPIR read-out
    k_score, u_score = [-b[1] for b in k], [-b[1] for b in u]

    def at(tolerance):
        out = figures(right, [b[1] <= tolerance for b in k], k_score, [b[1] <= tolerance for b in u], u_score)
        out["tolerance"] = round(float(tolerance), 4)
        return out

    same_fpir = -_cut_at_fpir(np.asarray(u_score), faceindex_fpir)
    return {"default_tolerance": at(FACE_RECOGNITION_TOLERANCE), "same_fpir": at(same_fpir),
            "enrolled": len(names), "no_face": sum(1 for v in encoded.values() if v is None),
            "images": len(files), "seconds": round(seconds, 1), "images_per_s": round(len(files) / seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--every", type=int, default=1, help="keep every K-th person of each protocol group")
    parser.add_argument("--target-fpir", type=float, default=None, help="FACEINDEX_TARGET_FPIR for this run")
    parser.add_argument("--fr-processes", type=int, default=2)
    parser.add_argument("--skip-face-recognition", action="store_true")
    parser.add_argument("--port-base", type=int, default=16100)
    parser.add_argument("--var-dir", type=Path, default=REPO_ROOT / "var" / "bench-openset")
    args = parser.parse_args()

    enroll, known, unknown = protocol(args.root, args.every)
    print(f"protocol: {len(enroll)} enrolled, {len(known)} probes of them, {len(unknown)} never enrolled", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="faceindex-openset-"))

    from deploy.ports import StackPorts
    from deploy.stack import Stack

    stack = Stack(args.var_dir, StackPorts.from_base(args.port_base))
    stack.start()
    env = {**os.environ, **stack.env(), "DJANGO_SETTINGS_MODULE": "backend.config.settings_dev",
           "FACEINDEX_IMPORT_ROOTS": str(work), "FACEINDEX_SWEEP_INTERVAL_S": "0", "PYTHONUNBUFFERED": "1",
           "FACEINDEX_WORKER_THREADS": str(os.cpu_count() or 1)}
    if args.target_fpir is not None:
        env["FACEINDEX_TARGET_FPIR"] = str(args.target_fpir)
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from backend.jobs.models import Job

    Job.objects.filter(status__in=(Job.Status.PENDING, Job.Status.RUNNING)).update(status=Job.Status.CANCELLED)
    log_dir = args.var_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary = {"root": str(args.root), "every": args.every, **run_faceindex(enroll, known, unknown, work, env, log_dir)}
        if not args.skip_face_recognition:
            print("face_recognition on the same files ...", file=sys.stderr, flush=True)
            summary["face_recognition"] = run_face_recognition(enroll, known, unknown, args.fr_processes,
                                                               summary["false_accept_rate"])
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    for key in ("enrolled", "enrollment_refused", "threshold", "identification_rate", "misidentified", "false_accept_rate"):
        print(f"{key}: {summary[key]}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
