"""Detached HTTP worker processes: start, find again, and stop them, whatever they serve.

A worker runs in its own session (it outlives the CLI that started it, and a pytest run reuses
it), is known by a pidfile beside its log, and is checked through /proc so a stale pidfile
whose pid was reused never names someone else's process. Used by the vLLM worker
(``workers.vllm``) and the critic worker (``workers.critic_server``); stdlib and httpx only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx

from workers.errors import WorkerError

# A worker's own temporary folder, removed with it: see start_detached's ``scratch_env``.
_SCRATCH_PREFIX = "covrag-worker-"

# Popen objects of workers this process started: keeps them from being garbage-collected (which
# warns "subprocess is still running") and lets stop_worker reap them instead of leaving zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class WorkerHandle:
    """A running vLLM server: enough to talk to it, read its log and stop it."""

    pid: int
    url: str  # OpenAI base URL, e.g. "http://127.0.0.1:8100/v1"
    log_path: Path
    model_name: str


@dataclass(frozen=True)
class WorkerSpec:
    """What tells one kind of detached HTTP worker apart (vLLM here, the critic elsewhere).

    ``name`` prefixes its log and pid files (``{name}-{port}.log``); ``marker`` must occur in its
    command line, which guards against a stale pidfile whose pid was reused by something else.
    """

    name: str
    marker: bytes
    model_name: str
    url_path: str = ""  # appended to http://host:port for the handle's URL, e.g. "/v1"


def _paths(spec: WorkerSpec, port: int, logs_dir: Path) -> tuple[Path, Path]:
    stem = f"{spec.name}-{port}"
    return logs_dir / f"{stem}.log", logs_dir / f"{stem}.pid"


def _client_host(host: str) -> str:
    """Where to connect to a server bound to `host` (a wildcard bind is reachable on loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _base(host: str, port: int) -> str:
    h = _client_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def _healthy(host: str, port: int) -> bool:
    try:
        return httpx.get(f"{_base(host, port)}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((_client_host(host), port), 1.0):
        return True
    return False


def _proc_stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int, marker: bytes) -> bool:
    """True if `pid` runs (not a zombie) and, where /proc exists, has `marker` in its cmdline.

    The cmdline check guards against a stale pidfile whose pid was reused by something else.
    """
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not Path("/proc/self").is_dir():
        return True
    stat = _proc_stat(pid)
    if not stat or stat[0] == "Z":
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _forget(pidfile: Path) -> None:
    """Remove a gone worker's pidfile and its scratch folder (named on the pidfile's 2nd line).

    Only a folder named like those `start_detached` makes is removed, so a damaged pidfile can
    never make this delete anything else.
    """
    try:
        lines = pidfile.read_text().splitlines()
    except OSError:
        return
    if len(lines) > 1:
        scratch = Path(lines[1])
        if scratch.name.startswith(_SCRATCH_PREFIX):  # rmtree never follows a symlink
            shutil.rmtree(scratch, ignore_errors=True)
    pidfile.unlink(missing_ok=True)


def _log_tail(log_path: Path, n: int = 40) -> str:
    try:
        with log_path.open(errors="replace") as fh:
            return "".join(deque(fh, maxlen=n))
    except OSError:
        return "(no log)"


def _handle(spec: WorkerSpec, pid: int, host: str, port: int, log_path: Path) -> WorkerHandle:
    return WorkerHandle(
        pid=pid,
        url=f"{_base(host, port)}{spec.url_path}",
        log_path=log_path,
        model_name=spec.model_name,
    )


def find_detached(
    spec: WorkerSpec, port: int, logs_dir: Path, host: str = "127.0.0.1"
) -> WorkerHandle | None:
    """Return a handle to a healthy `spec` worker we started earlier on `port`, else None.

    "We started" means our pidfile names a live process of that kind; a stale pidfile is removed.
    """
    log_path, pidfile = _paths(spec, port, logs_dir.resolve())
    pid = _read_pid(pidfile)
    if pid is None:
        return None
    if not _alive(pid, spec.marker):
        _forget(pidfile)
        return None
    if not _healthy(host, port):
        return None
    return _handle(spec, pid, host, port, log_path)


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in the group; reaps our own child if it exited."""
    child = _CHILDREN.get(pgid)
    if child is not None:
        child.poll()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc/self").is_dir():
        return True
    # killpg(.., 0) also succeeds while only zombies remain; on Linux look for a live member.
    return bool(group_members(pgid))


def group_members(pgid: int) -> dict[int, list[str]]:
    """The live (non-zombie) processes of group ``pgid``, Linux only: pid → ``_proc_stat``
    fields. A worker leads its group, so this is the worker and the processes vLLM forked."""
    members: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(entry.name)
            if stat and len(stat) > 2 and stat[2] == str(pgid) and stat[0] != "Z":
                members[int(entry.name)] = stat
    return members


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _kill_group(pid: int, timeout_s: float) -> None:
    """SIGTERM the worker's process group (vLLM forks an engine core), then SIGKILL stragglers.

    The worker leads its own session (start_new_session), so its pid is the group id.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        if _wait_group_gone(pid, timeout_s):
            break
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def start_detached(
    spec: WorkerSpec,
    cmd: list[str],
    env: dict[str, str],
    *,
    port: int,
    logs_dir: Path,
    host: str = "127.0.0.1",
    timeout_s: float = 300.0,
    scratch_env: str | None = None,
) -> WorkerHandle:
    """Run `cmd` (an HTTP server on `port`) detached and wait until GET /health answers 200.

    Detached in its own session so it outlives the caller (the CLI exits, pytest reuses it) and
    so stop_worker can signal the whole group. If our pidfile names a live worker on this port,
    that one is reused (waiting for it if still starting) instead of starting a second. On an
    early exit or timeout the process is killed and WorkerError carries the log's tail.
    ``scratch_env`` names a variable given a new private folder, removed when the worker is
    stopped or found dead, even killed by SIGKILL with no hook run. It sits in this process's
    temporary folder: vLLM puts sockets there, and a socket's path has at most 107 bytes.
    """
    logs_dir = logs_dir.resolve()  # the handle must stay valid if the caller changes directory
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_path, pidfile = _paths(spec, port, logs_dir)

    pid = _read_pid(pidfile)
    proc: subprocess.Popen[bytes] | None = None
    if pid is not None and _alive(pid, spec.marker):
        pass  # ours, healthy or still starting: adopt it below
    else:
        _forget(pidfile)
        if _port_open(host, port):
            raise WorkerError(f"port {port} is already in use by something that is not our worker")
        scratch = ""
        if scratch_env:
            scratch = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{spec.name}-")
            env = {**env, scratch_env: scratch}
        with log_path.open("wb") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError:
                if scratch:
                    shutil.rmtree(scratch)
                raise
        pid = proc.pid
        _CHILDREN[pid] = proc
        pidfile.write_text(f"{pid}\n{scratch}\n")

    deadline = time.monotonic() + timeout_s
    while True:
        if _healthy(host, port):
            return _handle(spec, pid, host, port, log_path)
        exited = proc.poll() is not None if proc is not None else not _alive(pid, spec.marker)
        if exited or time.monotonic() > deadline:
            _kill_group(pid, 5.0)
            _forget(pidfile)
            why = "exited" if exited else f"not healthy after {timeout_s:.0f}s"
            raise WorkerError(
                f"{spec.name} worker on port {port} {why}; last log lines ({log_path}):\n"
                f"{_log_tail(log_path)}"
            )
        time.sleep(0.5)


def stop_worker(handle: WorkerHandle, timeout_s: float = 15.0) -> None:
    """Stop the worker's whole process group (SIGTERM, then SIGKILL); remove its pidfile and
    scratch folder."""
    _kill_group(handle.pid, timeout_s)
    pidfile = handle.log_path.with_suffix(".pid")
    if _read_pid(pidfile) == handle.pid:
        _forget(pidfile)
