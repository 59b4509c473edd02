"""TorchFacePipeline: FacePipeline's results for many images per call, on a torch device.

``process_batch(imgs)`` runs, per batch:
  fit     CPU threads: fit_for_detector + zero padding (as the cv2 path);
  detect  device: one forward pass per distinct padded shape, decode on the
          device, NMS on the CPU (a few candidates per image);
  landmarks CPU: the manifest's landmarker ([defaults] landmarks) refines each
          box's landmarks exactly as FacePipeline does (the same onnxruntime
          RetinaFace on the same scale-normalised crops), so both paths align
          the same faces the same way;
  align   device: each image uploaded once as uint8, its faces warped with
          grid_sample;
  embed   device: every face of the batch in one call (chunks of 256);
  finish  CPU: crops back as uint8, quality scores.
``process_encoded(datas)`` decodes JPEG/PNG/... bytes on CPU threads first.
A batch that runs the device out of memory, or meets a lost GPU, is retried
in halves, then image by image on the cv2 CPU pipeline: nothing is dropped.
"""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ml.align import CROP_SIZE
from ml.decode import DEFAULT_MAX_PIXELS, decode_image
from ml.detectors.yunet import faces_from_rows
from ml.errors import ImageDecodeError
from ml.pipeline import FacePipeline, _as_bgr, impostor_tails, landmarker_options
from ml.torch_models.align import align_on_device
from ml.torch_models.device import resolve_device, run_split_on_failure
from ml.torch_models.sface import TorchSFace
from ml.torch_models.yunet import TorchYuNet
from ml.types import EmbeddedFace

log = logging.getLogger(__name__)

# manifest ``implementation`` -> torch class; the cv2 classes' twins.
TORCH_IMPLEMENTATIONS = {"yunet": TorchYuNet, "sface": TorchSFace}
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_supports(detector_id: str | None = None, recognizer_id: str | None = None) -> bool:
    """Whether both models (None: the manifest's defaults) have a torch implementation."""
    import weights

    detector_id = detector_id or weights.default_model_id("detector")
    recognizer_id = recognizer_id or weights.default_model_id("recognizer")
    return all(weights.model_entry(mid).implementation in TORCH_IMPLEMENTATIONS
               for mid in (detector_id, recognizer_id))


