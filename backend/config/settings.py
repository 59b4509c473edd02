"""Django settings, driven by environment variables.

Defaults point at the embedded dev stack (deploy/stack.py); docker-compose.yml
sets the same variable names for production.
"""
import os
from pathlib import Path
from urllib.parse import urlparse

from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _database_from_url(url: str) -> dict:
    parts = urlparse(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        # API processes: a bounded pool per process (psycopg_pool) instead of a
        # connection per thread, so a process never holds more than
        # DB_POOL_MAX_SIZE connections whatever its thread count; idle ones
        # close after DB_POOL_MAX_IDLE_S, and a request that finds the pool busy
        # for DB_POOL_TIMEOUT_S gets a 503. Celery workers run without a pool
        # (DB_POOL_MAX_SIZE=0, set in workers/celery_app.py): a worker has a
        # fixed two threads (task, sweeper), and Celery's solo-pool fixup would
        # hand a pooled connection's closed socket back to the pool.
        # Budget: README "Reliability".
        "CONN_MAX_AGE": 0,
        # Each connection is checked as it is taken: one from before a database
        # restart is dead and gets replaced, not handed to a request.
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"pool": _pool_options()} if _pool_max_size() else {},
    }


def _pool_max_size() -> int:
    return int(os.environ.get("DB_POOL_MAX_SIZE", "4"))


def _pool_options() -> dict:
    return {
        "min_size": 0,
        "max_size": _pool_max_size(),
        "timeout": float(os.environ.get("DB_POOL_TIMEOUT_S", "10")),
        "max_idle": float(os.environ.get("DB_POOL_MAX_IDLE_S", "60")),
    }


def _default_stack_env() -> dict[str, str]:
    """Connection settings of the embedded stack this checkout runs.

    FACEINDEX_STACK=test selects the test stack (its own ports and var dir) so
    the test suite never touches the demo's data.
    """
    try:  # production images do not ship deploy/
        from deploy.stack import Stack
    except ImportError:  # pragma: no cover
        return {}
    if os.environ.get("FACEINDEX_STACK") == "test":
        return Stack.for_tests(BASE_DIR / "var" / "test").env()
    return Stack.from_env().env()


_stack = _default_stack_env()


def setting(name: str, default: str = "") -> str:
    return os.environ.get(name) or _stack.get(name) or default


