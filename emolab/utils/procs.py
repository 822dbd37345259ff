"""Processes of long jobs: folder locks, and child processes that die with their parent.

:func:`folder_lock` takes an exclusive ``flock`` on a lock file (released by the
kernel when the holder exits, even by ``kill -9``), so two commands never work
in one sweep folder or on one run. :func:`die_with_parent` is a ``preexec_fn``
that asks Linux to send the child ``SIGTERM`` when its parent dies
(``PR_SET_PDEATHSIG``): killing ``emolab cv`` stops its training jobs.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Iterator

__all__ = ["FolderBusy", "die_with_parent", "folder_lock"]

_PR_SET_PDEATHSIG = 1


class FolderBusy(RuntimeError):
    """Another process holds the lock; the message names the folder and its pid."""


@contextlib.contextmanager
def folder_lock(lock_file: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created) while the block runs.

    Raises:
        FolderBusy: another process holds it (``what`` names the thing locked).
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; run one command per folder
        yield
        return
    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise FolderBusy(f"{what} is in use by another process (pid {holder}); wait for it to finish or "
                             "stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def die_with_parent() -> None:
    """``preexec_fn``: the child gets ``SIGTERM`` when the parent dies (Linux; elsewhere nothing)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def parent_alive(parent: int) -> bool:
    """Whether the process that started this one is still our parent (it may die before PDEATHSIG was set)."""
    return os.getppid() == parent
