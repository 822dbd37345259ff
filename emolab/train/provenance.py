"""What a run was trained on, recorded in its folder, so that ``--resume`` cannot drift.

``provenance.json`` in the run folder holds the split's exact pair list (each
pair's files relative to the corpus root, their sizes and the label; a SHA-256
over it), the corpus root, the emolab and torch versions, the torch thread
count and the resolved config. :func:`compare` lists what differs between the
recorded run and the one about to resume; ``--resume`` refuses when the pairs
or the emolab version changed (naming what changed), and otherwise takes the
recorded torch thread count (results depend on it: reductions split over
threads round differently).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from emolab import __version__
from emolab.utils.fileio import atomic_write_json

__all__ = ["FILE", "compare", "pair_lines", "provenance", "read_provenance", "write_provenance"]

FILE = "provenance.json"


def _rel(path: str | os.PathLike[str], root: Path) -> str:
    p = Path(path)
    try:
        return p.resolve().relative_to(root).as_posix()
    except ValueError:  # not under the root (a custom pair list)
        return str(p)


def _size(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def pair_lines(datasets: Mapping[str, Any], data_root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Per split, one line per pair: ``video size | audio size | emotion`` (files relative to ``data_root``)."""
    root = Path(data_root).resolve()
    return {
        name: [
            f"{_rel(p.video_path, root)} {_size(p.video_path)} | {_rel(p.audio_path, root)} {_size(p.audio_path)}"
            f" | {p.emotion}"
            for p in ds.pairs
        ]
        for name, ds in datasets.items()
    }


def provenance(cfg: Any, datasets: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a run about to train ``cfg`` on ``datasets`` (the pairs that decoded)."""
    lines = pair_lines(datasets, cfg.data_root)
    digest = hashlib.sha256(
        json.dumps(lines, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogateescape")
    ).hexdigest()
    return {
        "emolab_version": __version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "corpus_root": str(Path(cfg.data_root).resolve()),
        "pairs_sha256": digest,
        "pairs_count": {name: len(v) for name, v in lines.items()},
        "config": cfg.to_dict(),
        "pairs": lines,
    }


def write_provenance(record: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> Path:
    return atomic_write_json(dict(record), Path(run_dir) / FILE)


def read_provenance(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run folder's record, or ``None`` for a run made before emolab kept one."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _pair_change(old: Mapping[str, list[str]], new: Mapping[str, list[str]]) -> str:
    parts = []
    for name in sorted(set(old) | set(new)):
        a, b = set(old.get(name, [])), set(new.get(name, []))
        if a == b:
            continue
        gone, added = sorted(a - b), sorted(b - a)
        text = f"{name} {len(a)} -> {len(b)} pairs"
        if gone:
            text += f", {len(gone)} gone (e.g. {gone[0].split(' ')[0]})"
        if added:
            text += f", {len(added)} new (e.g. {added[0].split(' ')[0]})"
        parts.append(text)
    return "; ".join(parts)


def compare(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """What differs between a run's record and the resume about to start.

    Returns:
        ``(refusals, notes)``: changes that would make the resumed run another
        run (pairs, emolab version), and changes that do not (a corpus that
        moved with the same pairs; another torch version).
    """
    refusals: list[str] = []
    notes: list[str] = []
    if recorded.get("pairs_sha256") != now.get("pairs_sha256"):
        change = _pair_change(recorded.get("pairs", {}), now.get("pairs", {}))
        refusals.append(
            f"the pairs differ from the run's ({change or 'same files, other sizes or labels'}; corpus "
            f"{recorded.get('corpus_root')} then, {now.get('corpus_root')} now)"
        )
    elif recorded.get("corpus_root") != now.get("corpus_root"):
        notes.append(f"corpus moved from {recorded.get('corpus_root')} to {now.get('corpus_root')} (the same pairs)")
    if recorded.get("emolab_version") != now.get("emolab_version"):
        refusals.append(
            f"emolab version {now.get('emolab_version')} differs from the run's {recorded.get('emolab_version')}"
        )
    if recorded.get("torch_version") != now.get("torch_version"):
        notes.append(f"torch {now.get('torch_version')} (the run started with {recorded.get('torch_version')})")
    return refusals, notes
