"""Safe image decoding: any common photo format to an 8-bit BGR array.

Convention: pixels are HxWx3 uint8 in **BGR** order (OpenCV's), with the EXIF
orientation already applied, so every coordinate the pipeline reports is in
the upright image the user sees.
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


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode ``data``; raises ImageDecodeError, never anything else."""
    if not data:
        raise ImageDecodeError("empty", "the file is empty")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _decode(data, max_pixels)
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


def _decode(data: bytes, max_pixels: int) -> DecodedImage:
    img = Image.open(io.BytesIO(data))
    fmt = img.format or "UNKNOWN"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageDecodeError("unsupported_format", f"image format {fmt} is not supported")
    # The header is parsed but no pixels are decoded yet: refuse bombs here.
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("corrupt", "image has zero size")
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_many_pixels",
            f"image has {width}x{height} = {width * height} pixels, limit is {max_pixels}",
        )
    img.load()
    exif = img.getexif()
    taken_at = _taken_at(exif)
    gps = _gps(exif)
    img = ImageOps.exif_transpose(img)
    rgb = _to_rgb8(img)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return DecodedImage(
        pixels=bgr,
        width=bgr.shape[1],
        height=bgr.shape[0],
        format="JPEG" if fmt == "MPO" else fmt,
        taken_at=taken_at,
        gps=gps,
    )


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
