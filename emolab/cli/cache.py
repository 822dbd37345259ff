"""``emolab cache info|prune``: what the cache folder holds, and removing what is no longer used.

The cache folder (:func:`~emolab.data.cache.default_cache_dir`, or ``--dir``)
holds three kinds of entries, one ``.npz`` file each:

* ``frames/``: sampled, face-cropped ``uint8`` frames of a clip (:class:`~emolab.data.cache.FrameCache`);
* ``audio/``: its 16 kHz ``int16`` audio;
* ``wavlm/<tag>/``: frozen-WavLM features (:mod:`emolab.data.feature_cache`), one
  folder per backbone (the tag hashes its config, weights and precision), with a
  ``backbone.json`` saying which backbone it was.

An entry's modification time is when it was last read from disk (reads touch
it), so ``prune --older_than DAYS`` removes what no run has used for that long.
``info`` counts damaged entries (empty, or truncated: no zip directory at the
end) apart from valid ones, and the temporary files of writers that were
killed; ``prune`` always removes those temporary files, and ``--damaged``
removes damaged entries (a run treats them as misses and rewrites them anyway).
Entries are keyed by content, so a removed entry is recomputed (and stored again)
the next time a run needs it: pruning costs time, never correctness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from emolab.utils.fileio import stale_tmp_files

__all__ = ["CacheGroup", "cache_groups", "prune", "run_from_args"]

KINDS = ("frames", "audio", "wavlm")
_DAY = 86400.0


class CacheError(Exception):
    """A user-facing error of ``emolab cache`` (one line, exit code 2)."""


@dataclass
class CacheGroup:
    """The entries of one kind (one backbone tag for WavLM features)."""

    kind: str
    tag: str | None
    folder: Path
    entries: int = 0
    bytes: int = 0
    newest: float | None = None  # last use (modification time) of the most recently used entry
    oldest: float | None = None
    backbone: dict[str, Any] | None = None  # backbone.json of a WavLM tag
    damaged: int = 0  # entries that are empty or truncated (not counted in ``entries``)
    stale_tmp: int = 0  # temporary files left by killed writers

    @property
    def name(self) -> str:
        return self.kind if self.tag is None else f"{self.kind}/{self.tag}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tag": self.tag, "folder": str(self.folder), "entries": self.entries,
                "bytes": self.bytes, "newest": self.newest, "oldest": self.oldest, "backbone": self.backbone,
                "damaged": self.damaged, "stale_tmp": self.stale_tmp}


def is_damaged(path: str | os.PathLike[str], size: int) -> bool:
    """An ``.npz`` entry that is empty or truncated (its zip directory, at the end, is missing)."""
    if size < 22:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(-min(size, 1024), os.SEEK_END)
            return b"PK\x05\x06" not in fh.read()
    except OSError:
        return True


def _entries(folder: Path) -> Iterator[os.DirEntry]:
    """The ``.npz`` files under ``folder`` (two-hex-digit subfolders), skipping temporary files."""
    if not folder.is_dir():
        return
    for sub in os.scandir(folder):
        if sub.is_dir(follow_symlinks=False):
            for e in os.scandir(sub.path):
                if e.name.endswith(".npz") and not e.name.startswith(".") and e.is_file(follow_symlinks=False):
                    yield e


def _group(kind: str, tag: str | None, folder: Path) -> CacheGroup:
    g = CacheGroup(kind, tag, folder)
    for e in _entries(folder):
        st = e.stat(follow_symlinks=False)
        if is_damaged(e.path, st.st_size):
            g.damaged += 1
            continue
        g.entries += 1
        g.bytes += st.st_size
        g.newest = st.st_mtime if g.newest is None else max(g.newest, st.st_mtime)
        g.oldest = st.st_mtime if g.oldest is None else min(g.oldest, st.st_mtime)
    g.stale_tmp = len(stale_tmp_files(folder, recursive=True)) if folder.is_dir() else 0
    meta = folder / "backbone.json"
    if meta.is_file():
        try:
            g.backbone = json.loads(meta.read_text())
        except (OSError, ValueError):
            g.backbone = None
    return g


def _folders(directory: str | os.PathLike[str]) -> list[tuple[str, str | None, Path]]:
    """``(kind, tag, folder)`` of frames, audio and each WavLM backbone tag of a cache folder."""
    root = Path(directory)
    if not root.is_dir():
        raise CacheError(f"no cache folder at {root}")
    folders: list[tuple[str, str | None, Path]] = [(k, None, root / k) for k in ("frames", "audio")]
    wavlm = root / "wavlm"
    if wavlm.is_dir():
        folders += [("wavlm", d.name, Path(d.path)) for d in sorted(os.scandir(wavlm), key=lambda d: d.name)
                    if d.is_dir(follow_symlinks=False)]
    return folders


def cache_groups(directory: str | os.PathLike[str]) -> list[CacheGroup]:
    """Frames, audio and each WavLM backbone tag of a cache folder, with counts, sizes and last use."""
    return [_group(kind, tag, folder) for kind, tag, folder in _folders(directory)]


def prune(directory: str | os.PathLike[str], *, kinds: Sequence[str] = KINDS, tags: Sequence[str] = (),
          older_than_days: float | None = None, dry_run: bool = False,
          now: float | None = None, damaged: bool = False) -> tuple[int, int]:
    """Remove entries; returns ``(files, bytes)`` removed (or that would be, with ``dry_run``).

    Temporary files of killed writers (:func:`~emolab.utils.fileio.stale_tmp_files`) in
    the folders considered are always removed (and counted).

    Args:
        kinds: which kinds to consider (``frames``, ``audio``, ``wavlm``).
        tags: WavLM backbone tags (or prefixes of them) to consider; empty: all.
        older_than_days: only entries unused for longer than this; ``None``: every entry considered.
        damaged: only damaged entries (empty or truncated).
    """
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise CacheError(f"unknown kind {', '.join(bad)}; kinds: {', '.join(KINDS)}")
    if older_than_days is not None and older_than_days < 0:
        raise CacheError(f"--older_than must be >= 0 days, got {older_than_days}")
    cutoff = None if older_than_days is None else (now or time.time()) - older_than_days * _DAY
    files = size = 0
    for kind, tag, folder in _folders(directory):
        if kind not in kinds or (kind == "wavlm" and tags and not any(tag.startswith(t) for t in tags)):
            continue
        for tmp in stale_tmp_files(folder, recursive=True) if folder.is_dir() else []:
            try:
                files, size = files + 1, size + tmp.stat().st_size
                if not dry_run:
                    tmp.unlink()
            except OSError:
                pass
        for e in list(_entries(folder)):
            st = e.stat(follow_symlinks=False)
            if cutoff is not None and st.st_mtime >= cutoff:
                continue
            if damaged and not is_damaged(e.path, st.st_size):
                continue
            files += 1
            size += st.st_size
            if not dry_run:
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    pass  # removed meanwhile (another prune, or a run rewriting it)
        if not dry_run and kind == "wavlm" and not any(_entries(folder)):
            shutil.rmtree(folder, ignore_errors=True)  # the tag's folder, backbone.json included
    return files, size


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def format_groups(groups: Sequence[CacheGroup], directory: Path) -> str:
    lines = [f"cache folder {directory}",
             f"{'kind':<26}{'entries':>9}{'MiB':>10}  {'last used':<17} {'least recently used':<17}  backbone"]
    for g in groups:
        b = g.backbone or {}
        what = ", ".join(f"{k} {b[k]}" for k in ("name_or_path", "family", "hidden_size", "layers", "precision") if k in b)
        lines.append(f"{g.name:<26}{g.entries:>9}{g.bytes / 2**20:>10.1f}  {_when(g.newest):<17} "
                     f"{_when(g.oldest):<17}  {what}")
    total = sum(g.bytes for g in groups)
    lines.append(f"{'total':<26}{sum(g.entries for g in groups):>9}{total / 2**20:>10.1f}")
    bad, tmp = sum(g.damaged for g in groups), sum(g.stale_tmp for g in groups)
    if bad or tmp:
        lines.append(f"not counted above: {bad} damaged entries (empty or truncated; recomputed when needed), "
                     f"{tmp} temporary files of killed writers (`emolab cache prune --damaged` removes both)")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``emolab cache``."""
    p.add_argument("action", choices=("info", "prune"), help="info: what the cache holds; prune: remove entries")
    p.add_argument("--dir", default=None, help="cache folder (default $EMOLAB_CACHE_DIR, else $XDG_CACHE_HOME/emolab or ~/.cache/emolab)")
    p.add_argument("--json", action="store_true", help="info: print JSON")
    p.add_argument("--kind", default=None, help="prune: frames, audio and/or wavlm, comma-separated (default all)")
    p.add_argument("--wavlm_tag", action="append", default=[], help="prune: only this WavLM backbone tag (or prefix)")
    p.add_argument("--older_than", type=float, default=None, help="prune: only entries unused for this many days")
    p.add_argument("--damaged", action="store_true", help="prune: only damaged entries (empty or truncated)")
    p.add_argument("--dry_run", action="store_true", help="prune: say what would be removed, remove nothing")


def run_from_args(args: argparse.Namespace) -> int:
    from emolab.data.cache import default_cache_dir

    directory = Path(args.dir) if args.dir else default_cache_dir()
    if args.action == "info":
        groups = cache_groups(directory)
        if args.json:
            print(json.dumps({"directory": str(directory), "groups": [g.as_dict() for g in groups]}, indent=2))
        else:
            print(format_groups(groups, directory))
        return 0
    if args.kind is None and not args.wavlm_tag and args.older_than is None and not args.damaged:
        raise CacheError("say what to prune: --kind, --wavlm_tag, --damaged and/or --older_than DAYS "
                         "(`make clean-cache` removes the whole folder)")
    kinds = tuple(k.strip() for k in args.kind.split(",") if k.strip()) if args.kind else (
        ("wavlm",) if args.wavlm_tag else KINDS)
    files, size = prune(directory, kinds=kinds, tags=args.wavlm_tag, older_than_days=args.older_than,
                        dry_run=args.dry_run, damaged=args.damaged)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {files} entries, {size / 2**20:.1f} MiB, from {directory}")
    return 0
