"""``calibrate``: the recognizer's per-pair impostor score tail on a folder-per-identity tree.

Every pair of photos of different people is an impostor pair (lfw-dev: about
7 million). The tail table (per-pair false-accept rate -> cosine threshold)
goes into weights/manifest.toml as ``impostor_tail``; ml.openset turns it into
open-set thresholds for any gallery size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.eval.images import embed_images, identity_folders

RATES = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
# A tail point needs this many impostor pairs above it: the last few pairs of
# a web-photo set are mostly label noise (lfw-dev: the same person under two
# names, or a bystander picked), which would set the extrapolation.
MIN_PAIRS_ABOVE = 50


def impostor_scores(emb: dict[str, np.ndarray], items) -> np.ndarray:
    kept = [(name, emb[str(p)]) for name, p in items if str(p) in emb]
    names = np.array([n for n, _ in kept])
    matrix = np.stack([e for _, e in kept]).astype(np.float32)
    out = []
    for start in range(0, len(kept), 512):
        block = matrix[start:start + 512] @ matrix.T
        rows = np.arange(start, min(start + 512, len(kept)))
        upper = np.arange(len(kept))[None, :] > rows[:, None]  # each unordered pair once
        different = names[rows][:, None] != names[None, :]
        out.append(block[upper & different])
    return np.concatenate(out)


def tail_table(scores: np.ndarray, rates=RATES) -> dict[str, float]:
    """Cosine threshold t with P(impostor >= t) = rate, for each rate with enough pairs above it."""
    ordered = np.sort(scores)[::-1]
    table = {}
    for rate in rates:
        k = int(rate * len(ordered))
        if k < MIN_PAIRS_ABOVE:
            continue
        table[f"{rate:g}"] = round(float(ordered[k - 1]), 4)
    return table


def run_calibrate(pipeline, root: Path, *, cache: bool = True) -> dict:
    items = identity_folders(root)
    embedded = embed_images(pipeline, [p for _, p in items], desc="calibrate: embedding", face="centre", cache=cache)
    emb = {path: e.embedding for path, e in embedded.items() if e.embedding is not None}
    scores = impostor_scores(emb, items)
    return {
        "impostor_pairs": int(len(scores)),
        "impostor_tail": tail_table(scores),
        "impostor_max": round(float(scores.max()), 4),
        "images": len(emb),
        "identities": len({n for n, _ in items}),
    }
