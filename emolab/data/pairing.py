"""Corpus scanning and audio/video pairing of RAVDESS (SPEC §1): :func:`pair_corpus`.

Pairing takes the video from modality 02 (``.mp4``) and the audio from modality 03
(``.wav``) and joins them one-to-one on ``(vocal_channel, emotion, intensity,
statement, repetition, actor)``. Modality-01 files carry the same audio as the
audio-only WAVs, so they are counted and left out rather than used as extra
samples. Everything that is not paired is reported with the reason. File names
and labels are :mod:`emolab.data.ravdess`.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from emolab.data.ravdess import (
    MEDIA_SUFFIXES,
    VOCAL_CHANNELS,
    PairRecord,
    Problem,
    RavdessName,
    RavdessNameError,
    format_fields,
    parse_name,
    strip_path,
)
from emolab.utils.fileio import open_media

__all__ = ["CHECK_LEVELS", "PairingReport", "PairingResult", "decode_check", "find_media_files", "pair_corpus"]

_ACTOR_DIR_RE = re.compile(r"^Actor_(\d{2})$")
_AUX_DIRS = {"Noise", "__MACOSX"}


@dataclass
class PairingReport:
    """Everything the pairing found besides the pairs themselves.

    Attributes:
        root: the data root that was scanned.
        vocal_channel: 1 speech, 2 song.
        pairs: number of pairs formed.
        media_files: number of ``.wav``/``.mp4`` files found under the root.
        unparsable: media files whose name is not a valid RAVDESS name.
        unreadable: files that are empty or whose header cannot be read.
        duplicates: the same pairing key found in more than one file of a
            modality; the first path in sorted order is kept, the others listed.
        unpaired_audio: audio-only WAVs with no video partner.
        unpaired_video: video-only MP4s with no audio partner.
        audio_video_files: modality-01 files, left out because their audio
            duplicates the audio-only WAVs (counting both inflates results).
        other_vocal_channel: valid files of the other vocal channel.
        other_files: non-media files under the root (ignored).
        incomplete: videos that decode only in part (``check="decode"``): kept,
            sampled from the frames that decode; the reason gives both counts.
        symlink_loops: folders reached again through a symbolic link (not
            walked twice); the reason names the folder the link leads back to.
    """

    root: str
    vocal_channel: int
    pairs: int = 0
    media_files: int = 0
    unparsable: list[Problem] = field(default_factory=list)
    unreadable: list[Problem] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    unpaired_audio: list[Problem] = field(default_factory=list)
    unpaired_video: list[Problem] = field(default_factory=list)
    audio_video_files: int = 0
    other_vocal_channel: int = 0
    other_files: int = 0
    incomplete: list[Problem] = field(default_factory=list)
    symlink_loops: list[Problem] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """Number of files that were not used for a reason worth a look."""
        return (
            len(self.unparsable)
            + len(self.unreadable)
            + sum(len(d["dropped"]) for d in self.duplicates)
            + len(self.unpaired_audio)
            + len(self.unpaired_video)
        )

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class PairingResult:
    """The pairs, sorted by (actor, name), and the report of what was left out."""

    pairs: list[PairRecord]
    report: PairingReport


CheckLevel = Literal["none", "size", "header", "decode"]
CHECK_LEVELS = ("none", "size", "header", "decode")


def find_media_files(
    root: str | os.PathLike[str], *, loops: list[Problem] | None = None
) -> tuple[list[Path], int]:
    """Find ``.wav`` and ``.mp4`` files under ``root`` at any depth.

    Files under a ``Noise/`` folder (the augmentation noise, ``data/Noise/noise.wav``)
    or a ``__MACOSX/`` folder (resource forks from zip files made on a Mac) are
    not corpus files: they count as other files. Symbolic links are followed,
    but every folder is walked once (by device and inode): a link back to a
    folder already walked (a loop, or a second way into the same folder) is
    not entered, and appended to ``loops`` naming where it leads.

    Returns:
        The media files in sorted order, and the number of other files seen.

    Raises:
        FileNotFoundError: if ``root`` does not exist or is not a directory.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data root '{root}' does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"data root '{root}' is not a directory")
    media: list[Path] = []
    other = 0
    st = root.stat()
    visited: dict[tuple[int, int], Path] = {(st.st_dev, st.st_ino): root}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        here = Path(dirpath)
        for d in list(dirnames):
            try:
                st = (here / d).stat()
            except OSError:
                dirnames.remove(d)
                continue
            ident = (st.st_dev, st.st_ino)
            seen = visited.get(ident)
            if seen is None:
                visited[ident] = here / d
                continue
            dirnames.remove(d)
            if loops is not None:
                link = here / d
                kind = "symbolic link loop back to" if seen == root or seen in link.parents else "second way into"
                loops.append(Problem(str(link), f"{kind} {seen} (walked once)"))
        aux = bool(_AUX_DIRS & set(here.relative_to(root).parts))
        for fn in filenames:
            if not aux and Path(fn).suffix.lower() in MEDIA_SUFFIXES:
                media.append(here / fn)
            else:
                other += 1
    media.sort()
    return media, other


