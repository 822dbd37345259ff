"""Batched featurisation on the training device: ``uint8`` frames and ``int16`` audio in, model tensors out.

A dataset built with ``raw=True`` (:class:`~emolab.data.datasets.RavdessAVDataset`)
leaves the per-sample float work out of the DataLoader workers: they read the
cache and draw the augmentation parameters, nothing more, and ship 4x less
data. :class:`BatchFeaturizer` does the rest once per batch, where the model
runs::

    ds = RavdessMelDataset(pairs, augment=True, raw=True)
    featurize = BatchFeaturizer.for_dataset(ds)
    for batch in make_loader(ds, 16):
        batch = featurize(batch, device)        # adds float "video" and "audio"
        out = forward_batch(model, batch)

It applies, in order: ``uint8 -> [0, 1]``, the video augmentation of the batch
(:func:`~emolab.data.augment.apply_video_batch`), ImageNet normalisation;
``int16 -> float``, noise at the drawn SNRs
(:meth:`~emolab.data.audio.AudioNoise.apply_batch`), log-Mel (Mel datasets).
The result equals the dataset's plain path (``raw=False``) up to float
rounding; ``tests/test_features.py`` checks frames, log-Mel and the loss.

The video comes out *channels-last* (``(B, T, 3, H, W)`` whose frames are laid
out ``H, W, 3`` in memory, as the cache stores them), which is what convolutions
with ``torch.channels_last`` weights want; pass ``channels_last=False`` for
contiguous tensors. No step needs a host-device synchronisation: per-clip
decisions come from the CPU copies of the parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from emolab.data.audio import AudioNoise, log_mel
from emolab.data.augment import apply_video_batch
from emolab.data.handover import OneSegment, stack_batch
from emolab.data.video import normalize
from emolab.utils.lru import ByteLRU

__all__ = ["BatchFeaturizer", "RAW_KEYS", "collate_raw", "unpack_augment"]

#: Keys of a raw batch that featurisation consumes.
RAW_KEYS = ("video_u8", "video_aug", "audio_i16", "audio_scale", "audio_aug", "audio_key", "aug_f", "aug_i")

# Columns of the packed augmentation parameters of a raw loader batch (see collate_raw).
_AUG_F = (("video_aug", "brightness", 0.0), ("video_aug", "noise_scale", 0.0), ("audio_aug", "snr_db", float("nan")))
_AUG_I = (("video_aug", "blur_kernel", 0), ("video_aug", "noise_seed", 0), ("audio_aug", "start", 0),
          ("audio_aug", "seed", 0))


def collate_raw(samples: list[dict[str, Any] | None]) -> dict[str, Any] | OneSegment | None:
    """Collate raw samples into few tensors, for a cheap hand-over from DataLoader workers.

    Like :func:`~emolab.data.datasets.collate_skip_failed` (failed samples are
    dropped, ``num_skipped`` counts them), but the per-clip augmentation
    parameters become two tensors, ``aug_f`` float32 ``(B, 3)`` and ``aug_i``
    int64 ``(B, 4)`` (:func:`unpack_augment` restores them; a missing op is a
    no-op), and ``meta`` keeps ``index`` as a tensor and the other fields as
    lists. Inside a DataLoader worker every tensor of the batch is stacked into
    one shared-memory segment (:mod:`emolab.data.handover`), which the training
    process receives in one piece and sees as the same plain dict.
    """
    good = [s for s in samples if s is not None]
    if not good:
        return None
    rows_f, rows_i = [], []
    augmented = any("video_aug" in s or "audio_aug" in s for s in good)
    columns: dict[str, Any] = {}
    metas = []
    for s in good:
        s = dict(s)
        params = {name: s.pop(name, {}) for name in ("video_aug", "audio_aug")}
        if augmented:
            rows_f.append([float(params[g].get(k, d)) for g, k, d in _AUG_F])
            rows_i.append([int(params[g].get(k, d)) for g, k, d in _AUG_I])
        metas.append(s.pop("meta"))
        for k, v in s.items():
            columns.setdefault(k, []).append(v)
    for k, col in columns.items():  # numbers (label, audio_length) become tensors, as default_collate makes them
        if isinstance(col[0], (bool, int, float)):
            columns[k] = torch.as_tensor(col)
    meta: dict[str, Any] = {k: [m[k] for m in metas] for k in metas[0]}
    meta["index"] = torch.tensor(meta["index"], dtype=torch.int64)
    columns["meta"] = meta
    if augmented:
        columns["aug_f"] = torch.tensor(rows_f, dtype=torch.float32)
        columns["aug_i"] = torch.tensor(rows_i, dtype=torch.int64)
    columns["num_skipped"] = len(samples) - len(good)
    return stack_batch(columns, one_segment=torch.utils.data.get_worker_info() is not None)


def unpack_augment(batch: Mapping[str, Any]) -> tuple[dict[str, Tensor] | None, dict[str, Tensor] | None]:
    """The ``(video_aug, audio_aug)`` parameter dicts of a batch, packed (:func:`collate_raw`) or not."""
    if "aug_f" not in batch:
        return batch.get("video_aug"), batch.get("audio_aug")
    out: dict[str, dict[str, Tensor]] = {"video_aug": {}, "audio_aug": {}}
    for cols, packed in ((_AUG_F, batch["aug_f"]), (_AUG_I, batch["aug_i"])):
        for j, (group, key, _default) in enumerate(cols):
            out[group][key] = packed[:, j]
    return out["video_aug"], out["audio_aug"]


def _tensor_bytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class BatchFeaturizer:
    """Turn a raw batch into model inputs on ``device``.

    Args:
        audio_kind: ``"mel"`` (log-Mel ``(B, 1, n_mels, F)``) or ``"wave"`` (``(B, 1, N)``).
        sample_rate, n_mels: as in :class:`~emolab.data.datasets.DataConfig`.
        audio_noise: the noise source of the training set; needed when batches
            carry ``audio_aug``.
        channels_last: keep the video channels-last (default) or make it contiguous.
        mel_memory_bytes: bound of the memory of clean log-Mels (0 turns it off).

    On the CPU the log-Mel is the largest part of featurising an audio batch,
    and a clip drawn clean (every evaluation clip, about half of the training
    clips) always gives the same one. Batches carry each clip's ``audio_key``
    (the audio cache key: file identity and settings), so the featuriser keeps
    the log-Mels of clean clips in an LRU memory and computes only the others.
    On CUDA it computes every log-Mel (cheap there; device memory is not spent).
    """

    def __init__(
        self,
        audio_kind: str = "mel",
        *,
        sample_rate: int = 16000,
        n_mels: int = 64,
        audio_noise: AudioNoise | None = None,
        channels_last: bool = True,
        mel_memory_bytes: int = 256 << 20,
    ) -> None:
        if audio_kind not in ("mel", "wave"):
            raise ValueError(f"audio_kind must be 'mel' or 'wave', got {audio_kind!r}")
        self.audio_kind = audio_kind
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.audio_noise = audio_noise
        self.channels_last = channels_last
        self._mel_memory: ByteLRU[Tensor] = ByteLRU(mel_memory_bytes, _tensor_bytes)

    @classmethod
    def for_dataset(cls, dataset: Any, *, channels_last: bool = True) -> BatchFeaturizer:
        """The featuriser matching a :class:`~emolab.data.datasets.RavdessAVDataset`."""
        c = dataset.config
        return cls(
            dataset.audio_kind,
            sample_rate=c.sample_rate,
            n_mels=c.n_mels,
            audio_noise=getattr(dataset, "audio_noise", None),
            channels_last=channels_last,
        )

    def __repr__(self) -> str:
        return (f"BatchFeaturizer(audio_kind={self.audio_kind!r}, n_mels={self.n_mels}, "
                f"noise={getattr(self.audio_noise, 'source', None)!r}, channels_last={self.channels_last})")

    def video(self, frames: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """uint8 ``(B, T, H, W, 3)`` on the device -> normalised float ``(B, T, 3, H, W)``."""
        if frames.dim() != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames of shape (B, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        video = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)  # strides stay channels-last
        if params is not None:
            video = apply_video_batch(video, dict(params))
        video = normalize(video)
        return video if self.channels_last else video.contiguous()

    def wave(self, samples: Tensor, scale: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """int16 ``(B, 1, N)`` and per-clip scales ``(B,)`` -> float waves, noise mixed in when ``params``."""
        if samples.dtype != torch.int16:
            raise ValueError(f"expected int16 audio samples, got {samples.dtype}")
        factor = scale.to(device=samples.device, dtype=torch.float32, non_blocking=True) / 32767.0
        wave = samples * factor.view(-1, *([1] * (samples.dim() - 1)))  # int16 * float32 -> float32, one pass
        if params is not None:
            if self.audio_noise is None:
                raise ValueError("the batch carries audio augmentation parameters but the featurizer has no noise source")
            wave = self.audio_noise.apply_batch(wave, dict(params), inplace=True)  # `wave` is ours
        return wave

    def log_mel(self, samples: Tensor, scale: Tensor, params: Mapping[str, Tensor] | None = None,
                keys: list[str] | None = None) -> Tensor:
        """int16 ``(B, 1, N)`` -> log-Mel ``(B, 1, n_mels, F)``, clean clips' from memory where ``keys`` name them."""
        use_memory = keys is not None and self.mel_memory_bytes > 0 and samples.device.type == "cpu"
        if not use_memory:
            return log_mel(self.wave(samples, scale, params), sample_rate=self.sample_rate, n_mels=self.n_mels)
        assert keys is not None
        clean = [True] * len(keys) if params is None else torch.isnan(params["snr_db"].cpu()).tolist()
        memory = self._mel_memory
        hits = {i: m for i, k in enumerate(keys) if clean[i] and (m := memory.get(k)) is not None}
        if len(hits) == len(keys):
            return torch.stack([hits[i] for i in range(len(keys))])
        todo = [i for i in range(len(keys)) if i not in hits]
        if hits:
            rows = torch.tensor(todo)
            samples, scale = samples[rows], scale[rows]
            params = None if params is None else {k: v[rows] for k, v in params.items()}
        mel = log_mel(self.wave(samples, scale, params), sample_rate=self.sample_rate, n_mels=self.n_mels)
        for j, i in enumerate(todo):
            if clean[i]:
                memory.put(keys[i], mel[j].clone())  # a copy: not a view keeping the batch alive
        if not hits:
            return mel
        out = mel.new_empty((len(keys), *mel.shape[1:]))
        out[rows] = mel
        for i, m in hits.items():
            out[i] = m
        return out

    @property
    def mel_memory_bytes(self) -> int:
        """Bound of the memory of clean log-Mels (0: off)."""
        return self._mel_memory.max_bytes

    @mel_memory_bytes.setter
    def mel_memory_bytes(self, value: int) -> None:
        self._mel_memory = ByteLRU(value, _tensor_bytes)

    def __call__(self, batch: Mapping[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
        """A copy of ``batch`` with ``video``/``audio`` built from its raw keys (moved to ``device``).

        Batches without raw keys (a plain dataset's) pass through unchanged, so
        callers need not know which kind of dataset fed them.
        """
        out = {k: v for k, v in batch.items() if k not in RAW_KEYS}
        video_aug, audio_aug = unpack_augment(batch)
        if audio_aug is not None and self.audio_noise is None and bool(torch.isnan(audio_aug["snr_db"]).all()):
            audio_aug = None  # nothing to mix (e.g. a packed batch of a dataset without audio noise)
        if "video_u8" in batch:
            frames = batch["video_u8"].to(device or "cpu", non_blocking=True)
            out["video"] = self.video(frames, video_aug)
        if "audio_i16" in batch:
            samples = batch["audio_i16"].to(device or "cpu", non_blocking=True)
            if self.audio_kind == "mel":
                out["audio"] = self.log_mel(samples, batch["audio_scale"], audio_aug, batch.get("audio_key"))
            else:
                out["audio"] = self.wave(samples, batch["audio_scale"], audio_aug)
        return out
