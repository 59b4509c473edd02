"""Margin losses and Partial FC against hand-computed values and gradients."""
import math

import pytest
import torch

from ml.training.losses import (LOSS_PRESETS, MarginConfig, margin_config, margin_logits,
                                margin_softmax_loss, margined_target_cosine)
from ml.training.partial_fc import PartialFC

ARC = LOSS_PRESETS["arcface"]
COS = LOSS_PRESETS["cosface"]
SPHERE = LOSS_PRESETS["sphereface"]
COMBINED = LOSS_PRESETS["combined"]


@pytest.mark.parametrize("cfg, expected", [
    (ARC, 0.0235966),       # cos(pi/3 + 0.5)
    (COS, 0.15),            # 0.5 - 0.35
    (SPHERE, 0.1564345),    # cos(1.35 * pi/3)
    (COMBINED, 0.0217402),  # cos(pi/3 + 0.3) - 0.2
])
def test_target_cosine_at_sixty_degrees(cfg, expected):
    got = margined_target_cosine(torch.tensor([0.5], dtype=torch.float64), cfg)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_arcface_past_pi_uses_continuous_fallback():
    # theta = acos(-0.95) = 2.824 > pi - 0.5: fallback cos - (1 - cos 0.5)
    got = margined_target_cosine(torch.tensor([-0.95], dtype=torch.float64), ARC)
    assert got.item() == pytest.approx(-1.0724174, abs=1e-6)


@pytest.mark.parametrize("cfg", [ARC, COS, SPHERE, COMBINED], ids=["arc", "cos", "sphere", "combined"])
def test_target_logit_monotone_in_theta_and_finite_at_extremes(cfg):
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    cos = torch.cos(theta).requires_grad_(True)
    target = margined_target_cosine(cos, cfg)
    assert torch.all(target[1:] <= target[:-1] + 1e-9), "target logit must not rise as theta grows"
    # Continuity: no jump bigger than the grid step could explain.
    assert torch.max(torch.abs(target[1:] - target[:-1])).item() < 0.01
    target.sum().backward()
    assert torch.isfinite(cos.grad).all()


def test_arcface_gradient_matches_hand_derivative():
    # loss = CE over [s*t(c0), s*c1]; d/dc0 = -(1 - p0) * s * dt/dc,
    # dt/dc = cos m + sin m * c / sqrt(1 - c^2) = 1.1543790 at c = 0.5
    cfg = MarginConfig(scale=2.0, m2=0.5)
    cos = torch.tensor([[0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(margin_logits(cos, torch.tensor([0]), cfg), torch.tensor([0]))
    t = 0.0235966
    p0 = math.exp(2 * t) / (math.exp(2 * t) + math.exp(2 * 0.1))
    assert loss.item() == pytest.approx(-math.log(p0), abs=1e-6)
    loss.backward()
    assert cos.grad[0, 0].item() == pytest.approx(-(1 - p0) * 2.0 * 1.1543790, abs=1e-6)
    assert cos.grad[0, 1].item() == pytest.approx((1 - p0) * 2.0, abs=1e-6)


def test_general_margin_gradcheck():
    cfg = MarginConfig(scale=4.0, m1=1.35, m2=0.2, m3=0.1)
    cos = torch.tensor([[0.3, -0.2, 0.7], [-0.6, 0.2, 0.1]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([2, 0])
    assert torch.autograd.gradcheck(lambda c: margin_logits(c, labels, cfg), (cos,))


def test_unknown_loss_name_is_rejected():
    with pytest.raises(ValueError):
        margin_config("triplet")


def _embeddings_and_labels(n=12, d=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("cfg", [ARC, COS, COMBINED], ids=["arc", "cos", "combined"])
def test_partial_fc_with_rate_one_equals_full_softmax(cfg):
    emb, labels = _embeddings_and_labels()
    pfc = PartialFC(16, 10, cfg, sample_rate=1.0)
    emb_a = emb.clone().requires_grad_(True)
    loss_a = pfc(emb_a, labels)
    loss_a.backward()
    weight = pfc.weight.detach().clone().requires_grad_(True)
    emb_b = emb.clone().requires_grad_(True)
    loss_b = margin_softmax_loss(emb_b, weight, labels, cfg)
    loss_b.backward()
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-6)
    assert torch.allclose(emb_a.grad, emb_b.grad, atol=1e-7)
    assert torch.allclose(pfc.weight.grad, weight.grad, atol=1e-7)


def test_partial_fc_keeps_positives_and_samples_the_rest():
    torch.manual_seed(0)
    pfc = PartialFC(16, 100, ARC, sample_rate=0.2)
    emb, labels = _embeddings_and_labels(n=8, classes=100)
    seen = set()
    for _ in range(5):
        classes = pfc.sample_classes(labels)
        assert len(classes) == 20
        assert set(labels.tolist()) <= set(classes.tolist())
        seen |= set(classes.tolist())
    assert len(seen) > 20, "negatives must be resampled each step"
    pfc(emb, labels).backward()
    touched = (pfc.weight.grad.abs().sum(1) > 0).sum().item()
    assert touched == 20, "only sampled centres receive gradient"
