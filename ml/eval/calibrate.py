"""``calibrate``: the recognizer's per-pair impostor score tail on a folder-per-identity tree.

Every pair of photos of different people is an impostor pair (lfw-dev: about
7 million). The tail table (per-pair false-accept rate -> cosine threshold)
goes into weights/manifest.toml as ``impostor_tail``; ml.openset turns it into
open-set thresholds for any gallery size.

``masked_probes``: the tail for probes the mask classifier calls masked
(manifest ``masked_impostor_tail``), fitted like the bare one on every
cross-identity pair there is: the open-set protocol's probe photos wear a
synthetic mask in the held-out probe fabric, drawn on the whole photo and
detected again, exactly as ``openset --masked-probes`` draws them (same
cache); each one the classifier flags is scored against the bare and the
masked-probe template of every other person of the protocol's largest
gallery (``MASKED_GALLERY`` people: what a masked probe meets in the
service), one pair per template.
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
MASKED_GALLERY = 1500


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


def run_calibrate(pipeline, root: Path, *, cache: bool = True, masked_probes: bool = False) -> dict:
    items = identity_folders(root)
    embedded = embed_images(pipeline, [p for _, p in items], desc="calibrate: embedding", face="centre", cache=cache)
    emb = {path: e.embedding for path, e in embedded.items() if e.embedding is not None}
    scores = impostor_scores(emb, items)
    report = {
        "impostor_pairs": int(len(scores)),
        "impostor_tail": tail_table(scores),
        "impostor_max": round(float(scores.max()), 4),
        "images": len(emb),
        "identities": len({n for n, _ in items}),
    }
    if masked_probes:
        from ml.eval.masked import PROBE_FABRIC, masked_views
        from ml.eval.openset import grow_gallery, split_protocol

        enroll, known, unknown = split_protocol(items)
        gallery = grow_gallery(items, enroll, MASKED_GALLERY) or enroll
        # openset's masked views (same cache)
        probes = [str(p) for _, p in known + unknown if str(p) in emb]
        templates = [str(p) for p in gallery.values() if str(p) in emb]
        views = masked_views(pipeline, probes, templates, face="centre", cache=cache)
        flagged = [p for p in probes if views.flagged[p]]
        name_of = {str(p): n for n, p in items}
        matrix = np.concatenate([np.stack([emb[p] for p in templates]), np.stack([views.templates[p] for p in templates])])
        columns = np.array([name_of[p] for p in templates] * 2)
        scores = np.stack([views.probes[p] for p in flagged]) @ matrix.T
        pairs = scores[np.array([name_of[p] for p in flagged])[:, None] != columns[None, :]]
        report["masked_probes"] = {
            "fabric": PROBE_FABRIC, "drawn_on": "whole photo, then detected again",
            "fitted_on": "flagged masked probes vs other people's bare + masked-probe templates",
            "probes": len(flagged), "gallery": len(templates),
            "flagged_masked": len(flagged) / len(probes),
            "impostor_pairs": int(len(pairs)), "impostor_max": round(float(pairs.max()), 4),
        }
        report["masked_impostor_tail"] = tail_table(pairs)
    return report
