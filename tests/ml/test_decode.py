"""decode_image: formats, colour modes, EXIF, and every kind of bad input -> ImageDecodeError."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.decode import decode_image
from ml.errors import ImageDecodeError, MLError
from tests_ml_helpers import encode, png_with_claimed_size


def _gradient(width=64, height=48) -> np.ndarray:
    """RGB test card whose channels differ, so a channel swap is visible."""
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return np.dstack([x, y, np.full_like(x, 200)])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_common_formats_decode_to_bgr(fmt):
    rgb = _gradient()
    decoded = decode_image(encode(Image.fromarray(rgb), fmt, quality=95))
    assert decoded.format == fmt
    assert decoded.pixels.shape == (48, 64, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height) == (64, 48)
    # BGR: blue (constant 200) comes first.
    tolerance = 6 if fmt in ("JPEG", "WEBP") else 0
    assert np.abs(decoded.pixels[:, :, 0].astype(int) - 200).max() <= tolerance
    assert np.abs(decoded.pixels[:, :, 2].astype(int) - rgb[:, :, 0]).mean() <= tolerance


def test_grayscale_becomes_three_equal_channels():
    gray = _gradient()[:, :, 0]
    px = decode_image(encode(Image.fromarray(gray, "L"), "PNG")).pixels
    assert px.shape == (48, 64, 3)
    assert np.array_equal(px[:, :, 0], gray) and np.array_equal(px[:, :, 1], gray)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255  # red...
    rgba[:, :5, 3] = 255  # ...opaque on the left, transparent on the right
    px = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG")).pixels
    assert px[0, 0].tolist() == [0, 0, 255]
    assert px[0, 9].tolist() == [255, 255, 255]


def test_cmyk_jpeg_converts_to_bgr():
    cmyk = Image.fromarray(_gradient()).convert("CMYK")
    px = decode_image(encode(cmyk, "JPEG", quality=95)).pixels
    assert px.shape == (48, 64, 3)
    assert abs(int(px[:, :, 0].mean()) - 200) < 12


def test_16bit_png_is_scaled_to_8bit():
    ramp = (np.linspace(0, 65535, 64 * 8).reshape(8, 64)).astype(np.uint16)
    img = Image.fromarray(ramp)  # mode I;16
    px = decode_image(encode(img, "PNG")).pixels
    assert px.dtype == np.uint8
    assert px[0, 0, 0] == 0 and px[-1, -1, 0] == 255
    assert 100 < px[4, 32, 0] < 155  # mid-ramp stays mid-grey, not clipped to 255


def test_exif_orientation_is_applied_and_metadata_read():
    rgb = np.zeros((40, 100, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)  # a red stripe on the stored image's left edge
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    exif.get_ifd(0x8769)[36867] = "2021:07:04 12:30:05"
    exif.get_ifd(0x8825).update({1: "N", 2: (59.0, 20.0, 0.0), 3: "E", 4: (18.0, 3.0, 36.0)})
    decoded = decode_image(encode(img, "JPEG", quality=95, exif=exif))
    assert (decoded.width, decoded.height) == (40, 100)  # portrait after rotation
    assert decoded.pixels[2, 20, 2] > 200 and decoded.pixels[-3, 20, 2] < 60  # stripe now on top
    assert decoded.taken_at == "2021-07-04T12:30:05"
    assert decoded.gps == pytest.approx((59 + 20 / 60, 18 + 3 / 60 + 36 / 3600))


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_decode_with_their_orientation(fmt):
    """HEIC (iPhones) and AVIF: decoded, turned upright like a JPEG with the same EXIF orientation."""
    rgb = np.zeros((40, 100, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)  # a red stripe on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    decoded = decode_image(encode(Image.fromarray(rgb), fmt, quality=90, exif=exif.tobytes()))
    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == (40, 100)  # portrait after rotation, turned once only
    assert decoded.pixels[2, 20, 2] > 180 and decoded.pixels[-3, 20, 2] < 80  # stripe now on top


def test_image_without_exif_has_no_metadata():
    decoded = decode_image(encode(Image.fromarray(_gradient()), "PNG"))
    assert decoded.taken_at is None and decoded.gps is None


def test_empty_bytes():
    with pytest.raises(ImageDecodeError) as err:
        decode_image(b"")
    assert err.value.code == "empty"


def test_random_bytes():
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageDecodeError) as err:
        decode_image(noise)
    assert err.value.code == "unsupported_format"
    assert isinstance(err.value, MLError) and str(err.value)


def test_truncated_jpeg():
    data = encode(Image.fromarray(_gradient(256, 256)), "JPEG", quality=95)
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.code == "corrupt"


def test_corrupt_png_body():
    data = bytearray(encode(Image.fromarray(_gradient()), "PNG"))
    data[60:120] = b"\x00" * 60
    with pytest.raises(ImageDecodeError) as err:
        decode_image(bytes(data))
    assert err.value.code == "corrupt"


def test_pixel_bomb_is_refused_before_decoding():
    # A tiny PNG whose header claims 30000x30000 pixels.
    bomb = png_with_claimed_size(encode(Image.fromarray(_gradient()), "PNG"), 30000, 30000)
    with pytest.raises(ImageDecodeError) as err:
        decode_image(bomb)
    assert err.value.code == "too_many_pixels"
    with pytest.raises(ImageDecodeError) as err:
        decode_image(encode(Image.fromarray(_gradient()), "PNG"), max_pixels=1000)
    assert err.value.code == "too_many_pixels"


def test_unsupported_format():
    buf = io.BytesIO()
    Image.fromarray(_gradient()).save(buf, "PPM")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(buf.getvalue())
    assert err.value.code == "unsupported_format"
