"""Scaled JPEG decoding: time, memory, and what it does to the embeddings.

    .venv/bin/python benchmarks/bench_decode.py [--images 24]

On photos of benchmarks/bench_archive.py's large archive (12 MP and 4 MP,
package faces) it prints:
1. decode ms per image at full size, at the detector's working size (what
   the worker decodes first) and at twice that;
2. for every detected face, the cosine between the embedding of the crop cut
   from the full-resolution decode and from a 1/2 and 1/4 decode, by the
   face's width in the pixels it is cut from: the basis for
   backend/jobs/processing.CROP_SOURCE_MIN_FACE (below it, crops come from a
   larger second decode);
3. peak RSS of a fresh process decoding the 108 MP scan for the detector,
   at the largest scale within FACEINDEX_MAX_PIXELS (the most a crop decode
   can take), and at full size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MAX_JPEG_PIXELS = 200_000_000
MAX_PIXELS = 60_000_000


def _peak_rss_mb(path: Path, max_pixels: int, max_side: int | None) -> tuple[float, tuple]:
    """Peak RSS of a fresh process that decodes ``path`` with these limits, and the decoded shape."""
    code = ("import resource; from ml.decode import decode_image; "
            f"d = decode_image(open({str(path)!r}, 'rb').read(), max_pixels={max_pixels}, max_side={max_side}, "
            f"max_jpeg_pixels={MAX_JPEG_PIXELS}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, *d.pixels.shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    rss, *shape = out.stdout.split()
    return int(rss) / 1024, tuple(int(v) for v in shape)


def main() -> int:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from bench_archive import build_large_archive

    from ml.decode import decode_image
    from ml.pipeline import FacePipeline

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faceindex-decode-"))
    _, archive, _, _ = build_large_archive(work, args.images)
    pipeline = FacePipeline.from_manifest()
    side = pipeline.detector.max_side
    timings = {"full": [], "detector": [], "twice": []}
    by_width: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(archive.rglob("*.jpg")):
        if path.parts[-2] == "scan":
            continue
        data = path.read_bytes()
        decoded = {}
        for name, max_side in (("full", None), ("detector", side), ("twice", 2 * side)):
            started = time.perf_counter()
            decoded[name] = decode_image(data, max_pixels=MAX_PIXELS, max_side=max_side, max_jpeg_pixels=MAX_JPEG_PIXELS)
            timings[name].append(1000 * (time.perf_counter() - started))
        full = decoded["full"]
        half = decode_image(data, max_side=max(full.width, full.height) // 2)
        quarter = decode_image(data, max_side=max(full.width, full.height) // 4)
        for face in pipeline.detect(decoded["detector"].pixels):
            d = decoded["detector"]
            landmarks = face.landmarks / np.float32([d.scale_x, d.scale_y])
            width = face.box[2] / d.scale_x
            crops = [pipeline.align(src.pixels, landmarks * np.float32([src.scale_x, src.scale_y]))
                     for src in (full, half, quarter)]
            reference, *others = pipeline.embed_crops(crops)
            for src, emb in zip((half, quarter), others):
                in_source = width * src.scale_x
                bucket = "<64" if in_source < 64 else "64-96" if in_source < 96 else "96-128" if in_source < 128 else ">=128"
                by_width.setdefault(bucket, []).append(float(reference @ emb))
    print(f"{args.images} photos (12 MP and 4 MP), detector max_side {side}: decode ms per image, median")
    for name, values in timings.items():
        print(f"  {name:<9} {np.median(values):7.1f}")
    print("\nembedding cosine, crop from a reduced decode vs from full resolution, by face width in the reduced pixels:")
    print(f"  {'width px':<9}{'faces':>6}{'min':>8}{'median':>8}")
    for bucket in ("<64", "64-96", "96-128", ">=128"):
        values = by_width.get(bucket, [])
        if values:
            print(f"  {bucket:<9}{len(values):>6}{min(values):>8.4f}{np.median(values):>8.4f}")
    scan = archive / "scan" / "print-0001.jpg"
    worker_rss, worker_shape = _peak_rss_mb(scan, MAX_PIXELS, side)
    capped_rss, capped_shape = _peak_rss_mb(scan, MAX_PIXELS, None)
    full_rss, _ = _peak_rss_mb(scan, MAX_JPEG_PIXELS, None)
    print(f"\n108 MP scan ({scan.stat().st_size / 2**20:.1f} MB JPEG), peak RSS of a process that decodes it:")
    print(f"  for the detector {worker_shape}: {worker_rss:.0f} MB; largest decode within the 60 MP cap "
          f"{capped_shape}: {capped_rss:.0f} MB; at full size: {full_rss:.0f} MB")
    rss = {"detector": round(worker_rss), "within_cap": round(capped_rss), "full": round(full_rss)}
    print(json.dumps({"decode_ms_median": {k: round(float(np.median(v)), 1) for k, v in timings.items()},
                      "cosine_by_width": {k: {"faces": len(v), "min": round(min(v), 4), "median": round(float(np.median(v)), 4)}
                                          for k, v in by_width.items()},
                      "scan_peak_rss_mb": rss}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
