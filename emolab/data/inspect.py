"""Corpus inspection: pairs per actor/emotion/intensity, what is unpaired and why, split composition.

Backs ``emolab inspect`` and notebook 01. :func:`inspect_corpus` returns a
JSON-ready dict; :func:`format_inspection` renders it as text.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Any

from emolab.data.pairing import pair_corpus
from emolab.data.ravdess import EMOTIONS, VOCAL_CHANNELS, PairRecord
from emolab.data.splits import (
    PROTOCOLS,
    SpeakerLeakageWarning,
    Split,
    SplitConfig,
    kfold_split,
    make_split,
    stratified_split,
)

_SHORT = ("neu", "cal", "hap", "sad", "ang", "fea", "dis", "sur")


def _split_entry(split: Split) -> dict[str, Any]:
    return {"description": split.description, "notes": split.notes, **split.composition()}


def split_summaries(pairs: list[PairRecord], split_config: SplitConfig | None = None, *,
                    seed: int = 42) -> dict[str, Any]:
    """Composition of the actor split (or ``split_config``), a stratified split (``seed``) and every fold protocol."""
    out: dict[str, Any] = {}
    try:
        out["actor"] = _split_entry(make_split(pairs, split_config or SplitConfig(), seed=seed))
    except ValueError as e:
        out["actor"] = {"error": str(e)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpeakerLeakageWarning)
        cfg = split_config if split_config and split_config.mode == "stratified" else SplitConfig()
        try:
            out["stratified"] = _split_entry(stratified_split(pairs, cfg.train_ratio, cfg.val_ratio, seed))
        except ValueError as e:  # a corpus too small for the ratios
            out["stratified"] = {"error": str(e)}
    for protocol, folds in PROTOCOLS.items():
        entries = []
        for k in range(len(folds)):
            try:
                s = kfold_split(pairs, protocol, k)
                entries.append({"fold": k, **{n: len(r) for n, r in s.items()}, "actors": s.actors})
            except ValueError as e:
                entries.append({"fold": k, "error": str(e)})
        out[protocol] = entries
    return out


def inspect_corpus(
    data_root: str | os.PathLike[str],
    *,
    vocal_channel: int = 1,
    check: str = "header",
    split_config: SplitConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Pair a corpus and describe it.

    Returns:
        A JSON-ready dict with ``pairs`` (int), ``unpaired_audio``,
        ``unpaired_video``, ``unparsable``, ``unreadable``, ``duplicates``
        (lists), the ignored-file counts, ``per_actor_emotion`` (actor ->
        8 counts), ``per_intensity``, ``per_statement`` and ``splits``.

    Raises:
        FileNotFoundError: the root does not exist or holds no RAVDESS pair.
    """
    result = pair_corpus(data_root, vocal_channel=vocal_channel, check=check, progress=progress)  # type: ignore[arg-type]
    report, pairs = result.report, result.pairs
    out = report.to_dict()
    actors = sorted({p.actor for p in pairs})
    grid = Counter((p.actor, p.emotion) for p in pairs)
    out["actors"] = actors
    out["per_actor_emotion"] = {a: [grid.get((a, e), 0) for e in range(1, 9)] for a in actors}
    out["per_emotion"] = {EMOTIONS[e - 1]: sum(grid.get((a, e), 0) for a in actors) for e in range(1, 9)}
    out["per_intensity"] = dict(sorted(Counter(("normal", "strong")[p.intensity - 1] for p in pairs).items()))
    out["per_statement"] = dict(sorted(Counter(f"statement {p.statement:02d}" for p in pairs).items()))
    out["splits"] = split_summaries(pairs, split_config) if pairs else {}
    return out


def format_inspection(info: dict[str, Any], *, max_list: int = 20) -> str:
    """Human-readable text of :func:`inspect_corpus`'s result."""
    lines: list[str] = []
    vc = VOCAL_CHANNELS[info["vocal_channel"]]
    lines.append(f"RAVDESS corpus at {info['root']} ({vc})")
    lines.append(
        f"  media files: {info['media_files']}   pairs: {info['pairs']}   "
        f"actors: {len(info['actors'])}   problems: "
        f"{len(info['unparsable']) + len(info['unreadable']) + len(info['unpaired_audio']) + len(info['unpaired_video']) + sum(len(d['dropped']) for d in info['duplicates'])}"
    )
    lines.append(
        f"  left out on purpose: {info['audio_video_files']} audio-video (modality 01) files "
        "(their audio duplicates the audio-only WAVs), "
        f"{info['other_vocal_channel']} files of the other vocal channel, {info['other_files']} non-media files"
    )
    if info["actors"]:
        lines.append("")
        lines.append("Pairs per actor and emotion:")
        lines.append("  actor  " + " ".join(f"{s:>4}" for s in _SHORT) + "  total")
        for a, row in info["per_actor_emotion"].items():
            lines.append(f"  {int(a):>5}  " + " ".join(f"{n:>4}" for n in row) + f"  {sum(row):>5}")
        totals = list(info["per_emotion"].values())
        lines.append("  total  " + " ".join(f"{n:>4}" for n in totals) + f"  {sum(totals):>5}")
        lines.append(
            "  intensity: "
            + ", ".join(f"{k} {v}" for k, v in info["per_intensity"].items())
            + "   "
            + ", ".join(f"{k} {v}" for k, v in info["per_statement"].items())
        )

    def listing(title: str, items: list[dict]) -> None:
        if not items:
            return
        lines.append("")
        lines.append(f"{title} ({len(items)}):")
        for it in items[:max_list]:
            lines.append(f"  {it['path']}: {it['reason']}")
        if len(items) > max_list:
            lines.append(f"  ... and {len(items) - max_list} more (use --json for the full list)")

    listing("Unparsable names", info["unparsable"])
    listing("Unreadable files", info["unreadable"])
    listing("Unpaired audio", info["unpaired_audio"])
    listing("Unpaired video", info["unpaired_video"])
    listing("Videos that decode only in part (kept, sampled from the frames that decode)", info.get("incomplete", []))
    listing("Folders reached again through a symbolic link (walked once)", info.get("symlink_loops", []))
    if info["duplicates"]:
        lines.append("")
        lines.append(f"Duplicate keys ({len(info['duplicates'])}):")
        for d in info["duplicates"][:max_list]:
            lines.append(f"  {d['key']} (modality {d['modality']:02d}): kept {d['kept']}, dropped {', '.join(d['dropped'])}")

    splits = info.get("splits") or {}
    if splits:
        lines.append("")
        lines.append("Splits:")
        for name in ("actor", "stratified"):
            s = splits[name]
            if "error" in s:
                lines.append(f"  {name}: not possible: {s['error']}")
                continue
            lines.append(f"  {s['description']}")
            for part in ("train", "val", "test"):
                c = s[part]
                emo = " ".join(f"{n:>3}" for n in c["per_emotion"].values())
                lines.append(f"    {part:<5} {c['pairs']:>5} pairs, {len(c['actors']):>2} actors | per emotion {emo}")
            for note in s["notes"]:
                lines.append(f"    note: {note}")
        for protocol in PROTOCOLS:
            parts = []
            for f in splits[protocol]:
                parts.append(
                    f"fold {f['fold']}: n/a" if "error" in f else f"fold {f['fold']}: {f['train']}/{f['val']}/{f['test']}"
                )
            lines.append(f"  {protocol} (train/val/test pairs): " + "; ".join(parts))
    return "\n".join(lines)
