"""Audio noise augmentation (SPEC §2.2): the noise source, the per-clip draws and their batched mixing.

:class:`AudioNoise` draws a clip's noise (:meth:`AudioNoise.sample`: an SNR or
clean, an excerpt start and a seed); datasets ship the draw as flat columns of
``aug_f``/``aug_i`` (:func:`~emolab.data.augment.flat_draws`), and the
featuriser (:class:`~emolab.data.features.BatchFeaturizer`) mixes the whole
batch on the device with :meth:`AudioNoise.apply_batch`
(:func:`torchaudio.functional.add_noise`, per clip). ::

    noise = AudioNoise("data/Noise/noise.wav")
    noisy = noise(wave, rng=np.random.default_rng(0))   # one clip (1, N), e.g. for a preview
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import Tensor

from emolab.data.audio import SAMPLE_RATE, AudioReadError, load_mono
from emolab.data.augment import seeded_normal

__all__ = [
    "GAUSSIAN_NOISE_SAMPLES",
    "AudioNoise",
    "AudioNoiseConfig",
    "AudioNoiseParams",
    "gaussian_noise",
    "load_noise",
    "measure_snr",
    "mix_at_snr",
    "mix_batch",
]

PathLike = Union[str, os.PathLike]

# --------------------------------------------------------------------------- noise


def _fit_noise(noise: Tensor, length: int) -> Tensor:
    """Crop or tile the last dim of ``noise`` to ``length``."""
    n = noise.shape[-1]
    if n >= length:
        return noise[..., :length]
    reps = -(-length // n)
    return noise.repeat(*([1] * (noise.dim() - 1)), reps)[..., :length]


def mix_at_snr(wave: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """Add ``noise`` scaled so that the signal-to-noise ratio is ``snr_db`` dB.

    Power is measured over the whole wave (padding included), per row of the
    leading dims, as :func:`torchaudio.functional.add_noise` does (this is
    :func:`mix_batch` on one clip). ``noise`` is cropped (from its start) or
    tiled to the wave length and broadcast over the wave's leading dims. A
    silent noise leaves the wave unchanged; a silent wave stays silent.

    Args:
        wave: tensor of shape `(..., N)`, e.g. `(1, N)`.
        noise: tensor of shape `(N',)` or `(1, N')` (or broadcastable to the wave).
        snr_db: target SNR in dB.

    Returns:
        tensor of the shape of ``wave``.
    """
    n = wave.shape[-1]
    noise = _fit_noise(noise.to(device=wave.device, dtype=wave.dtype), n)
    noise = torch.broadcast_to(noise, wave.shape).reshape(-1, n)
    rows = wave.reshape(-1, n)
    snr = torch.full((rows.shape[0],), float(snr_db), dtype=wave.dtype, device=wave.device)
    return mix_batch(rows, noise, snr).reshape(wave.shape)


def measure_snr(clean: Tensor, noisy: Tensor) -> float:
    """SNR in dB of ``noisy`` against ``clean``: ``10 log10(P(clean) / P(noisy - clean))``."""
    p_sig = clean.double().pow(2).sum()
    p_noise = (noisy.double() - clean.double()).pow(2).sum()
    return float(10.0 * torch.log10(p_sig / p_noise))


def load_noise(path: PathLike, sample_rate: int = SAMPLE_RATE, resampler: str = "torchaudio") -> Tensor:
    """Load a whole noise file as mono at ``sample_rate`` (any input rate/channel count), resampled by
    ``resampler`` (as the clips: ``--resampler``).

    Returns:
        float32 tensor of shape `(1, N)`.

    Raises:
        AudioReadError: the file is missing, empty, truncated, not audio, or silent.
    """
    wave = load_mono(path, sample_rate, resampler).contiguous()
    if not bool(wave.abs().max() > 0):
        raise AudioReadError(f"{path}: noise file is silent (all samples are zero)")
    return wave


@dataclass
class AudioNoiseConfig:
    """Noise augmentation policy (SPEC §2.2); ``p_heavy = 1 - p_clean - p_moderate``."""

    p_clean: float = 0.5  # probability that the clip stays clean
    p_moderate: float = 0.4  # probability of one of `moderate_snrs` (uniform choice)
    moderate_snrs: tuple[float, ...] = (20.0, 15.0, 10.0)  # dB
    heavy_snr: float = 5.0  # dB, used with probability p_heavy

    def __post_init__(self) -> None:
        self.moderate_snrs = tuple(float(s) for s in self.moderate_snrs)
        for name in ("p_clean", "p_moderate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AudioNoiseConfig.{name} must be in [0, 1], got {v}")
        if self.p_clean + self.p_moderate > 1.0 + 1e-9:
            raise ValueError(
                "AudioNoiseConfig: p_clean + p_moderate must be <= 1 "
                f"(got {self.p_clean} + {self.p_moderate})"
            )
        if self.p_moderate > 0 and not self.moderate_snrs:
            raise ValueError("AudioNoiseConfig.moderate_snrs is empty but p_moderate > 0")
        if not all(np.isfinite(s) for s in (*self.moderate_snrs, self.heavy_snr)):
            raise ValueError("AudioNoiseConfig: SNRs must be finite numbers of dB")

    @property
    def p_heavy(self) -> float:
        """Probability of the heavy (``heavy_snr``) level."""
        return max(0.0, 1.0 - self.p_clean - self.p_moderate)


#: Length of the white Gaussian noise that stands in for a noise file (65.5 s at 16 kHz).
GAUSSIAN_NOISE_SAMPLES = 1 << 20
_GAUSSIAN_SEED = 0
_gaussian: Tensor | None = None


def gaussian_noise() -> Tensor:
    """The fixed white Gaussian noise ``(1, GAUSSIAN_NOISE_SAMPLES)`` (unit variance, seed 0) of :class:`AudioNoise`.

    Made once per process on the CPU; the same samples on every machine and
    device, so CPU and CUDA featurisation mix the same noise.
    """
    global _gaussian
    if _gaussian is None:
        _gaussian = seeded_normal((1, GAUSSIAN_NOISE_SAMPLES), _GAUSSIAN_SEED)
    return _gaussian


class AudioNoise:
    """Noise augmentation of SPEC §2.2 for time-domain waves (Mel and WavLM branches).

    With probability ``p_clean`` the wave is returned unchanged; with ``p_moderate``
    it is mixed at an SNR drawn uniformly from ``moderate_snrs``; otherwise at
    ``heavy_snr``. The noise is a random excerpt of the noise file (tiled if the
    file is shorter than the wave) or, without a file, a random excerpt of a
    fixed 65.5 s of white Gaussian noise (:func:`gaussian_noise`): a window of
    it is white Gaussian noise, and taking one costs a copy where drawing it
    cost a random generator's pass per clip.

    Args:
        noise_path: noise audio file (e.g. ``data/Noise/noise.wav``); None means
            Gaussian noise. A path that does not exist falls back to Gaussian
            noise with one warning naming the path; a file that exists but
            cannot be read raises :class:`AudioReadError`.
        config: the policy; defaults to :class:`AudioNoiseConfig()`.
        sample_rate: rate of the waves this is applied to.

    Attributes:
        source: ``"file"`` or ``"gaussian"``.
        noise: the noise file as a tensor of shape `(1, N)`, or None.
        samples: what excerpts are cut from: ``noise``, or :func:`gaussian_noise`.
    """

    def __init__(
        self,
        noise_path: PathLike | None = None,
        config: AudioNoiseConfig | None = None,
        sample_rate: int = SAMPLE_RATE,
        resampler: str = "torchaudio",
    ) -> None:
        self.config = config if config is not None else AudioNoiseConfig()
        self.sample_rate = sample_rate
        self.noise_path = Path(noise_path) if noise_path is not None else None
        self.noise: Tensor | None = None
        if self.noise_path is not None and not self.noise_path.exists():
            warnings.warn(
                f"noise file {self.noise_path} not found: audio noise augmentation "
                "falls back to Gaussian noise at the same SNRs",
                stacklevel=2,
            )
        elif self.noise_path is not None:
            self.noise = load_noise(self.noise_path, sample_rate, resampler)
        self._device_noise: dict[str, Tensor] = {}  # the noise moved to each device once
        self.source = "file" if self.noise is not None else "gaussian"
        self.samples = self.noise if self.noise is not None else gaussian_noise()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_device_noise"] = {}  # device copies stay in their process
        if self.noise is None:
            state["samples"] = None  # the fixed Gaussian noise is made again, not shipped
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.samples is None:
            self.samples = gaussian_noise()

    def __repr__(self) -> str:
        where = f", path={str(self.noise_path)!r}" if self.noise is not None else ""
        return f"AudioNoise(source={self.source!r}{where}, config={self.config})"

    def sample_snr(self, rng: np.random.Generator) -> float | None:
        """Draw a noise level: None (clean) or an SNR in dB, following the config."""
        cfg = self.config
        u = rng.random()
        if u < cfg.p_clean:
            return None
        if u < cfg.p_clean + cfg.p_moderate:
            return float(cfg.moderate_snrs[int(rng.integers(len(cfg.moderate_snrs)))])
        return float(cfg.heavy_snr)

    def sample_excerpt(self, length: int, rng: np.random.Generator) -> tuple[int, int]:
        """Draw where the noise excerpt starts and a seed: ``(start, seed)``.

        The seed picks a clip's noisy feature-cache variant
        (:func:`~emolab.data.feature_cache.choose_variant`); mixing uses ``start``.
        """
        n = self.samples.shape[-1]
        start = int(rng.integers(n - length + 1)) if n >= length else int(rng.integers(n))
        return start, int(rng.integers(2**62))

    def sample(self, length: int, rng: np.random.Generator) -> AudioNoiseParams:
        """Draw everything one clip's augmentation needs (level, excerpt, seed)."""
        snr = self.sample_snr(rng)
        start, seed = self.sample_excerpt(length, rng)
        return AudioNoiseParams(snr, start, seed)

    def sample_noise(self, length: int, rng: np.random.Generator) -> Tensor:
        """A noise excerpt of shape `(1, length)` drawn from ``rng`` (see :meth:`sample_excerpt`)."""
        start, seed = self.sample_excerpt(length, rng)
        return self.excerpts(length, torch.tensor([start]), torch.tensor([seed]))[0]

    def excerpts(self, length: int, start: Tensor, seed: Tensor | None = None,
                 device: torch.device | str = "cpu") -> Tensor:
        """Noise excerpts ``(B, 1, length)``: windows of :attr:`samples` starting at ``start``
        (wrapping around, i.e. tiled when the noise is shorter). ``seed`` is not used."""
        device = torch.device(device)
        noise = self._noise_on(device)
        n = noise.shape[-1]
        starts = start.tolist()  # CPU parameters: slicing needs no host-device synchronisation
        if n >= length and all(0 <= s <= n - length for s in starts):
            return torch.stack([noise[:, s:s + length] for s in starts])
        idx = (start.to(device, non_blocking=True).view(-1, 1) + torch.arange(length, device=device)) % n
        return noise[0][idx].unsqueeze(1)

    def _noise_on(self, device: torch.device) -> Tensor:
        cached = self._device_noise.get(str(device))
        if cached is None:
            cached = self._device_noise[str(device)] = self.samples.to(device)
        return cached

    def apply_batch(self, waves: Tensor, params: dict[str, Tensor], *, inplace: bool = False) -> Tensor:
        """Mix per-clip noise into a batch ``(B, 1, N)``.

        Args:
            waves: float waves on any device.
            params: :meth:`AudioNoiseParams.as_tensors` batched (``snr_db`` NaN
                for clean clips, ``start``, ``seed``), best kept on the CPU.
            inplace: when some clips stay clean, mix the others into ``waves`` itself instead of a copy
                (a batch of noisy clips only is always mixed into a new tensor, in one pass).
        """
        snr = params["snr_db"].cpu()
        noisy = ~torch.isnan(snr)
        if not bool(noisy.any()):
            return waves
        idx = torch.nonzero(noisy).flatten()
        noise = self.excerpts(waves.shape[-1], params["start"][idx], params["seed"][idx], waves.device)
        if bool(noisy.all()):
            return mix_batch(waves, noise, snr.to(waves.device, non_blocking=True))
        out = waves if inplace else waves.clone()
        rows = idx.to(waves.device, non_blocking=True)  # no host-device synchronisation
        out[rows] = mix_batch(waves[rows], noise, snr[idx].to(waves.device, non_blocking=True))
        return out

    def mix(self, wave: Tensor, snr_db: float | None, rng: np.random.Generator) -> Tensor:
        """Mix a random noise excerpt into ``wave`` at exactly ``snr_db`` dB (None: clean).

        Args:
            wave: tensor of shape `(1, N)`.
            snr_db: SNR in dB, or None to return ``wave`` unchanged.
            rng: source of the excerpt position (or the Gaussian seed).

        Returns:
            tensor of the shape of ``wave``.
        """
        start, seed = self.sample_excerpt(wave.shape[-1], rng)
        return self.apply(wave, AudioNoiseParams(snr_db, start, seed))

    def apply(self, wave: Tensor, params: AudioNoiseParams) -> Tensor:
        """Apply drawn parameters to one wave `(1, N)` (a batch of one)."""
        if params.snr_db is None:
            return wave
        batched = {k: v.unsqueeze(0) for k, v in params.as_tensors().items()}
        return self.apply_batch(wave.unsqueeze(0), batched)[0]

    def __call__(self, wave: Tensor, rng: np.random.Generator) -> Tensor:
        """Apply the random policy to a wave `(1, N)`: ``apply(wave, sample(N, rng))``."""
        return self.apply(wave, self.sample(wave.shape[-1], rng))


