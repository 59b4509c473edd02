import numpy as np

from ml.attributes import masked_templates, synthesize_masked
from ml.attributes.templates import ENROLLMENT_MASKS, enrollment_masked_template, masked_blend_template


def test_masked_templates_are_the_enrollment_masks(faces):
    crop = faces["astronaut"]
    templates = masked_templates(crop)
    assert len(templates) == len(ENROLLMENT_MASKS)
    for template, name in zip(templates, ENROLLMENT_MASKS):
        assert np.array_equal(template, synthesize_masked(crop, name))


def test_blend_template_is_unit_length():
    bare = np.array([1, 0, 0], np.float32)
    blend = masked_blend_template(bare, np.array([[0, 1, 0], [0, 0, 1]], np.float32))
    assert blend.dtype == np.float32 and abs(np.linalg.norm(blend) - 1) < 1e-6
    assert np.allclose(blend, np.array([2, 1, 1]) / np.sqrt(6))


def test_masked_probe_is_closer_to_masked_template_than_to_bare_one(pipeline, faces):
    """A masked photo of each package person (unseen fabric, jittered) vs their enrollment."""
    rng = np.random.default_rng(5)
    crops = list(faces.values())
    bare = pipeline.embed_crops(crops)
    probes = pipeline.embed_crops([synthesize_masked(c, "green", rng) for c in crops])
    for crop, bare_embedding, probe in zip(crops, bare, probes):
        blend = enrollment_masked_template(pipeline, crop, bare_embedding)
        assert float(probe @ blend) > float(probe @ bare_embedding)
    # And still closest to the right person among the eight.
    blends = np.stack([enrollment_masked_template(pipeline, c) for c in crops])
    assert list((probes @ blends.T).argmax(axis=1)) == list(range(len(crops)))
