"""The model manifest: which weight files exist, where they live, how to trust them.

``manifest.toml`` holds one ``[models.<id>]`` table per model plus a
``[defaults]`` table. Weight files ship inside installed wheels and are read
with ``importlib.resources``; nothing is ever downloaded. Every load checks the
file's sha256 against the manifest.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.resources
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.errors import ModelFileError

MANIFEST_PATH = Path(__file__).with_name("manifest.toml")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    kind: str  # "detector" | "recognizer" | "classifier"
    package: str
    resource: str  # path inside the package, e.g. "models/x.onnx"
    sha256: str
    # When set, the weights are a bytes constant in the module named by
    # ``resource`` (a .py file) rather than a file of their own.
    attribute: str | None = None
    implementation: str | None = None  # which ml class runs it
    license: str = ""
    default_threshold: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    embedding_dim: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # every other key, as written


_KNOWN_KEYS = {
    "kind", "package", "resource", "sha256", "attribute", "implementation",
    "license", "default_threshold", "thresholds", "embedding_dim",
}


@functools.lru_cache(maxsize=1)
def load_manifest() -> dict[str, Any]:
    """The parsed manifest: {"defaults": {...}, "models": {id: {...}}}."""
    with open(MANIFEST_PATH, "rb") as fh:
        manifest = tomllib.load(fh)
    manifest.setdefault("defaults", {})
    manifest.setdefault("models", {})
    return manifest


def default_model_id(role: str) -> str:
    """The manifest's default model id for a role ("detector", "recognizer", ...)."""
    defaults = load_manifest()["defaults"]
    if role not in defaults:
        raise ModelFileError(f"manifest has no default {role}")
    return defaults[role]


def model_entry(model_id: str) -> ModelEntry:
    models = load_manifest()["models"]
    if model_id not in models:
        raise ModelFileError(
            f"model {model_id!r} is not in {MANIFEST_PATH.name}; known: {', '.join(sorted(models))}"
        )
    raw = dict(models[model_id])
    for key in ("kind", "package", "resource", "sha256"):
        if key not in raw:
            raise ModelFileError(f"manifest entry {model_id!r} lacks {key!r}")
    known = {k: raw.pop(k) for k in list(raw) if k in _KNOWN_KEYS}
    return ModelEntry(id=model_id, options=raw, **known)


def models_of_kind(kind: str) -> list[str]:
    return [mid for mid, raw in load_manifest()["models"].items() if raw.get("kind") == kind]


def model_bytes(model_id: str) -> bytes:
    """The weight file's bytes, after checking its sha256; raises ModelFileError."""
    return verified_bytes(model_entry(model_id))


def verified_bytes(entry: ModelEntry) -> bytes:
    data = _read_resource(entry)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256.lower():
        raise ModelFileError(
            f"sha256 mismatch for model {entry.id!r} ({entry.package}/{entry.resource}): "
            f"expected {entry.sha256}, got {digest}"
        )
    return data


def _read_resource(entry: ModelEntry) -> bytes:
    where = f"{entry.package}/{entry.resource}"
    try:
        if entry.attribute:
            module_name = entry.package + "." + entry.resource.removesuffix(".py").replace("/", ".")
            data = getattr(importlib.import_module(module_name), entry.attribute)
            if not isinstance(data, (bytes, bytearray)):
                raise ModelFileError(f"{where}:{entry.attribute} is not bytes")
            return bytes(data)
        return importlib.resources.files(entry.package).joinpath(entry.resource).read_bytes()
    except ModelFileError:
        raise
    except (ModuleNotFoundError, FileNotFoundError, AttributeError, OSError) as exc:
        raise ModelFileError(
            f"model file for {entry.id!r} not found at {where} (is the package installed?): {exc}"
        ) from exc
