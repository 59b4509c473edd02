"""ArcFace 112x112 alignment on the device: ``grid_sample`` in place of cv2.warpAffine.

The 2x3 similarity matrices still come from ``ml.align.similarity_transform``
(cv2.estimateAffinePartial2D, LMEDS: microseconds per face on the CPU), so
both paths warp with the same matrix; only the bilinear sampling moves to the
device (cv2 samples with 1/32-pixel fixed-point weights, torch in float: the
crops differ by rounding, not by geometry). Outside the image is black, as
cv2.BORDER_CONSTANT.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ml.align import CROP_SIZE, similarity_transform


def sampling_grid(matrices: np.ndarray, width: int, height: int, device: torch.device) -> torch.Tensor:
    """(n, 112, 112, 2) grid_sample coordinates for image->crop matrices (n, 2, 3), align_corners=False."""
    n = len(matrices)
    full = np.zeros((n, 3, 3), dtype=np.float64)
    full[:, :2] = matrices
    full[:, 2, 2] = 1.0
    inverse = np.linalg.inv(full)[:, :2]  # crop pixel -> image pixel
    v, u = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float64)
    points = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)  # (112*112, 3)
    source = np.einsum("nij,pj->npi", inverse, points)  # (n, P, 2) image pixels
    normalised = np.empty_like(source)
    normalised[..., 0] = (2 * source[..., 0] + 1) / width - 1
    normalised[..., 1] = (2 * source[..., 1] + 1) / height - 1
    grid = normalised.reshape(n, CROP_SIZE, CROP_SIZE, 2).astype(np.float32)
    return torch.from_numpy(grid).to(device, non_blocking=True)


def align_on_device(image_chw: torch.Tensor, landmarks: list[np.ndarray]) -> torch.Tensor:
    """(n, 3, 112, 112) float crops, rounded to 0..255 integers like cv2's uint8 output.

    ``image_chw``: one image as a (3, H, W) tensor on the device (any float or
    uint8 dtype), channels in the image's own order.
    """
    if not landmarks:
        return image_chw.new_zeros((0, 3, CROP_SIZE, CROP_SIZE), dtype=torch.float32)
    matrices = np.stack([similarity_transform(points) for points in landmarks])
    height, width = image_chw.shape[1:]
    grid = sampling_grid(matrices, width, height, image_chw.device)
    source = image_chw.float().unsqueeze(0).expand(len(landmarks), -1, -1, -1)
    crops = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return crops.round().clamp(0, 255)
