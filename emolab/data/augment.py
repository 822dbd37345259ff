"""Video augmentation (SPEC §2.1): blur, brightness attenuation, Gaussian noise.

Every random choice of a clip is drawn up front into a
:class:`VideoAugmentParams` (the Gaussian noise as a seed), so the same
augmentation can be applied in two places with the same result:

* per batch, on the device (:func:`apply_video_batch`), by the featuriser
  (:class:`~emolab.data.features.BatchFeaturizer`): datasets only draw the
  parameters and ship them with the ``uint8`` frames;
* per clip (:meth:`VideoAugment.__call__`, a batch of one), for previews.

A dataset item carries the draws of both augmentations as two flat tensors of
fixed width (:func:`flat_draws`): ``aug_f`` float32 (:data:`AUG_F`) and
``aug_i`` int64 (:data:`AUG_I`), the no-op values where nothing was drawn, so
that ``torch.utils.data.default_collate`` stacks them into ``(B, 3)`` and
``(B, 4)`` like any other tensor. :func:`split_draws` names the columns again.
"""

from __future__ import annotations

from collections.abc import Mapping

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

__all__ = [
    "VideoAugmentConfig",
    "VideoAugmentParams",
    "gaussian_blur",
    "attenuate_brightness",
    "add_gaussian_noise",
    "seeded_normal",
    "draw_seed",
    "VideoAugment",
    "apply_video_batch",
    "AUG_F",
    "AUG_I",
    "flat_draws",
    "split_draws",
    "without_audio_draw",
]

_SEED_HIGH = 2**62  # seeds drawn for torch generators (fit in int64)


def draw_seed(rng: np.random.Generator) -> int:
    """A seed for a torch generator, drawn from ``rng``."""
    return int(rng.integers(_SEED_HIGH))


