"""DataLoaders over the datasets: collation, worker policy, and the parallel decode-once pass.

:func:`make_loader` builds emolab's DataLoader (worker policy of SPEC §4, seeded
shuffling, raw items collated by :func:`torch.utils.data.default_collate` once
failed ones are dropped); :func:`warm_cache` decodes every clip of a dataset
once, in parallel, before training reads the cache.

This module does not import :mod:`emolab.data.datasets`: it reads datasets
through what they provide (:class:`CachedClips`), so that the datasets layer
sits above it.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from emolab.data.audio import AudioReadError
from emolab.data.cache import FrameCache
from emolab.data.ravdess import PairRecord, Problem, strip_path
from emolab.data.video import ClipFrames, DecodeStats, VideoReadError

log = logging.getLogger(__name__)

__all__ = ["CachedClips", "FramePassReport", "collate_skip_failed", "loads_in_process", "make_loader",
           "resolve_num_workers", "warm_cache"]


class CachedClips(Protocol):
    """What :func:`warm_cache` needs of a dataset (:class:`~emolab.data.datasets.RavdessAVDataset` has it)."""

    pairs: Sequence[PairRecord]
    modalities: tuple[str, ...]
    cache: FrameCache

    def __len__(self) -> int: ...

    def frames(self, index: int) -> ClipFrames: ...

    def audio_clip(self, index: int) -> Any: ...


def collate_skip_failed(samples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Collate raw items with :func:`torch.utils.data.default_collate`, dropping those that failed to load.

    Returns the batch with an extra ``num_skipped`` int, or ``None`` when every
    sample of the batch failed.
    """
    good = [s for s in samples if s is not None]
    if not good:
        return None
    batch = torch.utils.data.default_collate(good)
    batch["num_skipped"] = len(samples) - len(good)
    return batch


def _is_wsl() -> bool:
    if platform.system() != "Linux":
        return False
    if "microsoft" in platform.release().lower():
        return True
    try:
        return "microsoft" in Path("/proc/version").read_text().lower()
    except OSError:
        return False


def loads_in_process(dataset: Any) -> bool:
    """Whether auto workers leave ``dataset`` to the training process: a log-Mel dataset that reads audio only.

    Its items are cache reads and a few random draws (0.1–0.2 ms each, 1.1–1.5 ms
    a batch of 8), which costs less than handing a batch over from a worker
    process, and worker processes take CPU time from the model's threads. On 2
    cores the audio CNN trains at 0.87 of its compute bound with 2 workers and
    at 0.93 in-process (``benchmarks/README.md``). Its cache should be
    warm (:func:`warm_cache`; the trainer warms it): a cold one is filled
    serially, about 5 ms a clip.
    """
    return getattr(dataset, "audio_kind", None) == "mel" and tuple(getattr(dataset, "modalities", ())) == ("audio",)


def resolve_num_workers(num_workers: int, data_root: str | os.PathLike[str] | None = None,
                        dataset: Any = None) -> int:
    """DataLoader workers; ``-1`` means auto (SPEC §4).

    Auto: Windows 0; WSL with the data under ``/mnt/*`` 0 (the 9P bridge is
    slow and worker start-up dominates); WSL on the Linux filesystem 2; native
    Linux (and macOS) ``min(8, max(2, cpu_count // 2))``. One refinement: 0 for
    a ``dataset`` that :func:`loads_in_process` (the trainer's audio-only log-Mel
    data), which a worker would only slow down.
    """
    if num_workers >= 0:
        return num_workers
    if num_workers != -1:
        raise ValueError(f"num_workers must be >= 0 or -1 (auto), got {num_workers}")
    if dataset is not None and loads_in_process(dataset):
        return 0
    if platform.system() == "Windows":
        return 0
    if _is_wsl():
        root = str(Path(data_root).resolve()) if data_root is not None else os.getcwd()
        return 0 if root.startswith("/mnt/") else 2
    return min(8, max(2, (os.cpu_count() or 1) // 2))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = -1,
    data_root: str | os.PathLike[str] | None = None,
    pin_memory: bool | None = None,
    seed: int = 0,
    drop_last: bool = False,
    sampler: torch.utils.data.Sampler | None = None,
) -> DataLoader:
    """A DataLoader with emolab's defaults.

    ``num_workers=-1`` resolves by :func:`resolve_num_workers` (given the dataset); with workers,
    ``persistent_workers=True`` and ``prefetch_factor=2``. Pinned memory is on
    when CUDA is available unless given. Shuffling uses a generator seeded by
    ``seed``. Failed samples are dropped by :func:`collate_skip_failed`, which
    collates the rest with ``default_collate``.
    """
    workers = resolve_num_workers(num_workers, data_root, dataset)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=2)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=generator,
        collate_fn=collate_skip_failed,
        **kwargs,
    )


