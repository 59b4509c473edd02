"""``verify``: LFW-style pair verification."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.eval.images import NO_FACE_POLICY, embed_images, lfw_image_path
from ml.eval.lfw_pairs import fold_ids, read_pairs
from ml.eval.metrics import verification_report


def run_verify(pipeline, pairs_file: Path, root: Path, plot: Path | None = None, *, face: str = "largest",
               cache: bool = True) -> dict:
    pairs, header = read_pairs(pairs_file.read_text())
    if not pairs:
        raise SystemExit(f"no pairs in {pairs_file}")
    folds, fold_method = fold_ids(pairs, header)
    path_of = {}
    for p in pairs:
        for name, index in ((p.name1, p.index1), (p.name2, p.index2)):
            path_of[(name, index)] = str(lfw_image_path(root, name, index))
    embedded = embed_images(pipeline, list(path_of.values()), desc="verify: embedding", face=face, cache=cache)
    unreadable = sorted(path for path, e in embedded.items() if e.embedding is None)
    if unreadable:
        raise SystemExit(f"{len(unreadable)} images missing or unreadable, e.g. {unreadable[0]}")
    scores = np.array([
        float(embedded[path_of[(p.name1, p.index1)]].embedding @ embedded[path_of[(p.name2, p.index2)]].embedding)
        for p in pairs
    ])
    labels = np.array([p.same for p in pairs])
    report = verification_report(scores, labels, folds)
    no_face = sorted(path for path, e in embedded.items() if e.faces_found == 0)
    report.update(
        no_face=len(no_face),
        no_face_images=no_face,
        no_face_policy=NO_FACE_POLICY,
        images=len(embedded),
        folds=fold_method,
        face=face,
    )
    if plot is not None:
        _plot_roc(scores, labels, report, plot)
    return report


def _plot_roc(scores, labels, report, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC {report['auc']:.4f}")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC, 10-fold acc {report['accuracy']:.4f}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