def _check_file(path: Path, modality: int, level: CheckLevel) -> str | None:
    """Return why ``path`` cannot be read, or ``None`` if it looks fine."""
    if level == "none":
        return None
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot stat: {e.strerror or e}"
    if size == 0:
        return "empty file (0 bytes)"
    if level == "size":
        return None
    if modality == 3:  # "decode" reads WAVs as "header" does: the header and the data it declares
        import soundfile as sf

        from emolab.data.probe import wav_data_shortfall

        try:
            with open_media(path) as src:
                info = sf.info(src)
        except Exception as e:  # soundfile raises several types for bad headers
            return f"not a readable WAV: {e}"
        if info.frames == 0:
            return "WAV has no samples"
        shortfall = wav_data_shortfall(path)
        if shortfall is not None:
            return f"WAV is truncated (header declares {shortfall[0]} bytes of audio data, only {shortfall[1]} are present)"
        return None
    import av

    try:
        with open_media(path) as src, av.open(src) as container:
            if not container.streams.video:
                return "MP4 has no video stream"
    except Exception as e:  # PyAV raises av.error.* subclasses of several bases
        return f"not a readable MP4: {e}"
    return None


def _decode_one(path: Path) -> tuple[Path, Any, str | None]:
    from emolab.data.video import VideoReadError, decode_stats

    try:
        return path, decode_stats(path), None
    except VideoReadError as e:
        return path, None, strip_path(str(e), path)


def decode_check(
    videos: list[Path], *, workers: int | None = None, progress: bool = False
) -> list[tuple[Path, Any, str | None]]:
    """Decode every video, in parallel over ``workers`` processes (default: the CPU cores).

    Returns:
        ``(path, DecodeStats or None, error or None)`` per video, in the order given.
    """
    if not videos:
        return []
    workers = min(len(videos), workers or os.cpu_count() or 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(videos), desc="decoding videos", unit="clip")
    try:
        if workers <= 1:
            out = []
            for v in videos:
                out.append(_decode_one(v))
                if bar is not None:
                    bar.update()
            return out
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            out = []
            for res in pool.map(_decode_one, videos, chunksize=4):
                out.append(res)
                if bar is not None:
                    bar.update()
            return out
    finally:
        if bar is not None:
            bar.close()


