"""Does half-precision storage (the gallery's halfvec columns) change any verification decision on real pairs?

Embeds the photos of an LFW-style pairs.txt with the default pipeline (cached in
.cache/ml-eval like ``python -m ml.eval verify``), rounds each embedding to
float16 as PostgreSQL's halfvec stores it, and compares every pair's cosine
similarity in float32 and after the rounding: the largest change, and how many
same/different decisions flip at the recognizer's threshold and at a sweep of
thresholds around it.

    .venv/bin/python -m benchmarks.bench_halfvec_pairs --pairs lfw-dev/pairs.txt --root lfw-dev/images
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ml.eval.images import embed_images, lfw_image_path
from ml.eval.lfw_pairs import read_pairs
from ml.pipeline import FacePipeline


def half(vectors: np.ndarray) -> np.ndarray:
    """What a halfvec column returns: float16 components (the SQL cosine normalises them again)."""
    rounded = vectors.astype(np.float16).astype(np.float32)
    return rounded / np.linalg.norm(rounded, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--face", default="centre", help="which detected face stands for a photo (as ml.eval verify)")
    args = parser.parse_args()

    pipeline = FacePipeline.from_manifest()
    pairs, _ = read_pairs(args.pairs.read_text())
    path_of = {(name, index): str(lfw_image_path(args.root, name, index))
               for p in pairs for name, index in ((p.name1, p.index1), (p.name2, p.index2))}
    embedded = embed_images(pipeline, list(path_of.values()), desc="embedding", face=args.face)
    usable = [p for p in pairs if all(embedded[path_of[key]].embedding is not None
                                      for key in ((p.name1, p.index1), (p.name2, p.index2)))]
    a = np.asarray([embedded[path_of[(p.name1, p.index1)]].embedding for p in usable], np.float32)
    b = np.asarray([embedded[path_of[(p.name2, p.index2)]].embedding for p in usable], np.float32)
    full = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rounded = np.sum(half(a) * half(b), axis=1)
    change = np.abs(full - rounded)
    sweep = np.round(np.arange(pipeline.threshold - 0.1, pipeline.threshold + 0.1001, 0.005), 4)
    print(json.dumps({
        "pairs": len(usable), "same_person_pairs": int(sum(p.same for p in usable)),
        "max_abs_similarity_change": round(float(change.max()), 6),
        "mean_abs_similarity_change": round(float(change.mean()), 7),
        "threshold": pipeline.threshold,
        "decisions_flipped_at_threshold": int(np.sum((full >= pipeline.threshold) != (rounded >= pipeline.threshold))),
        "decisions_flipped_at_41_thresholds_within_0.1": int(sum(np.sum((full >= t) != (rounded >= t)) for t in sweep)),
    }, indent=2))


if __name__ == "__main__":
    main()
