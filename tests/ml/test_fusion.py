"""Score fusion (ml.eval.fusion): z-normalisation on impostors, weights learned on training folds only,
and embedding-level fusion equal to the weighted score sum. Synthetic scores; one CLI run on package images."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ml.eval.fusion import fit_fusion, fused_embeddings, kfold_fusion
from ml.eval.metrics import kfold_accuracy

FOLDS = 10


def synthetic_pairs(rng, n: int = 4000, separations=(2.0, 2.0), spreads=(0.05, 0.2), centres=(0.1, 0.8)):
    """Cosines of recognizers with independent noise: recognizer i puts genuine pairs
    separations[i] impostor-sigmas above its impostors, on its own scale (centre, spread)."""
    labels = np.arange(n) % 2 == 0
    columns = []
    for separation, spread, centre in zip(separations, spreads, centres):
        z = rng.standard_normal(n) + separation * labels
        columns.append(centre + spread * z)
    folds = np.repeat(np.arange(FOLDS), n // FOLDS)
    return np.stack(columns, axis=1), labels, folds


def test_z_normalisation_uses_the_impostor_pairs():
    rng = np.random.default_rng(0)
    cosines, labels, _ = synthetic_pairs(rng)
    fusion = fit_fusion(cosines, labels)
    assert fusion.mean == pytest.approx(cosines[~labels].mean(0))
    assert fusion.std == pytest.approx(cosines[~labels].std(0))
    z = (cosines[~labels] - fusion.mean) / fusion.std
    assert z.mean(0) == pytest.approx([0, 0], abs=1e-9) and z.std(0) == pytest.approx([1, 1])
    # Equally separating recognizers on different scales get equal z weights, so raw-cosine weights
    # follow 1 / spread: the narrow recognizer (spread 0.05) weighs 4x the wide one (0.2).
    assert fusion.weights[0] == pytest.approx(fusion.weights[1], rel=0.15)
    c = fusion.cosine_weights()
    assert c.sum() == pytest.approx(1.0) and c[0] / c[1] == pytest.approx(4.0, rel=0.2)


def test_fusion_of_two_independent_recognizers_beats_each_alone():
    rng = np.random.default_rng(1)
    cosines, labels, folds = synthetic_pairs(rng)
    alone = [kfold_accuracy(cosines[:, i], labels, folds)["accuracy"] for i in range(2)]
    fused = kfold_fusion(cosines, labels, folds)
    # Independent noise: sqrt(2) more separation, 84% -> 92% expected accuracy.
    assert fused["accuracy"] > max(alone) + 0.04
    assert 0.5 < fused["auc"] <= 1.0 and len(fused["fold_accuracies"]) == FOLDS


def test_a_useless_recognizer_gets_almost_no_weight():
    rng = np.random.default_rng(2)
    cosines, labels, folds = synthetic_pairs(rng, separations=(2.5, 0.0))
    fused = kfold_fusion(cosines, labels, folds)
    assert fused["cosine_weights_mean"][1] < 0.05
    assert fused["accuracy"] == pytest.approx(kfold_accuracy(cosines[:, 0], labels, folds)["accuracy"], abs=0.01)


def test_weights_are_learned_without_the_held_out_fold():
    rng = np.random.default_rng(3)
    cosines, labels, folds = synthetic_pairs(rng, separations=(3.0, 0.0))
    # In fold 4 only, recognizer 0 is reversed: genuine pairs score low. A fusion fitted on all
    # folds would still be right on most of fold 4's other pairs; learned on the other nine it
    # must get fold 4 almost entirely wrong, and the other folds right.
    reversed_fold = folds == 4
    cosines[reversed_fold, 0] = 2 * cosines[reversed_fold, 0].mean() - cosines[reversed_fold, 0]
    fold_accuracies = kfold_fusion(cosines, labels, folds)["fold_accuracies"]
    assert fold_accuracies[4] < 0.15
    assert min(a for k, a in enumerate(fold_accuracies) if k != 4) > 0.85


def test_fused_embedding_cosine_is_the_weighted_cosine_sum():
    rng = np.random.default_rng(4)

    def unit(n, d):
        v = rng.standard_normal((n, d))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    a, b = unit(20, 128), unit(20, 64)
    weights = np.array([0.7, 0.3])
    fused = fused_embeddings([a, b], weights)
    assert fused.shape == (20, 192)
    expected = 0.7 * (a @ a.T) + 0.3 * (b @ b.T)
    assert fused @ fused.T == pytest.approx(expected, abs=1e-5)


def test_fusion_cli_with_facenet(lfw_tree, capsys):
    from ml.eval.__main__ import main

    main(["fusion", "--pairs", str(lfw_tree / "pairs.txt"), "--root", str(lfw_tree), "--with", "facenet",
          "--no-cache"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["recognizers"] == ["sface-2021dec-int8", "facenet"]
    assert report["single"]["facenet"]["auc"] > 0.9 and report["single"]["sface-2021dec-int8"]["accuracy"] == 1.0
    fused = report["fused"]["sface-2021dec-int8+facenet"]
    assert fused["accuracy"] >= 0.9 and sum(fused["cosine_weights_mean"]) == pytest.approx(1.0, abs=1e-3)
    assert report["ms_per_face"]["facenet"] > 0 and report["photos"] == 12
