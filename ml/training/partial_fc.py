"""Partial FC: margin softmax over a sampled subset of class centres.

With millions of identities the full (n, C) logit matrix and its gradient
dominate memory; Partial FC (An et al. 2022) keeps every class centre present
in the batch (the positives) and samples a fraction ``r`` of all centres in
total, filling up with random negatives. With r = 1 it is exactly the full
softmax. This is the single-process form (no model-parallel sharding).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ml.training.losses import MarginConfig, cosine_logits, margin_logits


class PartialFC(nn.Module):
    def __init__(self, embedding_dim: int, num_classes: int, margin: MarginConfig, sample_rate: float = 1.0):
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.margin = margin
        self.sample_rate = sample_rate
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim).normal_(0, 0.01))

    def sample_classes(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sorted class ids to score this step: all positives plus random negatives."""
        num_sample = math.ceil(self.sample_rate * self.num_classes)
        if num_sample >= self.num_classes:
            return torch.arange(self.num_classes, device=labels.device)
        positives = torch.unique(labels)
        if len(positives) >= num_sample:
            return positives
        # Random scores for every class; positives get +inf so top-k always keeps them.
        scores = torch.rand(self.num_classes, generator=generator, device="cpu").to(labels.device)
        scores[positives] = float("inf")
        return torch.topk(scores, num_sample).indices.sort().values

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        classes = self.sample_classes(labels, generator)
        # Map each label to its column in the sampled subset.
        column = torch.full((self.num_classes,), -1, dtype=torch.long, device=labels.device)
        column[classes] = torch.arange(len(classes), device=labels.device)
        local_labels = column[labels]
        logits = margin_logits(cosine_logits(embeddings, self.weight[classes]), local_labels, self.margin)
        return F.cross_entropy(logits, local_labels)