def pair_corpus(
    root: str | os.PathLike[str],
    *,
    vocal_channel: int = 1,
    check: CheckLevel = "size",
    progress: bool = False,
) -> PairingResult:
    """Scan a RAVDESS root and pair video-only MP4s with audio-only WAVs (SPEC §1.1).

    Files may sit in ``Actor_NN/`` folders at any depth (as the Zenodo archives
    extract, or all archives unpacked under one folder).

    Args:
        root: the data root.
        vocal_channel: 1 speech (default) or 2 song.
        check: ``"none"``; ``"size"`` flags empty files (cheap, the default);
            ``"header"`` also opens every file's header (soundfile / PyAV);
            ``"decode"`` also decodes every video (in parallel over the CPU
            cores): a video whose frames all fail is unreadable, one that
            decodes only in part is listed in ``report.incomplete``.
        progress: show a tqdm bar while checking headers or decoding.

    Returns:
        The pairs and a :class:`PairingReport`. Nothing is dropped silently:
        every media file is either in a pair or listed in the report.

    Raises:
        FileNotFoundError: the root does not exist.
        NotADirectoryError: the root is a file.
    """
    if vocal_channel not in VOCAL_CHANNELS:
        raise ValueError(f"vocal_channel must be 1 (speech) or 2 (song), got {vocal_channel}")
    if check not in CHECK_LEVELS:
        raise ValueError(f"check must be one of {', '.join(map(repr, CHECK_LEVELS))}, got {check!r}")
    loops: list[Problem] = []
    files, other = find_media_files(root, loops=loops)
    report = PairingReport(root=str(root), vocal_channel=vocal_channel, media_files=len(files))
    report.other_files = other
    report.symlink_loops = loops

    candidates: list[tuple[Path, RavdessName]] = []
    for path in files:
        try:
            name = parse_name(path)
        except RavdessNameError as e:
            report.unparsable.append(Problem(str(path), str(e)))
            continue
        folder = _ACTOR_DIR_RE.match(path.parent.name)
        if folder and int(folder.group(1)) != name.actor:
            report.unparsable.append(
                Problem(str(path), f"actor {name.actor:02d} in the name but folder '{path.parent.name}'")
            )
            continue
        if name.modality == 1:
            report.audio_video_files += 1
        elif name.vocal_channel != vocal_channel:
            report.other_vocal_channel += 1
        else:
            candidates.append((path, name))

    iterator: Iterable[tuple[Path, RavdessName]] = candidates
    if progress and check in ("header", "decode"):
        from tqdm.auto import tqdm

        iterator = tqdm(candidates, desc="checking files", unit="file")
    by_key: dict[int, dict[tuple, list[Path]]] = {2: defaultdict(list), 3: defaultdict(list)}
    unreadable_keys: dict[tuple, str] = {}
    passed: list[tuple[Path, RavdessName]] = []
    for path, name in iterator:
        why = _check_file(path, name.modality, check)
        if why is not None:
            report.unreadable.append(Problem(str(path), why))
            unreadable_keys[name.key] = str(path)
            continue
        passed.append((path, name))
    if check == "decode":
        videos = [path for path, name in passed if name.modality == 2]
        failed = {}
        for path, stats, error in decode_check(videos, progress=progress):
            if error is not None:
                failed[path] = error
            elif stats is not None and stats.incomplete:
                report.incomplete.append(Problem(str(path), stats.describe()))
        for path, name in passed:
            if path in failed:
                report.unreadable.append(Problem(str(path), failed[path]))
                unreadable_keys[name.key] = str(path)
        passed = [(p, n) for p, n in passed if p not in failed]
    for path, name in passed:
        by_key[name.modality][name.key].append(path)

    chosen: dict[int, dict[tuple, Path]] = {2: {}, 3: {}}
    for modality, groups in by_key.items():
        for key, paths in groups.items():
            paths = sorted(paths)
            chosen[modality][key] = paths[0]
            if len(paths) > 1:
                report.duplicates.append(
                    {
                        "key": format_fields(*key),
                        "modality": modality,
                        "kept": str(paths[0]),
                        "dropped": [str(p) for p in paths[1:]],
                    }
                )

    videos, audios = chosen[2], chosen[3]
    pairs: list[PairRecord] = []
    for key in sorted(set(videos) | set(audios), key=lambda k: (k[5], k)):
        v, a = videos.get(key), audios.get(key)
        if v is not None and a is not None:
            vc, emo, inten, stmt, rep, actor = key
            pairs.append(PairRecord(v, a, emo, inten, stmt, rep, actor, vc))
            continue
        missing = "video (modality 02 .mp4)" if v is None else "audio (modality 03 .wav)"
        reason = f"no {missing} partner"
        if key in unreadable_keys:
            reason = f"partner unreadable: {unreadable_keys[key]}"
        if v is None:
            report.unpaired_audio.append(Problem(str(a), reason))
        else:
            report.unpaired_video.append(Problem(str(v), reason))
    report.pairs = len(pairs)
    return PairingResult(pairs, report)
