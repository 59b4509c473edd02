"""The manifest's own error type: ml imports weights, never the other way round."""


class ModelFileError(Exception):
    """A model resource is missing, or its sha256 does not match the manifest."""
