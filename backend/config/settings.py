"""Django settings shared by every environment; they read only the environment.

Overlays: settings_dev (manage.py's default), settings_test (pytest) and
settings_production (wsgi, the worker, docker-compose.yml). The embedded dev
stack exports its connection variables to the processes it starts
(`python -m deploy.stack env` prints them); docker-compose.yml sets the same
names. Every FACEINDEX_* tunable is declared once, in TUNABLES below.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import environ
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# DEBUG is off unless asked for: a deployment that forgets a variable must not
# serve debug pages. The key below is only good for a machine's own dev stack;
# settings_production refuses it.
INSECURE_DEV_SECRET_KEY = "dev-insecure-change-me"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=INSECURE_DEV_SECRET_KEY)
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

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
    "backend.web",
]

MIDDLEWARE = [
    # First: probes answer before host checks, sessions and authentication.
    "backend.core.health.HealthCheckMiddleware",
    "backend.core.middleware.RequestSizeLimitMiddleware",
    # Keeps keep-alive connections usable when a view answers without reading the body.
    "backend.core.middleware.UnreadBodyDrainMiddleware",
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
    MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                      "whitenoise.middleware.WhiteNoiseMiddleware")
# Every request gets an id, logged on each line it causes (backend/core/logs.py).
MIDDLEWARE.append("backend.core.logs.RequestContextMiddleware")

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

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://faceindex:faceindex@127.0.0.1:5432/faceindex")}
# API processes: a bounded pool per process (psycopg_pool) instead of a
# connection per thread, so a process never holds more than DB_POOL_MAX_SIZE
# connections whatever its thread count; idle ones close after
# DB_POOL_MAX_IDLE_S, and a request that finds the pool busy for
# DB_POOL_TIMEOUT_S gets a 503. Celery workers run without a pool
# (DB_POOL_MAX_SIZE=0, set in workers/__init__.py): a solo worker runs one
# task at a time, and Celery's solo-pool fixup would hand a pooled
# connection's closed socket back to the pool. Budget: README "Reliability".
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=4)
# Without a pool (workers), a connection may outlive a task: DB_CONN_MAX_AGE
# seconds (workers/__init__.py sets 300). A new connection per task forked a
# PostgreSQL backend and warmed its caches for every batch.
DATABASES["default"]["CONN_MAX_AGE"] = 0 if DB_POOL_MAX_SIZE else env.int("DB_CONN_MAX_AGE", default=0)
# Each connection is checked as it is taken: one from before a database
# restart is dead and gets replaced, not handed to a request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DB_POOL_MAX_SIZE:
    DATABASES["default"]["OPTIONS"] = {"pool": {
        "min_size": 0,
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": env.float("DB_POOL_TIMEOUT_S", default=10.0),
        "max_idle": env.float("DB_POOL_MAX_IDLE_S", default=60.0),
    }}
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
    # Per-user limits on the endpoints that run models or accept uploads:
    # views name their throttle_scope, FACEINDEX_THROTTLE_<SCOPE> its rate.
    "DEFAULT_THROTTLE_CLASSES": ["backend.core.throttles.ScopedUserThrottle"],
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
S3_ENDPOINT = env.str("S3_ENDPOINT", default="127.0.0.1:8333")
S3_ACCESS_KEY = env.str("S3_ACCESS_KEY", default="faceindex")
S3_SECRET_KEY = env.str("S3_SECRET_KEY", default="faceindex-secret")
S3_BUCKET = env.str("S3_BUCKET", default="faceindex")
S3_SECURE = env.bool("S3_SECURE", default=False)
S3_REGION = env.str("S3_REGION", default="us-east-1")
S3_PRESIGN_SECONDS = env.int("S3_PRESIGN_SECONDS", default=3600)

# Celery (read by backend/config/celery.py with the CELERY_ namespace).
CELERY_BROKER_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=240)
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
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# GPU workers take batches from their own queue while one is alive
# (backend/jobs/routing.py). Only GPU workers consume it (they add it when
# ready, workers/signals.py); it is not in CELERY_TASK_QUEUES on purpose.
FACEINDEX_GPU_QUEUE = "faceindex.gpu"


@dataclass(frozen=True)
class Tunable:
    """One FACEINDEX_* setting: read from the environment variable of the same name."""

    name: str
    cast: Callable[[str], Any]
    default: Any
    meaning: str

    def read(self) -> Any:
        raw = os.environ.get(self.name, "")
        return self.cast(raw) if raw != "" else self.default


def _bool(raw: str) -> bool:
    return env.parse_value(raw, bool)


def _rate(raw: str) -> str:
    """A DRF rate ("N/second|minute|hour|day"); "off" for none (an empty variable means the default)."""
    return "" if raw.strip().lower() == "off" else raw.strip()


def _list(raw: str) -> list[str]:
    """Comma-separated (os.pathsep also separates, for folder lists)."""
    return [item.strip() for item in raw.replace(os.pathsep, ",").split(",") if item.strip()]


# Every tunable, with its default and what it means (README's settings table lists them all).
TUNABLES = [
    # Ingest limits.
    Tunable("FACEINDEX_MAX_UPLOAD_BYTES", int, 50 * 1024 * 1024, "largest file accepted (bytes), uploads and imported files alike"),
    Tunable("FACEINDEX_MAX_PIXELS", int, 60_000_000, "largest decoded image (pixels); bigger ones fail as too_many_pixels"),
    Tunable("FACEINDEX_MAX_JPEG_PIXELS", int, 200_000_000, "largest JPEG accepted: decoded at reduced size within FACEINDEX_MAX_PIXELS"),
    Tunable("FACEINDEX_ZIP_MAX_ENTRIES", int, 100_000, "most files one zip upload may hold"),
    Tunable("FACEINDEX_ZIP_MAX_TOTAL_BYTES", int, 20 * 1024**3, "most bytes one zip upload may expand to"),
    Tunable("FACEINDEX_ZIP_MAX_RATIO", int, 100, "highest compression ratio of a zip member (zip-bomb guard)"),
    Tunable("FACEINDEX_MAX_REQUEST_BYTES", int, 256 * 1024 * 1024, "whole request body, files included (413 above it); 0: no cap"),
    Tunable("FACEINDEX_DRAIN_UNREAD_BODY_BYTES", int, 8 * 1024 * 1024, "a body a response left unread is read and discarded up to this size, so the keep-alive connection survives a 429/401/404 (larger: gunicorn closes it)"),
    Tunable("FACEINDEX_ENROLL_SYNC_MAX_FILES", int, 50, "an enrollment with more images runs in the background (202 + GET /enrollments/{id})"),
    # Matching.
    Tunable("FACEINDEX_MATCH_CANDIDATES", int, 20, "nearest templates pulled from the HNSW index per face"),
    Tunable("FACEINDEX_HNSW_EF_SEARCH", int, 100, "pgvector hnsw.ef_search: recall/speed of the nearest-template search"),
    Tunable("FACEINDEX_AMBIGUITY_MARGIN", float, 0.03, "the best identity must beat the runner-up by this much, else the face stays unknown"),
    Tunable("FACEINDEX_TARGET_FPIR", float, 0.01, "open-set target: share of never-enrolled people's faces that may be named as someone; thresholds follow from it and the gallery's size"),
    Tunable("FACEINDEX_MATCH_MIN_QUALITY", float, 0.30, "faces below this quality (ml/quality.py, 0-1) are not named: they stay unknown as low_quality (chosen on lfw-dev: docs/gallery.md)"),
    Tunable("FACEINDEX_TEMPLATE_MIN_QUALITY", float, 0.30, "an enrolled or confirmed face below this quality is refused as a template (low_quality)"),
    Tunable("FACEINDEX_MAX_TEMPLATES_PER_IDENTITY", int, 20, "most templates (enrolled photos and confirmed faces) per identity; more are refused (template_limit) until one is deleted"),
    Tunable("FACEINDEX_DETECTOR", str, "", "detector id in weights/manifest.toml (empty: the manifest's default)"),
    Tunable("FACEINDEX_RECOGNIZER", str, "", "recognizer id in weights/manifest.toml (empty: the default; its width must match the gallery)"),
    Tunable("FACEINDEX_DEVICE", str, "auto", "where the face models run: auto (a CUDA GPU if there is one), cpu, cuda or cuda:<i>; torch-cpu: the GPU worker's path on the CPU (tests)"),
    # Unknown-face clustering (why these values: backend/gallery/clustering.py).
    Tunable("FACEINDEX_CLUSTER_SIMILARITY", float, 0.45, "cosine similarity linking two unknown faces into one cluster"),
    Tunable("FACEINDEX_CLUSTER_NEIGHBOURS", int, 10, "nearest unknown faces looked at per new face"),
    Tunable("FACEINDEX_CLUSTER_MERGE_LINKS", int, 2, "links a face needs into a second cluster to merge the two"),
    # Archive imports (docs/ingest-and-reports.md).
    Tunable("FACEINDEX_IMPORT_ROOTS", _list, [], "server folders a job may import from (absolute, comma/pathsep-separated); empty: none"),
    Tunable("FACEINDEX_IMPORT_S3_BUCKETS", _list, [], "buckets an s3:// import may read ('*': any); our own S3_BUCKET never"),
    Tunable("FACEINDEX_IMPORT_S3_ENDPOINT", str, S3_ENDPOINT, "S3 endpoint of imported buckets (default: S3_ENDPOINT)"),
    Tunable("FACEINDEX_IMPORT_S3_ACCESS_KEY", str, S3_ACCESS_KEY, "access key for imported buckets (default: S3_ACCESS_KEY)"),
    Tunable("FACEINDEX_IMPORT_S3_SECRET_KEY", str, S3_SECRET_KEY, "secret key for imported buckets (default: S3_SECRET_KEY)"),
    Tunable("FACEINDEX_IMPORT_S3_SECURE", _bool, S3_SECURE, "HTTPS to the import endpoint (default: S3_SECURE)"),
    Tunable("FACEINDEX_IMPORT_S3_REGION", str, S3_REGION, "region of imported buckets (default: S3_REGION)"),
    Tunable("FACEINDEX_IMPORT_MAX_FILES", int, 2_000_000, "most files one import job lists; the rest are left out with a reason"),
    Tunable("FACEINDEX_IMPORT_LIST_CHUNK", int, 1000, "files listed per chunk: the request lists the first, workers the rest"),
    # Workers.
    Tunable("FACEINDEX_BATCH_SIZE", int, 8, "images per CPU worker task (faces embedded in one call)"),
    Tunable("FACEINDEX_GPU_BATCH_SIZE", int, 64, "images per task while a GPU worker is alive (they go to its queue)"),
    Tunable("FACEINDEX_GPU_BATCH_IMAGES", int, 64, "a GPU worker combines waiting messages into one device batch of up to this many images"),
    Tunable("FACEINDEX_GPU_BATCH_WAIT_MS", int, 50, "how long a GPU worker waits for more messages to fill a batch (ms)"),
    Tunable("FACEINDEX_WORKER_THREADS", int, 0, "threads per worker process for OpenCV/BLAS/torch (0: one per core)"),
    # Sweeps (celery beat runs them): lost messages, stalled listings, missed webhooks.
    Tunable("FACEINDEX_SWEEP_INTERVAL_S", int, 300, "seconds between sweeps (beat's schedule; 0: no periodic sweep)"),
    Tunable("FACEINDEX_SWEEP_MIN_AGE_S", int, 600, "a PENDING image queued longer ago than this with no message is re-sent"),
    Tunable("FACEINDEX_SWEEP_STALE_PROCESSING_S", int, CELERY_TASK_TIME_LIMIT * 2, "a PROCESSING image older than this is reset and re-sent"),
    # The outbox: images (and listings, enrollments) whose send failed while the broker was down.
    Tunable("FACEINDEX_OUTBOX_INTERVAL_S", float, 5.0, "seconds between outbox sends (beat's schedule; 0: none)"),
    Tunable("FACEINDEX_OUTBOX_MIN_AGE_S", float, 5.0, "an unsent image older than this is sent by the outbox"),
    # Outages (backend/core/outages.py): a task that cannot reach the database or storage waits, then re-queues.
    Tunable("FACEINDEX_OUTAGE_BACKOFF_S", float, 0.5, "first re-probe delay during an outage; doubles, jittered"),
    Tunable("FACEINDEX_OUTAGE_BACKOFF_CAP_S", float, 5.0, "longest delay between outage re-probes"),
    Tunable("FACEINDEX_OUTAGE_WAIT_S", float, 60.0, "longest a task waits out an outage before putting its message back"),
    # Completion webhooks.
    Tunable("FACEINDEX_WEBHOOK_TIMEOUT_S", float, 10.0, "seconds per delivery attempt"),
    Tunable("FACEINDEX_WEBHOOK_MAX_ATTEMPTS", int, 6, "attempts per delivery before it is marked failed"),
    Tunable("FACEINDEX_WEBHOOK_BACKOFF_S", float, 2.0, "first retry delay; doubles per attempt (retry_backoff), jittered"),
    Tunable("FACEINDEX_WEBHOOK_BACKOFF_MAX_S", float, 600.0, "longest retry delay (retry_backoff_max)"),
    Tunable("FACEINDEX_WEBHOOK_ALLOW_PRIVATE", _bool, False, "allow webhooks to loopback/private addresses (trusted setups, tests)"),
    # Per-user request rates (DRF throttles; N/second|minute|hour|day; off: unlimited).
    Tunable("FACEINDEX_THROTTLE_SEARCH", _rate, "120/minute", "1:N searches per user"),
    Tunable("FACEINDEX_THROTTLE_VERIFY", _rate, "120/minute", "1:1 verifications per user"),
    Tunable("FACEINDEX_THROTTLE_ENROLL", _rate, "60/minute", "enrollment uploads per user"),
    Tunable("FACEINDEX_THROTTLE_JOBS", _rate, "60/minute", "job creations (uploads and imports) per user"),
    # Logs.
    Tunable("FACEINDEX_LOG_FORMAT", str, "json", "'json' (one object per line, with job/image/task ids) or 'text'"),
]
globals().update({tunable.name: tunable.read() for tunable in TUNABLES})

# Logs: one JSON object per line (API and workers), carrying the request, task,
# job and image ids in effect (backend/core/logs.py); FACEINDEX_LOG_FORMAT=text for humans.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "backend.core.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "backend.core.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["context"],
                             "formatter": "json" if FACEINDEX_LOG_FORMAT == "json" else "text"}},  # noqa: F821
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
# The worker keeps Django's logging instead of installing its own handlers.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# celery beat (one process per deployment) sends the periodic tasks; one
# message per interval, so one worker runs each (no lock between workers).
# An interval of 0 schedules nothing.
CELERY_BEAT_SCHEDULE = {
    name: {"task": task, "schedule": float(interval)}
    for name, task, interval in [
        ("sweep", "faceindex.sweep", FACEINDEX_SWEEP_INTERVAL_S),  # noqa: F821 (set from TUNABLES)
        ("outbox", "faceindex.send_outbox", FACEINDEX_OUTBOX_INTERVAL_S),  # noqa: F821
        ("enrollment-outbox", "faceindex.send_enrollment_outbox", FACEINDEX_OUTBOX_INTERVAL_S),  # noqa: F821
    ]
    if interval > 0
}

# DRF throttle counters, shared by every API process (a per-process cache
# would multiply each limit by the number of gunicorn workers).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CELERY_BROKER_URL,
                      "KEY_PREFIX": "faceindex-cache"}}
