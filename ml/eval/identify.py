"""``identify``: leave-one-out 1-nearest-neighbour over a folder-per-identity tree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from ml.eval.images import NO_FACE_POLICY, embed_images, identity_folders


def run_identify(pipeline, root: Path) -> dict:
    items = identity_folders(root)
    embedded = embed_images(pipeline, [p for _, p in items], desc="identify: embedding")
    kept = [(name, embedded[str(p)]) for name, p in items if embedded[str(p)].embedding is not None]
    if len(kept) < 2:
        raise SystemExit(f"need at least 2 readable images under {root}")
    names = np.array([name for name, _ in kept])
    matrix = np.stack([e.embedding for _, e in kept])
    sims = matrix @ matrix.T
    np.fill_diagonal(sims, -np.inf)  # leave one out: an image never matches itself
    nearest = sims.argmax(axis=1)
    predicted = names[nearest]
    # Only probes whose identity has another image can possibly be right.
    counts = {n: int((names == n).sum()) for n in set(names)}
    answerable = np.array([counts[n] > 1 for n in names])
    precision, recall, f1, _ = precision_recall_fscore_support(
        names[answerable], predicted[answerable], average="macro", zero_division=0
    )
    return {
        "top1_accuracy": float((predicted[answerable] == names[answerable]).mean()),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
        "probes": int(answerable.sum()),
        "identities": len(counts),
        "singletons_skipped": int((~answerable).sum()),
        "unreadable": len(items) - len(kept),
        "no_face": sum(1 for _, e in kept if e.faces_found == 0),
        "no_face_policy": NO_FACE_POLICY,
    }
