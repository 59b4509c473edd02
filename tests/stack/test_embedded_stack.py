"""The embedded stack itself: real servers on a third port set, in a temp var dir.

No Django here: the stack must work before the app exists.
"""
from __future__ import annotations

import http.client
import io
import os
import shutil
import signal
import socket
import ssl
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from minio.error import S3Error

from deploy import processes, redis_broker
from deploy.ports import StackPorts
from deploy.processes import REPO_ROOT
from deploy.stack import Stack

# Beside the test stack's port set (default 15500 + 60), clear of it, the demo's (15400) and a demo at base + 100.
SELF_TEST_PORT_BASE = int(os.environ.get("FACEINDEX_TEST_PORT_BASE") or 15500) + 60
# Under the repo's var/, not pytest's tmp dir: as root, PostgreSQL runs as its
# own user, and pytest re-closes its temp root (0700) whenever any session starts.
SELF_TEST_VAR_DIR = REPO_ROOT / "var" / "stack-selftest"


@pytest.fixture(scope="module")
def stack():
    stack = Stack(SELF_TEST_VAR_DIR, StackPorts.from_base(SELF_TEST_PORT_BASE))
    stack.stop()  # whatever an interrupted earlier run left behind
    shutil.rmtree(SELF_TEST_VAR_DIR, ignore_errors=True)
    stack.start()
    yield stack
    stack.stop()
    shutil.rmtree(SELF_TEST_VAR_DIR, ignore_errors=True)


def test_env_has_the_app_settings(stack):
    env = stack.env()
    assert sorted(env) == sorted(["DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY",
                                  "S3_BUCKET", "S3_SECURE", "S3_REGION"])
    database = urlsplit(env["DATABASE_URL"])
    assert (database.scheme, database.hostname, database.port) == ("postgres", "127.0.0.1", stack.ports.postgres)
    assert env["S3_ENDPOINT"] == f"127.0.0.1:{stack.ports.s3}"
    assert env["S3_SECURE"] == "false"


def test_postgres_runs_pgvector(stack):
    with psycopg.connect(stack.env()["DATABASE_URL"], autocommit=True) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
        connection.execute("DROP EXTENSION IF EXISTS vector")
        connection.execute("CREATE EXTENSION vector")
        distance = connection.execute("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector").fetchone()[0]
        assert distance == pytest.approx(1.0)
        listen = connection.execute("SHOW listen_addresses").fetchone()[0]
        assert listen == "127.0.0.1"


def test_redis_answers_and_keeps_queued_data_through_a_kill(stack):
    client = redis.Redis.from_url(stack.env()["REDIS_URL"])
    assert client.ping()
    client.delete("queue")
    client.lpush("queue", "task-1", "task-2")
    # SIGKILL, not a clean shutdown: only the append-only file can save the queue.
    processes.stop(redis_broker.PROCESS_NAME, stack.var_dir, sig=signal.SIGKILL)
    assert not stack.redis.healthy()
    stack.start()
    assert client.lrange("queue", 0, -1) == [b"task-2", b"task-1"]


def test_s3_stores_objects_and_refuses_wrong_credentials(stack):
    env = stack.env()
    client = stack.s3.client()
    client.put_object(env["S3_BUCKET"], "2026/01/02/a.txt", io.BytesIO(b"hello"), 5)
    assert client.get_object(env["S3_BUCKET"], "2026/01/02/a.txt").read() == b"hello"
    listed = [item.object_name for item in client.list_objects(env["S3_BUCKET"], prefix="2026/", recursive=True)]
    assert listed == ["2026/01/02/a.txt"]
    url = client.presigned_get_object(env["S3_BUCKET"], "2026/01/02/a.txt")
    assert urllib.request.urlopen(url, timeout=5).read() == b"hello"

    with pytest.raises(S3Error):
        stack.s3.client(secret_key="not-the-secret").get_object(env["S3_BUCKET"], "2026/01/02/a.txt")
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"http://{env['S3_ENDPOINT']}/{env['S3_BUCKET']}/2026/01/02/a.txt", timeout=5)
    assert anonymous.value.code == 403


