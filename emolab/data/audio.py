"""Audio tensors for the Mel and WavLM branches (SPEC §2.2, §2.3).

Reading is done with :mod:`soundfile` (``torchaudio.load`` needs torchcodec),
resampling with :func:`torchaudio.functional.resample` (or soxr, the seed's,
with ``resampler="soxr"``), the log-Mel image with
:class:`LogMel` (torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB``, computed
faster) and noise mixing with :func:`mix_batch` (the formula of
:func:`torchaudio.functional.add_noise`, per clip of a batch).

Typical use::

    wave = load_audio("03-01-05-01-01-01-12.wav")   # (1, 48000), 16 kHz mono, 3 s
    mel = log_mel(wave)                             # (1, 64, 301)
    noise = AudioNoise("data/Noise/noise.wav")
    noisy = noise(wave, rng=np.random.default_rng(0))
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT
from torch import Tensor, nn

from emolab.data.augment import seeded_normal
from emolab.data.probe import wav_data_shortfall
from emolab.utils.fileio import open_media

__all__ = [
    "SAMPLE_RATE",
    "CLIP_SECONDS",
    "NUM_SAMPLES",
    "N_FFT",
    "WIN_LENGTH",
    "HOP_LENGTH",
    "N_MELS",
    "AudioReadError",
    "read_wav",
    "to_mono",
    "load_audio",
    "resample",
    "RESAMPLERS",
    "soxr_available",
    "fit_length",
    "log_mel",
    "mel_frames",
    "mix_at_snr",
    "measure_snr",
    "load_noise",
    "AudioNoiseConfig",
    "AudioNoise",
    "AudioNoiseParams",
    "mix_batch",
]

PathLike = Union[str, os.PathLike]

SAMPLE_RATE = 16000  # Hz, what every audio model sees
CLIP_SECONDS = 3.0  # seconds, clips are padded with zeros or truncated to this
NUM_SAMPLES = round(SAMPLE_RATE * CLIP_SECONDS)  # 48000
N_FFT = 400  # 25 ms window at 16 kHz
WIN_LENGTH = 400
HOP_LENGTH = 160  # 10 ms hop -> 301 frames for 3 s (centred STFT)
N_MELS = 64


class AudioReadError(RuntimeError):
    """An audio file could not be read; the message names the file and the problem."""


# --------------------------------------------------------------------------- reading


def read_wav(path: PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file (WAV or anything libsndfile reads) as float32.

    Args:
        path: the audio file.

    Returns:
        ``(samples, sample_rate)``, samples of shape `(channels, num_samples)` in [-1, 1].

    Raises:
        AudioReadError: the file is missing, empty (zero bytes or zero samples),
            truncated, or not audio. The message names the file and the problem.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioReadError(f"{p}: audio file does not exist")
    if p.stat().st_size == 0:
        raise AudioReadError(f"{p}: audio file is empty (0 bytes)")
    try:
        shortfall = wav_data_shortfall(p)
    except OSError as e:
        raise AudioReadError(f"{p}: cannot read audio file ({e})") from e
    if shortfall is not None:
        declared, present = shortfall
        raise AudioReadError(
            f"{p}: WAV file is truncated (header declares {declared} bytes of audio data, "
            f"only {present} are present)"
        )
    try:
        with open_media(p) as src:
            data, sr = sf.read(src, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        raise AudioReadError(f"{p}: not a readable audio file ({e})") from e
    if data.shape[0] == 0:
        raise AudioReadError(f"{p}: audio file holds no samples")
    return np.ascontiguousarray(data.T), int(sr)


def to_mono(wave: Tensor) -> Tensor:
    """Downmix `(C, N)` to `(1, N)` by the mean over channels (mono input is returned as is)."""
    if wave.dim() != 2:
        raise ValueError(f"expected a wave of shape (C, N), got {tuple(wave.shape)}")
    return wave if wave.shape[0] == 1 else wave.mean(dim=0, keepdim=True)


def fit_length(wave: Tensor, num_samples: int) -> tuple[Tensor, int]:
    """Pad with zeros at the end or truncate the last dimension to ``num_samples``.

    Args:
        wave: tensor of shape `(..., N)`.
        num_samples: target length.

    Returns:
        ``(wave, valid)``: the wave of shape `(..., num_samples)` and the number of
        samples that came from the input, ``min(N, num_samples)``.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    n = wave.shape[-1]
    if n >= num_samples:
        return wave[..., :num_samples], num_samples
    return torch.nn.functional.pad(wave, (0, num_samples - n)), n


