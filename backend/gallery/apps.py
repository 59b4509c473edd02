from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "backend.gallery"
    label = "gallery"

    def ready(self) -> None:
        # Imported here, once the app registry is ready: receivers use the models.
        from . import receivers

        receivers.connect()
