"""``pkg_resources`` for face_recognition_models 0.3.0 (dlib's packaged weights).

It imports pkg_resources, which setuptools >= 81 no longer ships, for one
function: resource_filename. Used by the evaluation and the benchmarks that
run dlib; the service itself never loads it.
"""
from __future__ import annotations

import importlib.resources
import sys
import types


def provide_pkg_resources() -> None:
    """Make ``import pkg_resources`` work: the real one if installed, else a one-function stand-in."""
    if "pkg_resources" in sys.modules:
        return
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
        sys.modules["pkg_resources"] = shim
