"""Reading a labelled LFW-layout folder (<person>/<person>_NNNN.jpg) for measurements."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np


def largest_faces(root: Path, pipeline) -> Iterator[tuple[str, Path, np.ndarray, object]]:
    """(person, path, BGR image, its largest detected face) per photo; photos without a face are skipped."""
    for path in sorted(Path(root).glob("*/*.jpg")):
        img = cv2.imread(str(path))
        faces = pipeline.detect(img)
        if faces:
            yield path.parent.name, path, img, max(faces, key=lambda f: f.box[2] * f.box[3])
