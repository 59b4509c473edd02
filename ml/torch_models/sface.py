"""SFace (int8) in torch: aligned 112x112 crops in, L2-normalised 128-d embeddings out.

The input is what the cv2.dnn path feeds (blobFromImages, swapRB): RGB float
0..255, NCHW; the graph's own first nodes do (x - 127.5) / 128.
"""
from __future__ import annotations

import numpy as np
import torch

from ml.torch_models.device import resolve_device
from ml.torch_models.graph import OnnxModule
from ml.torch_models.onnx_proto import read_onnx

MAX_BATCH = 256


class TorchSFace:
    """Same interface as ml.recognizers.sface.SFaceRecognizer, plus ``embed_tensor``."""

    def __init__(self, entry, model_bytes: bytes, device: torch.device | str | None = None):
        self.embedding_dim = int(entry.embedding_dim or 128)
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.net = OnnxModule(read_onnx(model_bytes), "data").eval().to(self.device)
        self.autocast_dtype: torch.dtype | None = None

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, dim) float32 embeddings of 112x112x3 uint8 BGR crops."""
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        bgr = torch.from_numpy(np.stack([np.ascontiguousarray(c) for c in crops]))
        rgb = bgr.to(self.device).permute(0, 3, 1, 2).flip(1).float()
        return self.embed_tensor(rgb).cpu().numpy()

    @torch.inference_mode()
    def embed_tensor(self, rgb: torch.Tensor) -> torch.Tensor:
        """(n, dim) float32 L2-normalised embeddings of an (n, 3, 112, 112) RGB 0..255 float tensor."""
        chunks = []
        for start in range(0, rgb.shape[0], MAX_BATCH):
            part = rgb[start:start + MAX_BATCH]
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    out = self.net(part)[0]
            else:
                out = self.net(part)[0]
            chunks.append(out.float())
        raw = torch.cat(chunks) if chunks else rgb.new_zeros((0, self.embedding_dim))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)
