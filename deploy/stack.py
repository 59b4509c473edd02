"""The embedded dev stack: PostgreSQL+pgvector, Redis and S3, all from wheels.

    python -m deploy.stack start|stop|status [--json] [--test]

Every server binds 127.0.0.1 only, keeps its data, PID file and log under the
(git-ignored) var dir, and start/stop are idempotent. Importable: the demo and
the pytest session fixtures drive the same ``Stack``.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from deploy import processes, redis_broker, s3_server
from deploy.ports import DEV_PORT_BASE, TEST_PORT_BASE, StackPorts
from deploy.postgres import Postgres
from deploy.processes import REPO_ROOT, default_var_dir, log_tail
from deploy.redis_broker import Redis
from deploy.s3_server import S3Server

STACK_PROCESS_NAMES = {redis_broker.PROCESS_NAME, s3_server.PROCESS_NAME}

READY_TIMEOUT_S = 60
DB_NAME = DB_USER = DB_PASSWORD = "faceindex"
S3_ACCESS_KEY = "faceindex"
S3_SECRET_KEY = "faceindex-dev-secret"
S3_DEFAULT_BUCKET = "faceindex"
S3_REGION = "us-east-1"


class Stack:
    def __init__(self, var_dir: Path, ports: StackPorts | None = None, bucket: str = S3_DEFAULT_BUCKET):
        self.var_dir = Path(var_dir).resolve()
        self.ports = ports or StackPorts.from_base(DEV_PORT_BASE)
        self.postgres = Postgres(self.var_dir / "postgres", self.var_dir / "log" / "postgres.log",
                                 self.ports.postgres, DB_USER, DB_PASSWORD, DB_NAME)
        self.redis = Redis(self.var_dir, self.ports.redis)
        self.s3 = S3Server(self.var_dir, self.ports, S3_ACCESS_KEY, S3_SECRET_KEY, bucket, S3_REGION)

    @classmethod
    def from_env(cls) -> "Stack":
        """The dev/demo stack: FACEINDEX_VAR_DIR (default <repo>/var),
        FACEINDEX_PORT_BASE / FACEINDEX_{POSTGRES,REDIS,S3}_PORT, S3_BUCKET."""
        return cls(default_var_dir(), StackPorts.from_env(DEV_PORT_BASE, "FACEINDEX"),
                   os.environ.get("S3_BUCKET") or S3_DEFAULT_BUCKET)

    @classmethod
    def for_tests(cls, var_dir: Path | None = None, ports: StackPorts | None = None) -> "Stack":
        """The test stack: its own port set and var dir (default <repo>/var/test,
        or FACEINDEX_TEST_VAR_DIR; ports from FACEINDEX_TEST_PORT_BASE etc.), so
        it runs beside the demo stack."""
        var_dir = var_dir or Path(os.environ.get("FACEINDEX_TEST_VAR_DIR") or REPO_ROOT / "var" / "test")
        return cls(var_dir, ports or StackPorts.from_env(TEST_PORT_BASE, "FACEINDEX_TEST"))

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start whatever is not running and healthy; wait until all are ready."""
        with self._lock():
            # A busy port gets a clear error here rather than a server that
            # dies with "address in use" deep in its log.
            if not self.redis.pid():
                _ensure_ports_free("redis", [self.ports.redis])
            if not self.s3.pid():
                _ensure_ports_free("s3", [port for port in self.ports.all() if port not in
                                          (self.ports.postgres, self.ports.redis)])
            if not self.postgres.pid():
                _ensure_ports_free("postgres", [self.ports.postgres])
            # Redis and S3 start in the background while pg_ctl blocks.
            self.redis.start()
            self.s3.start()
            self.postgres.start()
            self._wait_ready("redis", self.redis)
            self._wait_ready("s3", self.s3)
            self.s3.ensure_bucket()

    def app_process_names(self) -> list[str]:
        """Background processes under this var dir that are not stack servers
        (the API and worker that the demo starts with deploy.processes)."""
        return [name for name in processes.names(self.var_dir) if name not in STACK_PROCESS_NAMES]

    def stop(self, include_apps: bool = False) -> None:
        """Stop the servers; with ``include_apps`` first the app processes
        (so a worker never outlives its broker)."""
        with self._lock():
            if include_apps:
                for name in self.app_process_names():
                    processes.stop(name, self.var_dir)
            # Each takes a couple of seconds to shut down cleanly; do it side by side.
            with ThreadPoolExecutor(max_workers=3) as pool:
                for stopping in [pool.submit(service.stop) for service in (self.s3, self.redis, self.postgres)]:
                    stopping.result()

    def status(self) -> dict:
        services = {"postgres": self.postgres.status(), "redis": self.redis.status(), "s3": self.s3.status()}
        return {
            "var_dir": str(self.var_dir),
            "healthy": all(service["healthy"] for service in services.values()),
            "services": services,
            "apps": {name: processes.pid(name, self.var_dir) for name in self.app_process_names()},
        }

    def env(self) -> dict[str, str]:
        """The connection settings the app reads (the same names as docker-compose.yml)."""
        return {
            "DATABASE_URL": self.postgres.url(),
            "REDIS_URL": self.redis.url(),
            "S3_ENDPOINT": self.s3.endpoint(),
            "S3_ACCESS_KEY": self.s3.access_key,
            "S3_SECRET_KEY": self.s3.secret_key,
            "S3_BUCKET": self.s3.bucket,
            "S3_SECURE": "false",
            "S3_REGION": self.s3.region,
        }

    # -- helpers ---------------------------------------------------------------

    def _wait_ready(self, name: str, service) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not service.healthy():
            if service.pid() is None:
                raise RuntimeError(f"{name} exited during start-up\n--- {service.log_path()} ---\n"
                                   f"{log_tail(service.log_path())}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_S}s\n--- {service.log_path()} ---\n"
                                   f"{log_tail(service.log_path())}")
            time.sleep(0.2)

    @contextmanager
    def _lock(self):
        """Serialise start/stop of one var dir across processes (e.g. pytest-xdist workers)."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        with open(self.var_dir / "stack.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _ensure_ports_free(service: str, ports: list[int]) -> None:
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise RuntimeError(f"{service}: port 127.0.0.1:{port} is taken by another program; "
                                   f"choose other ports with FACEINDEX_PORT_BASE") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--test", action="store_true", help="the test stack instead of the dev stack")
    parser.add_argument("--all", action="store_true",
                        help="stop: also the app processes (API, worker) started under the var dir")
    args = parser.parse_args(argv)
    stack = Stack.for_tests() if args.test else Stack.from_env()

    if args.command == "start":
        started = time.monotonic()
        stack.start()
        if not args.json:
            print(f"stack up in {time.monotonic() - started:.1f}s (data in {stack.var_dir})", file=sys.stderr)
    elif args.command == "stop":
        stack.stop(include_apps=args.all)
    if args.command in ("start", "env"):
        if args.json:
            print(json.dumps(stack.env(), indent=2))
        else:
            print("\n".join(f"export {name}='{value}'" for name, value in stack.env().items()))
        return 0
    if args.command == "status":
        status = stack.status()
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            for name, service in status["services"].items():
                state = "up" if service["healthy"] else ("running, unhealthy" if service["pid"] else "down")
                print(f"{name:9} {state:20} 127.0.0.1:{service['port']}  pid={service['pid']}")
            for name, pid in status["apps"].items():
                print(f"{name:9} {'running' if pid else 'down':20} {'':15}  pid={pid}")
        return 0 if status["healthy"] else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
