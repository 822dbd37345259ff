"""RAVDESS file names, corpus scanning, audio/video pairing and labels (SPEC §1).

RAVDESS names have seven two-digit fields, ``MM-VV-EE-II-SS-RR-AA.ext``::

    MM modality        01 audio-video, 02 video-only, 03 audio-only
    VV vocal channel   01 speech, 02 song
    EE emotion         01 neutral ... 08 surprised
    II intensity       01 normal, 02 strong (neutral has no strong)
    SS statement       01 "Kids are talking by the door", 02 "Dogs are sitting by the door"
    RR repetition      01, 02
    AA actor           01-24 (odd male, even female)

Pairing takes the video from modality 02 (``.mp4``) and the audio from modality 03
(``.wav``) and joins them one-to-one on ``(vocal_channel, emotion, intensity,
statement, repetition, actor)``. Modality-01 files carry the same audio as the
audio-only WAVs, so they are counted and left out rather than used as extra
samples. Everything that is not paired is reported with the reason.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from emolab.utils.fileio import open_media

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
MODALITIES = {1: "audio-video", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
INTENSITIES = {1: "normal", 2: "strong"}
STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
NUM_ACTORS = 24
MEDIA_SUFFIXES = {".wav", ".mp4"}
_EXPECTED_SUFFIX = {1: ".mp4", 2: ".mp4", 3: ".wav"}

# 4-class map of SPEC §1.2: emotion id -> label.
_FOUR_CLASS = {1: 0, 2: 0, 3: 1, 4: 2, 5: 2, 6: 2, 7: 2, 8: 3}
FOUR_CLASS_NAMES: tuple[str, ...] = ("neutral/calm", "positive", "negative", "surprise")

_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_DIR_RE = re.compile(r"^Actor_(\d{2})$")
_AUX_DIRS = {"Noise", "__MACOSX"}


def format_fields(*values: int) -> str:
    """Two-digit fields joined by dashes: ``format_fields(3, 1, 5)`` is ``"03-01-05"``."""
    return "-".join(f"{v:02d}" for v in values)


class RavdessNameError(ValueError):
    """A file name that is not a valid RAVDESS name."""


@dataclass(frozen=True)
class RavdessName:
    """The seven fields of a RAVDESS file name."""

    modality: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def key(self) -> tuple[int, int, int, int, int, int]:
        """The pairing key ``(vocal_channel, emotion, intensity, statement, repetition, actor)``."""
        return (
            self.vocal_channel,
            self.emotion,
            self.intensity,
            self.statement,
            self.repetition,
            self.actor,
        )

    @property
    def stem(self) -> str:
        """The name without extension, e.g. ``"03-01-05-02-01-01-12"``."""
        return format_fields(self.modality, *self.key)


def _check_range(field_name: str, value: int, valid: Iterable[int]) -> None:
    valid = list(valid)
    if value not in valid:
        raise RavdessNameError(
            f"{field_name} {value:02d} is out of range ({valid[0]:02d}-{valid[-1]:02d})"
        )


def parse_name(path: str | os.PathLike[str]) -> RavdessName:
    """Parse and validate a RAVDESS file name.

    Args:
        path: a file name or path such as ``.../Actor_12/03-01-05-02-01-01-12.wav``.

    Returns:
        The parsed fields.

    Raises:
        RavdessNameError: when the name does not have seven two-digit fields, a
            field is out of range, neutral is marked strong, or the extension does
            not match the modality (``.wav`` for 03, ``.mp4`` for 01 and 02).
    """
    p = Path(path)
    m = _NAME_RE.match(p.stem)
    if m is None:
        raise RavdessNameError(
            f"'{p.name}' does not have seven two-digit fields MM-VV-EE-II-SS-RR-AA"
        )
    name = RavdessName(*(int(g) for g in m.groups()))
    _check_range("modality", name.modality, MODALITIES)
    _check_range("vocal channel", name.vocal_channel, VOCAL_CHANNELS)
    _check_range("emotion", name.emotion, range(1, 9))
    _check_range("intensity", name.intensity, INTENSITIES)
    _check_range("statement", name.statement, STATEMENTS)
    _check_range("repetition", name.repetition, (1, 2))
    _check_range("actor", name.actor, range(1, NUM_ACTORS + 1))
    if name.emotion == 1 and name.intensity == 2:
        raise RavdessNameError("neutral (emotion 01) has no strong intensity (02)")
    suffix = p.suffix.lower()
    if suffix and suffix != _EXPECTED_SUFFIX[name.modality]:
        raise RavdessNameError(
            f"extension '{p.suffix}' does not match modality {name.modality:02d} "
            f"({MODALITIES[name.modality]}, expected '{_EXPECTED_SUFFIX[name.modality]}')"
        )
    return name


# --------------------------------------------------------------------------- labels


def label_of(emotion: int, num_classes: int = 8) -> int:
    """Class index of a RAVDESS emotion id (1-8) for an 8- or 4-class task (SPEC §1.2)."""
    if not 1 <= emotion <= 8:
        raise ValueError(f"emotion id must be 1-8, got {emotion}")
    if num_classes == 8:
        return emotion - 1
    if num_classes == 4:
        return _FOUR_CLASS[emotion]
    raise ValueError(f"num_classes must be 8 or 4, got {num_classes}")


def class_names(num_classes: int = 8) -> tuple[str, ...]:
    """Names of the classes, indexed by label."""
    if num_classes == 8:
        return EMOTIONS
    if num_classes == 4:
        return FOUR_CLASS_NAMES
    raise ValueError(f"num_classes must be 8 or 4, got {num_classes}")


# --------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class PairRecord:
    """One audio/video pair: modality-02 video and modality-03 audio of one recording."""

    video_path: Path
    audio_path: Path
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int
    vocal_channel: int = 1

    def label(self, num_classes: int = 8) -> int:
        """Class index for an 8- or 4-class task."""
        return label_of(self.emotion, num_classes)

    @property
    def emotion_name(self) -> str:
        return EMOTIONS[self.emotion - 1]

    @property
    def gender(self) -> str:
        """``"male"`` for odd actors, ``"female"`` for even ones."""
        return "male" if self.actor % 2 else "female"

    @property
    def stem(self) -> str:
        """The shared name without modality, e.g. ``"01-05-02-01-01-12"``."""
        return format_fields(
            self.vocal_channel, self.emotion, self.intensity, self.statement, self.repetition, self.actor
        )


@dataclass
class Problem:
    """A file that was not used, and why."""

    path: str
    reason: str


def strip_path(message: str, path: str | os.PathLike[str]) -> str:
    """``message`` without a leading ``"{path}: "`` (read errors name their file; lists name it already)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


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
