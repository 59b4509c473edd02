"""Model registry: a manifest entry's ``implementation`` names the class that runs it."""
from __future__ import annotations

import importlib


def build_model(model_id: str, kind: str, implementations: dict[str, str]):
    """Instantiate ``implementations[entry.implementation]`` with ``(entry, verified weight bytes)``."""
    import weights

    entry = weights.model_entry(model_id)
    if entry.kind != kind:
        raise ValueError(f"model {model_id!r} is a {entry.kind}, not a {kind}")
    target = implementations.get(entry.implementation or "")
    if target is None:
        raise ValueError(f"no {kind} implementation {entry.implementation!r} for {model_id!r}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(entry, weights.model_bytes(model_id))
