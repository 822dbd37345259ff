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
statement, repetition, actor)`` (:mod:`emolab.data.pairing`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

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
