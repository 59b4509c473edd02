"""Open-set identification threshold: from a target FPIR and the gallery's size.

A face of someone never enrolled is compared with every template it is
searched against; it is named when the best of those impostor scores passes
the threshold. With a per-pair impostor tail P(s >= t) = p(t), the chance that
the best of T independent impostor scores passes is 1 - (1 - p(t))^T. The rule
solves that for t: the threshold is the impostor quantile at

    p = 1 - (1 - target_fpir) ** (1 / T)

so enrolling more people raises the threshold and never loosens anyone's
match. p(t) is the recognizer's impostor tail measured on a large impostor set
(weights/manifest.toml ``impostor_tail``: log10 p -> cosine), interpolated
linearly in log10 p and extrapolated past its last point along the last
segment (an exponential tail). Scores of different impostors against one probe
are positively correlated, so the independence model over-estimates the FPIR:
the rule errs on the strict side (measured in ``python -m ml.eval openset``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_TARGET_FPIR = 0.01


@dataclass(frozen=True)
class ImpostorTail:
    """Cosine thresholds at per-pair false-accept rates, sorted by rate (descending)."""

    log10_rates: tuple[float, ...]
    thresholds: tuple[float, ...]

    @classmethod
    def from_table(cls, table: dict) -> "ImpostorTail":
        """``{"1e-2": 0.33, "1e-3": 0.38, ...}`` as written in the manifest."""
        if len(table) < 2:
            raise ValueError("an impostor tail needs at least two points")
        points = sorted(((math.log10(float(rate)), float(t)) for rate, t in table.items()), reverse=True)
        rates, thresholds = zip(*points)
        if any(b < a for a, b in zip(thresholds, thresholds[1:])):
            raise ValueError("impostor tail thresholds must rise as the rate falls")
        return cls(tuple(rates), tuple(thresholds))

    def threshold_at(self, pair_rate: float) -> float:
        """Cosine threshold whose per-pair impostor rate is ``pair_rate``."""
        x = math.log10(min(max(pair_rate, 1e-300), 1.0))
        rates, ts = self.log10_rates, self.thresholds
        if x >= rates[0]:
            i = 0
        elif x <= rates[-1]:
            i = len(rates) - 2
        else:
            i = next(k for k in range(len(rates) - 1) if rates[k] >= x >= rates[k + 1])
        slope = (ts[i + 1] - ts[i]) / (rates[i + 1] - rates[i])
        return ts[i] + slope * (x - rates[i])


def pair_rate_for(target_fpir: float, comparisons: int) -> float:
    """Per-pair impostor rate that keeps the best of ``comparisons`` impostor scores at ``target_fpir``."""
    if not 0.0 < target_fpir < 1.0:
        raise ValueError(f"target FPIR must be in (0, 1), got {target_fpir}")
    comparisons = max(1, int(comparisons))
    return -math.expm1(math.log1p(-target_fpir) / comparisons)


def openset_threshold(tail: ImpostorTail, *, target_fpir: float, comparisons: int, floor: float = -1.0) -> float:
    """The match threshold for a gallery of ``comparisons`` templates; never below ``floor``."""
    return max(floor, tail.threshold_at(pair_rate_for(target_fpir, comparisons)))
