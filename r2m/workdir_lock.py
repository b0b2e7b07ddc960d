"""One writer per work directory: an exclusive lock on ``<workdir>/.r2m.lock`` holding the owner's PID.

The lock is an ``fcntl.flock`` on the file, so the kernel releases it when its process dies: a lock left behind by a
crashed or killed run (its PID dead) is taken over at once, with a warning naming the dead PID. The file's text says
who holds it (PID, host, command, start time), which is what a second run's error names.

A pipeline flow holds the lock while it runs its stages as child processes; it hands them the right to write through
the environment (:data:`ENV`: the lock file and the holder's token), so a stage started by its own flow proceeds while
any other run in the same directory fails at once. Local file systems only (``flock`` is advisory and may not work
across NFS clients).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".r2m.lock"
ENV = "R2M_WORKDIR_LOCK"  # "<token>:<lock file>": set for the child processes of the lock's holder

log = logging.getLogger(__name__)


class WorkdirLocked(RuntimeError):
    """Another live process holds this work directory's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(h: dict) -> str:
    if not h:
        return "another process (no owner recorded yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started", 0)))
    return f"PID {h.get('pid')} on {h.get('host')} since {since} ({h.get('command', '?')})"


def _inherited(path: Path) -> bool:
    """Whether this process was started by the lock's current holder (and may write without locking again)."""
    value = os.environ.get(ENV, "")
    if ":" not in value:
        return False
    token, file = value.split(":", 1)
    if Path(file) != path:
        return False
    h = _holder(path)
    return h.get("token") == token and _alive(int(h.get("pid", -1)))


@contextlib.contextmanager
def workdir_lock(workdir: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``workdir``'s lock for the block (re-entrant for the holder's own child processes: see :data:`ENV`).

    Raises :class:`WorkdirLocked` naming the holder when another live process has it. The block's child
    processes inherit the right to write (``os.environ`` carries the token while the block runs)."""
    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    if _inherited(path):
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirLocked(
                f"{root}: the work directory is in use by {_describe(_holder(path))}; wait for that run to end or "
                f"stop it (a lock whose process has died is taken over automatically), or use another --workdir"
            ) from None
        previous = _holder(path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            log.warning("%s: taking over the lock of %s, which is no longer running", root, _describe(previous))
        token = uuid.uuid4().hex
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
            "token": token,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        old_env = os.environ.get(ENV)
        os.environ[ENV] = f"{token}:{path}"
        try:
            yield path
        finally:
            if old_env is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = old_env
            os.ftruncate(fd, 0)  # released: the next owner finds no stale holder to report
    finally:
        os.close(fd)  # closing the descriptor releases the flock
