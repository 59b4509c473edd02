"""Background processes tracked by PID files under the var dir.

Each process is started in its own session so that stopping it takes down the
whole process group (a Celery worker's pool children, gunicorn's workers).
The PID file records the process start time as well, so a recycled PID that
now belongs to some other program is never mistaken for ours.

Layout: ``<var_dir>/run/<name>.pid`` and ``<var_dir>/log/<name>.log``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_var_dir() -> Path:
    return Path(os.environ.get("FACEINDEX_VAR_DIR") or REPO_ROOT / "var")


def pid_file(name: str, var_dir: Path | None = None) -> Path:
    return Path(var_dir or default_var_dir()) / "run" / f"{name}.pid"


def log_file(name: str, var_dir: Path | None = None) -> Path:
    return Path(var_dir or default_var_dir()) / "log" / f"{name}.log"


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


CREATE_TIME_SLACK_S = 3.0


def _live_process(name: str, var_dir: Path | None) -> psutil.Process | None:
    """The process recorded in the PID file, if it is still that very process."""
    try:
        pid_text, started_text = pid_file(name, var_dir).read_text().split()
        process = psutil.Process(int(pid_text))
        # psutil adds the boot time (/proc/stat btime, whole seconds, wall
        # clock minus uptime) to the start ticks, so a clock adjustment can
        # move create_time by a second. An exact match then declared the
        # stack's own S3 and Redis "recycled": stop() left them running (the
        # likeliest cause of a fresh-clone CI run where S3 and Redis outlived
        # stop()). A PID reused within seconds of the recorded start is no risk.
        if abs(process.create_time() - float(started_text)) > CREATE_TIME_SLACK_S:
            return None  # the PID was recycled
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
        return None


def names(var_dir: Path | None = None) -> list[str]:
    """Names of all processes with a PID file under the var dir."""
    return sorted(path.stem for path in (Path(var_dir or default_var_dir()) / "run").glob("*.pid"))


def pid(name: str, var_dir: Path | None = None) -> int | None:
    process = _live_process(name, var_dir)
    return process.pid if process else None


def is_running(name: str, var_dir: Path | None = None) -> bool:
    return _live_process(name, var_dir) is not None


def start_background(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    var_dir: Path | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached, output appended to its log; return its PID.

    Idempotent: if the named process is already running, its PID is returned
    and nothing new is started. ``env`` is added to the current environment.
    """
    running = _live_process(name, var_dir)
    if running:
        return running.pid
    pid_path, log_path = pid_file(name, var_dir), log_file(name, var_dir)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(argv),
            env={**os.environ, **(env or {})},
            cwd=cwd or REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = psutil.Process(child.pid).create_time()
    pid_path.write_text(f"{child.pid} {started}\n")
    return child.pid


def stop(
    name: str,
    var_dir: Path | None = None,
    timeout: float = 20.0,
    sig: int = signal.SIGTERM,
) -> bool:
    """Signal the process group, wait up to ``timeout``, then SIGKILL it.

    Returns True if something was running. Idempotent.
    """
    process = _live_process(name, var_dir)
    pid_path = pid_file(name, var_dir)
    if process is None:
        pid_path.unlink(missing_ok=True)
        return False
    group = [process] + _group_members(process.pid)
    _signal_group(process.pid, sig)
    _, alive = psutil.wait_procs(group, timeout=timeout)
    if alive:
        _signal_group(process.pid, signal.SIGKILL)
        for leftover in alive:
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
    pid_path.unlink(missing_ok=True)
    return True


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for candidate in psutil.process_iter():
        try:
            if candidate.pid != pgid and os.getpgid(candidate.pid) == pgid:
                members.append(candidate)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
