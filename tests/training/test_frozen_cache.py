"""Identity selection, the frozen-stage feature cache and the study's ranked table."""
import numpy as np
import pytest
import torch

from ml.training.data import AlignedFaces, select_identities
from ml.training.study import ranked, variant_config, write_tables
from ml.training.train import TrainConfig, Trainer


def _config(tmp_path, name, **overrides):
    base = dict(data="unused", out=str(tmp_path / name), backbone="iresnet_tiny", loss="arcface",
                epochs=1, batch_size=8, lr=0.01, scale=16.0, seed=3, progress=False, device="cpu",
                save_weights=False, split_by="identities", held_out=0.4)
    base.update(overrides)
    return TrainConfig(**base)


def test_select_identities_filters_caps_and_draws():
    labels = np.repeat(np.arange(6), [1, 2, 3, 4, 5, 6])
    faces = AlignedFaces(np.zeros((len(labels), 112, 112, 3), np.uint8), labels, [f"p{i}" for i in range(6)],
                         [f"p{label}/{i}.jpg" for i, label in enumerate(labels)])
    kept = select_identities(faces, min_photos=3, max_photos=4)
    assert sorted(set(kept.labels)) == [2, 3, 4, 5]
    assert [int((kept.labels == c).sum()) for c in (2, 3, 4, 5)] == [3, 4, 4, 4]
    drawn = select_identities(faces, min_photos=2, max_identities=3, seed=1)
    assert len(set(drawn.labels)) == 3 and 0 not in drawn.labels
    assert np.array_equal(drawn.labels, select_identities(faces, min_photos=2, max_identities=3, seed=1).labels)


def test_frozen_cache_embeds_like_the_full_network(tiny_faces, tmp_path):
    """Cached L1..L3 outputs (float16) + L4 give the embeddings of the whole backbone."""
    trainer = Trainer(_config(tmp_path, "cached", freeze="L4", frozen_cache=True), tiny_faces)
    rows = np.arange(len(tiny_faces.labels))
    from ml.training.train import embed_all

    cached = trainer.embed(rows)
    full = embed_all(trainer.backbone, tiny_faces.crops, trainer.device)
    assert np.abs(cached - full).max() < 2e-2
    assert np.mean(np.sum(cached * full, axis=1)) > 0.999


def test_frozen_cache_training_moves_only_the_policy_stages(tiny_faces, tmp_path):
    trainer = Trainer(_config(tmp_path, "l4", freeze="L4", frozen_cache=True), tiny_faces)
    before = {k: v.clone() for k, v in trainer.backbone.state_dict().items()}
    result = trainer.fit()
    after = trainer.backbone.state_dict()
    changed = {k.split(".")[0] for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed == {"L4"}
    assert np.isfinite(result.history[0]["loss"]) and 0.0 <= result.metrics["knn_accuracy"] <= 1.0


def test_two_phase_variant_and_ranked_table(tmp_path):
    cfg = _config(tmp_path, "study", epochs=2)
    two = variant_config(cfg, "two-phase:L34+fc")
    assert (two.freeze, two.two_phase, two.epochs) == ("L34+fc", 1, 3)
    assert variant_config(cfg, "L4").two_phase == 0
    metrics = dict(pair_accuracy=0.9, pos_pair_precision=0.9, neg_pair_precision=0.9, macro_precision=0.9,
                   macro_recall=0.9, macro_f1=0.9, train_seconds=1.0, wall_seconds=1.0, pairs_pos=5,
                   pairs_neg=5, threshold=0.3)
    rows = [{"variant": "zero-shot", **metrics, "average_precision": 0.95, "knn_accuracy": 0.9},
            {"variant": "L4", **metrics, "average_precision": 0.97, "knn_accuracy": 0.8},
            {"variant": "L3", **metrics, "average_precision": 0.97, "knn_accuracy": 0.85}]
    assert [r["variant"] for r in ranked(rows)] == ["L3", "L4", "zero-shot"]
    write_tables(rows, cfg, "test data", tmp_path / "tables")
    table = (tmp_path / "tables" / "study.md").read_text()
    assert table.index("| 1 | L3 |") < table.index("| 2 | L4 |") < table.index("| 3 | zero-shot |")


@pytest.mark.parametrize("stage", ["L1", "L2", "L3", "L4"])
def test_forward_from_composes_with_features_before(stage):
    from ml.training.backbones import build_backbone

    backbone = build_backbone("iresnet_tiny").eval()
    x = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        assert torch.allclose(backbone.forward_from(backbone.features_before(x, stage), stage), backbone(x))