class TorchFacePipeline(FacePipeline):
    """A FacePipeline whose detector and recognizer are torch modules on ``device``."""

    runs_batches_on_device = True  # callers hand it whole batches (process_batch), not image by image

    def __init__(self, *args, device: torch.device, threads: int = 0, precision: str = "fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device
        self.threads = threads or min(8, os.cpu_count() or 1)
        self.set_precision(precision)
        self._cpu_pipeline: FacePipeline | None = None
        self.timings: dict[str, float] = defaultdict(float)  # seconds per stage, summed over calls
        self.fallbacks = 0  # images that went to the CPU pipeline after a device failure

    @classmethod
    def from_manifest(cls, *, detector: str | None = None, recognizer: str | None = None,
                      flip_tta: bool | None = None, landmarks: str | None = None,
                      device: str | torch.device | None = None,
                      threads: int = 0, precision: str = "fp32") -> "TorchFacePipeline":
        import weights

        device = device if isinstance(device, torch.device) else resolve_device(device)
        detector_id = detector or weights.default_model_id("detector")
        recognizer_id = recognizer or weights.default_model_id("recognizer")
        models = []
        for model_id, kind in ((detector_id, "detector"), (recognizer_id, "recognizer")):
            entry = weights.model_entry(model_id)
            implementation = TORCH_IMPLEMENTATIONS.get(entry.implementation or "")
            if entry.kind != kind or implementation is None:
                raise ValueError(f"{kind} {model_id!r} has no torch implementation "
                                 f"(torch runs: {', '.join(sorted(TORCH_IMPLEMENTATIONS))})")
            models.append(implementation(entry, weights.verified_bytes(entry), device))
        entry = weights.model_entry(recognizer_id)  # thresholds exactly as FacePipeline.from_manifest reads them
        if entry.default_threshold is None:
            raise ValueError(f"manifest gives no default_threshold for {recognizer_id!r}")
        if flip_tta is None:
            flip_tta = bool(weights.load_manifest()["defaults"].get("flip_tta", False))
        return cls(models[0], models[1], detector_id=detector_id, recognizer_id=recognizer_id,
                   embedding_dim=models[1].embedding_dim, threshold=float(entry.default_threshold),
                   thresholds={k: float(v) for k, v in entry.thresholds.items()}, flip_tta=flip_tta,
                   **impostor_tails(entry),
                   **landmarker_options(landmarks, detector_id),
                   device=device, threads=threads, precision=precision)

    def set_precision(self, precision: str) -> None:
        """fp32 (default), or fp16/bf16 autocast for both networks."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.detector.autocast_dtype = PRECISIONS[precision]
        self.recognizer.autocast_dtype = PRECISIONS[precision]

    # --- batches -------------------------------------------------------------------------

    def process_encoded(self, datas: list[bytes], *, max_pixels: int = DEFAULT_MAX_PIXELS
                        ) -> list[list[EmbeddedFace] | ImageDecodeError]:
        """Faces per encoded image; an image that cannot be decoded yields its ImageDecodeError."""
        return next(self.process_encoded_stream([datas], max_pixels=max_pixels))

    def process_encoded_stream(self, batches: Iterable[list[bytes]], *, max_pixels: int = DEFAULT_MAX_PIXELS
                               ) -> Iterator[list[list[EmbeddedFace] | ImageDecodeError]]:
        """``process_encoded`` for each batch, decoding batch k+1 on CPU threads while the device runs batch k."""
        def decode(data):
            try:
                return decode_image(data, max_pixels=max_pixels).pixels
            except ImageDecodeError as exc:
                return exc

        def decode_all(datas):
            started = time.perf_counter()
            decoded = list(pool.map(decode, datas))
            return decoded, time.perf_counter() - started

        with ThreadPoolExecutor(self.threads) as pool, ThreadPoolExecutor(1) as ahead:
            batches = iter(batches)
            pending = None
            first = next(batches, None)
            if first is not None:
                pending = ahead.submit(decode_all, first)
            while pending is not None:
                started = time.perf_counter()
                decoded, decode_seconds = pending.result()
                self.timings["decode_wait"] += time.perf_counter() - started  # decode not hidden by the device
                self.timings["decode"] += decode_seconds
                following = next(batches, None)
                pending = ahead.submit(decode_all, following) if following is not None else None
                good = [i for i, d in enumerate(decoded) if not isinstance(d, ImageDecodeError)]
                results: list = list(decoded)
                for i, faces in zip(good, self.process_batch([decoded[i] for i in good], pool=pool)):
                    results[i] = faces
                yield results

    def process_batch(self, imgs: list[np.ndarray], *, pool: ThreadPoolExecutor | None = None
                      ) -> list[list[EmbeddedFace]]:
        """As FacePipeline.process_batch; on a device failure: halves, then the CPU pipeline."""
        imgs = [_as_bgr(img) for img in imgs]
        if pool is None:
            with ThreadPoolExecutor(self.threads) as own:
                return self.process_batch(imgs, pool=own)
        return run_split_on_failure(imgs, lambda part: self._process_on_device(part, pool), self._process_on_cpu,
                                    on_failure=self._log_failure)

    def _process_on_device(self, imgs: list[np.ndarray], pool: ThreadPoolExecutor) -> list[list[EmbeddedFace]]:
        with self._timed("fit"):
            fitted = list(pool.map(self.detector.fit, imgs))
        with self._timed("detect"):
            rows = self.detector.detect_fitted([work for work, _ in fitted])
            detections = [faces_from_rows(r, letterbox, img.shape[1], img.shape[0])
                          for r, (_, letterbox), img in zip(rows, fitted, imgs)]
        if self.landmarker is not None:
            with self._timed("landmarks"):
                detections = list(pool.map(self.refined, imgs, detections))
        with self._timed("align"):
            parts = []
            for img, faces in zip(imgs, detections):
                if faces:
                    image = torch.from_numpy(img).to(self.device, non_blocking=True).permute(2, 0, 1)
                    parts.append(align_on_device(image, [f.landmarks for f in faces]))
            crops_bgr = torch.cat(parts) if parts else torch.zeros((0, 3, CROP_SIZE, CROP_SIZE), device=self.device)
        with self._timed("embed"):
            rgb = crops_bgr.flip(1)
            if self.flip_tta and len(rgb):
                both = self.recognizer.embed_tensor(torch.cat([rgb, rgb.flip(3)]))
                summed = both[: len(rgb)] + both[len(rgb):]
                embeddings = summed / summed.norm(dim=1, keepdim=True).clamp_min(1e-12)
            else:
                embeddings = self.recognizer.embed_tensor(rgb)
            embeddings = embeddings.cpu().numpy()
            crops = crops_bgr.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        with self._timed("finish"):
            results, row = [], 0
            for faces in detections:
                results.append([self.embedded_face(face, crops[row + k], embeddings[row + k])
                                for k, face in enumerate(faces)])
                row += len(faces)
        return results

    def _process_on_cpu(self, imgs: list[np.ndarray]) -> list[list[EmbeddedFace]]:
        if self._cpu_pipeline is None:
            self._cpu_pipeline = FacePipeline.from_manifest(
                detector=self.detector_id, recognizer=self.recognizer_id, flip_tta=self.flip_tta,
                landmarks=self.landmarker_id or "")
        self.fallbacks += len(imgs)
        return self._cpu_pipeline.process_batch(imgs)

    def _log_failure(self, exc: BaseException, size: int) -> None:
        log.warning("device %s failed on a batch of %d image(s) (%s); retrying %s", self.device, size,
                    exc, "on the CPU" if size == 1 else "in halves")

    def _timed(self, stage: str):
        return _StageTimer(self, stage)


class _StageTimer:
    """Adds the stage's wall time to ``pipeline.timings``; waits for the GPU so the time is its own."""

    def __init__(self, pipeline: TorchFacePipeline, stage: str):
        self.pipeline, self.stage = pipeline, stage

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        if self.pipeline.device.type == "cuda":
            torch.cuda.synchronize(self.pipeline.device)
        self.pipeline.timings[self.stage] += time.perf_counter() - self.started
        return False
