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
from emolab.data.video import normalize

__all__ = ["BatchFeaturizer", "RAW_KEYS", "collate_raw", "unpack_augment"]

#: Keys of a raw batch that featurisation consumes.
RAW_KEYS = ("video_u8", "video_aug", "audio_i16", "audio_scale", "audio_aug", "aug_f", "aug_i")

# Columns of the packed augmentation parameters of a raw loader batch (see collate_raw).
_AUG_F = (("video_aug", "brightness", 0.0), ("video_aug", "noise_scale", 0.0), ("audio_aug", "snr_db", float("nan")))
_AUG_I = (("video_aug", "blur_kernel", 0), ("video_aug", "noise_seed", 0), ("audio_aug", "start", 0),
          ("audio_aug", "seed", 0))


def collate_raw(samples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Collate raw samples into few tensors, for a cheap hand-over from DataLoader workers.

    Like :func:`~emolab.data.datasets.collate_skip_failed` (failed samples are
    dropped, ``num_skipped`` counts them), but the per-clip augmentation
    parameters become two tensors, ``aug_f`` float32 ``(B, 3)`` and ``aug_i``
    int64 ``(B, 4)`` (:func:`unpack_augment` restores them; a missing op is a
    no-op), and ``meta`` keeps ``index`` as a tensor and the other fields as
    lists. Every tensor of a batch crosses the process boundary as its own
    shared-memory segment, so fewer tensors is what makes the hand-over cheap.
    """
    good = [s for s in samples if s is not None]
    if not good:
        return None
    rows_f, rows_i = [], []
    augmented = any("video_aug" in s or "audio_aug" in s for s in good)
    metas = []
    plain = []
    for s in good:
        s = dict(s)
        params = {name: s.pop(name, {}) for name in ("video_aug", "audio_aug")}
        if augmented:
            rows_f.append([float(params[g].get(k, d)) for g, k, d in _AUG_F])
            rows_i.append([int(params[g].get(k, d)) for g, k, d in _AUG_I])
        metas.append(s.pop("meta"))
        plain.append(s)
    batch = torch.utils.data.default_collate(plain)
    batch["meta"] = {k: [m[k] for m in metas] for k in metas[0]}
    batch["meta"]["index"] = torch.tensor(batch["meta"]["index"], dtype=torch.int64)
    if augmented:
        batch["aug_f"] = torch.tensor(rows_f, dtype=torch.float32)
        batch["aug_i"] = torch.tensor(rows_i, dtype=torch.int64)
    batch["num_skipped"] = len(samples) - len(good)
    return batch


def unpack_augment(batch: Mapping[str, Any]) -> tuple[dict[str, Tensor] | None, dict[str, Tensor] | None]:
    """The ``(video_aug, audio_aug)`` parameter dicts of a batch, packed (:func:`collate_raw`) or not."""
    if "aug_f" not in batch:
        return batch.get("video_aug"), batch.get("audio_aug")
    out: dict[str, dict[str, Tensor]] = {"video_aug": {}, "audio_aug": {}}
    for cols, packed in ((_AUG_F, batch["aug_f"]), (_AUG_I, batch["aug_i"])):
        for j, (group, key, _default) in enumerate(cols):
            out[group][key] = packed[:, j]
    return out["video_aug"], out["audio_aug"]


class BatchFeaturizer:
    """Turn a raw batch into model inputs on ``device``.

    Args:
        audio_kind: ``"mel"`` (log-Mel ``(B, 1, n_mels, F)``) or ``"wave"`` (``(B, 1, N)``).
        sample_rate, n_mels: as in :class:`~emolab.data.datasets.DataConfig`.
        audio_noise: the noise source of the training set; needed when batches
            carry ``audio_aug``.
        channels_last: keep the video channels-last (default) or make it contiguous.
    """

    def __init__(
        self,
        audio_kind: str = "mel",
        *,
        sample_rate: int = 16000,
        n_mels: int = 64,
        audio_noise: AudioNoise | None = None,
        channels_last: bool = True,
    ) -> None:
        if audio_kind not in ("mel", "wave"):
            raise ValueError(f"audio_kind must be 'mel' or 'wave', got {audio_kind!r}")
        self.audio_kind = audio_kind
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.audio_noise = audio_noise
        self.channels_last = channels_last

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
        wave = samples.float() * factor.view(-1, *([1] * (samples.dim() - 1)))
        if params is not None:
            if self.audio_noise is None:
                raise ValueError("the batch carries audio augmentation parameters but the featurizer has no noise source")
            wave = self.audio_noise.apply_batch(wave, dict(params))
        return wave

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
            wave = self.wave(samples, batch["audio_scale"], audio_aug)
            if self.audio_kind == "mel":
                out["audio"] = log_mel(wave, sample_rate=self.sample_rate, n_mels=self.n_mels)
            else:
                out["audio"] = wave
        return out
