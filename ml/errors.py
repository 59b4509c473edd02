"""Typed errors raised by the face pipeline."""
import weights.errors


class MLError(Exception):
    """Base class of every error the ml package raises on purpose."""


class ImageDecodeError(MLError):
    """The bytes could not be turned into an image.

    ``code`` is machine-readable: "empty", "corrupt", "unsupported_format" or
    "too_many_pixels"; ``str(err)`` is a human-readable reason.
    """

    CODES = ("empty", "corrupt", "unsupported_format", "too_many_pixels")

    def __init__(self, code: str, reason: str):
        if code not in self.CODES:
            raise ValueError(f"unknown ImageDecodeError code {code!r}")
        super().__init__(reason)
        self.code = code


# Raised by the manifest (weights/), which ml sits on; named here too so the
# pipeline's callers find every error it raises in one module.
ModelFileError = weights.errors.ModelFileError
