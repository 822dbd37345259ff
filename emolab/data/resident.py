"""The device-resident warm data path: a split's decoded clips as tensors on the training device.

Once a split is decoded (:func:`~emolab.data.loaders.warm_cache`), what a
batch needs of it is small: RAVDESS speech is about 560 MB of ``uint8`` frames
and ``int16`` audio (1440 clips x 8x112x112x3 + 3 s at 16 kHz). The loader
path (:func:`~emolab.data.loaders.make_loader`) still reads every item from the
frame cache, copies it into a worker's batch, hands the batch to the training
process and then to the device, every step. This path does it once:
:class:`ResidentClips` stacks the split into tensors on the training device
(:func:`resident_device` says where), and a batch is an ``index_select`` on
that device, with no loader workers.

The batches are those of the loader path, key for key and value for value
(``tests/test_resident.py`` checks it): :func:`make_resident_loader` is a
``DataLoader`` with the same seeded sampler (so the same order), the
augmentation draws come from the dataset's own
:meth:`~emolab.data.datasets.RavdessAVDataset.draws` (seeded by
``(seed, epoch, index)``), and the same
:class:`~emolab.data.features.BatchFeaturizer` applies them where the tensors
are. The draws themselves stay on the CPU, as the loader path ships them: the
featuriser decides per clip from them without a host-device synchronisation
(a few bytes per clip, copied non-blocking, are the only host-to-device
traffic of a step on a GPU).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from emolab.data.audio import AudioReadError
from emolab.data.video import VideoReadError

log = logging.getLogger(__name__)

__all__ = ["GPU_FRACTION", "ResidentClips", "make_resident_loader", "resident_bytes", "resident_device"]

#: The share of the GPU's free memory a resident split may take; beyond it, the split stays in pinned host memory.
GPU_FRACTION = 0.25

_META_INTS = ("actor", "emotion", "intensity", "statement", "repetition")


def resident_bytes(num_clips: int, num_frames: int, frame_size: int, num_samples: int,
                   modalities: Sequence[str] = ("audio", "video")) -> int:
    """Bytes a resident split of ``num_clips`` takes: uint8 frames, validity masks, int16 audio, scales, lengths."""
    per = 16  # label and audio length (int64)
    if "video" in modalities:
        per += num_frames * frame_size * frame_size * 3 + num_frames
    if "audio" in modalities:
        per += 2 * num_samples + 4
    return num_clips * per


def resident_device(nbytes: int, device: torch.device | str) -> tuple[torch.device, bool]:
    """Where a resident split of ``nbytes`` lives for a model on ``device``: ``(device, pinned)``.

    On the CPU it is the CPU (plain memory). On a GPU it is the GPU when the
    split takes at most :data:`GPU_FRACTION` of its free memory
    (``torch.cuda.mem_get_info``), which leaves the rest to the model's
    weights, optimiser state and activations (RAVDESS's 560 MB is 0.4 % of an
    H200, 7 % of an 8 GB card); otherwise pinned host memory, from which each
    batch is copied to the GPU non-blocking (the only case with a per-step
    copy of frames and audio).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return torch.device("cpu"), False
    free, _total = torch.cuda.mem_get_info(device)
    if nbytes <= GPU_FRACTION * free:
        return device, False
    log.info("resident split of %.0f MB exceeds %.0f%% of the GPU's %.0f MB free: pinned host memory",
             nbytes / 2**20, 100 * GPU_FRACTION, free / 2**20)
    return torch.device("cpu"), True


