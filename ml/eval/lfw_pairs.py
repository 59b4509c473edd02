"""Reading LFW-format pairs.txt files and splitting them into folds."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_FOLDS = 10


@dataclass(frozen=True)
class Pair:
    name1: str
    index1: int
    name2: str
    index2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


def read_pairs(text: str) -> tuple[list[Pair], list[str]]:
    """All pair lines, ignoring the header whatever its counts; returns (pairs, header tokens)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    header: list[str] = []
    pairs = []
    for n, tokens in enumerate(lines):
        pair = _parse(tokens)
        if pair is None:
            if n == 0:
                header = tokens
                continue
            raise ValueError(f"pairs line {n + 1} is not a pair: {' '.join(tokens)!r}")
        pairs.append(pair)
    return pairs, header


def _parse(tokens: list[str]) -> Pair | None:
    try:
        if len(tokens) == 3:
            return Pair(tokens[0], int(tokens[1]), tokens[0], int(tokens[2]))
        if len(tokens) == 4:
            return Pair(tokens[0], int(tokens[1]), tokens[2], int(tokens[3]))
    except ValueError:
        return None
    return None


def fold_ids(pairs: list[Pair], header: list[str]) -> tuple[np.ndarray, str]:
    """Fold number per pair, and how the folds were made.

    LFW's own files hold 10 consecutive equal blocks (header ``10 300``: each
    block 300 same then 300 different pairs); those are the official folds.
    Anything else gets 10 stratified folds with a fixed seed.
    """
    n = len(pairs)
    labels = np.array([p.same for p in pairs])
    if n % N_FOLDS == 0 and n >= N_FOLDS * 2:
        block = n // N_FOLDS
        blocks = labels.reshape(N_FOLDS, block)
        if _header_says_official(header, block) or (
            np.all(blocks.sum(1) == blocks[0].sum()) and blocks[0].sum() * 2 == block
            and all(_block_is_same_then_different(b) for b in blocks)
        ):
            return np.repeat(np.arange(N_FOLDS), block), "official (10 consecutive blocks)"
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=min(N_FOLDS, max(2, int(min(labels.sum(), (~labels).sum())))),
                               shuffle=True, random_state=0)
    folds = np.zeros(n, dtype=int)
    for k, (_, test) in enumerate(splitter.split(np.zeros(n), labels)):
        folds[test] = k
    return folds, "stratified 10-fold, seed 0"


def _header_says_official(header: list[str], block: int) -> bool:
    try:
        return len(header) >= 2 and int(header[0]) == N_FOLDS and 2 * int(header[1]) == block
    except ValueError:
        return False


def _block_is_same_then_different(block: np.ndarray) -> bool:
    half = len(block) // 2
    return bool(block[:half].all() and not block[half:].any())
