"""The one featuriser: raw batches (``uint8`` frames, ``int16`` audio, flat draws) in, model inputs out.

The data path from file to model is::

    file --(decode once, cache)--> raw item --default_collate--> raw batch --BatchFeaturizer--> model inputs

A dataset item (:class:`~emolab.data.datasets.RavdessAVDataset`) is what the
cache holds plus the augmentation draws: ``video_u8`` ``(T, S, S, 3)``,
``audio_i16`` ``(1, N)`` with ``audio_scale``, and ``aug_f``/``aug_i``
(:func:`~emolab.data.augment.flat_draws`). DataLoader workers do nothing else,
and :func:`torch.utils.data.default_collate` stacks the items.
:class:`BatchFeaturizer` then does all float work once per batch, on the
device where the model runs, for every consumer alike (trainer, evaluation,
prediction, robustness, notebook analysis, benchmarks)::

    featurize = BatchFeaturizer.for_dataset(ds)
    for batch in make_loader(ds, 16):
        batch = featurize(batch, device)        # adds float "video" and "audio"
        out = forward_batch(model, batch)

It applies, in order: ``uint8 -> [0, 1]``, the drawn video augmentation
(:func:`~emolab.data.augment.apply_video_batch`), a test-time
:class:`Condition` if one is set, ImageNet normalisation; ``int16 -> float``,
noise at the drawn SNRs (or the condition's,
:meth:`~emolab.data.noise.AudioNoise.apply_batch`), log-Mel (torchaudio's
``MelSpectrogram`` + ``AmplitudeToDB``, :func:`~emolab.data.audio.log_mel`).
``featurize.item(dataset[i])`` does the same for one item (previews).

The video comes out *channels-last* (``(B, T, 3, H, W)`` whose frames are laid
out ``H, W, 3`` in memory, as the cache stores them), which is what convolutions
with ``torch.channels_last`` weights want; pass ``channels_last=False`` for
contiguous tensors. No step needs a host-device synchronisation: per-clip
decisions come from the CPU copies of the parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from emolab.data.audio import log_mel
from emolab.data.augment import apply_video_batch, attenuate_brightness, gaussian_blur, split_draws
from emolab.data.noise import AudioNoise
from emolab.data.video import IMAGENET_MEAN, normalize

__all__ = ["BatchFeaturizer", "Condition", "RAW_KEYS"]

#: Keys of a raw batch that featurisation consumes (the featurised batch has ``video``/``audio`` instead).
RAW_KEYS = ("video_u8", "audio_i16", "audio_scale", "aug_f", "aug_i")


@dataclass(frozen=True)
class Condition:
    """A fixed test-time condition, the same for every clip: noise at one SNR, degraded, occluded or missing input.

    It replaces what a clip drew (test sets draw nothing) and is applied by the
    same featuriser as the training augmentations (the same blur, brightness
    and noise mixing functions).

    Attributes:
        snr_db: mix noise in at exactly this SNR (None: clean). The excerpt of
            clip ``index`` comes from ``default_rng([noise_seed, index, level])``
            with ``level = round(10 snr_db) + 10000`` (:meth:`noise_draw`), so every
            level and clip is reproducible whatever the batch order.
        noise_seed: base seed of the excerpts.
        blur_kernel: Gaussian blur kernel side in pixels of the frames (odd; 0 or 1: none).
        brightness: attenuation, pixels times ``1 - brightness`` (0: none).
        occlusion: ``(y0, y1, x0, x1)`` pixels (end excluded) painted with ``fill``.
        fill: the occlusion colour in [0, 1] RGB (default: the ImageNet mean, 0 once normalised).
        drop: ``"audio"`` (a silent wave: -100 dB log-Mel) or ``"video"`` (zeros once
            normalised) for a missing modality; lengths and validity masks are kept.
    """

    snr_db: float | None = None
    noise_seed: int = 0
    blur_kernel: int = 0
    brightness: float = 0.0
    occlusion: tuple[int, int, int, int] | None = None
    fill: tuple[float, float, float] = IMAGENET_MEAN
    drop: str | None = None

    def __post_init__(self) -> None:
        if self.drop not in (None, "audio", "video"):
            raise ValueError(f"Condition.drop must be None, 'audio' or 'video', got {self.drop!r}")
        if self.blur_kernel < 0 or (self.blur_kernel > 1 and self.blur_kernel % 2 == 0):
            raise ValueError(f"Condition.blur_kernel must be 0 or an odd positive int, got {self.blur_kernel}")

    def noise_draw(self, noise: AudioNoise, index: int, length: int) -> tuple[int, int]:
        """``(start, seed)`` of clip ``index``'s noise excerpt at this condition's SNR."""
        assert self.snr_db is not None
        level = int(round(self.snr_db * 10)) + 10_000
        return noise.sample_excerpt(length, np.random.default_rng([self.noise_seed, int(index), level]))

    def apply_video(self, video: Tensor) -> Tensor:
        """Blur, attenuate and occlude [0, 1] frames ``(..., 3, H, W)`` (before normalisation)."""
        if self.blur_kernel > 1:
            video = gaussian_blur(video, self.blur_kernel)
        if self.brightness:
            video = attenuate_brightness(video, self.brightness)
        if self.occlusion is not None:
            y0, y1, x0, x1 = self.occlusion
            video = video.clone()
            video[..., y0:y1, x0:x1] = torch.tensor(self.fill, dtype=video.dtype, device=video.device).view(3, 1, 1)
        return video


class BatchFeaturizer:
    """Turn a raw batch into model inputs on ``device``.

    Args:
        audio_kind: ``"mel"`` (log-Mel ``(B, 1, n_mels, F)``) or ``"wave"`` (``(B, 1, N)``).
        sample_rate: as in :class:`~emolab.data.datasets.DataConfig`.
        n_mels: Mel bands (a dataset's ``n_mels``, the model's).
        audio_noise: the noise source; needed when clips drew noise or the condition mixes it.
        channels_last: keep the video channels-last (default) or make it contiguous.
        condition: a test-time :class:`Condition` applied to every batch (None: the drawn augmentation only).
    """

    def __init__(
        self,
        audio_kind: str = "mel",
        *,
        sample_rate: int = 16000,
        n_mels: int = 64,
        audio_noise: AudioNoise | None = None,
        channels_last: bool = True,
        condition: Condition | None = None,
    ) -> None:
        if audio_kind not in ("mel", "wave"):
            raise ValueError(f"audio_kind must be 'mel' or 'wave', got {audio_kind!r}")
        self.audio_kind = audio_kind
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.audio_noise = audio_noise
        self.channels_last = channels_last
        self.condition = condition

    @classmethod
    def for_dataset(cls, dataset: Any, *, channels_last: bool = True, audio_noise: AudioNoise | None = None,
                    condition: Condition | None = None) -> BatchFeaturizer:
        """The featuriser matching a :class:`~emolab.data.datasets.RavdessAVDataset` (its noise source unless given)."""
        c = dataset.config
        return cls(
            dataset.audio_kind,
            sample_rate=c.sample_rate,
            n_mels=dataset.n_mels,
            audio_noise=audio_noise if audio_noise is not None else getattr(dataset, "audio_noise", None),
            channels_last=channels_last,
            condition=condition,
        )

    def with_condition(self, condition: Condition | None) -> BatchFeaturizer:
        """A copy of this featuriser with another test-time condition."""
        return BatchFeaturizer(self.audio_kind, sample_rate=self.sample_rate, n_mels=self.n_mels,
                               audio_noise=self.audio_noise, channels_last=self.channels_last, condition=condition)

    def __repr__(self) -> str:
        return (f"BatchFeaturizer(audio_kind={self.audio_kind!r}, n_mels={self.n_mels}, "
                f"noise={getattr(self.audio_noise, 'source', None)!r}, channels_last={self.channels_last}, "
                f"condition={self.condition})")

    def video(self, frames: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """uint8 ``(B, T, H, W, 3)`` on the device -> normalised float ``(B, T, 3, H, W)``."""
        if frames.dim() != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames of shape (B, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        video = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)  # strides stay channels-last
        if params is not None:
            video = apply_video_batch(video, dict(params), inplace=True)  # `video` is ours
        cond = self.condition
        if cond is not None:
            video = cond.apply_video(video)
        video = normalize(video, inplace=True)  # every step above made `video` a tensor of ours
        if cond is not None and cond.drop == "video":
            video = torch.zeros_like(video)
        return video if self.channels_last else video.contiguous()

    def wave(self, samples: Tensor, scale: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """int16 ``(B, 1, N)`` and per-clip scales ``(B,)`` -> float waves, noise mixed in when ``params``."""
        if samples.dtype != torch.int16:
            raise ValueError(f"expected int16 audio samples, got {samples.dtype}")
        factor = scale.to(device=samples.device, dtype=torch.float32, non_blocking=True) / 32767.0
        wave = samples * factor.view(-1, *([1] * (samples.dim() - 1)))  # int16 * float32 -> float32, one pass
        if params is not None and not bool(torch.isnan(params["snr_db"].cpu()).all()):
            if self.audio_noise is None:
                raise ValueError("the batch asks for audio noise but the featurizer has no noise source (audio_noise)")
            wave = self.audio_noise.apply_batch(wave, dict(params), inplace=True)  # `wave` is ours
        if self.condition is not None and self.condition.drop == "audio":
            wave = torch.zeros_like(wave)
        return wave

    def log_mel(self, samples: Tensor, scale: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """int16 ``(B, 1, N)`` -> log-Mel ``(B, 1, n_mels, F)`` of the (noisy) waves."""
        return log_mel(self.wave(samples, scale, params), sample_rate=self.sample_rate, n_mels=self.n_mels)

    def _audio_params(self, batch: Mapping[str, Any], drawn: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
        cond = self.condition
        if cond is None or cond.snr_db is None:
            return drawn
        if self.audio_noise is None:
            raise ValueError("Condition.snr_db needs a noise source: BatchFeaturizer(audio_noise=...)")
        index = batch["meta"]["index"]
        indices = index.tolist() if torch.is_tensor(index) else list(index)
        length = batch["audio_i16"].shape[-1]
        draws = [cond.noise_draw(self.audio_noise, i, length) for i in indices]
        return {"snr_db": torch.full((len(indices),), float(cond.snr_db), dtype=torch.float32),
                "start": torch.tensor([d[0] for d in draws], dtype=torch.int64),
                "seed": torch.tensor([d[1] for d in draws], dtype=torch.int64)}

    def __call__(self, batch: Mapping[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
        """A copy of ``batch`` with ``video``/``audio`` built from its raw keys, every tensor on ``device``.

        The other tensors (``label``, ``video_valid``, ``audio_length``, cached
        features) are moved too, so that a consumer needs no copy loop of its
        own (``meta`` stays where it is: it is read on the host). Batches
        without raw keys (e.g. of a toy dataset of float tensors) are only
        moved, so callers need not know what fed them.
        """
        target = torch.device(device or "cpu")
        out = {k: v.to(target, non_blocking=True) if torch.is_tensor(v) else v
               for k, v in batch.items() if k not in RAW_KEYS}
        video_aug = audio_aug = None
        if "aug_f" in batch:
            video_aug, audio_aug = split_draws(batch["aug_f"], batch["aug_i"])
        if "video_u8" in batch:
            frames = batch["video_u8"].to(target, non_blocking=True)
            out["video"] = self.video(frames, video_aug)
        if "audio_i16" in batch:
            samples = batch["audio_i16"].to(target, non_blocking=True)
            params = self._audio_params(batch, audio_aug)
            if self.audio_kind == "mel":
                out["audio"] = self.log_mel(samples, batch["audio_scale"], params)
            else:
                out["audio"] = self.wave(samples, batch["audio_scale"], params)
        return out

    def item(self, item: Mapping[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
        """Featurise one dataset item (a batch of one): ``video`` ``(T, 3, S, S)``, ``audio`` ``(1, n_mels, F)``
        or ``(1, N)``; the other keys as the item has them."""
        batch = self(default_collate([dict(item)]), device)
        out = dict(item)
        for key in ("video", "audio"):
            if key in batch:
                out[key] = batch[key][0]
        for key in RAW_KEYS:
            out.pop(key, None)
        return out
