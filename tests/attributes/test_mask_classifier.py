"""The shipped mask classifier on package faces with masks drawn in a fabric it never saw in training."""
import numpy as np
import pytest

from ml.attributes import MaskClassifier, synthesize_masked
from ml.attributes.train_mask import HELD_OUT_MASK, TRAIN_MASKS


@pytest.fixture(scope="module")
def classifier():
    return MaskClassifier.load()


def test_held_out_fabric_really_is_held_out():
    assert HELD_OUT_MASK not in TRAIN_MASKS


def test_bare_faces_are_not_masked(classifier, faces):
    predictions = classifier.predict(list(faces.values()))
    assert [p.label for p in predictions] == ["no_mask"] * len(faces), predictions


def test_overlaid_masks_are_flagged(classifier, faces):
    rng = np.random.default_rng(0)
    crops = [synthesize_masked(c, HELD_OUT_MASK, rng) for c in faces.values()]
    predictions = classifier.predict(crops)
    assert all(p.masked for p in predictions), predictions
    # Probabilities are a distribution over the three labels.
    for p in predictions:
        assert set(p.probs) == {"no_mask", "mask", "mask_incorrect"}
        assert abs(sum(p.probs.values()) - 1) < 1e-4 and p.score == max(p.probs.values())


def test_masked_photo_end_to_end(classifier, pipeline):
    """Mask drawn on the whole photo, then detected, aligned and classified like any upload."""
    from ml.attributes.overlay import synthesize_masked_image
    from ml.package_images import astronaut_bgr

    img = astronaut_bgr()
    landmarks = pipeline.detect(img)[0].landmarks
    masked_img = synthesize_masked_image(img, landmarks, HELD_OUT_MASK)
    faces = pipeline.detect(masked_img)
    assert faces, "detector lost the masked face"
    bare, masked = classifier.predict([pipeline.align(img, landmarks), pipeline.align(masked_img, faces[0].landmarks)])
    assert bare.label == "no_mask" and masked.masked


def test_prediction_is_deterministic_and_batch_independent(classifier, faces):
    crops = list(faces.values())
    together = classifier.probabilities(crops)
    one_by_one = np.concatenate([classifier.probabilities([c]) for c in crops])
    assert np.allclose(together, one_by_one, atol=1e-5)
    assert classifier.predict([]) == []
