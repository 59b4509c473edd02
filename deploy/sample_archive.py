"""A small sample archive built only from images that ship in installed wheels.

Used by `make demo` and by the end-to-end tests:
- enroll/<person>/...: one folder per known person (Eileen Collins from
  scikit-image's astronaut photo, Tom Hanks from insightface's portrait, and
  two guests cut out of insightface's group photo t1.jpg);
- archive/...: transformed and composited scenes, plus a photo with no face, a
  truncated JPEG and a text file, which must fail with a reason.
`build()` returns which archive files each known person appears in, so a test
can check the report against ground truth.
"""
from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ml.package_images import astronaut_bgr, read_package_image

# Boxes (x, y, w, h) of two of the six people in t1.jpg, as YuNet finds them.
T1_GUESTS = {"Guest Left": (52, 265, 118, 133), "Guest Centre": (462, 265, 113, 151)}


@dataclass
class SampleArchive:
    enroll_dir: Path
    archive_dir: Path
    appearances: dict[str, set[str]] = field(default_factory=dict)  # person -> archive file names
    strangers_in: dict[str, int] = field(default_factory=dict)  # file -> faces of non-enrolled people
    bad_files: set[str] = field(default_factory=set)


def _jpeg(img: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _crop_with_margin(img: np.ndarray, box, margin: float) -> np.ndarray:
    x, y, w, h = box
    x0, y0 = int(max(0, x - margin * w)), int(max(0, y - margin * h))
    x1, y1 = int(min(img.shape[1], x + w * (1 + margin))), int(min(img.shape[0], y + h * (1 + margin)))
    return img[y0:y1, x0:x1].copy()


def _rotated_exif_jpeg(img: np.ndarray) -> bytes:
    """Pixels stored rotated 90° with EXIF Orientation=6: correct only if EXIF is honoured."""
    stored = cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    pil = Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def _side_by_side(*imgs: np.ndarray, height: int = 480) -> np.ndarray:
    scaled = [cv2.resize(i, (int(i.shape[1] * height / i.shape[0]), height)) for i in imgs]
    gap = np.full((height, 40, 3), 200, np.uint8)
    parts = []
    for s in scaled:
        parts += [s, gap]
    return np.hstack(parts[:-1])


def build(dest: Path) -> SampleArchive:
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    sample = SampleArchive(dest / "enroll", dest / "archive")
    astronaut = astronaut_bgr()
    hanks = read_package_image("Tom_Hanks_54745.png")
    group = read_package_image("t1.jpg")
    no_face = read_package_image("mask_blue.jpg")

    enroll = {
        "Eileen Collins": {"astronaut.jpg": _jpeg(astronaut)},
        "Tom Hanks": {"hanks.png": cv2.imencode(".png", hanks)[1].tobytes()},
    }
    for name, box in T1_GUESTS.items():
        enroll[name] = {"portrait.jpg": _jpeg(_crop_with_margin(group, box, 0.6))}
    for person, files in enroll.items():
        folder = sample.enroll_dir / person
        folder.mkdir(parents=True)
        for file_name, data in files.items():
            (folder / file_name).write_bytes(data)

    small_group = cv2.resize(group, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    archive = {
        "2019/group.jpg": (_jpeg(group), {"Guest Left", "Guest Centre"}, 4),
        "2019/group-mirrored.jpg": (_jpeg(cv2.flip(group, 1)), {"Guest Left", "Guest Centre"}, 4),
        "2019/group-small-lowq.jpg": (_jpeg(small_group, 60), {"Guest Left", "Guest Centre"}, 4),
        "2020/astronaut-rotated-exif.jpg": (_rotated_exif_jpeg(astronaut), {"Eileen Collins"}, 0),
        "2020/astronaut-crop.jpg": (_jpeg(astronaut[0:300, 80:420]), {"Eileen Collins"}, 0),
        "2020/astronaut-dark.png": (cv2.imencode(".png", (astronaut * 0.6).astype(np.uint8))[1].tobytes(), {"Eileen Collins"}, 0),
        "2021/hanks-and-collins.jpg": (_jpeg(_side_by_side(cv2.resize(hanks, (224, 224)), astronaut)), {"Tom Hanks", "Eileen Collins"}, 0),
        "2021/hanks-large.jpg": (_jpeg(cv2.resize(hanks, (336, 336), interpolation=cv2.INTER_CUBIC)), {"Tom Hanks"}, 0),
        "2021/no-face.jpg": (_jpeg(no_face), set(), 0),
    }
    for rel, (data, people, strangers) in archive.items():
        path = sample.archive_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sample.strangers_in[rel] = strangers
        for person in people:
            sample.appearances.setdefault(person, set()).add(rel)
    bad = {"broken/truncated.jpg": _jpeg(astronaut)[:5000], "broken/notes.txt": b"not a photo\n"}
    for rel, data in bad.items():
        path = sample.archive_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sample.bad_files.add(rel)
    return sample
