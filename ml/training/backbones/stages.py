"""Common shape of every trainable backbone: four feature stages and an embedding head.

Freeze policies (``L4``, ``L34``, ...) and the two-phase schedule address a
backbone only through these names, so each architecture decides once which of
its layers form "layer 1..4" and which form the embedding head ``fc``.
"""
from __future__ import annotations

import torch
from torch import nn

STAGE_NAMES = ("L1", "L2", "L3", "L4")


class StagedBackbone(nn.Module):
    """Subclasses define modules ``L1``..``L4`` and ``fc``, ``preprocess`` and ``new_fc``.

    ``forward`` takes (n, 3, 112, 112) BGR float pixels 0..255 (the pipeline's
    aligned crop) and returns un-normalised (n, embedding_dim) embeddings.
    """

    embedding_dim: int
    input_size: int = 112

    def preprocess(self, bgr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def new_fc(self) -> nn.Module:
        """A freshly initialised embedding head (the ``+fc`` policies)."""
        raise NotImplementedError

    def stage(self, name: str) -> nn.Module:
        if name not in (*STAGE_NAMES, "fc"):
            raise ValueError(f"unknown stage {name!r}")
        return getattr(self, name)

    def replace_fc(self) -> None:
        self.fc = self.new_fc()

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.features_before(bgr, STAGE_NAMES[0]), STAGE_NAMES[0])

    def features_before(self, bgr: torch.Tensor, stage: str) -> torch.Tensor:
        """The input of ``stage`` (``L1``..``L4``): preprocessing and every earlier stage."""
        x = self.preprocess(bgr)
        for name in STAGE_NAMES[:STAGE_NAMES.index(stage)]:
            x = getattr(self, name)(x)
        return x

    def forward_from(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        """The embedding from ``features_before(bgr, stage)``: ``stage`` onwards and the head."""
        for name in STAGE_NAMES[STAGE_NAMES.index(stage):]:
            x = getattr(self, name)(x)
        return self.fc(x)
