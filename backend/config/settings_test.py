"""Settings for the test suite: the base settings, pointed at the test stack.

tests/conftest.py exports the test stack's variables (deploy.stack) before
Django loads these, like the dev stack does for the processes it starts.
"""
from .settings import *  # noqa: F401,F403

# Faster password hashing: tests create many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The webhook tests receive on 127.0.0.1; production refuses private targets.
FACEINDEX_WEBHOOK_ALLOW_PRIVATE = True

# No collected static files in a test run (whitenoise would warn on each request).
MIDDLEWARE = [name for name in MIDDLEWARE if not name.startswith("whitenoise.")]  # noqa: F405