#: Resamplers of :func:`resample`: ``"torchaudio"`` (emolab's default) or ``"soxr"`` (the seed's).
RESAMPLERS: tuple[str, ...] = ("torchaudio", "soxr")


def soxr_available() -> bool:
    """Whether the ``soxr`` package (the seed project's resampler, via librosa) imports."""
    try:
        import soxr  # noqa: F401
    except ImportError:
        return False
    return True


def resample(wave: Tensor, orig_freq: int, new_freq: int, resampler: str = "torchaudio") -> Tensor:
    """Resample `(C, N)` from ``orig_freq`` to ``new_freq`` Hz.

    ``"torchaudio"``: :func:`torchaudio.functional.resample` (windowed sinc,
    its defaults). ``"soxr"``: what the seed project's ``librosa.load(sr=...)``
    does, ``soxr.resample(..., quality="soxr_hq")`` (librosa's default
    ``res_type``) followed by librosa's ``fix_length`` to
    ``ceil(N * new_freq / orig_freq)`` samples.
    """
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
    if orig_freq == new_freq:
        return wave
    if resampler == "torchaudio":
        return AF.resample(wave, orig_freq=orig_freq, new_freq=new_freq)
    try:
        import soxr
    except ImportError:
        raise RuntimeError("resampler 'soxr' needs the soxr package (pip install soxr==1.1.0)") from None
    x = wave.detach().cpu().numpy()
    n_out = int(np.ceil(x.shape[-1] * new_freq / orig_freq))
    out = np.zeros((x.shape[0], n_out), dtype=x.dtype)
    for c in range(x.shape[0]):
        y = soxr.resample(np.ascontiguousarray(x[c]), orig_freq, new_freq, quality="soxr_hq")[:n_out]
        out[c, : y.shape[-1]] = y
    return torch.from_numpy(out)


def _load_mono(path: PathLike, sample_rate: int, resampler: str = "torchaudio") -> Tensor:
    data, sr = read_wav(path)
    wave = to_mono(torch.from_numpy(data))
    return resample(wave, sr, sample_rate, resampler)


def load_audio(
    path: PathLike,
    sample_rate: int = SAMPLE_RATE,
    seconds: float = CLIP_SECONDS,
    *,
    return_length: bool = False,
    resampler: str = "torchaudio",
) -> Tensor | tuple[Tensor, int]:
    """Load a clip as mono at ``sample_rate``, padded with zeros or truncated to ``seconds``.

    Stereo (or more channels) is downmixed by the mean; any input rate is resampled
    (RAVDESS WAVs are 48 kHz) with :func:`resample`: torchaudio by default,
    ``resampler="soxr"`` as the seed project did (librosa's soxr).

    Args:
        path: the audio file.
        sample_rate: output rate in Hz.
        seconds: output duration; ``N = round(sample_rate * seconds)`` samples.
        return_length: also return the number of samples before padding.
        resampler: ``"torchaudio"`` or ``"soxr"`` (see :func:`resample`).

    Returns:
        float32 tensor of shape `(1, N)` (`(1, 48000)` by default), and with
        ``return_length`` the number of valid (not padded) samples, ``<= N``.

    Raises:
        AudioReadError: the file is missing, empty, truncated or not audio.
    """
    if sample_rate <= 0 or seconds <= 0:
        raise ValueError(f"sample_rate and seconds must be positive, got {sample_rate}, {seconds}")
    wave, valid = fit_length(_load_mono(path, sample_rate, resampler), round(sample_rate * seconds))
    wave = wave.contiguous()
    return (wave, valid) if return_length else wave


# --------------------------------------------------------------------------- log-Mel

