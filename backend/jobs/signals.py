"""Signals the jobs app sends; other apps connect receivers in their AppConfig.ready().

The sender never imports a receiver, so jobs does not depend on the apps
that react to its events.
"""
from django.dispatch import Signal

# Sent after an image's faces were committed (sender: the Image class).
# Arguments: owner_id, face_ids (all its new faces), unknown_face_ids (those
# that matched no identity).
faces_indexed = Signal()