@dataclass
class AudioNoiseParams:
    """One draw of :class:`AudioNoise`: the SNR (None: clean), the excerpt start and the Gaussian seed."""

    snr_db: float | None = None
    start: int = 0
    seed: int = 0

    def as_tensors(self) -> dict[str, Tensor]:
        """Scalar tensors as a DataLoader batch carries them (``snr_db`` NaN when clean)."""
        return {
            "snr_db": torch.tensor(float("nan") if self.snr_db is None else self.snr_db, dtype=torch.float32),
            "start": torch.tensor(self.start, dtype=torch.int64),
            "seed": torch.tensor(self.seed, dtype=torch.int64),
        }


def mix_batch(waves: Tensor, noise: Tensor, snr_db: Tensor) -> Tensor:
    """Add ``noise`` to ``waves`` (both ``(B, ..., N)``) at ``snr_db`` ``(B,)`` dB, per clip.

    :func:`torchaudio.functional.add_noise` (power measured over the whole wave,
    padding included): each clip gets ``wave + s * noise`` with ``s`` such that
    ``10 log10(|wave|^2 / |s noise|^2) = snr``, i.e. ``s = |wave| / |noise| *
    10^(-snr / 20)``. ``add_noise`` takes ``s`` through ``log10`` and a power;
    here it is that ratio of norms directly, equal to float rounding, and the
    mixing is one pass (``addcmul``) instead of four. A silent noise leaves its
    wave unchanged (``add_noise`` would divide by its zero power); a silent
    wave stays silent. No host-device synchronisation.
    """
    b = waves.shape[0]
    rows, noise_rows = waves.reshape(b, -1), noise.reshape(b, -1)  # one power per clip, all channels
    signal_norm = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    noise_norm = torch.linalg.vector_norm(noise_rows, dim=-1, keepdim=True)
    gain = torch.pow(10.0, snr_db.to(waves.dtype).view(b, 1) / -20.0)
    scale = torch.where(noise_norm > 0, signal_norm / noise_norm.clamp_min(torch.finfo(waves.dtype).tiny), 0.0) * gain
    return torch.addcmul(rows, noise_rows, scale).reshape(waves.shape)
