"""Settings for the test suite: the same settings, pointed at the test stack."""
import os

os.environ["FACEINDEX_STACK"] = "test"

from .settings import *  # noqa: E402,F401,F403

# Faster password hashing: tests create many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The webhook tests receive on 127.0.0.1; production refuses private targets.
FACEINDEX_WEBHOOK_ALLOW_PRIVATE = True
