"""Gallery reads that the API and the web app share."""
from __future__ import annotations

from django.db.models import QuerySet

from .models import Identity, Template


def identity_templates(identity: Identity) -> QuerySet[Template]:
    """An identity's templates as a user counts them: enrolled photos and confirmed faces, not their
    masked-probe companions (those follow their template)."""
    return Template.objects.filter(identity=identity, masked=False).order_by("id")
