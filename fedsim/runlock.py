"""One run per folder: an advisory lock that a run holds on its folder for as long as it lives.

Checking for ``summary.json`` or ``metrics.jsonl`` before a run cannot stop two runs started at the same time on the
same ``output_dir``: both see an empty folder and both write into it (metrics rows 1, 2, 3, 1, 2, 3). So each run
takes an exclusive ``flock`` on ``<run folder>/.fedsim.lock`` before anything is written there, and keeps it open
until the process ends.

Why ``flock``: the kernel releases it when the process ends, however it ends (normal exit, exception, SIGKILL, a
crash), so a lock held by a dead run never blocks a later one — no stale-pid guessing. The lock file holds the
holder's pid, only to name it in the refusal. A run that ends normally removes the file; after the unlink another run
may still hold the old, unlinked file open, so :func:`acquire` checks that the file it locked is still the one at
the path (else it retries): two runs can never both hold "the" lock of a folder. The lock is per open file, so this
module keeps one descriptor per folder for the whole process (a second ``acquire`` of the same folder is a no-op).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import time
from pathlib import Path

LOCK_FILE = ".fedsim.lock"

_held: dict[Path, int] = {}  # folder (absolute) -> descriptor of its locked lock file, for this process's lifetime


def _key(folder: str | Path) -> Path:
    return Path(os.path.abspath(folder))


def in_use(what: str, pid: int) -> str:
    """The one-line refusal for a folder another live run holds (``what``: ``output_dir=...``, ``resume_from=...``)."""
    by = f"another fedsim run (pid {pid})" if pid else "another fedsim run"
    return f"{what} is in use by {by}; wait for it to end or stop it (Ctrl-C), or choose another folder"


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return _key(folder) in _held


def holder(folder: str | Path) -> int | None:
    """The pid of another live process holding ``folder``'s lock (0 when it wrote none yet), else None. Creates
    nothing: a folder without a lock file is free."""
    folder = _key(folder)
    if folder in _held:
        return None
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    except OSError:  # a file system without flock: nobody can hold it
        return None
    finally:
        os.close(fd)
    return None


def acquire(folder: str | Path) -> int | None:
    """Take ``folder``'s lock for the rest of this process (the folder must exist). Returns None when taken (or
    already held here), else the pid of the live run that holds it (0 when unknown)."""
    folder = _key(folder)
    if folder in _held:
        return None
    path = folder / LOCK_FILE
    for _ in range(50):  # only a concurrent unlink (a run ending) or probe makes this retry
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder(folder)
            if pid is not None:
                return pid
            time.sleep(0.01)  # only another process's brief shared probe (holder) was in the way
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # locked a file its holder unlinked as it ended: lock the one at the path now
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[folder] = fd
        return None
    return holder(folder) or 0


def release(folder: str | Path) -> None:
    """Give ``folder``'s lock back and remove the lock file (a no-op when this process does not hold it)."""
    fd = _held.pop(_key(folder), None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        (_key(folder) / LOCK_FILE).unlink()  # before closing: nobody else can hold it in between
    os.close(fd)


@atexit.register
def release_all() -> None:
    """Every lock this process holds (at exit; the kernel would release them anyway, this also removes the files)."""
    for folder in list(_held):
        release(folder)