SECRET_KEY = setting("DJANGO_SECRET_KEY", "dev-insecure-change-me")
DEBUG = env_bool("DJANGO_DEBUG", False)  # debug pages print settings: only when asked for
ALLOWED_HOSTS = [h for h in setting("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's files served from this package, not a CDN: the docs page works offline.
    "drf_spectacular_sidecar",
    "backend.core",
    "backend.gallery",
    "backend.jobs",
    "backend.reports",
]

MIDDLEWARE = [
    "backend.core.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if not DEBUG:
    # Serves admin and API-docs static files under gunicorn (collectstatic fills STATIC_ROOT).
    MIDDLEWARE.insert(2, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "backend.config.urls"
WSGI_APPLICATION = "backend.config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": _database_from_url(setting("DATABASE_URL", "postgres://faceindex:faceindex@127.0.0.1:5432/faceindex"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# Uploads: large archives stream to temp files instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 1000
# An enrollment with more images than this (zip members counted) runs in the
# background: POST .../enroll answers 202 and GET /enrollments/{id} shows progress.
FACEINDEX_ENROLL_SYNC_MAX_FILES = int(setting("FACEINDEX_ENROLL_SYNC_MAX_FILES", "50"))
# The whole request body, files included (backend/core/middleware.py); 0 = no cap.
FACEINDEX_MAX_REQUEST_BYTES = int(setting("FACEINDEX_MAX_REQUEST_BYTES", str(256 * 1024 * 1024)))
CSRF_FAILURE_VIEW = "backend.core.errors.csrf_failure"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "backend.core.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "backend.core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "faceindex API",
    "DESCRIPTION": "Index the faces in photo archives: jobs, images, faces, identities, reports.",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "backend.core.schema.add_error_responses"],
}

# Object storage (S3 / MinIO / SeaweedFS), used only through the minio SDK.
S3_ENDPOINT = setting("S3_ENDPOINT", "127.0.0.1:8333")
S3_ACCESS_KEY = setting("S3_ACCESS_KEY", "faceindex")
S3_SECRET_KEY = setting("S3_SECRET_KEY", "faceindex-secret")
S3_BUCKET = setting("S3_BUCKET", "faceindex")
S3_SECURE = setting("S3_SECURE", "false").lower() == "true"
S3_REGION = setting("S3_REGION", "us-east-1")
S3_PRESIGN_SECONDS = int(setting("S3_PRESIGN_SECONDS", "3600"))

# Celery (read by workers/celery_app.py with the CELERY_ namespace).
CELERY_BROKER_URL = setting("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = int(setting("CELERY_TASK_TIME_LIMIT", "240"))
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Above the longest task (the hard time limit), so a slow task is never
    # handed to a second worker while the first still runs it.
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 60,
    # Sweep for abandoned (unacked) messages every 2 s instead of ~100 s.
    "unacked_restore_interval": 2,
    "unacked_restore_throttle": 1,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Every worker consumes both queues (no -Q needed). Listing tasks have their own
# so that listing a large import source runs ahead of the batches it queues
# instead of waiting behind them: kombu's Redis transport takes from the two
# queues in turn.
FACEINDEX_LISTING_QUEUE = "faceindex.listing"
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Each queue on its own exchange and key: two queues bound to one key would each get every message.
CELERY_TASK_QUEUES = [Queue(name, Exchange(name), routing_key=name)
                      for name in (CELERY_TASK_DEFAULT_QUEUE, FACEINDEX_LISTING_QUEUE)]
CELERY_TASK_ROUTES = {"faceindex.list_source": {"queue": FACEINDEX_LISTING_QUEUE}}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# Ingest limits.
FACEINDEX_MAX_UPLOAD_BYTES = int(setting("FACEINDEX_MAX_UPLOAD_BYTES", str(50 * 1024 * 1024)))
FACEINDEX_MAX_PIXELS = int(setting("FACEINDEX_MAX_PIXELS", str(60_000_000)))
FACEINDEX_ZIP_MAX_ENTRIES = int(setting("FACEINDEX_ZIP_MAX_ENTRIES", "100000"))
FACEINDEX_ZIP_MAX_TOTAL_BYTES = int(setting("FACEINDEX_ZIP_MAX_TOTAL_BYTES", str(20 * 1024**3)))
FACEINDEX_ZIP_MAX_RATIO = int(setting("FACEINDEX_ZIP_MAX_RATIO", "100"))
# Matching: how many nearest templates to pull from the HNSW index per face.
FACEINDEX_MATCH_CANDIDATES = int(setting("FACEINDEX_MATCH_CANDIDATES", "20"))
FACEINDEX_HNSW_EF_SEARCH = int(setting("FACEINDEX_HNSW_EF_SEARCH", "100"))
FACEINDEX_AMBIGUITY_MARGIN = float(setting("FACEINDEX_AMBIGUITY_MARGIN", "0.03"))
# Open-set matching: the share of never-enrolled people's faces that may be
# named as someone (FPIR); thresholds follow from it and the gallery's size.
FACEINDEX_TARGET_FPIR = float(setting("FACEINDEX_TARGET_FPIR", "0.01"))
# Face models by manifest id (weights/manifest.toml); empty = the manifest's defaults.
# A recognizer whose width differs from the gallery columns is refused at load.
FACEINDEX_DETECTOR = setting("FACEINDEX_DETECTOR", "")
FACEINDEX_RECOGNIZER = setting("FACEINDEX_RECOGNIZER", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": setting("LOG_LEVEL", "INFO")},
}

# --- Archive ingest, batching, sweeps, webhooks (docs/ingest-and-reports.md) ---
# Server-side folders a job may import from (os.pathsep- or comma-separated
# absolute paths). Empty: folder imports are refused.
FACEINDEX_IMPORT_ROOTS = [p for p in setting("FACEINDEX_IMPORT_ROOTS", "").replace(os.pathsep, ",").split(",") if p]
# Buckets an s3://bucket/prefix import may read ("*": any the credentials reach).
# Our own S3_BUCKET is always refused: it holds every owner's originals.
FACEINDEX_IMPORT_S3_BUCKETS = [b for b in setting("FACEINDEX_IMPORT_S3_BUCKETS", "").split(",") if b]
FACEINDEX_IMPORT_S3_ENDPOINT = setting("FACEINDEX_IMPORT_S3_ENDPOINT", S3_ENDPOINT)
FACEINDEX_IMPORT_S3_ACCESS_KEY = setting("FACEINDEX_IMPORT_S3_ACCESS_KEY", S3_ACCESS_KEY)
FACEINDEX_IMPORT_S3_SECRET_KEY = setting("FACEINDEX_IMPORT_S3_SECRET_KEY", S3_SECRET_KEY)
FACEINDEX_IMPORT_S3_SECURE = setting("FACEINDEX_IMPORT_S3_SECURE", str(S3_SECURE)).lower() == "true"
FACEINDEX_IMPORT_S3_REGION = setting("FACEINDEX_IMPORT_S3_REGION", S3_REGION)
FACEINDEX_IMPORT_MAX_FILES = int(setting("FACEINDEX_IMPORT_MAX_FILES", "2000000"))
# Files an import lists per chunk: the request lists the first chunk, workers the rest.
FACEINDEX_IMPORT_LIST_CHUNK = int(setting("FACEINDEX_IMPORT_LIST_CHUNK", "1000"))
# Images per worker task: detection runs per image, embedding of all their
# faces in one batch. 8 suits a CPU worker; raise it (32-64) on a GPU.
FACEINDEX_BATCH_SIZE = int(setting("FACEINDEX_BATCH_SIZE", "8"))
# Lost-message sweep (runs at worker start and every interval in one worker):
# PENDING images of live jobs queued longer ago than MIN_AGE and absent from
# the broker are re-sent; PROCESSING ones older than STALE are reset first.
# Threads each worker process gives OpenCV, BLAS and torch (0: one per core, the
# libraries' default). With several workers on one machine, cores / workers.
FACEINDEX_WORKER_THREADS = int(setting("FACEINDEX_WORKER_THREADS", "0"))
FACEINDEX_SWEEP_INTERVAL_S = int(setting("FACEINDEX_SWEEP_INTERVAL_S", "300"))
FACEINDEX_SWEEP_MIN_AGE_S = int(setting("FACEINDEX_SWEEP_MIN_AGE_S", "600"))
FACEINDEX_SWEEP_STALE_PROCESSING_S = int(setting("FACEINDEX_SWEEP_STALE_PROCESSING_S", str(CELERY_TASK_TIME_LIMIT * 2)))
# The outbox: images whose send to the broker failed (broker down) keep
# queued_at unset; one worker sends them every OUTBOX_INTERVAL_S once they are
# older than OUTBOX_MIN_AGE_S.
FACEINDEX_OUTBOX_INTERVAL_S = float(setting("FACEINDEX_OUTBOX_INTERVAL_S", "5"))
FACEINDEX_OUTBOX_MIN_AGE_S = float(setting("FACEINDEX_OUTBOX_MIN_AGE_S", "5"))
# Outages (backend/core/outages.py): a task that cannot reach the database or
# storage probes again after BACKOFF_S, doubling up to CAP_S (with jitter), for
# at most WAIT_S (inside the task time limit), then puts its message back.
FACEINDEX_OUTAGE_BACKOFF_S = float(setting("FACEINDEX_OUTAGE_BACKOFF_S", "0.5"))
FACEINDEX_OUTAGE_BACKOFF_CAP_S = float(setting("FACEINDEX_OUTAGE_BACKOFF_CAP_S", "5"))
FACEINDEX_OUTAGE_WAIT_S = float(setting("FACEINDEX_OUTAGE_WAIT_S", "60"))
# Completion webhooks: per-attempt timeout, attempts in all, first retry delay (doubles each time).
FACEINDEX_WEBHOOK_TIMEOUT_S = float(setting("FACEINDEX_WEBHOOK_TIMEOUT_S", "10"))
FACEINDEX_WEBHOOK_MAX_ATTEMPTS = int(setting("FACEINDEX_WEBHOOK_MAX_ATTEMPTS", "6"))
FACEINDEX_WEBHOOK_BACKOFF_S = float(setting("FACEINDEX_WEBHOOK_BACKOFF_S", "2"))
# Webhooks to loopback/private/link-local addresses are refused unless allowed
# (a webhook must not reach the service's own network).
FACEINDEX_WEBHOOK_ALLOW_PRIVATE = env_bool("FACEINDEX_WEBHOOK_ALLOW_PRIVATE", False)
