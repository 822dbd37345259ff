"""Inference with a trained run, shared by ``emolab predict`` and ``emolab evaluate``.

* :func:`load_run`: a run folder of ``emolab train`` (or its ``best_*.pt``) as a model and its saved config,
  through :func:`emolab.eval.robustness.load_runs` (the loader of ``emolab robustness``).
* :class:`ClipDataset`: the run's own dataset class for any files: a video and a WAV, or a video container
  whose own audio track (AAC in an MP4, a phone recording) is decoded with PyAV and then resampled, mixed
  down and padded exactly as :func:`emolab.data.audio.load_audio` does with a WAV.
* :func:`infer`: class probabilities (and the gate of gated models) of every item of a dataset, featurised
  by :class:`~emolab.data.features.BatchFeaturizer` as the trainer does it.

The preprocessing is the run's: its ``DataConfig`` (frames, frame size, face crop, resize, sample rate,
resampler, clip length) and the model's Mel bands and label set, read from the checkpoint's saved config.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolab.data.audio import AudioReadError, fit_length, load_audio, resample, to_mono
from emolab.data.cache import ClipAudio
from emolab.data.datasets import RavdessAVDataset

if TYPE_CHECKING:
    from torch import nn

    from emolab.train.config import TrainConfig

__all__ = [
    "SOUNDFILE_SUFFIXES", "ClipDataset", "Inference", "eval_config", "infer", "load_audio_track", "load_run",
    "read_audio_track",
]

#: Audio files read with soundfile (as the corpus's WAVs are); any other file's audio is a container track.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif"})


def load_run(run: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None,
             device: str = "cpu") -> tuple[str, nn.Module, TrainConfig]:
    """``(name, model in eval mode on device, config)`` of a run folder or checkpoint.

    Raises:
        emolab.eval.robustness.InputError: not a run folder or checkpoint, or it does not load.
    """
    from emolab.eval.robustness import load_runs

    ((name, (model, cfg)),) = load_runs([run], data_root=data_root, device=device).items()
    return name, model, cfg


def read_audio_track(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """The first audio stream of a container (MP4, MOV, MKV, ...) decoded with PyAV.

    Returns:
        ``(samples, sample_rate)``: float32 samples of shape `(channels, N)` at the stream's own rate.

    Raises:
        AudioReadError: no such file, no audio stream, or it does not decode; the message names the file.
    """
    import av

    p = Path(path)
    if not p.is_file():
        raise AudioReadError(f"{p}: file does not exist")
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                raise AudioReadError(f"{p}: no audio track")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")  # planar float32, rate and layout kept
            chunks = []
            for frame in container.decode(stream):
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
            rate = int(stream.codec_context.sample_rate or stream.rate)
    except AudioReadError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        raise AudioReadError(f"{p}: cannot decode its audio ({e})") from None
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    if data.shape[1] == 0:
        raise AudioReadError(f"{p}: the audio track holds no samples")
    return np.ascontiguousarray(data, dtype=np.float32), rate


def load_audio_track(path: str | os.PathLike[str], sample_rate: int, seconds: float, *,
                     resampler: str = "torchaudio") -> tuple[torch.Tensor, int]:
    """:func:`~emolab.data.audio.load_audio` for any file: soundfile for audio files, else the container's
    audio track; then the same mono mix, resampling and padding. Returns `(1, N)` and the valid length."""
    if Path(path).suffix.lower() in SOUNDFILE_SUFFIXES:
        return load_audio(path, sample_rate, seconds, return_length=True, resampler=resampler)
    data, sr = read_audio_track(path)
    wave = resample(to_mono(torch.from_numpy(data)), sr, sample_rate, resampler)
    wave, valid = fit_length(wave, round(sample_rate * seconds))
    return wave.contiguous(), valid


class ClipDataset(RavdessAVDataset):
    """:class:`~emolab.data.datasets.RavdessAVDataset` whose audio may be a video container's own track.

    Pairs are :class:`~emolab.data.ravdess.PairRecord` of any files (labels are placeholders for clips
    without one); ``audio_path`` may equal ``video_path``.
    """

    def audio_clip(self, index: int, key: str | None = None) -> ClipAudio:
        path = self.pairs[index].audio_path
        if Path(path).suffix.lower() in SOUNDFILE_SUFFIXES:
            return super().audio_clip(index, key)
        c = self.config

        def compute() -> ClipAudio:
            wave, length = load_audio_track(path, c.sample_rate, c.clip_seconds, resampler=c.resampler)
            return ClipAudio.from_wave(wave.numpy(), length)

        return self.cache.audio(path, self.audio_settings, compute, key=key)


@dataclass
class Inference:
    """What :func:`infer` returns, rows in dataset order of the items that loaded.

    Attributes:
        index: dataset index, `(N,)`.
        label: the dataset's label, `(N,)` (a placeholder for unlabelled clips).
        probs: class probabilities, `(N, C)` (float64 copies of the model's float32).
        gate: the audio weight of gated models, `(N,)`, NaN for other models.
    """

    index: np.ndarray
    label: np.ndarray
    probs: np.ndarray
    gate: np.ndarray

    @property
    def pred(self) -> np.ndarray:
        """Predicted class, `(N,)`."""
        return self.probs.argmax(-1)

    @property
    def nll(self) -> np.ndarray:
        """Negative log-probability of the label, `(N,)`."""
        p = self.probs[np.arange(len(self.label)), self.label]
        return -np.log(np.clip(p, 1e-12, None))


@torch.no_grad()
def infer(model: Any, dataset: RavdessAVDataset, *, device: str | torch.device = "cpu",
          batch_size: int = 16) -> Inference:
    """Class probabilities of every item of a non-augmented dataset.

    ``model`` is a PyTorch model, or anything with a ``forward_batch(batch)`` method returning a
    :class:`~emolab.models.fusion.FusionOutput` (an :class:`~emolab.eval.onnx_runtime.OnnxModel`).
    Items that fail to load are left out (the dataset's ``failures`` lists them).
    """
    from emolab.data.features import BatchFeaturizer
    from emolab.data.loaders import make_loader
    from emolab.models.fusion import forward_batch

    if dataset.augment:
        raise ValueError("infer needs a non-augmented dataset")
    dev = torch.device(device)
    own = None if isinstance(model, torch.nn.Module) else model.forward_batch  # e.g. OnnxModel
    if own is None:
        model = model.to(dev).eval()
    featurize = BatchFeaturizer.for_dataset(dataset, channels_last=False)
    parts: dict[str, list[np.ndarray]] = {"index": [], "label": [], "probs": [], "gate": []}
    for batch in make_loader(dataset, batch_size, num_workers=0, pin_memory=False):
        if batch is None:
            continue
        batch = featurize(batch, dev)
        o = own(batch) if own is not None else forward_batch(model, batch, return_gate=True)
        n = len(batch["label"])
        parts["index"].append(batch["meta"]["index"].cpu().numpy())
        parts["label"].append(batch["label"].cpu().numpy())
        parts["probs"].append(o.probs.float().cpu().numpy().astype(np.float64))
        gate = o.gate.reshape(-1).float().cpu().numpy() if o.gate is not None else np.full(n, np.nan)
        parts["gate"].append(gate.astype(np.float64))
    if not parts["index"]:
        c = dataset.num_classes
        return Inference(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, c)), np.zeros(0))
    return Inference(*(np.concatenate(parts[k]) for k in ("index", "label", "probs", "gate")))


def eval_config(cfg: TrainConfig, *, memory_cache: bool = False) -> Any:
    """The run's ``DataConfig``, with the frame cache in memory only when ``memory_cache``."""
    return dataclasses.replace(cfg.data, cache_dir="") if memory_cache else cfg.data
