"""Settings for a deployment (wsgi, the worker and beat default to these).

Refuses to start without a real DJANGO_SECRET_KEY and an explicit
DJANGO_ALLOWED_HOSTS, and turns on HTTPS-only cookies, HSTS and the other
SECURE_* protections. Behind a TLS-terminating proxy that sets
X-Forwarded-Proto; set DJANGO_SECURE_SSL_REDIRECT=false only where the proxy
already redirects.
"""
import os

from django.core.exceptions import ImproperlyConfigured

from .settings import *  # noqa: F401,F403
from .settings import INSECURE_DEV_SECRET_KEY, REST_FRAMEWORK, env

# Placeholders shipped in docker-compose.yml and the dev settings: never a real key.
_PLACEHOLDER_PREFIXES = ("change-me", "dev-insecure", "django-insecure")


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"{name} must be set in production (settings_production)")
    return value


SECRET_KEY = _required("DJANGO_SECRET_KEY")
if SECRET_KEY == INSECURE_DEV_SECRET_KEY or SECRET_KEY.startswith(_PLACEHOLDER_PREFIXES) or len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY is a placeholder or shorter than 32 characters; "
                               "generate one: python -c 'import secrets; print(secrets.token_urlsafe(50))'")
ALLOWED_HOSTS = [host.strip() for host in _required("DJANGO_ALLOWED_HOSTS").split(",") if host.strip()]
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must name at least one host")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# JSON only: the browsable API is a development aid.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]}
