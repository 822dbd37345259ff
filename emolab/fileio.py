"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A crash or an interrupt never leaves a half-written file under the real name,
and concurrent writers (DataLoader workers filling the frame cache) never see
each other's partial files.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

PathLike = str | os.PathLike[str]


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    The parent folder is created if needed; the temporary file is removed if
    ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(obj: Any, path: PathLike, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=sort_keys)
            f.write("\n")

    return atomic_write(path, write)


def mark_used(path: PathLike) -> None:
    """Set a cache entry's modification time to now: it was just read (``emolab cache prune --older_than``).

    Best effort: a read-only cache folder (or a file removed meanwhile) is left as it is.
    """
    try:
        os.utime(path)
    except OSError:
        pass
