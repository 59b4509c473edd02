import numpy as np
import pytest

from ml.attributes import MASK_NAMES, synthesize_masked
from ml.attributes.overlay import mask_texture, synthesize_masked_image


def test_mask_fabric_is_cut_out_of_its_photo():
    from ml.package_images import read_package_image

    for name in MASK_NAMES:
        photo = read_package_image(f"mask_{name}.jpg")
        fabric = mask_texture(name)
        assert fabric.dtype == np.uint8 and fabric.ndim == 3
        # Background and seams trimmed, most of the fabric kept.
        assert 0.5 * photo.shape[0] < fabric.shape[0] < photo.shape[0]
        assert 0.5 * photo.shape[1] < fabric.shape[1] < photo.shape[1]


@pytest.mark.parametrize("name", MASK_NAMES)
def test_mask_covers_lower_face_only(faces, name):
    crop = faces["astronaut"]
    masked = synthesize_masked(crop, name)
    assert masked.shape == crop.shape == (112, 112, 3) and masked.dtype == np.uint8
    diff = np.abs(masked.astype(int) - crop.astype(int)).sum(axis=2)
    # Eyes and everything above the nose bridge untouched.
    assert diff[:54].max() == 0
    # Mouth (corners at y~92, x 41..71) and nose tip (56, 72) are covered.
    assert diff[86:98, 44:68].mean() > 30
    assert diff[68:76, 50:62].mean() > 30


def test_mask_worn_below_nose_leaves_nose_visible(faces):
    crop = faces["t1_2"]
    masked = synthesize_masked(crop, "white", wear="mask_incorrect")
    diff = np.abs(masked.astype(int) - crop.astype(int)).sum(axis=2)
    assert diff[:74].max() == 0  # eyes and nose tip untouched
    assert diff[86:98, 44:68].mean() > 30  # mouth covered


def test_synthesis_is_deterministic_and_jitter_is_seeded(faces):
    crop = faces["tom_hanks"]
    assert np.array_equal(synthesize_masked(crop), synthesize_masked(crop))
    a = synthesize_masked(crop, rng=np.random.default_rng(3))
    b = synthesize_masked(crop, rng=np.random.default_rng(3))
    c = synthesize_masked(crop, rng=np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_greyscale_photo_gets_grey_mask(faces):
    crop = faces["tom_hanks"]  # a black-and-white portrait
    masked = synthesize_masked(crop, "blue")
    assert np.array_equal(masked[..., 0], masked[..., 1]) and np.array_equal(masked[..., 1], masked[..., 2])


def test_rejects_unaligned_input():
    with pytest.raises(ValueError):
        synthesize_masked(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ValueError):
        synthesize_masked(np.zeros((112, 112, 3), np.uint8), "purple")


def test_mask_drawn_on_whole_photo_lands_on_the_face(pipeline):
    from ml.package_images import astronaut_bgr

    img = astronaut_bgr()
    face = pipeline.detect(img)[0]
    masked = synthesize_masked_image(img, face.landmarks, "green")
    changed = np.abs(masked.astype(int) - img.astype(int)).sum(axis=2) > 30
    ys, xs = np.nonzero(changed)
    mouth = face.landmarks[3:].mean(axis=0)
    eyes_y = face.landmarks[:2, 1].mean()
    assert changed.sum() > 1000
    assert ys.min() > eyes_y  # nothing drawn at or above the eyes
    assert abs(np.median(xs) - mouth[0]) < 15 and ys.min() < mouth[1] < ys.max()
