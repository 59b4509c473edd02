"""Extra templates stored at enrollment so masked probes still find the person.

A masked probe hides nose, mouth and chin; its embedding moves away from the
bare-face enrollment. Storing, next to the normal template, the embedding of
the same crop with a synthetic mask drawn on gives the probe something masked
to match. See benchmarks/bench_masked_matching.py for the measured effect.
"""
from __future__ import annotations

import numpy as np

from ml.attributes.overlay import synthesize_masked

# Fabrics drawn at enrollment: chosen by the benchmark (light and dark cover
# the two ways a mask changes the lower face's appearance).
ENROLLMENT_MASKS = ("blue", "black")


def masked_templates(crop: np.ndarray) -> list[np.ndarray]:
    """Aligned 112x112 BGR crops of ``crop`` wearing each of ENROLLMENT_MASKS (deterministic).

    Embed them with the same recognizer as the bare crop and store them as
    additional templates of the same face (marked synthetic).
    """
    return [synthesize_masked(crop, name) for name in ENROLLMENT_MASKS]