@dataclass
class FramePassReport:
    """What the cold decode pass found."""

    clips: int = 0
    failed: list[Problem] = field(default_factory=list)
    #: videos that decode only in part (:attr:`~emolab.data.video.DecodeStats.incomplete`): kept, sampled
    #: from the frames that decode, and listed
    incomplete: list[Problem] = field(default_factory=list)
    faces: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def _identity(x: Any) -> Any:
    return x


class _DecodeOnce(Dataset):
    """Fills the cache with what ``dataset`` reads: frames and/or audio (by its ``modalities``)."""

    def __init__(self, dataset: CachedClips):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, str | None, str | None, str, str | None, DecodeStats | None]:
        ds, face, stats = self.dataset, "", None
        try:
            if "video" in ds.modalities:
                clip = ds.frames(index)
                face, stats = clip.face, clip.decode
        except (VideoReadError, OSError) as e:
            return index, str(ds.pairs[index].video_path), str(e), "", ds.cache.write_error, None
        try:
            if "audio" in ds.modalities:
                ds.audio_clip(index)
        except (AudioReadError, OSError) as e:
            return index, str(ds.pairs[index].audio_path), str(e), face, ds.cache.write_error, stats
        return index, None, None, face, ds.cache.write_error, stats


def warm_cache(
    dataset: CachedClips,
    *,
    num_workers: int = -1,
    progress: bool = True,
) -> FramePassReport:
    """Decode every clip of ``dataset`` once into its cache (frames and audio it reads), in parallel.

    This is the cold pass; later epochs read the cache. Files that fail to
    decode are returned in the report (file and problem), so the caller can
    leave their pairs out before training. Videos that decode only in part
    (a decoder error mid-stream, or under 90% of the frames their container
    declares) are kept, sampled from the frames that decode, and listed in
    ``report.incomplete`` with both counts; the counts are cached with the
    frames, so every run reports them.
    """
    t0 = time.perf_counter()
    # Workers fill the shared disk cache; a memory-only cache (or one whose folder cannot be
    # written: it warns once and goes memory-only) must be filled here.
    cache = dataset.cache
    workers = resolve_num_workers(num_workers) if cache.check_writable() else 0
    loader = DataLoader(_DecodeOnce(dataset), batch_size=None, num_workers=workers, collate_fn=_identity)
    report = FramePassReport(clips=len(dataset))
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, total=len(dataset), desc="decoding clips (once)", unit="clip")
    for index, path, error, face, write_error, stats in it:
        if write_error is not None:  # a worker's write failed (disk full): one warning, here
            cache.disable_writes(write_error)
        if stats is not None and stats.incomplete:
            report.incomplete.append(Problem(str(dataset.pairs[index].video_path), stats.describe()))
        if error is not None:
            report.failed.append(Problem(path, strip_path(error, path)))
        if face:  # the video decoded (its audio may still have failed)
            report.faces[face] += 1
    report.seconds = time.perf_counter() - t0
    return report
