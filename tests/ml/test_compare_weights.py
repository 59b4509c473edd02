"""cosine_similarity / verify / identify, and the manifest loader's integrity checks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import weights
from ml.compare import cosine_similarity, identify, verify
from ml.errors import ModelFileError


def test_cosine_similarity_vectors_and_matrices():
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([3.0, 4.0, 0.0])
    assert cosine_similarity(a, b) == pytest.approx(0.6)
    rng = np.random.default_rng(0)
    left, right = rng.normal(size=(4, 16)), rng.normal(size=(3, 16))
    sims = cosine_similarity(left, right)
    assert sims.shape == (4, 3)
    assert sims[2, 1] == pytest.approx(cosine_similarity(left[2], right[1]), abs=1e-6)
    assert cosine_similarity(a[None], b).shape == (1, 1)


def test_verify_and_identify_use_the_manifest_threshold(pipeline, group_photo, astronaut):
    faces = pipeline.process(group_photo)
    gallery = np.stack([f.embedding for f in faces])
    probe = pipeline.process(np.ascontiguousarray(group_photo[:, ::-1]))  # mirrored photo
    # The mirrored photo's first face is one of the gallery's people.
    hits = identify(probe[0].embedding, gallery, top_k=3)
    assert len(hits) == 1 and hits[0][1] > pipeline.threshold
    same, similarity = verify(probe[0].embedding, gallery[hits[0][0]])
    assert same and similarity == pytest.approx(hits[0][1], abs=1e-5)
    stranger = pipeline.process(astronaut)[0].embedding
    assert identify(stranger, gallery) == []
    assert verify(stranger, gallery[0])[0] is False
    assert identify(stranger, np.zeros((0, pipeline.embedding_dim))) == []


def test_pipeline_reads_threshold_and_ids_from_manifest(pipeline):
    manifest = weights.load_manifest()
    entry = weights.model_entry(pipeline.recognizer_id)
    assert pipeline.detector_id == manifest["defaults"]["detector"]
    assert pipeline.recognizer_id == manifest["defaults"]["recognizer"]
    assert pipeline.threshold == entry.default_threshold
    assert set(pipeline.thresholds) >= {"far_1e-3", "far_1e-2"}
    assert pipeline.embedding_dim == entry.embedding_dim == 128


def test_every_manifest_model_loads_with_its_checksum():
    for model_id in weights.load_manifest()["models"]:
        assert len(weights.model_bytes(model_id)) > 1000


def test_checksum_mismatch_is_refused():
    entry = weights.model_entry(weights.default_model_id("recognizer"))
    tampered = dataclasses.replace(entry, sha256="0" * 64)
    with pytest.raises(ModelFileError, match="sha256 mismatch"):
        weights.verified_bytes(tampered)


def test_missing_model_file_is_a_clear_error():
    entry = weights.model_entry(weights.default_model_id("detector"))
    with pytest.raises(ModelFileError, match="not found"):
        weights.verified_bytes(dataclasses.replace(entry, resource="models/no_such_model.onnx"))
    with pytest.raises(ModelFileError, match="not found"):
        weights.verified_bytes(dataclasses.replace(entry, package="no_such_package_xyz"))
    with pytest.raises(ModelFileError, match="not in"):
        weights.model_entry("no-such-model")
