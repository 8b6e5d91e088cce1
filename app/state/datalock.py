"""Who holds the data dir: ``covrag serve`` leaves a lock file there while it runs.

The Edge store belongs to one process, so an in-process (``--local``) command must not open it
under a live server, nor a second server start on it. A lock whose process is gone (a server
killed with SIGKILL) is stale and taken over.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "server.lock"


@dataclass(frozen=True, slots=True)
class Holder:
    """The server process that holds a data dir, and where it answers."""

    pid: int
    url: str


class DataDirHeld(Exception):
    """Another live process holds the data dir."""

    def __init__(self, data_dir: Path, holder: Holder, advice: str) -> None:
        who = f"the server at {holder.url} (pid {holder.pid})"
        super().__init__(f"{who} holds {data_dir}: {advice}")
        self.holder = holder


def holder(data_dir: Path) -> Holder | None:
    """The live process, other than this one, that the lock names; ``None`` without a lock,
    with an unreadable one, or when its process is gone."""
    found = _read(data_dir)
    return found if found and found.pid != os.getpid() and _alive(found.pid) else None


def check_free(data_dir: Path, advice: str) -> None:
    """Raise ``DataDirHeld``, ending with ``advice``, if a live server holds ``data_dir``."""
    found = holder(data_dir)
    if found is not None:
        raise DataDirHeld(data_dir, found, advice)


def claim(data_dir: Path, url: str) -> None:
    """Hold ``data_dir`` for this process (serving at ``url``), taking over a stale lock.

    Raises:
        DataDirHeld: a live server holds it.
    """
    check_free(data_dir, "stop it first, or give this server another COVRAG_DATA_DIR")
    data_dir.mkdir(parents=True, exist_ok=True)
    staged = data_dir / f"{LOCK_FILE}.{os.getpid()}"
    staged.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    staged.replace(data_dir / LOCK_FILE)  # never a half-written lock


def release(data_dir: Path) -> None:
    """Remove the lock if it is still this process's."""
    found = _read(data_dir)
    if found is not None and found.pid == os.getpid():
        (data_dir / LOCK_FILE).unlink(missing_ok=True)


def _read(data_dir: Path) -> Holder | None:
    try:
        row = json.loads((data_dir / LOCK_FILE).read_text())
        return Holder(pid=int(row["pid"]), url=str(row["url"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
