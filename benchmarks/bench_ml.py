"""Face pipeline speed on this machine's CPU.

    .venv/bin/python benchmarks/bench_ml.py [--repeats N] [--threads 1 2]

Prints, per OpenCV thread count: detector ms per 640x480 image, embed ms per
face (one crop per call), batched embedding faces/s (32 crops per call), and
the whole pipeline's ms for the 6-face group photo; then one JSON line.
Images come from installed packages (insightface's t1.jpg).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.decode import decode_image  # noqa: E402
from ml.pipeline import FacePipeline  # noqa: E402

BATCH = 32


def _group_photo() -> np.ndarray:
    from ml.package_images import insightface_images_dir

    return decode_image((insightface_images_dir() / "t1.jpg").read_bytes()).pixels


def _best_ms(fn, repeats: int) -> float:
    """Median of ``repeats`` timed calls after one warm-up, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def bench(pipeline: FacePipeline, threads: int, repeats: int) -> dict:
    cv2.setNumThreads(threads)
    if hasattr(pipeline.detector, "set_num_threads"):  # onnxruntime-backed detectors
        pipeline.detector.set_num_threads(threads)
    group = _group_photo()
    vga = cv2.resize(group, (640, 480), interpolation=cv2.INTER_AREA)
    crops = [pipeline.align(group, f.landmarks) for f in pipeline.detect(group)]
    batch = (crops * (BATCH // len(crops) + 1))[:BATCH]
    detect_ms = _best_ms(lambda: pipeline.detect(vga), repeats)
    embed_ms = _best_ms(lambda: pipeline.embed_crops(crops[:1]), repeats * 3)
    batch_ms = _best_ms(lambda: pipeline.embed_crops(batch), max(3, repeats // 3))
    process_ms = _best_ms(lambda: pipeline.process(group), max(3, repeats // 3))
    return {
        "threads": threads,
        "detect_ms_640x480": round(detect_ms, 2),
        "embed_ms_per_face": round(embed_ms, 2),
        "batched_faces_per_s": round(BATCH / batch_ms * 1000, 1),
        "process_ms_group_photo_6_faces": round(process_ms, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--detector")
    parser.add_argument("--recognizer")
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                        help="default: the manifest's flip_tta")
    args = parser.parse_args()
    pipeline = FacePipeline.from_manifest(detector=args.detector, recognizer=args.recognizer,
                                          flip_tta=args.flip_tta)
    rows = [bench(pipeline, n, args.repeats) for n in args.threads]
    print(f"detector={pipeline.detector_id} recognizer={pipeline.recognizer_id} flip_tta={pipeline.flip_tta}")
    print(f"{'threads':>7} {'detect ms/640x480':>18} {'embed ms/face':>14} {'batched faces/s':>16} {'process ms (6 faces)':>21}")
    for r in rows:
        print(f"{r['threads']:>7} {r['detect_ms_640x480']:>18} {r['embed_ms_per_face']:>14} "
              f"{r['batched_faces_per_s']:>16} {r['process_ms_group_photo_6_faces']:>21}")
    print(json.dumps({"detector": pipeline.detector_id, "recognizer": pipeline.recognizer_id,
                      "flip_tta": pipeline.flip_tta, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
