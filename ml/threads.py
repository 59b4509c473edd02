"""How many threads one process's face models may use.

OpenCV (YuNet, SFace via cv2.dnn), NumPy's BLAS (the mask CNN) and torch
each start one thread per core by default. That is right for a single
process, but N worker processes on N cores then run N*N threads and spend
the difference switching (measured: 2 workers on 2 cores indexed more
slowly than 1). Workers call ``limit_threads(cores // workers)``.
"""
from __future__ import annotations

import sys

_limit = 0  # 0: each library's default


def thread_limit() -> int:
    """The cap set by limit_threads (0 = none): for onnxruntime sessions built later."""
    return _limit


def limit_threads(threads: int) -> None:
    """Cap OpenCV, BLAS/OpenMP and (if loaded) torch at ``threads``; 0 or less leaves the defaults.

    onnxruntime sessions (the RetinaFace landmarker) read it when they are built.
    """
    global _limit
    if threads <= 0:
        return
    _limit = threads
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(threads)
    threadpool_limits(limits=threads)  # stays in force for the process (not used as a context manager)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