def _anonymous(port: int, method: str, path: str) -> tuple[int, bytes]:
    """(status, body) of an unauthenticated request; (0, b"") where the port speaks no HTTP."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read(1_000_000)
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


# What a gRPC client sends first: the HTTP/2 connection preface and an empty SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _plaintext_grpc_answer(port: int) -> bytes | None:
    """The first bytes a port sends back to a plaintext gRPC client; None if nothing listens there."""
    try:
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None
    with connection:
        try:
            connection.sendall(HTTP2_PREFACE)
            return connection.recv(64)
        except OSError:  # reset: refused all the same
            return b""


def _tls_without_client_certificate(port: int, ca_file: Path) -> str:
    """'served' if a TLS client that trusts the CA but shows no certificate gets an HTTP/2 answer."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as connection:
                connection.sendall(HTTP2_PREFACE)  # TLS 1.3: the server judges the client certificate here
                answer = connection.recv(64)
                return "served" if answer[3:4] == b"\x04" else "refused"
    except (ssl.SSLError, OSError) as exc:
        return f"refused ({exc.__class__.__name__})"


def test_no_grpc_port_of_the_stack_answers_a_client_without_the_stacks_certificate(stack):
    """weed's gRPC ports (master, volume, filer, s3, admin) hand out metadata and volume data to any gRPC client."""
    ports = stack.ports
    grpc_ports = [ports.s3_grpc, ports.master_grpc, ports.volume_grpc, ports.filer_grpc, ports.admin_grpc]
    listening = 0
    for port in grpc_ports:
        answer = _plaintext_grpc_answer(port)
        if answer is None:
            continue
        listening += 1
        # A plaintext gRPC server answers the preface with its own SETTINGS frame (type 4).
        assert answer[3:4] != b"\x04", f"127.0.0.1:{port} speaks plaintext gRPC: {answer!r}"
        outcome = _tls_without_client_certificate(port, stack.var_dir / "s3-config" / "grpc-ca.crt")
        assert outcome.startswith("refused"), f"127.0.0.1:{port} served gRPC over TLS without a client certificate"
    assert listening >= 4, "the master, volume, filer and s3 gRPC ports should be up"
    assert stack.s3.healthy()  # weed's own components still reach each other


def test_no_port_of_the_stack_serves_lists_or_deletes_stored_objects_without_credentials(stack):
    """weed mini's filer and volume ports used to serve every owner's photos to anyone on 127.0.0.1."""
    bucket, key = stack.s3.bucket, "7/crops/35/0.jpg"
    secret = b"\xff\xd8private-face-crop-" + os.urandom(16).hex().encode()
    client = stack.s3.client()
    client.put_object(bucket, key, io.BytesIO(secret), len(secret))
    paths = [f"/buckets/{bucket}/{key}", f"/{bucket}/{key}", f"/{key}", f"/buckets/{bucket}/", f"/buckets/{bucket}/7/",
             f"/{bucket}/", "/buckets/", "/?pretty=y", f"/buckets/{bucket}/{key}?metadata=true"]
    # Volume ids are small integers: a volume server without keys answers a fid-shaped path
    # with 404 (no such needle) and serves real ones; with keys every read needs a token (401).
    fids = [f"/{volume},0123456789abcdef" for volume in range(1, 8)]
    ports = [port for port in stack.ports.all() if port not in (stack.ports.postgres, stack.ports.redis)]
    answering = 0
    for port in ports:
        for path in paths + fids:
            status, body = _anonymous(port, "GET", path)
            answering += status != 0
            assert secret not in body, f"127.0.0.1:{port}{path} served the object to an anonymous request"
            if "crops" not in path:  # an error may echo the path asked for; a listing names what is stored
                assert b"crops" not in body, f"127.0.0.1:{port}{path} listed the bucket"
        for method in ("DELETE", "PUT", "POST"):
            _anonymous(port, method, f"/buckets/{bucket}/{key}")
            _anonymous(port, method, f"/{bucket}/{key}")
    assert answering > 0  # the probes reached HTTP servers at all
    for path in fids:  # the volume server wants a token before it looks a needle up
        assert _anonymous(stack.ports.volume, "GET", path)[0] == 401, path
    response = client.get_object(bucket, key)
    try:
        assert response.read() == secret  # nothing deleted or overwritten
    finally:
        response.close()
        response.release_conn()


def test_start_is_idempotent(stack):
    before = stack.status()
    assert before["healthy"], before
    started = time.monotonic()
    stack.start()
    assert time.monotonic() - started < 5
    after = stack.status()
    assert [s["pid"] for s in after["services"].values()] == [s["pid"] for s in before["services"].values()]


def test_stop_releases_every_port_and_is_idempotent(stack):
    stack.stop()
    status = stack.status()
    assert not status["healthy"]
    assert all(service["pid"] is None for service in status["services"].values())
    still_listening = [port for port in stack.ports.all() if _accepts_connections(port)]
    assert still_listening == []
    stack.stop()  # nothing left to stop: a no-op, not an error


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
