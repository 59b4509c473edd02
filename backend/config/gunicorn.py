"""gunicorn settings for the API, shared by docker-compose, the Dockerfile and `make demo`:

    gunicorn -c python:backend.config.gunicorn backend.config.wsgi

Threaded workers (gthread): a slow request (an upload, a search) holds one
thread, not a whole process. Each process gets a database pool as large as its
thread count, so connections are bounded by processes x threads whatever the
load (the budget is in README "Reliability"). The listen backlog holds a burst
of connections while every thread is busy instead of resetting them.
"""
import os

bind = os.environ.get("FACEINDEX_API_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("FACEINDEX_API_PROCESSES", "2"))
# Threads, not processes, carry the concurrency: a search waiting for the models
# (one inference at a time per process) holds a thread, so there are enough of them
# for every client of a busy UI to have a request in flight.
threads = int(os.environ.get("FACEINDEX_API_THREADS", "32"))
worker_class = "gthread"
backlog = int(os.environ.get("FACEINDEX_API_BACKLOG", "2048"))
timeout = 120
graceful_timeout = 30
keepalive = 5
# One pooled connection per thread: a thread never waits for another's connection.
os.environ.setdefault("DB_POOL_MAX_SIZE", str(threads))