def seeded_normal(shape: tuple[int, ...], seed: int, *, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal samples of ``shape`` from a torch generator seeded with ``seed``.

    The same seed gives the same samples on the same device type (CPU and CUDA
    generators differ, so the samples differ between them; the distribution is
    the same).
    """
    device = torch.device(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return torch.randn(shape, generator=gen, device=device, dtype=dtype)


def _check_range(name: str, lo_hi: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    if len(lo_hi) != 2:
        raise ValueError(f"VideoAugmentConfig.{name} must be a (low, high) pair, got {lo_hi}")
    a, b = float(lo_hi[0]), float(lo_hi[1])
    if not lo <= a <= b <= hi:
        raise ValueError(f"VideoAugmentConfig.{name} must satisfy {lo} <= low <= high <= {hi}, got {lo_hi}")
    return a, b


@dataclass
class VideoAugmentConfig:
    """Training-time video augmentation (SPEC §2.1); each op has its own probability."""

    p_blur: float = 0.5  # probability of a Gaussian blur
    blur_kernels: tuple[int, ...] = (3, 5, 7)  # kernel side, drawn uniformly (odd)
    p_brightness: float = 0.5  # probability of brightness attenuation
    brightness: tuple[float, float] = (0.2, 0.6)  # attenuation factor range: pixels * (1 - f)
    p_noise: float = 0.5  # probability of additive Gaussian noise
    noise_scale: tuple[float, float] = (0.01, 0.05)  # noise std range, [0, 1] pixel units

    def __post_init__(self) -> None:
        for name in ("p_blur", "p_brightness", "p_noise"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"VideoAugmentConfig.{name} must be in [0, 1], got {v}")
        self.blur_kernels = tuple(self.blur_kernels)
        if not self.blur_kernels:
            raise ValueError("VideoAugmentConfig.blur_kernels must not be empty")
        for k in self.blur_kernels:
            if int(k) != k or k < 1 or k % 2 == 0:
                raise ValueError(f"VideoAugmentConfig.blur_kernels must be odd positive ints, got {k}")
        self.blur_kernels = tuple(int(k) for k in self.blur_kernels)
        self.brightness = _check_range("brightness", self.brightness, 0.0, 1.0)
        self.noise_scale = _check_range("noise_scale", self.noise_scale, 0.0, 1.0)


@dataclass
class VideoAugmentParams:
    """One draw of :class:`VideoAugment`'s parameters; None means the op is skipped.

    ``noise_seed`` seeds the torch generator of the Gaussian noise samples.
    """

    blur_kernel: int | None = None
    brightness: float | None = None
    noise_scale: float | None = None
    noise_seed: int = 0

    def as_values(self) -> dict[str, int | float]:
        """The parameters as plain numbers, 0 for a skipped op (:func:`flat_draws` packs them)."""
        return {"blur_kernel": int(self.blur_kernel or 0), "brightness": float(self.brightness or 0.0),
                "noise_scale": float(self.noise_scale or 0.0), "noise_seed": int(self.noise_seed)}

    def as_tensors(self) -> dict[str, Tensor]:
        """The parameters as scalar tensors (0 for a skipped op), as a DataLoader batch carries them."""
        dtypes = {"blur_kernel": torch.int64, "brightness": torch.float32, "noise_scale": torch.float32,
                  "noise_seed": torch.int64}
        return {k: torch.tensor(v, dtype=dtypes[k]) for k, v in self.as_values().items()}


def gaussian_blur(video: Tensor, kernel_size: int) -> Tensor:
    """Gaussian blur with a square ``kernel_size`` kernel on every frame.

    Sigma follows OpenCV's rule for a given kernel, ``0.3 * ((k - 1) / 2 - 1) + 0.8``
    (torchvision's default). ``video`` is float of shape `(..., 3, H, W)`.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size}")
    if kernel_size == 1:
        return video
    return TF.gaussian_blur(video, kernel_size=[kernel_size, kernel_size])


def attenuate_brightness(video: Tensor, factor: float) -> Tensor:
    """Darken by ``factor``: pixels are multiplied by ``1 - factor``.

    ``factor=0.2`` makes the clip 20 % darker, ``0.6`` 60 % darker (SPEC's
    "attenuation by a factor in 0.2-0.6"). ``video`` is float in [0, 1].
    """
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"brightness attenuation factor must be in [0, 1], got {factor}")
    return video * (1.0 - factor)


def add_gaussian_noise(video: Tensor, scale: float, rng: np.random.Generator | int) -> Tensor:
    """Add i.i.d. Gaussian noise of std ``scale`` ([0, 1] pixel units), clamped to [0, 1].

    Noise samples differ per pixel and frame. ``rng`` is a numpy generator
    (a seed is drawn from it) or the seed itself (see :func:`seeded_normal`).
    """
    if scale < 0:
        raise ValueError(f"noise scale must be >= 0, got {scale}")
    seed = rng if isinstance(rng, (int, np.integer)) else draw_seed(rng)
    noise = seeded_normal(tuple(video.shape), int(seed), device=video.device, dtype=video.dtype)
    return (video + noise * scale).clamp_(0.0, 1.0)


def apply_video_batch(video: Tensor, params: dict[str, Tensor], *, inplace: bool = False) -> Tensor:
    """Apply per-clip parameters to a batch of [0, 1] clips ``(B, T, 3, H, W)``.

    Args:
        video: float tensor on any device.
        params: :meth:`VideoAugmentParams.as_tensors` batched: ``(B,)`` tensors
            ``blur_kernel`` (0 = none), ``brightness`` (0 = none),
            ``noise_scale`` (0 = none), ``noise_seed``. Keep them on the CPU:
            the decisions per clip are then made without a host-device sync.
        inplace: write into ``video`` (the same values, bit for bit) instead of a new tensor, for a caller
            that owns it (the featuriser): a batch of 32 clips at 112 px is 38 MB, and on the CPU each new
            buffer of that size costs about 20 ms in page faults (glibc maps it afresh every time).

    Returns:
        A new tensor of the shape of ``video`` (``video`` itself when ``inplace``); order as in
        :class:`VideoAugment` (blur, brightness, noise).
    """
    out = video
    kernels = params["blur_kernel"].cpu()
    blurs = sorted({int(k) for k in kernels.tolist() if int(k) > 1})
    if blurs and not inplace:
        out = video.clone()  # blurred clips are written in place; the input stays as it was
    for k in blurs:
        idx = torch.nonzero(kernels == k).flatten().tolist()
        out[idx] = gaussian_blur(out[idx], k)
    factor = (1.0 - params["brightness"].to(device=out.device, dtype=out.dtype, non_blocking=True)).view(
        -1, *([1] * (out.dim() - 1)))
    out = out.mul_(factor) if inplace or blurs else out * factor  # after a blur, `out` is a copy of ours
    scales, seeds = params["noise_scale"].cpu().tolist(), params["noise_seed"].cpu().tolist()
    for i, (scale, seed) in enumerate(zip(scales, seeds)):
        if scale > 0:
            out[i] = add_gaussian_noise(out[i], float(scale), int(seed))
    return out


class VideoAugment:
    """Random blur, brightness attenuation and noise (in that order) for a [0, 1] clip.

    Each op is applied with its probability, with the same parameters for every
    frame of the clip. Every call draws the same number of values from ``rng``,
    so results depend only on the generator state.

    Args:
        config: the policy; defaults to :class:`VideoAugmentConfig()`.
    """

    def __init__(self, config: VideoAugmentConfig | None = None) -> None:
        self.config = config if config is not None else VideoAugmentConfig()

    def __repr__(self) -> str:
        return f"VideoAugment({self.config})"

    def sample(self, rng: np.random.Generator) -> VideoAugmentParams:
        """Draw which ops apply, their parameters and the noise seed."""
        cfg = self.config
        u = rng.random(3)
        kernel = cfg.blur_kernels[int(rng.integers(len(cfg.blur_kernels)))]
        factor = float(rng.uniform(*cfg.brightness))
        scale = float(rng.uniform(*cfg.noise_scale))
        seed = draw_seed(rng)
        return VideoAugmentParams(
            blur_kernel=kernel if u[0] < cfg.p_blur else None,
            brightness=factor if u[1] < cfg.p_brightness else None,
            noise_scale=scale if u[2] < cfg.p_noise else None,
            noise_seed=seed,
        )

    def apply(self, video: Tensor, params: VideoAugmentParams) -> Tensor:
        """Apply given parameters to ``video`` of shape `(T, 3, H, W)` (a batch of one)."""
        batched = {k: v.unsqueeze(0) for k, v in params.as_tensors().items()}
        return apply_video_batch(video.unsqueeze(0), batched)[0]

    def __call__(self, video: Tensor, rng: np.random.Generator) -> Tensor:
        """Augment a float [0, 1] video of shape `(T, 3, H, W)`; returns the same shape."""
        return self.apply(video, self.sample(rng))


# --------------------------------------------------------------------------- flat draws

#: Columns of ``aug_f`` (float32): (group, parameter, no-op value). A NaN SNR means "clean".
AUG_F: tuple[tuple[str, str, float], ...] = (
    ("video", "brightness", 0.0), ("video", "noise_scale", 0.0), ("audio", "snr_db", float("nan")))
#: Columns of ``aug_i`` (int64; seeds are drawn below 2**62, which a float cannot hold).
AUG_I: tuple[tuple[str, str, int], ...] = (
    ("video", "blur_kernel", 0), ("video", "noise_seed", 0), ("audio", "start", 0), ("audio", "seed", 0))


def flat_draws(video: VideoAugmentParams | None, audio: object | None) -> dict[str, Tensor]:
    """One item's augmentation draws as ``{"aug_f": (3,) float32, "aug_i": (4,) int64}``.

    ``audio`` is an :class:`~emolab.data.noise.AudioNoiseParams` (``snr_db``,
    ``start``, ``seed``) or None; a skipped op or a missing draw gets the
    no-op value of its column.
    """
    values = {"video": {} if video is None else video.as_values(), "audio": {}}
    if audio is not None:
        snr = getattr(audio, "snr_db")
        values["audio"] = {"snr_db": float("nan") if snr is None else float(snr),
                           "start": int(getattr(audio, "start")), "seed": int(getattr(audio, "seed"))}
    f = [float(values[g].get(k, d)) for g, k, d in AUG_F]
    i = [int(values[g].get(k, d)) for g, k, d in AUG_I]
    return {"aug_f": torch.tensor(f, dtype=torch.float32), "aug_i": torch.tensor(i, dtype=torch.int64)}


def without_audio_draw(draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An item's ``aug_f``/``aug_i`` with the audio columns set to their no-op values (the video draw kept):
    for items whose audio already holds its noise (cached WavLM feature variants)."""
    out = dict(draws)
    for key, cols in (("aug_f", AUG_F), ("aug_i", AUG_I)):
        if key in out:
            out[key] = out[key].clone()
            for j, (group, _name, default) in enumerate(cols):
                if group == "audio":
                    out[key][j] = default
    return out


def split_draws(aug_f: Tensor, aug_i: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(video, audio)`` parameter dicts of collated draws ``(B, 3)``/``(B, 4)``: ``(B,)`` tensors by name,
    as :func:`apply_video_batch` and :meth:`~emolab.data.noise.AudioNoise.apply_batch` take them."""
    out: dict[str, dict[str, Tensor]] = {"video": {}, "audio": {}}
    for cols, packed in ((AUG_F, aug_f), (AUG_I, aug_i)):
        if packed.dim() != 2 or packed.shape[1] != len(cols):
            raise ValueError(f"expected collated draws of shape (B, {len(cols)}), got {tuple(packed.shape)}")
        for j, (group, key, _default) in enumerate(cols):
            out[group][key] = packed[:, j]
    return out["video"], out["audio"]
