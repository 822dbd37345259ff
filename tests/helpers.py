"""Test helpers: RAVDESS names and fake trees."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def ravdess_name(modality: int, emotion: int, intensity: int, statement: int, repetition: int,
                 actor: int, vocal: int = 1) -> str:
    ext = ".wav" if modality == 3 else ".mp4"
    return f"{modality:02d}-{vocal:02d}-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}{ext}"


def speech_keys(actors: Iterable[int]):
    """All 60 speech recordings per actor as (emotion, intensity, statement, repetition, actor)."""
    for a in actors:
        for e in range(1, 9):
            for i in ((1,) if e == 1 else (1, 2)):
                for s in (1, 2):
                    for r in (1, 2):
                        yield e, i, s, r, a


def write_fake_corpus(root: Path, actors: Iterable[int] = (1, 2), modalities=(1, 2, 3)) -> Path:
    """A tree laid out like the Zenodo archives with 1-byte placeholder files (no media)."""
    for e, i, s, r, a in speech_keys(actors):
        for m in modalities:
            folder = root / (f"Audio_Speech_Actors_01-24/Actor_{a:02d}" if m == 3 else f"Video_Speech_Actor_{a:02d}/Actor_{a:02d}")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ravdess_name(m, e, i, s, r, a)).write_bytes(b"x")
    return root