class LogMel(nn.Module):
    """``MelSpectrogram(n_fft=400, hop=160, power 2, HTK Mel, centred reflect padding)`` + ``AmplitudeToDB``.

    The same numbers as the torchaudio modules (``tests/test_audio.py`` compares
    them), computed as reflect-pad, frame (``unfold``), Hann window, ``rfft``,
    power, filterbank and ``10 log10(max(x, 1e-10))``: about 3x faster on CPU
    than ``torch.stft`` through torchaudio for a batch of 3 s clips, which
    matters because the featuriser runs it in the training loop.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS, n_fft: int = N_FFT,
                 hop_length: int = HOP_LENGTH) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2.0, n_mels, sample_rate)  # (freqs, mels)
        self.register_buffer("fb", fb, persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        lead, n = wave.shape[:-1], wave.shape[-1]
        x = wave.reshape(-1, 1, n)
        pad = self.n_fft // 2
        x = nn.functional.pad(x, (pad, pad), mode="reflect")[:, 0]
        frames = x.unfold(-1, self.n_fft, self.hop_length) * self.window  # (M, F, n_fft)
        spec = torch.fft.rfft(frames, dim=-1)
        power = spec.real.square() + spec.imag.square()  # (M, F, freqs)
        mel = power @ self.fb  # (M, F, mels)
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        return db.transpose(-1, -2).reshape(*lead, self.fb.shape[1], -1)


_MEL_CACHE: dict[tuple[int, int, str], nn.Module] = {}


def _mel_transform(sample_rate: int, n_mels: int, device: torch.device) -> nn.Module:
    key = (sample_rate, n_mels, str(device))
    module = _MEL_CACHE.get(key)
    if module is None:
        module = _MEL_CACHE[key] = LogMel(sample_rate, n_mels).to(device)
    return module


def reference_log_mel(wave: Tensor, *, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS) -> Tensor:
    """torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB`` with emolab's settings (what :class:`LogMel` matches)."""
    module = nn.Sequential(
        AT.MelSpectrogram(sample_rate=sample_rate, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH,
                          n_mels=n_mels),
        AT.AmplitudeToDB(),
    ).to(wave.device)
    return module(wave.float())


def mel_frames(num_samples: int) -> int:
    """Number of log-Mel frames for ``num_samples`` samples (centred STFT): 48000 -> 301."""
    return num_samples // HOP_LENGTH + 1


def log_mel(wave: Tensor, *, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS) -> Tensor:
    """Log-Mel image: ``MelSpectrogram(n_fft=400, win_length=400, hop_length=160)`` + ``AmplitudeToDB``.

    The transform modules are built once per ``(sample_rate, n_mels, device)`` and
    reused, so this works (and is cheap) on CUDA batches too.

    Args:
        wave: float tensor of shape `(1, N)` or `(B, 1, N)` (any leading dims).
        sample_rate: rate of ``wave`` in Hz.
        n_mels: number of Mel bands.

    Returns:
        float32 tensor of shape `(1, n_mels, F)` or `(B, 1, n_mels, F)` in dB,
        ``F = N // 160 + 1`` (301 for 3 s at 16 kHz).
    """
    if wave.dim() < 2:
        raise ValueError(f"expected a wave of shape (1, N) or (B, 1, N), got {tuple(wave.shape)}")
    if not wave.is_floating_point():
        raise ValueError(f"expected a floating-point wave, got {wave.dtype}")
    return _mel_transform(sample_rate, n_mels, wave.device)(wave.float())


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


def load_noise(path: PathLike, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Load a whole noise file as mono at ``sample_rate`` (any input rate/channel count).

    Returns:
        float32 tensor of shape `(1, N)`.

    Raises:
        AudioReadError: the file is missing, empty, truncated, not audio, or silent.
    """
    wave = _load_mono(path, sample_rate).contiguous()
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
            self.noise = load_noise(self.noise_path, sample_rate)
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
            inplace: mix into ``waves`` itself instead of a copy.
        """
        snr = params["snr_db"].cpu()
        noisy = ~torch.isnan(snr)
        if not bool(noisy.any()):
            return waves
        idx = torch.nonzero(noisy).flatten()
        noise = self.excerpts(waves.shape[-1], params["start"][idx], params["seed"][idx], waves.device)
        out = waves if inplace else waves.clone()
        if bool(noisy.all()):
            out.copy_(mix_batch(waves, noise, snr.to(waves.device, non_blocking=True)))
        else:
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

    Power is measured over the whole wave (padding included), as
    :func:`torchaudio.functional.add_noise` does. A silent noise leaves its wave
    unchanged; a silent wave stays silent. No host-device synchronisation.
    """
    dims = tuple(range(1, waves.dim()))
    e_sig = torch.linalg.vector_norm(waves, dim=dims) ** 2
    e_noise = torch.linalg.vector_norm(noise, dim=dims) ** 2
    ratio = 10.0 ** (snr_db.to(waves.dtype) / 10.0)
    scale = torch.where(e_noise > 0, torch.sqrt(e_sig / (e_noise.clamp_min(1e-30) * ratio)), 0.0)
    return waves + scale.view(-1, *([1] * (waves.dim() - 1))) * noise
