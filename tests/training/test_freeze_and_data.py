"""Freeze policies, identity splits and the alignment cache."""
import numpy as np
import pytest

from ml.training.backbones import build_backbone
from ml.training.data import load_aligned_faces, split_indices
from ml.training.freeze import STUDY_POLICIES, parse_freeze_policy, set_modes, set_trainable


@pytest.mark.parametrize("name, stages, new_fc", [
    ("none", {"L1", "L2", "L3", "L4"}, False), ("L4", {"L4"}, False), ("L34", {"L3", "L4"}, False),
    ("L234+fc", {"L2", "L3", "L4"}, True),
])
def test_policy_parsing(name, stages, new_fc):
    policy = parse_freeze_policy(name)
    assert policy.stages == stages and policy.new_fc == new_fc


def test_bad_policy_is_rejected():
    for bad in ("L5", "L4+bn", "all"):
        with pytest.raises(ValueError):
            parse_freeze_policy(bad)


@pytest.mark.parametrize("backbone_id", ["iresnet_tiny", "mobilefacenet"])
def test_policies_map_onto_backbone_stages(backbone_id):
    backbone = build_backbone(backbone_id)
    for name in STUDY_POLICIES:
        policy = parse_freeze_policy(name)
        set_trainable(backbone, policy.stages, fc=policy.trains_fc)
        set_modes(backbone)
        for stage in ("L1", "L2", "L3", "L4"):
            params = list(backbone.stage(stage).parameters())
            assert all(p.requires_grad == (stage in policy.stages) for p in params), (name, stage)
            assert backbone.stage(stage).training == (stage in policy.stages)
        assert all(p.requires_grad == policy.trains_fc for p in backbone.fc.parameters())


def test_photo_split_is_deterministic_and_keeps_every_identity_in_training():
    labels = np.repeat(np.arange(6), [1, 2, 3, 4, 5, 6])
    train, test = split_indices(labels, held_out=0.4, seed=7)
    again = split_indices(labels, held_out=0.4, seed=7)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert set(labels[train]) == set(range(6))
    assert 0 not in labels[test]  # a single photo stays in training
    other = split_indices(labels, held_out=0.4, seed=8)[1]
    assert not np.array_equal(test, other)


def test_identity_split_holds_out_whole_people():
    labels = np.repeat(np.arange(10), 3)
    train, test = split_indices(labels, held_out=0.3, seed=0, by="identities")
    assert not set(labels[train]) & set(labels[test])
    assert len(set(labels[test])) == 3


def test_alignment_is_cached_by_file_hash(tiny_faces_dir, tmp_path, pipeline):
    first = load_aligned_faces(tiny_faces_dir, cache_dir=tmp_path, pipeline=pipeline, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == len(first.paths)
    assert first.crops.shape[1:] == (112, 112, 3)

    class NoDetector:  # a second load must come from the cache alone
        detector_id = pipeline.detector_id

        def detect(self, img):
            raise AssertionError("detector called despite the cache")

    second = load_aligned_faces(tiny_faces_dir, cache_dir=tmp_path, pipeline=NoDetector(), progress=False)
    assert np.array_equal(first.crops, second.crops)
