"""Masked probes for ``openset --masked-probes``: synthetic masks on the probe photos.

Each probe photo gets a mask drawn on its chosen face (the same face the bare
run uses) on the whole photo, in a fabric the enrollment templates never use
(``PROBE_FABRIC``, also held out of the mask classifier's training), with
outline and light jittered by a per-photo seed; the masked photo is then
detected, aligned and embedded from scratch, as indexing would. The shipped
mask classifier decides, as in the service, whether the probe counts as
masked (then it meets the bare and the masked-probe templates, at the rule's
masked threshold) or not (bare templates, bare threshold). Enrolled faces get
their masked-probe template exactly as enrollment stores it
(``enrollment_masked_template``). Both are cached beside the bare embeddings.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.attributes.overlay import synthesize_masked_image
from ml.attributes.templates import ENROLLMENT_MASKS, enrollment_masked_template
from ml.decode import decode_image
from ml.eval.images import CENTRE_FRACTION, _cache_file, pick_face

PROBE_FABRIC = "green"
PROBE_SEED = 10
assert PROBE_FABRIC not in ENROLLMENT_MASKS


@dataclass
class MaskedViews:
    """Per photo path: masked probe embedding, whether the classifier called it masked, masked-probe template."""

    probes: dict[str, np.ndarray]
    flagged: dict[str, bool]
    templates: dict[str, np.ndarray]
    redetected: int = 0  # masked probes whose face the detector found again


def _face(pipeline, img: np.ndarray, face: str):
    """The chosen face, or (as for bare photos) the central region embedded with template landmarks."""
    faces = pipeline.process(img)
    if faces:
        return pick_face(faces, img.shape[1], img.shape[0], face), True
    height, width = img.shape[:2]
    box = (width * (1 - CENTRE_FRACTION) / 2, height * (1 - CENTRE_FRACTION) / 2,
           width * CENTRE_FRACTION, height * CENTRE_FRACTION)
    return pipeline.embed_box(img, box), False


def _seed(path: str) -> int:
    """Per-photo seed from its folder/file name: the same mask whatever the order or the data's location."""
    name = "/".join(Path(path).parts[-2:])
    return int.from_bytes(hashlib.sha256(f"{PROBE_SEED}:{name}".encode()).digest()[:8], "little")


def masked_views(pipeline, probe_paths, enroll_paths, *, face: str = "centre", cache: bool = True) -> MaskedViews:
    from ml.attributes import MaskClassifier

    classifier = MaskClassifier.load()
    cache_file = None
    if cache:
        bare = _cache_file(pipeline, face)
        cache_file = bare.with_name(f"{bare.stem}-masked-{PROBE_FABRIC}-{PROBE_SEED}-{'-'.join(ENROLLMENT_MASKS)}.npz")
    stored = dict(np.load(cache_file)) if cache_file is not None and cache_file.exists() else {}
    views = {"probe": {}, "template": {}}
    flags, found = {}, {}
    for kind in views:
        if f"{kind}_paths" in stored:
            for i, p in enumerate(stored[f"{kind}_paths"]):
                views[kind][str(p)] = stored[f"{kind}_embeddings"][i]
                if kind == "probe":
                    flags[str(p)] = bool(stored["probe_flagged"][i])
                    found[str(p)] = bool(stored["probe_found"][i])
    todo_probes = sorted(set(map(str, probe_paths)) - set(views["probe"]))
    todo_templates = sorted(set(map(str, enroll_paths)) - set(views["template"]))
    print(f"masked probes: {len(todo_probes)} probes and {len(todo_templates)} templates to embed", file=sys.stderr)
    for path in tqdm(todo_probes, desc="masked probes", file=sys.stderr, unit="img", mininterval=10):
        img = decode_image(Path(path).read_bytes()).pixels
        detected = pipeline.detect(img)  # only the landmarks are needed here: no embedding
        chosen = pick_face(detected, img.shape[1], img.shape[0], face) if detected else _face(pipeline, img, face)[0]
        masked = synthesize_masked_image(img, chosen.landmarks, PROBE_FABRIC, np.random.default_rng(_seed(path)))
        probe, found[path] = _face(pipeline, masked, face)
        views["probe"][path] = probe.embedding
        flags[path] = classifier.predict([probe.crop])[0].masked
    for path in tqdm(todo_templates, desc="masked templates", file=sys.stderr, unit="img", mininterval=10):
        img = decode_image(Path(path).read_bytes()).pixels
        chosen, _ = _face(pipeline, img, face)
        views["template"][path] = enrollment_masked_template(pipeline, chosen.crop, chosen.embedding)
    if cache_file is not None and (todo_probes or todo_templates):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        probes = sorted(views["probe"])
        templates = sorted(views["template"])
        if probes and templates:
            np.savez(cache_file, probe_paths=np.array(probes), probe_embeddings=np.stack([views["probe"][p] for p in probes]),
                     probe_flagged=np.array([flags[p] for p in probes]), probe_found=np.array([found[p] for p in probes]),
                     template_paths=np.array(templates),
                     template_embeddings=np.stack([views["template"][p] for p in templates]))
    wanted = set(map(str, probe_paths))
    return MaskedViews(probes={p: views["probe"][p] for p in wanted},
                       flagged={p: flags[p] for p in wanted},
                       templates={p: views["template"][p] for p in set(map(str, enroll_paths))},
                       redetected=sum(found[p] for p in wanted))
