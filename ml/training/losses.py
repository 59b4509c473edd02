"""Margin-based softmax losses for face recognition.

One formula covers the family: for the target class the logit cos θ becomes
``s·(cos(m1·θ + m2) − m3)`` and every other logit stays ``s·cos θ``.

* ArcFace    m1=1, m2>0, m3=0   (additive angular margin)
* CosFace    m1=1, m2=0, m3>0   (additive cosine margin)
* SphereFace m1>1, m2=0, m3=0   (multiplicative angular margin)

Past θ = π the margined logit would turn back up (cos is not monotone there),
rewarding the network for pushing a sample *further* from its centre. Where
``m1·θ + m2 > π`` we switch to a linear-in-cos fallback that meets the margined
curve at the boundary, so the target logit stays continuous and monotone in θ
(the role of insightface's ``theta + m > π`` branch). ``easy_margin`` instead
applies the margin only where cos θ > 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Clamp for acos/sqrt: both have infinite derivatives at |cos| = 1.
_EPS = 1e-6


@dataclass(frozen=True)
class MarginConfig:
    scale: float = 64.0
    m1: float = 1.0
    m2: float = 0.5
    m3: float = 0.0
    easy_margin: bool = False


LOSS_PRESETS: dict[str, MarginConfig] = {
    "arcface": MarginConfig(64.0, 1.0, 0.5, 0.0),
    "cosface": MarginConfig(64.0, 1.0, 0.0, 0.35),
    "sphereface": MarginConfig(64.0, 1.35, 0.0, 0.0),
    # insightface's "combined" setting
    "combined": MarginConfig(64.0, 1.0, 0.3, 0.2),
}


def margined_target_cosine(cos: torch.Tensor, cfg: MarginConfig) -> torch.Tensor:
    """cos(m1·θ + m2) − m3 for target cosines ``cos``, safe past π."""
    cos = cos.clamp(-1.0, 1.0)
    if cfg.m1 == 1.0 and cfg.m2 == 0.0:
        return cos - cfg.m3
    if cfg.m1 == 1.0:
        # Angle-addition form avoids acos and its infinite slope at ±1.
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(_EPS))
        margined = cos * math.cos(cfg.m2) - sin * math.sin(cfg.m2)
    else:
        theta = torch.acos(cos.clamp(-1.0 + _EPS, 1.0 - _EPS))
        margined = torch.cos(cfg.m1 * theta + cfg.m2)
    if cfg.easy_margin:
        return torch.where(cos > 0, margined, cos) - cfg.m3
    # Boundary angle where m1·θ + m2 reaches π; beyond it the fallback
    # cos − (cos θ_b + 1) equals −1 at θ_b and keeps decreasing.
    theta_boundary = (math.pi - cfg.m2) / cfg.m1
    if theta_boundary >= math.pi:
        return margined - cfg.m3
    cos_boundary = math.cos(theta_boundary)
    fallback = cos - (cos_boundary + 1.0)
    return torch.where(cos > cos_boundary, margined, fallback) - cfg.m3


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, cfg: MarginConfig) -> torch.Tensor:
    """Scaled logits with the margin applied to each row's target column.

    ``cos``: (n, c) cosines between embeddings and class centres;
    ``labels``: (n,) column of the target in each row (−1 = no target here).
    """
    has_target = labels >= 0
    rows = torch.nonzero(has_target, as_tuple=True)[0]
    cols = labels[has_target]
    target = margined_target_cosine(cos[rows, cols], cfg)
    out = cos.clone()
    out[rows, cols] = target.to(out.dtype)
    return out * cfg.scale


def cosine_logits(embeddings: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(n, d) x (c, d) -> (n, c) cosines; computed in float32 even under AMP."""
    return F.linear(F.normalize(embeddings.float()), F.normalize(centres.float()))


def margin_softmax_loss(
    embeddings: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, cfg: MarginConfig
) -> torch.Tensor:
    """Full-softmax margin loss over all class centres (the reference Partial FC must match)."""
    logits = margin_logits(cosine_logits(embeddings, centres), labels, cfg)
    return F.cross_entropy(logits, labels)


def margin_config(loss: str, *, scale: float | None = None, margins: tuple[float, float, float] | None = None,
                  easy_margin: bool = False) -> MarginConfig:
    """Preset by name, optionally overriding scale and (m1, m2, m3)."""
    try:
        base = LOSS_PRESETS[loss]
    except KeyError:
        raise ValueError(f"unknown loss {loss!r}; choose from {sorted(LOSS_PRESETS)}") from None
    m1, m2, m3 = margins if margins is not None else (base.m1, base.m2, base.m3)
    return MarginConfig(scale if scale is not None else base.scale, m1, m2, m3, easy_margin)
