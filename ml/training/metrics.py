"""Held-out evaluation: LFW-style pair verification and 1-NN identification.

Pairs are formed among held-out photos only: every same-identity pair and an
equal number of different-identity pairs (seeded), as LFW's balanced pairs.
Pair accuracy uses k-fold cross-validated thresholds (each fold is judged with
the threshold that is best on the others), and the positive/negative pair
precisions come from those same out-of-fold decisions. 1-NN: each held-out
photo is matched against every other photo (training ones included).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support


def balanced_pairs(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs and their same-identity flags: all positives + as many negatives."""
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    pos, neg = np.flatnonzero(same), np.flatnonzero(~same)
    rng = np.random.default_rng(seed)
    neg = np.sort(rng.permutation(neg)[: max(len(pos), 1)])
    keep = np.concatenate([pos, neg])
    return np.stack([i[keep], j[keep]], axis=1), same[keep]


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The cosine cut with the highest accuracy (midpoint between neighbouring scores)."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    accuracy = [np.mean((scores > t) == same) for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def out_of_fold_decisions(scores: np.ndarray, same: np.ndarray, folds: int = 10, seed: int = 0) -> np.ndarray:
    folds = max(2, min(folds, len(scores)))
    fold_of = np.random.default_rng(seed).permutation(len(scores)) % folds
    decided = np.zeros(len(scores), dtype=bool)
    for f in range(folds):
        test = fold_of == f
        decided[test] = scores[test] > best_threshold(scores[~test], same[~test])
    return decided


def evaluate(embeddings: np.ndarray, labels: np.ndarray, held_out: np.ndarray, seed: int = 0) -> dict:
    """Metrics on the held-out indices; ``embeddings`` L2-normalised, all photos."""
    probe_emb, probe_labels = embeddings[held_out], labels[held_out]
    pairs, same = balanced_pairs(probe_labels, seed)
    scores = np.sum(probe_emb[pairs[:, 0]] * probe_emb[pairs[:, 1]], axis=1)
    decided = out_of_fold_decisions(scores, same, seed=seed)
    # 1-NN over all other photos.
    sims = probe_emb @ embeddings.T
    sims[np.arange(len(held_out)), held_out] = -np.inf
    predicted = labels[np.argmax(sims, axis=1)]
    precision, recall, f1, _ = precision_recall_fscore_support(
        probe_labels, predicted, average="macro", zero_division=0)
    return {
        "pairs_pos": int(same.sum()),
        "pairs_neg": int((~same).sum()),
        "pair_accuracy": float(np.mean(decided == same)),
        "pos_pair_precision": _precision(decided, same),
        "neg_pair_precision": _precision(~decided, ~same),
        "average_precision": float(average_precision_score(same, scores)) if same.any() else float("nan"),
        "threshold": best_threshold(scores, same),
        "knn_accuracy": float(np.mean(predicted == probe_labels)),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
    }


def _precision(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(truth[predicted])) if predicted.any() else float("nan")
