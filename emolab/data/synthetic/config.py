"""What the generated demo corpus holds: :class:`DemoConfig` and the frame-size parser.

Shared by the synthesis model (:mod:`emolab.data.synthetic.media`) and the writer
(:mod:`emolab.data.synthetic.corpus`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Where ``emolab demo`` and the notebooks put the demo corpus (relative to the working folder).
DEFAULT_DEMO_DIR = Path("data/demo")

#: Sample rates an AAC track can carry.
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def parse_size(text: str) -> tuple[int, int]:
    """Parse a ``"WxH"`` frame size such as ``"1280x720"`` into ``(W, H)``.

    Raises:
        ValueError: if the text is not two positive even integers joined by ``x``.
    """
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size must look like 'WxH' (e.g. '192x108'), got {text!r}")
    size = (int(parts[0]), int(parts[1]))
    _check_size(size)
    return size


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise ValueError(
            f"size must be positive even integers (yuv420p needs even width and height), got {w}x{h}"
        )
    if w < 32 or h < 32:
        raise ValueError(f"size must be at least 32x32 to draw a face, got {w}x{h}")


@dataclass
class DemoConfig:
    """What to generate.

    Attributes:
        actors: ``N`` for actors 1..N, or explicit actor ids (each 1..24).
        size: frame size ``(W, H)``; even integers (yuv420p). A ``"WxH"``
            string is accepted and parsed.
        seconds: clip length in seconds (RAVDESS clips are 3-5 s).
        fps: video frame rate.
        seed: seed of every random draw (non-negative).
        speech: generate the speech channel (vocal 01, 60 recordings per actor).
        song: generate the song channel (vocal 02, 44 per actor, none for actor 18).
        noise: write ``Noise/noise.wav`` (babble/bar-like, for noise augmentation).
        sample_rate: audio sample rate in Hz (RAVDESS: 48000).
        noise_seconds: length of the noise file in seconds.
    """

    actors: int | Sequence[int] = 24  # RAVDESS's 24, so default splits/folds work
    size: tuple[int, int] = (192, 108)  # small 16:9; RAVDESS is 1280x720
    seconds: float = 2.5  # RAVDESS: 3-5 s; models crop/pad to 3 s
    fps: float = 15.0  # RAVDESS: 29.97
    seed: int = 0
    speech: bool = True
    song: bool = False
    noise: bool = True
    sample_rate: int = 48000
    noise_seconds: float = 24.0

    def __post_init__(self) -> None:
        if isinstance(self.size, str):
            self.size = parse_size(self.size)
        if (
            not isinstance(self.size, Sequence)
            or len(self.size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.size)
        ):
            raise ValueError(f"size must be (W, H) integers or a 'WxH' string, got {self.size!r}")
        self.size = (int(self.size[0]), int(self.size[1]))
        _check_size(self.size)
        ids = self.actor_ids  # validates
        if isinstance(self.actors, Sequence):
            self.actors = ids
        if not _is_number(self.seconds) or not math.isfinite(self.seconds) or self.seconds <= 0:
            raise ValueError(f"seconds must be a positive number, got {self.seconds!r}")
        if self.seconds > 60:
            raise ValueError(f"seconds must be at most 60, got {self.seconds}")
        if not _is_number(self.fps) or not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"fps must be a positive number, got {self.fps!r}")
        if self.fps > 120:
            raise ValueError(f"fps must be at most 120, got {self.fps}")
        self.seconds, self.fps = float(self.seconds), float(self.fps)
        if self.num_frames < 2:
            raise ValueError(
                f"seconds * fps must give at least 2 frames, got {self.seconds} s at {self.fps} fps"
            )
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (self.speech or self.song):
            raise ValueError("nothing to generate: speech and song are both False")
        if self.sample_rate not in AAC_RATES:
            raise ValueError(f"sample_rate must be one of {AAC_RATES} (AAC rates), got {self.sample_rate!r}")
        if not (1.0 <= self.noise_seconds <= 600.0):
            raise ValueError(f"noise_seconds must be in [1, 600], got {self.noise_seconds}")

    @property
    def actor_ids(self) -> tuple[int, ...]:
        """Actor ids to generate, sorted."""
        a = self.actors
        if isinstance(a, bool) or not isinstance(a, (int, np.integer, Sequence)) or isinstance(a, str):
            raise ValueError(f"actors must be an int N (actors 1..N) or a list of actor ids, got {a!r}")
        if isinstance(a, (int, np.integer)):
            if not 1 <= a <= 24:
                raise ValueError(f"actors must be between 1 and 24 (RAVDESS has 24 actors), got {a}")
            return tuple(range(1, int(a) + 1))
        ids = list(a)
        if not ids:
            raise ValueError("actors must not be empty")
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 1 <= i <= 24:
                raise ValueError(f"actor ids must be integers between 1 and 24, got {i!r} in {ids}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"actor ids must be unique, got {ids}")
        return tuple(sorted(int(i) for i in ids))

    @property
    def num_frames(self) -> int:
        """Frames per video clip, ``round(seconds * fps)``."""
        return int(round(self.seconds * self.fps))

    @property
    def num_samples(self) -> int:
        """Samples per audio clip, ``round(seconds * sample_rate)``."""
        return int(round(self.seconds * self.sample_rate))
