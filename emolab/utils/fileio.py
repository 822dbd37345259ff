"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A crash or an interrupt never leaves a half-written file under the real name,
and concurrent writers (DataLoader workers filling the frame cache) never see
each other's partial files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

PathLike = str | os.PathLike[str]


#: Temporary files of :func:`atomic_write` are named ``.{name}.{pid}.{8 hex}.tmp``.
TMP_PATTERN = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[str], None], *, durable: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    The parent folder is created if needed; the temporary file is removed if
    ``write`` fails. ``durable``: fsync the file before the rename and its
    folder after, so a power cut leaves the old file or the new one, never an
    empty or partial one (checkpoints, JSON). Cache entries pass ``False``:
    a damaged entry is a miss that is recomputed, and an fsync per entry costs
    more than the entry.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        write(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def stale_tmp_files(folder: PathLike, *, recursive: bool = False) -> list[Path]:
    """The :func:`atomic_write` temporary files in ``folder`` whose writing process is gone.

    A process killed while writing (kill -9, power cut) leaves its ``.tmp``
    file behind; a live writer's file (its pid still running) is not listed.
    Unreadable folders are skipped.
    """
    folder = Path(folder)
    out: list[Path] = []
    try:
        for f in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
            m = TMP_PATTERN.match(f.name)
            if m is not None and not _pid_alive(int(m.group(1))):
                out.append(f)
    except OSError:
        pass
    return sorted(out)


def remove_stale_tmp(folder: PathLike, *, recursive: bool = False) -> list[Path]:
    """Remove :func:`stale_tmp_files`; returns those removed (best effort)."""
    removed: list[Path] = []
    for f in stale_tmp_files(folder, recursive=recursive):
        try:
            f.unlink()
            removed.append(f)
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def atomic_write_json(obj: Any, path: PathLike, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=sort_keys)
            f.write("\n")

    return atomic_write(path, write)


def media_source(path: PathLike) -> str | BinaryIO:
    """What to give soundfile or PyAV for ``path``: its name, or an open binary file if the name is not UTF-8.

    Both libraries encode names as strict UTF-8, so a folder name holding other
    bytes (``os.fsdecode`` keeps them as surrogates) fails there; an open file
    works under any name. The caller closes a returned file (or lets the
    container that reads it do so).
    """
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return open(name, "rb")
    return name


@contextlib.contextmanager
def open_media(path: PathLike) -> Iterator[str | BinaryIO]:
    """:func:`media_source` as a context manager that closes the file it opened."""
    src = media_source(path)
    try:
        yield src
    finally:
        if not isinstance(src, str):
            src.close()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


def tolerant_stdio() -> None:
    """Let stdout and stderr print file names that are not UTF-8 (their bytes are written as they are),
    and print warnings as one line (``warning: ...``, without the source line that raised them).

    Called by the command-line entry points: a path under such a folder would
    otherwise raise ``UnicodeEncodeError`` in ``print`` under a UTF-8 locale.
    """
    import warnings

    warnings.formatwarning = _one_line_warning
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            try:
                reconfigure(errors="surrogateescape")
            except (ValueError, OSError):
                pass


def take_debug_flag(argv: list[str]) -> bool:
    """Remove ``--debug`` from ``argv`` (anywhere); true if it was there or ``EMOLAB_DEBUG=1``.

    With it, command-line errors show their traceback; the flag is passed on to
    child processes as ``EMOLAB_DEBUG=1``.
    """
    found = "--debug" in argv
    while "--debug" in argv:
        argv.remove("--debug")
    if found:
        os.environ["EMOLAB_DEBUG"] = "1"
    return found or os.environ.get("EMOLAB_DEBUG") == "1"


def error_line(prog: str, err: BaseException, debug: bool) -> int:
    """Print ``err`` as one line (``prog: error: ...``), or its traceback when ``debug``; returns exit code 2.

    User errors (a bad file, a full disk, a wrong flag value) print their message;
    anything else prints its type too, with a hint to rerun with ``--debug``.
    """
    if debug:
        import traceback

        traceback.print_exception(err)
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    else:
        text = str(err) or type(err).__name__
    hint = "" if debug else " (rerun with --debug for the traceback)"
    if not isinstance(err, (OSError, ValueError)) and type(err).__name__ not in ("CLIError", "SetupError",
                                                                                  "SweepError", "CacheError"):
        text = f"{type(err).__name__}: {text}{hint}"
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def mark_used(path: PathLike) -> None:
    """Set a cache entry's modification time to now: it was just read (``emolab cache prune --older_than``).

    Best effort: a read-only cache folder (or a file removed meanwhile) is left as it is.
    """
    try:
        os.utime(path)
    except OSError:
        pass
