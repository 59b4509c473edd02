"""Settings for a developer's machine and `make demo` (manage.py's default).

The base settings, pointed by the environment at the embedded stack
(`eval "$(python -m deploy.stack env)"`, or the processes deploy.demo starts),
with human-readable logs unless FACEINDEX_LOG_FORMAT says otherwise. DEBUG
stays off unless DJANGO_DEBUG=true.
"""
import os

from .settings import *  # noqa: F401,F403
from .settings import LOGGING

if not os.environ.get("FACEINDEX_LOG_FORMAT"):
    LOGGING["handlers"]["console"]["formatter"] = "text"
