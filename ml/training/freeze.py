"""Freeze policies: which backbone stages a fine-tuning run may change.

``none`` trains everything. ``L4``, ``L3``, ``L34``, ``L234`` train only the
named stages (``L34`` = stages 3 and 4) and keep the pretrained embedding
head fixed; a ``+fc`` suffix replaces the embedding head with a freshly
initialised one that is trained too. The margin-loss class centres are always
trained. Frozen stages also stay in eval mode, so their BatchNorm statistics
keep the pretrained values instead of drifting to a tiny dataset's.
"""
from __future__ import annotations

from dataclasses import dataclass

from ml.training.backbones.stages import STAGE_NAMES, StagedBackbone

LAYER_POLICIES = ("L4", "L3", "L34", "L234")
STUDY_POLICIES = ("none", *LAYER_POLICIES, *(f"{p}+fc" for p in LAYER_POLICIES))


@dataclass(frozen=True)
class FreezePolicy:
    name: str
    stages: frozenset[str]  # trainable feature stages (L1..L4)
    new_fc: bool            # replace the embedding head with a fresh, trainable one

    @property
    def trains_fc(self) -> bool:
        return self.new_fc or self.name == "none"


def parse_freeze_policy(name: str) -> FreezePolicy:
    base, plus, suffix = name.partition("+")
    if plus and suffix != "fc":
        raise ValueError(f"unknown freeze policy {name!r}: the only suffix is '+fc'")
    if base == "none":
        stages = frozenset(STAGE_NAMES)
    elif base in LAYER_POLICIES:
        stages = frozenset(f"L{digit}" for digit in base[1:])
    else:
        raise ValueError(f"unknown freeze policy {name!r}; choose from {', '.join(STUDY_POLICIES)}")
    return FreezePolicy(name, stages, bool(plus))


def set_trainable(backbone: StagedBackbone, stages: frozenset[str], fc: bool) -> None:
    """requires_grad on exactly the given stages (and the head if ``fc``)."""
    for name in (*STAGE_NAMES, "fc"):
        train = fc if name == "fc" else name in stages
        for param in backbone.stage(name).parameters():
            param.requires_grad_(train)


def set_modes(backbone: StagedBackbone) -> None:
    """Train mode for stages with trainable weights, eval mode for frozen ones."""
    for name in (*STAGE_NAMES, "fc"):
        stage = backbone.stage(name)
        stage.train(any(p.requires_grad for p in stage.parameters()))
