"""Safe extraction of the RAVDESS zip archives (:mod:`emolab.data.download`).

A member with an absolute path, a ``..`` component, or a symlink pointing outside
the corpus folder refuses the whole archive, as does a member compressed more than
:data:`MAX_RATIO` times (a zip bomb; WAV and MP4 hardly compress). Files are written
to a temporary name and renamed; an existing file is kept (and reported) unless
identical. The free space is checked first (what is left to write plus
:data:`SPARE_BYTES`). Standard library and tqdm only.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

__all__ = ["CHUNK", "MAX_RATIO", "SPARE_BYTES", "extract_archive", "free_space_problem", "member_problem",
           "plan_extraction"]

MAX_RATIO = 100  # a member compressed more than this (and over MAX_RATIO_FROM bytes) refuses the archive
MAX_RATIO_FROM = 1 << 20
SPARE_BYTES = 256 << 20  # free space left over after a download or an extraction
CHUNK = 1 << 20
_RAVDESS_NAME = re.compile(r"^\d\d-\d\d-\d\d-\d\d-\d\d-\d\d-(\d\d)\.\w+$")
_ACTOR_DIR = re.compile(r"^Actor_(\d+)$")


def member_problem(name: str) -> str | None:
    """Why a zip member name is unsafe to extract (absolute path, ``..``), or ``None``."""
    posix = name.replace("\\", "/")
    if "\x00" in name:
        return "NUL byte in the name"
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "absolute path"
    if ".." in posix.split("/"):
        return "'..' in the path"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _inside(path: str | Path, root: Path) -> bool:
    """Whether ``path`` (existing symlinks resolved) lies inside ``root``."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, top]) == top


def _wanted(rel: str, actors: Sequence[int] | None) -> bool:
    """Whether a member belongs to the selected actors (members of no actor are always wanted)."""
    if actors is None:
        return True
    parts = rel.split("/")
    for part in parts[:-1]:
        if m := _ACTOR_DIR.match(part):
            return int(m[1]) in actors
    m = _RAVDESS_NAME.match(parts[-1])
    return int(m[1]) in actors if m else True


def plan_extraction(zf: zipfile.ZipFile, dest: Path, root: Path, actors: Sequence[int] | None = None):
    """``(plan, problems, skipped)``: the ``(member, target)`` pairs to write under ``dest``, the
    members that refuse the archive, and skipped symlinks (inside ``root``; none is ever created).

    A leading folder named like ``dest`` (an archive holding its own top folder) is dropped.
    """
    plan: list[tuple[zipfile.ZipInfo, Path]] = []
    problems: list[str] = []
    skipped: list[str] = []
    for info in zf.infolist():
        problem = member_problem(info.filename)
        rel = info.filename.replace("\\", "/")
        rel = rel[len(dest.name) + 1:] if rel.startswith(dest.name + "/") else rel
        if problem is None and _is_symlink(info):
            link = zf.read(info).decode("utf-8", "replace")
            if not _inside(os.path.join(os.path.dirname(dest / rel), link), root):
                problem = f"symlink to {link!r} points outside {root}"
            else:
                skipped.append(f"symlink {info.filename!r} -> {link!r}")
                continue
        if problem is None and info.file_size > MAX_RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            problem = (f"it expands {info.compress_size} bytes to {info.file_size} "
                       f"({info.file_size // max(info.compress_size, 1)}x; more than {MAX_RATIO}x looks like a zip bomb)")
        if problem:
            problems.append(f"{info.filename!r}: {problem}")
        elif not info.is_dir() and rel.strip("/") and _wanted(rel, actors):
            plan.append((info, dest / rel))
    return plan, problems, skipped


def free_space_problem(where: Path, needed: int, what: str) -> str | None:
    """A message when the file system of ``where`` has less than ``needed`` + :data:`SPARE_BYTES` free."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free >= needed + SPARE_BYTES:
        return None
    gib = 1 << 30
    return (f"{what} needs {needed / gib:.2f} GiB (+{SPARE_BYTES >> 20} MiB spare) on {probe}, "
            f"which has {free / gib:.2f} GiB free; free some space and run again")


def _same(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> bool:
    """Whether ``target`` already holds exactly this member."""
    if target.is_symlink() or not target.is_file() or target.stat().st_size != info.file_size:
        return False
    with zf.open(info) as a, open(target, "rb") as b:
        while chunk := a.read(CHUNK):
            if chunk != b.read(len(chunk)):
                return False
    return True


def _write_atomic(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Write a member to a temporary file beside ``target``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f, zf.open(info) as src:
            shutil.copyfileobj(src, f, CHUNK)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def extract_archive(path: Path, dest: Path, root: Path, *, actors: Sequence[int] | None = None,
                    progress: bool = True) -> tuple[int, list[str]]:
    """Extract ``path`` into ``dest`` (inside ``root``) safely (see the module doc).

    Returns:
        Files in place (written or already identical), and the problems: unsafe
        members (then nothing is written), existing files with other content (kept).
    """
    from tqdm.auto import tqdm

    with zipfile.ZipFile(path) as zf:
        plan, problems, skipped = plan_extraction(zf, dest, root, actors)
        if problems:
            return 0, [f"refused {path.name}: member {p}; nothing extracted from it" for p in problems]
        to_write = sum(info.file_size for info, target in plan if not os.path.lexists(target))
        short = free_space_problem(dest, to_write, f"extracting {path.name}")
        if short:
            return 0, [short]
        for note in skipped:
            print(f"note: {path.name}: skipped {note} (emolab does not create symlinks)")
        done, kept = 0, []
        for info, target in tqdm(plan, desc=f"extracting {path.name}", unit="file", disable=not progress,
                                 leave=False):
            if not _inside(target.parent, root):  # a symlink on disk leads out of DIR
                kept.append(f"refused {path.name}: member {info.filename!r}: its folder leads outside {root}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(target):
                if not _same(zf, info, target):
                    kept.append(f"{path.name}: member {info.filename!r}: {target} exists with other content; "
                                "kept it (move it away and run again to extract this member)")
                    continue
            else:
                _write_atomic(zf, info, target)
            done += 1
    return done, kept
