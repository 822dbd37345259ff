"""Audio tensors for the Mel and WavLM branches (SPEC §2.2, §2.3).

Reading is done with :mod:`soundfile` (``torchaudio.load`` needs torchcodec),
resampling with :func:`torchaudio.functional.resample` (or soxr, the seed's,
with ``resampler="soxr"``), the log-Mel image with torchaudio's
``MelSpectrogram`` + ``AmplitudeToDB`` (:func:`log_mel`, :class:`LogMel`). Noise augmentation
is :mod:`emolab.data.noise`.

Typical use::

    wave = load_audio("03-01-05-01-01-01-12.wav")   # (1, 48000), 16 kHz mono, 3 s
    mel = log_mel(wave)                             # (1, 64, 301)

During training and evaluation the log-Mel is computed per batch on the
model's device by :class:`~emolab.data.features.BatchFeaturizer`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT
from torch import Tensor, nn

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
    "LogMel",
    "read_wav",
    "to_mono",
    "load_mono",
    "load_audio",
    "resample",
    "RESAMPLERS",
    "soxr_available",
    "fit_length",
    "log_mel",
    "mel_frames",
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


def load_mono(path: PathLike, sample_rate: int, resampler: str = "torchaudio") -> Tensor:
    """Read a file as mono float32 ``(1, N)`` at ``sample_rate`` (any input rate and channel count)."""
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
    wave, valid = fit_length(load_mono(path, sample_rate, resampler), round(sample_rate * seconds))
    wave = wave.contiguous()
    return (wave, valid) if return_length else wave



# --------------------------------------------------------------------------- log-Mel

# torchaudio's Spectrogram, MelScale and AmplitudeToDB, not a hand-written STFT: measured on an H200, emolab's
# former own LogMel (pad, unfold, rfft, filterbank) ran at 0.92-1.23x torchaudio's speed, under 0.31 ms a batch
# either way, so a second implementation does not pay on the target hardware.
_MEL_CACHE: dict[tuple[int, int, str], nn.Module] = {}

#: Clips per STFT call on the CPU (:class:`LogMel`). A batch of 32 clips' complex spectra is 15 MB, which glibc
#: hands back to the system after each batch, so that every batch page-faults them in again: 25 ms for 32 clips
#: against 7.5 ms in chunks of 8 (2-core AMD EPYC, ``benchmarks/README.md``).
CPU_CHUNK = 8


class LogMel(nn.Module):
    """torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB``, with the power spectrum taken in one pass.

    ``MelSpectrogram`` computes the power as ``|Z|.pow(2)``: a square root and a
    square over every STFT bin, 1.0 ms of the 2.4 ms of a batch of 8 clips on a
    CPU core. Here the spectrogram is torchaudio's complex one (``power=None``)
    and the power ``re^2 + im^2`` (0.2 ms); the Mel filterbank and the dB
    conversion are torchaudio's own modules. The result equals torchaudio's to
    float rounding (``tests/test_audio.py`` compares them). On the CPU, batches
    go through in chunks of :data:`CPU_CHUNK` clips (the same values: every
    clip is computed alone).
    """

    def __init__(self, sample_rate: int, n_mels: int) -> None:
        super().__init__()
        self.spectrogram = AT.Spectrogram(n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, power=None)
        self.mel_scale = AT.MelScale(n_mels=n_mels, sample_rate=sample_rate, n_stft=N_FFT // 2 + 1)
        self.to_db = AT.AmplitudeToDB()

    def _one(self, wave: Tensor) -> Tensor:
        spec = self.spectrogram(wave)
        power = torch.addcmul(spec.real.square(), spec.imag, spec.imag)
        return self.to_db(self.mel_scale(power))

    def forward(self, wave: Tensor) -> Tensor:
        if wave.device.type != "cpu" or wave.dim() < 3 or wave.shape[0] <= CPU_CHUNK:
            return self._one(wave)
        return torch.cat([self._one(part) for part in wave.split(CPU_CHUNK)])


def _mel_transform(sample_rate: int, n_mels: int, device: torch.device) -> nn.Module:
    key = (sample_rate, n_mels, str(device))
    module = _MEL_CACHE.get(key)
    if module is None:
        module = _MEL_CACHE[key] = LogMel(sample_rate, n_mels).to(device)
    return module


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
    with torch.no_grad():
        return _mel_transform(sample_rate, n_mels, wave.device)(wave.float())
