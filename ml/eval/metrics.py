"""Verification metrics: k-fold accuracy with per-fold thresholds, ROC, TAR at FAR."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FARS = (1e-3, 1e-2)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The cut maximising accuracy on (scores, labels): midway between neighbouring scores."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    accuracies = [((scores >= t) == labels).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    """Threshold chosen on the other folds, accuracy measured on the held-out fold."""
    accuracies, thresholds = [], []
    for k in np.unique(folds):
        test = folds == k
        threshold = best_threshold(scores[~test], labels[~test])
        thresholds.append(threshold)
        accuracies.append(float(((scores[test] >= threshold) == labels[test]).mean()))
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "threshold": float(np.mean(thresholds)),
        "fold_accuracies": accuracies,
        "fold_thresholds": thresholds,
    }


def tar_at_far(scores: np.ndarray, labels: np.ndarray, fars=FARS) -> dict[str, dict]:
    """TAR at each FAR, with the cosine threshold that achieves it.

    With few negative pairs a FAR below 1/negatives cannot be measured; then the
    strictest reachable point (zero false accepts) is reported and flagged.
    """
    fpr, tpr, thr = roc_curve(labels, scores)
    negatives = int((~labels).sum())
    out = {}
    for far in fars:
        ok = np.where(fpr <= far)[0]
        i = ok[-1]
        out[f"{far:g}"] = {
            "tar": float(tpr[i]),
            "threshold": float(min(thr[i], 1.0)),
            "measurable": bool(negatives * far >= 1),
        }
    return out


def verification_report(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    labels = labels.astype(bool)
    report = kfold_accuracy(scores, labels, folds)
    predicted = scores >= report["threshold"]
    tp, fp = int((predicted & labels).sum()), int((predicted & ~labels).sum())
    tn, fn = int((~predicted & ~labels).sum()), int((~predicted & labels).sum())
    report.update(
        auc=float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None,
        tar_at_far=tar_at_far(scores, labels),
        precision_same=tp / (tp + fp) if tp + fp else None,
        precision_different=tn / (tn + fn) if tn + fn else None,
        confusion={"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        pairs=int(len(labels)),
        same_pairs=int(labels.sum()),
    )
    return report