class ResidentClips(Dataset):
    """A decoded split as tensors on one device; :meth:`__getitems__` draws a whole batch by index.

    Args:
        dataset: a :class:`~emolab.data.datasets.RavdessAVDataset` (its cache
            is read once per clip; a warm cache makes this fast).
        device: the training device; the tensors go there, or to pinned host
            memory (:func:`resident_device`).

    It answers what the trainer and the featuriser ask of a dataset
    (``audio_kind``, ``config``, ``audio_noise``, ``modalities``, ``pairs``,
    ``set_epoch``); :attr:`source` is the wrapped dataset.

    Raises:
        ValueError: a clip that does not decode (naming the file and the
            problem); :func:`~emolab.data.loaders.warm_cache` lists those
            first so that the caller can leave their pairs out.
    """

    def __init__(self, dataset: Any, device: torch.device | str = "cpu") -> None:
        self.source = dataset
        n, c = len(dataset), dataset.config
        mods = tuple(dataset.modalities)
        need = resident_bytes(n, c.num_frames, c.frame_size, dataset.num_samples, mods)
        self.device, self.pinned = resident_device(need, device)
        self.nbytes = need
        host: dict[str, torch.Tensor] = {"label": torch.empty(n, dtype=torch.int64)}
        if "video" in mods:
            host["video_u8"] = torch.empty((n, c.num_frames, c.frame_size, c.frame_size, 3), dtype=torch.uint8)
            host["video_valid"] = torch.empty((n, c.num_frames), dtype=torch.bool)
        if "audio" in mods:
            host["audio_i16"] = torch.empty((n, 1, dataset.num_samples), dtype=torch.int16)
            host["audio_scale"] = torch.empty(n, dtype=torch.float32)
            host["audio_length"] = torch.empty(n, dtype=torch.int64)
        for i in range(n):
            self._fill(host, i)
        for k, v in host.items():
            host[k] = v.pin_memory() if self.pinned else v.to(self.device)
        self.tensors = host
        pairs = dataset.pairs
        self.meta_ints = {k: torch.tensor([getattr(r, k) for r in pairs], dtype=torch.int64) for k in _META_INTS}
        self.meta_paths = {k: [str(getattr(r, k)) for r in pairs] for k in ("video_path", "audio_path")}

    def _fill(self, host: dict[str, torch.Tensor], i: int) -> None:
        ds = self.source
        rec = ds.pairs[i]
        path = rec.video_path
        try:
            if "video_u8" in host:
                clip = ds.frames(i)
                host["video_u8"][i] = torch.from_numpy(clip.frames)
                host["video_valid"][i] = torch.as_tensor(clip.valid, dtype=torch.bool)
            if "audio_i16" in host:
                path = rec.audio_path
                sound = ds.audio_clip(i)
                host["audio_i16"][i] = torch.from_numpy(sound.samples)
                host["audio_scale"][i] = float(sound.scale)
                host["audio_length"][i] = int(sound.length)
        except (VideoReadError, AudioReadError, OSError) as e:
            raise ValueError(f"{path}: cannot be made resident: {e} (leave the pair out: warm_cache lists such files)"
                             ) from e
        host["label"][i] = rec.label(ds.num_classes)

    # ------------------------------------------------------------------ what a dataset answers
    def __len__(self) -> int:
        return len(self.source)

    @property
    def pairs(self) -> Any:
        return self.source.pairs

    @property
    def config(self) -> Any:
        return self.source.config

    @property
    def audio_kind(self) -> str:
        return self.source.audio_kind

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def n_mels(self) -> int:
        return self.source.n_mels

    @property
    def audio_noise(self) -> Any:
        return self.source.audio_noise

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.source.modalities)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of an epoch (those of the loader path in that epoch)."""
        self.source.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """One item, as the wrapped dataset gives it (previews); training reads whole batches (:meth:`__getitems__`)."""
        return self.source[index]

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch of ``indices``: what ``collate_skip_failed`` makes of the loader path's items."""
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        on = idx.to(self.device, non_blocking=True) if self.device.type != "cpu" else idx
        batch: dict[str, Any] = {k: v.index_select(0, on) for k, v in self.tensors.items()}
        draws = [self.source.draws(i) for i in idx.tolist()]
        batch["aug_f"] = torch.stack([d["aug_f"] for d in draws])
        batch["aug_i"] = torch.stack([d["aug_i"] for d in draws])
        meta: dict[str, Any] = {k: v.index_select(0, idx) for k, v in self.meta_ints.items()}
        meta.update({k: [v[i] for i in idx.tolist()] for k, v in self.meta_paths.items()})
        meta["index"] = idx
        batch["meta"] = meta
        batch["num_skipped"] = 0
        return batch


def _batch_as_is(batch: Any) -> Any:
    return batch


def make_resident_loader(
    dataset: Any,
    batch_size: int,
    *,
    device: torch.device | str = "cpu",
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A loader of whole batches drawn from a :class:`ResidentClips` of ``dataset`` (made here unless it is one).

    It is a ``DataLoader`` without workers whose sampler is
    :func:`~emolab.data.loaders.make_loader`'s (a generator seeded by ``seed``,
    or the given ``sampler``), so that both paths visit the clips in the same
    order; the dataset's ``__getitems__`` builds each batch at once.
    """
    resident = dataset if isinstance(dataset, ResidentClips) else ResidentClips(dataset, device)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(resident, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                      sampler=sampler, num_workers=0, drop_last=drop_last, generator=generator,
                      collate_fn=_batch_as_is)
