"""``embed``: export one embedding per image as JSON, optionally a 2-D picture."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ml.eval.images import embed_images, identity_folders


def run_embed(pipeline, root: Path, out: Path, plot: Path | None = None) -> dict:
    items = identity_folders(root)
    embedded = embed_images(pipeline, [p for _, p in items], desc="embed")
    rows = []
    for name, path in items:
        e = embedded[str(path)]
        if e.embedding is None:
            continue
        rows.append({
            "identity": name,
            "path": str(path.relative_to(root)),
            "box": [round(v, 2) for v in e.box] if e.box else None,
            "score": round(e.score, 4),
            "faces_found": e.faces_found,
            "embedding": [round(float(v), 6) for v in e.embedding],
        })
    out.write_text(json.dumps({
        "detector": pipeline.detector_id, "recognizer": pipeline.recognizer_id,
        "flip_tta": pipeline.flip_tta, "embedding_dim": pipeline.embedding_dim, "items": rows,
    }))
    summary = {"images": len(rows), "identities": len({r["identity"] for r in rows}), "out": str(out)}
    if plot is not None and len(rows) >= 3:
        summary["projection"] = _plot(rows, plot)
    return summary


def _plot(rows: list[dict], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array([r["embedding"] for r in rows], dtype=np.float32)
    names = [r["identity"] for r in rows]
    if len(rows) > 5:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, perplexity=min(30.0, (len(rows) - 1) / 3), init="pca",
                  random_state=0).fit_transform(matrix)
        method = "t-SNE"
    else:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2).fit_transform(matrix)
        method = "PCA"
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, name in enumerate(sorted(set(names))):
        mask = np.array([n == name for n in names])
        ax.scatter(xy[mask, 0], xy[mask, 1], s=25, color=plt.cm.tab20(i % 20), label=name)
    ax.set_title(f"{method} of {len(rows)} face embeddings")
    if len(set(names)) <= 20:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return method
