"""Safe image decoding: any common photo format to an 8-bit BGR array.

Convention: pixels are HxWx3 uint8 in **BGR** order (OpenCV's), with the EXIF
orientation already applied, so every coordinate the pipeline reports is in
the upright image the user sees.

Scaled decoding: libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size
for a fraction of the time and memory (IDCT scaling, ``Image.draft``). With
``max_side`` a JPEG is decoded at the smallest such scale whose longest side
is still at least ``max_side``; with ``max_jpeg_pixels`` a JPEG may be up to
that many pixels on paper as long as the decoded pixels stay within
``max_pixels`` (so a 200 MP archive scan costs no more memory than the cap).
Other formats cannot decode at reduced size: ``max_pixels`` is their cap.
``DecodedImage.width/height`` are always the full upright size; ``scale_x``
and ``scale_y`` say how the pixels relate to it.
"""
from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from ml.errors import ImageDecodeError

# Phone archives are full of HEIC: pillow-heif teaches Pillow to open HEIF
# (libheif applies the file's rotation and resets EXIF orientation to 1, so
# exif_transpose below never turns it twice). AVIF is Pillow's own.
pillow_heif.register_heif_opener()

DEFAULT_MAX_PIXELS = 60_000_000
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF", "AVIF"})

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME_ORIGINAL = 36867
_DATETIME = 306


@dataclass
class DecodedImage:
    pixels: np.ndarray  # HxWx3 uint8 BGR, EXIF orientation applied
    width: int
    height: int
    format: str  # "JPEG", "PNG", ...
    taken_at: str | None  # EXIF DateTimeOriginal, ISO 8601
    gps: tuple[float, float] | None  # (lat, lon)
    # pixels per full-resolution pixel along x and y (1.0: decoded at full size)
    scale_x: float = 1.0
    scale_y: float = 1.0

    @property
    def reduced(self) -> bool:
        return self.pixels.shape[1] != self.width or self.pixels.shape[0] != self.height


# libjpeg's DCT scaling factors, Pillow's draft picks among them.
JPEG_SCALES = (1, 2, 4, 8)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None,
                 max_jpeg_pixels: int | None = None) -> DecodedImage:
    """Decode ``data``; raises ImageDecodeError, never anything else.

    ``max_side``: a JPEG may be decoded smaller, down to this longest side.
    ``max_jpeg_pixels``: a JPEG's own size limit, decoded within ``max_pixels``.
    """
    if not data:
        raise ImageDecodeError("empty", "the file is empty")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _decode(data, max_pixels, max_side, max_jpeg_pixels)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_many_pixels", f"image is too large to decode: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("unsupported_format", "not an image in a supported format") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise ImageDecodeError("corrupt", f"image data is corrupt or truncated: {exc}") from exc
    except MemoryError as exc:
        raise ImageDecodeError("too_many_pixels", "not enough memory to decode the image") from exc


def _decode(data: bytes, max_pixels: int, max_side: int | None, max_jpeg_pixels: int | None) -> DecodedImage:
    img = Image.open(io.BytesIO(data))
    fmt = img.format or "UNKNOWN"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageDecodeError("unsupported_format", f"image format {fmt} is not supported")
    # The header is parsed but no pixels are decoded yet: refuse bombs here.
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("corrupt", "image has zero size")
    scalable = fmt in ("JPEG", "MPO")
    limit = max(max_pixels, max_jpeg_pixels or 0) if scalable else max_pixels
    if width * height > limit:
        kind = "JPEG " if scalable and max_jpeg_pixels else ""
        raise ImageDecodeError(
            "too_many_pixels",
            f"{kind}image has {width}x{height} = {width * height} pixels, limit is {limit}",
        )
    if scalable:
        factor = _jpeg_factor(width, height, max_pixels, max_side)
        if factor > 1:
            # Pillow picks the largest scale whose result is at least the asked size.
            img.draft(img.mode, (width // factor, height // factor))
    img.load()
    exif = img.getexif()
    taken_at = _taken_at(exif)
    gps = _gps(exif)
    decoded_w, decoded_h = img.size
    img = ImageOps.exif_transpose(img)
    rgb = _to_rgb8(img)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    # The full upright size: the header's, swapped if EXIF turned the picture.
    swapped = (bgr.shape[1], bgr.shape[0]) != (decoded_w, decoded_h)
    full_w, full_h = (height, width) if swapped else (width, height)
    return DecodedImage(
        pixels=bgr,
        width=full_w,
        height=full_h,
        format="JPEG" if fmt == "MPO" else fmt,
        taken_at=taken_at,
        gps=gps,
        scale_x=bgr.shape[1] / full_w,
        scale_y=bgr.shape[0] / full_h,
    )


def _jpeg_factor(width: int, height: int, max_pixels: int, max_side: int | None) -> int:
    """The libjpeg reduction to decode at: within max_pixels, and the largest that keeps the longest side >= max_side."""
    def reduced(factor: int) -> tuple[int, int]:
        return -(-width // factor), -(-height // factor)

    allowed = [f for f in JPEG_SCALES if reduced(f)[0] * reduced(f)[1] <= max_pixels]
    if not allowed:
        raise ImageDecodeError("too_many_pixels", f"image has {width}x{height} pixels, too many to decode within {max_pixels}")
    if max_side is not None:
        keeping = [f for f in allowed if max(reduced(f)) >= max_side]
        if keeping:
            return max(keeping)
    return min(allowed)


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to HxWx3 uint8 RGB; alpha is composited onto white."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img).astype(np.float64)
        # 16-bit data comes through as 0..65535, float TIFFs often as 0..1.
        peak = arr.max() if arr.size else 0.0
        if mode == "F" and peak <= 1.0:
            arr = arr * 255.0
        elif peak > 255:
            arr = arr / 257.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    if img.mode != "RGB":
        # CMYK (Adobe-inverted JPEGs included), L, 1, YCbCr, LAB, HSV.
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def _taken_at(exif: Image.Exif) -> str | None:
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    except Exception:  # malformed EXIF must not fail the decode
        return None
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _gps(exif: Image.Exif) -> tuple[float, float] | None:
    try:
        gps = exif.get_ifd(_GPS_IFD)
        lat = _dms_to_degrees(gps[2], gps.get(1, "N"))
        lon = _dms_to_degrees(gps[4], gps.get(3, "E"))
    except Exception:  # absent or malformed GPS block
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return (lat, lon)


def _dms_to_degrees(dms, ref) -> float:
    degrees, minutes, seconds = (float(v) for v in dms)
    value = degrees + minutes / 60.0 + seconds / 3600.0
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    return -value if str(ref).strip().upper() in ("S", "W") else value
