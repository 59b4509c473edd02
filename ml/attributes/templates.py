"""The extra "masked" template stored at enrollment, for probes that wear a mask.

A mask hides nose, mouth and chin, so a masked probe's embedding drifts away
from the bare-face enrollment (mean same-person cosine on dev-faces: 0.73 bare
vs ~0.58 masked, below-threshold misses appear). Enrollment therefore also
embeds the face with synthetic masks drawn on (``masked_templates``) and
stores one extra template, the normalised sum of the bare embedding and the
masked ones' mean (``masked_blend_template``). Search with it **only when the
probe is classified masked** (``MaskPrediction.masked``); bare probes keep
using the bare template, so unmasked matching is unchanged.

Measured with benchmarks/bench_masked_matching.py (dev-faces, all 3782 ordered
photo pairs, probes masked on the whole photo and re-detected): TAR at the
recognizer threshold 0.949 -> 0.976, TAR at 0.1% FAR 0.953 -> 0.959, AUC
0.9992 -> 0.9996, FAR at the threshold 0.0003 -> 0.0037. Matching the masked
templates alone (or max over bare and masked for every probe) raised FAR ten
times as much for no gain at a fixed FAR, so it is not used.
"""
from __future__ import annotations

import numpy as np

from ml.attributes.overlay import synthesize_masked

# A light and a dark fabric: masks change the lower face in both directions.
ENROLLMENT_MASKS = ("blue", "black")


def masked_templates(crop: np.ndarray) -> list[np.ndarray]:
    """The aligned 112x112 BGR ``crop`` wearing each of ENROLLMENT_MASKS (deterministic)."""
    return [synthesize_masked(crop, name) for name in ENROLLMENT_MASKS]


def masked_blend_template(bare_embedding: np.ndarray, masked_embeddings: np.ndarray) -> np.ndarray:
    """normalise(bare + mean(masked)): one (dim,) float32 template for masked probes.

    Its cosine to a probe is proportional to the mean of the probe's cosines
    to the bare and the masked faces, so a vector index can hold it like any
    other template.
    """
    blend = np.asarray(bare_embedding, np.float32) + np.asarray(masked_embeddings, np.float32).reshape(
        -1, len(bare_embedding)).mean(axis=0)
    return (blend / max(float(np.linalg.norm(blend)), 1e-12)).astype(np.float32)


def enrollment_masked_template(pipeline, crop: np.ndarray, bare_embedding: np.ndarray | None = None) -> np.ndarray:
    """The masked-probe template of one enrolled face, with ``pipeline``'s recognizer.

    ``bare_embedding``: the face's normal embedding if already computed.
    """
    masked = pipeline.embed_crops(masked_templates(crop))
    if bare_embedding is None:
        bare_embedding = pipeline.embed_crops([crop])[0]
    return masked_blend_template(bare_embedding, masked)
