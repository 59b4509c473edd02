"""Which torch device the face models run on, and what to do when it fails.

``FACEINDEX_DEVICE``: ``auto`` (default: the first CUDA GPU if torch sees one,
else the CPU), ``cpu``, ``cuda`` or ``cuda:<i>``. Asking for a GPU that is not
there is an error at start-up, not a silent fall back to the CPU.
"""
from __future__ import annotations

import os

import torch

DEVICE_ENV = "FACEINDEX_DEVICE"


def resolve_device(value: str | None = None) -> torch.device:
    """The device named by ``value`` (default: $FACEINDEX_DEVICE, else ``auto``)."""
    raw = value if value is not None else os.environ.get(DEVICE_ENV, "")
    name = raw.strip().lower() or "auto"
    if name == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise ValueError(f"{DEVICE_ENV}={raw!r}: expected cuda or cuda:<index>")
        index = int(index_text)
        if not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={raw!r} but torch sees no CUDA GPU (torch {torch.__version__})")
        if index >= torch.cuda.device_count():
            raise ValueError(f"{DEVICE_ENV}={raw!r} but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        return torch.device(f"cuda:{index}")
    raise ValueError(f"{DEVICE_ENV}={raw!r}: expected auto, cpu, cuda or cuda:<index>")


def is_device_failure(exc: BaseException) -> bool:
    """An error that a smaller batch or the CPU may not hit: out of memory, or a lost/broken GPU."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(exc, RuntimeError):  # torch.AcceleratorError is one too
        text = str(exc).lower()
        return any(marker in text for marker in (
            "out of memory", "cuda error", "cudnn_status", "cublas_status", "device-side assert",
            "no cuda gpus are available", "device not ready", "unspecified launch failure",
        ))
    return False


def run_split_on_failure(items: list, run, fallback, *, on_failure=None) -> list:
    """``run(items)`` -> one result per item; on a device failure retry in halves, then ``fallback`` per item.

    A batch that hits out-of-memory (or a GPU that has gone away) loses no item:
    it is retried as two halves, recursively, and a single item that still
    fails goes to ``fallback([item])`` (the CPU path).
    """
    if not items:
        return []
    try:
        results = run(items)
    except Exception as exc:  # noqa: BLE001 - only device failures are handled, the rest re-raised
        if not is_device_failure(exc):
            raise
        if on_failure is not None:
            on_failure(exc, len(items))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(items) == 1:
            return list(fallback(items))
        middle = len(items) // 2
        return (run_split_on_failure(items[:middle], run, fallback, on_failure=on_failure)
                + run_split_on_failure(items[middle:], run, fallback, on_failure=on_failure))
    if len(results) != len(items):
        raise RuntimeError(f"batch runner returned {len(results)} results for {len(items)} items")
    return list(results)
