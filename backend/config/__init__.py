# The Celery app loads with Django, so shared_task and current_app.send_task
# bind to it in the API process too (cookiecutter-django does the same).
from .celery import app as celery_app

__all__ = ("celery_app",)
