"""Test helpers: RAVDESS names, fake trees (names only) and the small cross-validation corpus."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Iterable

from emolab.train.callbacks import Callback


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


#: Processes that generate the test corpora (``generate_demo_corpus(workers=...)``): both cores of a 2-core CI
#: machine; a corpus is the same file for file whatever the count (test_demo's determinism test checks it).
CORPUS_WORKERS = 2

#: One actor in each six_fold block (1-4, 5-8, ...) and in each luna5 fold.
CV_ACTORS = (2, 6, 10, 14, 17, 22)
RAVDESS_FILE = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.(mp4|wav)")


def make_cv_corpus(root: Path, actors=CV_ACTORS) -> Path:
    """Two generated actors copied under other actor ids; statement 1, repetition 1 only (15 pairs per actor)."""
    from emolab.data.synthetic import DemoConfig, generate_demo_corpus

    src = root / "src"
    generate_demo_corpus(src, DemoConfig(actors=(1, 2), size=(64, 48), seconds=1.0, fps=8.0, seed=0, noise=False),
                         workers=CORPUS_WORKERS, progress=False)
    out = root / "corpus"
    for f in sorted(src.rglob("*")):
        m = RAVDESS_FILE.fullmatch(f.name)
        if not m or m.group(1) == "01" or m.group(5) != "01" or m.group(6) != "01":
            continue
        for k, actor in enumerate(actors):
            if int(m.group(7)) == 1 + k % 2:
                dst = out / f"Actor_{actor:02d}" / f"{f.name[:-6]}{actor:02d}.{m.group(8)}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst)
    return out


class InterruptAfter(Callback):
    """A trainer callback that simulates Ctrl-C at the end of an epoch (after ``last.pt`` was written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, record) -> None:
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt
