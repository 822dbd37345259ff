"""Datasets: pairs in, raw items out (``uint8`` frames, ``int16`` audio, flat augmentation draws).

The path from file to model is: file -> decode once into the
:class:`~emolab.data.cache.FrameCache` -> raw item (this module) ->
``default_collate`` (:func:`~emolab.data.loaders.make_loader`) ->
:class:`~emolab.data.features.BatchFeaturizer` on the model's device -> model.

Two datasets share one implementation and differ in what the featuriser makes
of the audio: :class:`RavdessMelDataset` log-Mel ``(1, 64, 301)`` (SPEC §2.2),
:class:`RavdessWavLMDataset` waveforms ``(1, 48000)`` (SPEC §2.3). Both give
video ``(T, 3, 112, 112)`` once featurised (SPEC §2.1).

Augmentation randomness comes from a generator seeded by ``(seed, epoch, index)``,
so a sample's augmentation does not depend on the number of workers or on which
worker loads it, and an interrupted run can be reproduced. Items carry only the
draws (:func:`~emolab.data.augment.flat_draws`); the featuriser applies them.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from emolab.data.audio import RESAMPLERS, AudioReadError, load_audio, soxr_available
from emolab.data.augment import VideoAugment, flat_draws
from emolab.data.cache import AudioSettings, ClipAudio, FrameCache, FrameSettings, default_cache_dir
from emolab.data.faces import FACE_DETECTORS, FaceDetector, make_face_detector
from emolab.data.noise import AudioNoise
from emolab.data.ravdess import PairRecord, Problem
from emolab.data.video import ClipFrames, VideoReadError, preprocess_clip
from emolab.utils.settings import Alias, setting

log = logging.getLogger(__name__)

FaceCropMode = Literal["all", "train", "none"]
ResizeMode = Literal["area", "linear"]
ResamplerName = Literal["torchaudio", "soxr"]
AudioKind = Literal["mel", "wave"]
MODALITIES = ("audio", "video")
#: Values of DataConfig fields whose default changed, as configs saved before the change behaved: a saved
#: config without ``face_detector`` cropped with the Haar cascade (MTCNN is the default since issue #16).
LEGACY_DATA_DEFAULTS: dict[str, Any] = {"face_detector": "haar"}


@dataclass
class DataConfig:
    """How pairs become tensors.

    The label set (8 or 4 classes) and the Mel bins are the model's
    (:class:`~emolab.models.registry.ModelConfig` ``num_classes``/``n_mels``):
    a dataset is given them (``num_classes=``, ``n_mels=``), so that a run stores
    each once.

    Attributes:
        num_frames: video frames sampled uniformly per clip.
        frame_size: frame side in pixels.
        face_crop: ``"all"`` crops to the face in every split, as preprocessing
            (the default, and the seed project's behaviour: its code crops every
            split, ``--use_face_crop``); ``"train"`` only in the augmented
            training split (the seed's design note, not its code); ``"none"``
            never (the seed's ``--no_face_crop``). Without a working face
            detector it acts as ``"none"``, with a warning.
        resize: frame interpolation to ``frame_size``: ``"area"`` (default,
            ``cv2.INTER_AREA``) or ``"linear"`` (``cv2.INTER_LINEAR``, the seed
            project's, to reproduce its tensors); part of the frame cache key.
        face_detector: ``"mtcnn"`` (default, facenet-pytorch's MTCNN, see
            :mod:`emolab.data.faces`: finds the face in every demo clip, where the
            Haar cascade misses 29 %) or ``"haar"`` (OpenCV's Haar cascade, the
            seed's); part of the frame cache key when faces are cropped.
        sample_rate: audio rate after resampling (Hz).
        resampler: ``"torchaudio"`` (default, :func:`torchaudio.functional.resample`)
            or ``"soxr"`` (the seed project's: librosa's ``soxr_hq``; needs the
            ``soxr`` package); part of the audio cache key.
        clip_seconds: audio length after padding/truncation.
        noise_path: noise file for audio augmentation; ``None`` looks for
            ``<data_root>/Noise/noise.wav`` then ``data/Noise/noise.wav``, and
            falls back to Gaussian noise.
        cache_dir: frame cache folder; ``None`` means :func:`default_cache_dir`,
            ``""`` keeps the cache in memory only.
        memory_cache_bytes: per-process in-memory cache bound.
    """

    num_frames: int = setting(8, flag="frames", help="video frames sampled per clip")
    frame_size: int = setting(112, help="frame side in pixels")
    face_crop: FaceCropMode = setting(
        "all", choices=("all", "train", "none"),
        aliases=[Alias("use_face_crop", "all"), Alias("no_face_crop", "none")],
        help="crop faces in every split (all, the seed's behaviour), only in the augmented training split (train), "
             "or never (none)")
    resize: ResizeMode = setting(
        "area", choices=("area", "linear"),
        help="frame interpolation: area (cv2.INTER_AREA) or linear (cv2.INTER_LINEAR, the seed's)")
    face_detector: str = setting(
        "mtcnn", choices=FACE_DETECTORS,
        help="face crop detector: mtcnn (facenet-pytorch, the default) or haar (OpenCV's cascade, the seed's; "
             "README 'Tensors')")
    sample_rate: int = setting(16000, help="audio rate after resampling, Hz (WavLM expects 16000)")
    resampler: ResamplerName = setting(
        "torchaudio", choices=RESAMPLERS,
        help="48 -> 16 kHz resampling: torchaudio, or soxr (the seed's, librosa's soxr_hq)")
    clip_seconds: float = setting(3.0, help="audio length after pad/truncate")
    noise_path: str | None = setting(
        None, help="noise file for audio augmentation (default: <data_root>/Noise/noise.wav, else Gaussian noise)")
    cache_dir: str | None = setting(
        None, neutral=True, help="frame cache folder (default $EMOLAB_CACHE_DIR or ~/.cache/emolab; '' = memory only)")
    memory_cache_bytes: int = setting(1 << 30, metavar="BYTES", help="per-process in-memory frame cache bound")

    def __post_init__(self) -> None:
        if self.face_crop not in ("all", "train", "none"):
            raise ValueError(f"face_crop must be 'all', 'train' or 'none', got {self.face_crop!r}")
        if self.resize not in ("area", "linear"):
            raise ValueError(f"resize must be 'area' or 'linear', got {self.resize!r}")
        if self.face_detector not in FACE_DETECTORS:
            raise ValueError(f"face_detector must be one of {FACE_DETECTORS}, got {self.face_detector!r}")
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be 'torchaudio' or 'soxr', got {self.resampler!r}")
        if self.resampler == "soxr" and not soxr_available():
            raise ValueError("resampler 'soxr' needs the soxr package (pip install soxr==1.1.0, pinned by emolab)")
        if self.num_frames < 1 or self.frame_size < 8:
            raise ValueError("num_frames must be >= 1 and frame_size >= 8")
        if self.sample_rate <= 0 or self.clip_seconds <= 0:
            raise ValueError("sample_rate and clip_seconds must be positive")

    def make_cache(self) -> FrameCache:
        if self.cache_dir == "":
            return FrameCache(None, self.memory_cache_bytes)
        return FrameCache(self.cache_dir or default_cache_dir(), self.memory_cache_bytes)


def resolve_noise_path(data_root: str | os.PathLike[str] | None, noise_path: str | None = None) -> Path | None:
    """The noise file to use: explicit, else ``<data_root>/Noise/noise.wav``, else ``data/Noise/noise.wav``.

    Returns ``None`` when none exists (augmentation then uses Gaussian noise).
    An explicit path that does not exist is returned as is, so that
    :class:`~emolab.data.noise.AudioNoise` reports it by name.
    """
    if noise_path:
        return Path(noise_path)
    candidates = [Path("data/Noise/noise.wav")]
    if data_root is not None:
        candidates.insert(0, Path(data_root) / "Noise" / "noise.wav")
    for c in candidates:
        if c.is_file():
            return c
    return None


class RavdessAVDataset(Dataset):
    """Audio-visual RAVDESS pairs as raw items, what the cache holds plus the augmentation draws.

    Each item is a dict of tensors (and ``meta``), so that
    :func:`torch.utils.data.default_collate` stacks a batch:

    * ``video_u8``: uint8 ``(T, S, S, 3)`` RGB frames;
    * ``video_valid``: bool ``(T,)``, False for frames repeating an earlier one;
    * ``audio_i16``: int16 ``(1, N)`` and ``audio_scale`` float32 (float = int16 / 32767 * scale);
    * ``audio_length``: int, valid (unpadded) audio samples at ``sample_rate``;
    * ``aug_f`` float32 ``(3,)`` and ``aug_i`` int64 ``(4,)``: the drawn video
      and audio augmentation (:func:`~emolab.data.augment.flat_draws`; the
      no-op values when the dataset does not augment);
    * ``label``: int class index;
    * ``meta``: dict with ``actor``, ``emotion``, ``intensity``, ``statement``,
      ``repetition``, ``video_path``, ``audio_path``, ``index``.

    :class:`~emolab.data.features.BatchFeaturizer` (``for_dataset(ds)``) turns
    a batch, or one item (``.item(ds[i])``), into ``video`` float
    ``(T, 3, S, S)`` ImageNet-normalised and ``audio`` log-Mel
    ``(1, n_mels, 301)`` or waveform ``(1, 48000)``.
    The keys of a modality not in ``modalities`` are left out (and its files
    are not read); the augmentation draws do not depend on it.

    In a frozen-WavLM stage the trainer serves these items through
    :class:`~emolab.data.feature_cache.CachedFeaturesDataset`, which replaces
    the audio keys by cached backbone features.

    A pair whose file cannot be decoded is logged with the file and the
    problem, counted in :attr:`failures` (of the process that loaded it), and
    yields ``None``, which :func:`~emolab.data.loaders.collate_skip_failed` drops from the batch.

    Args:
        pairs: the records to serve.
        audio: ``"mel"`` or ``"wave"``.
        augment: apply the training augmentations (video: blur, brightness,
            noise; audio: noise at random SNR).
        config: see :class:`DataConfig`.
        cache: a shared frame cache (default: ``config.make_cache()``).
        data_root: where to look for ``Noise/noise.wav``.
        seed: base seed of the augmentation randomness.
        video_augment, audio_noise: override the default augmentations.
        modalities: ``("audio", "video")`` (default) or one of them.
        num_classes: the label set, 8 emotions or the 4-class map of SPEC §1.2
            (the model's ``num_classes``).
        n_mels: Mel bands of the log-Mel features the featuriser makes for this
            dataset (the model's ``n_mels``).
    """

    def __init__(
        self,
        pairs: Sequence[PairRecord],
        *,
        audio: AudioKind = "mel",
        augment: bool = False,
        config: DataConfig | None = None,
        cache: FrameCache | None = None,
        data_root: str | os.PathLike[str] | None = None,
        seed: int = 0,
        video_augment: VideoAugment | None = None,
        audio_noise: AudioNoise | None = None,
        detector: FaceDetector | None = None,
        modalities: Sequence[str] = MODALITIES,
        num_classes: int = 8,
        n_mels: int = 64,
    ):
        if audio not in ("mel", "wave"):
            raise ValueError(f"audio must be 'mel' or 'wave', got {audio!r}")
        if num_classes not in (4, 8):
            raise ValueError(f"num_classes must be 8 or 4, got {num_classes!r}")
        if not isinstance(n_mels, int) or n_mels <= 0:
            raise ValueError(f"n_mels must be a positive int, got {n_mels!r}")
        self.num_classes = num_classes
        self.n_mels = n_mels
        modalities = tuple(modalities)
        if not modalities or any(m not in MODALITIES for m in modalities):
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities!r}")
        self.modalities = modalities
        self.pairs = list(pairs)
        self.audio_kind = audio
        self.augment = augment
        self.config = config or DataConfig()
        self.cache = cache if cache is not None else self.config.make_cache()
        self.seed = int(seed)
        face = self.config.face_crop == "all" or (self.config.face_crop == "train" and augment)
        self.detector = None
        if face:
            self.detector = detector or make_face_detector(self.config.face_detector)
            if not self.detector.available:
                warnings.warn(
                    f"face crop requested but no face detector is available "
                    f"({self.detector.reason}); using whole frames",
                    stacklevel=2,
                )
                face, self.detector = False, None
        self.frame_settings = FrameSettings(
            self.config.num_frames,
            self.config.frame_size,
            face,
            self.config.resize,
            getattr(self.detector, "name", "haar") if face else "haar",
        )
        self.video_augment = video_augment or (VideoAugment() if augment else None)
        self.audio_noise = audio_noise
        if augment and audio_noise is None:
            self.audio_noise = AudioNoise(
                resolve_noise_path(data_root, self.config.noise_path),
                sample_rate=self.config.sample_rate,
                resampler=self.config.resampler,
            )
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self.failures: list[Problem] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness of an epoch (seen by persistent workers too)."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of one sample in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def frames(self, index: int, settings: FrameSettings | None = None) -> ClipFrames:
        """The cached (decoded once) frames of pair ``index``, with the dataset's :attr:`frame_settings` or
        ``settings`` (e.g. the same frames at another size, for display)."""
        rec = self.pairs[index]
        s = self.frame_settings if settings is None else settings
        return self.cache.get_or_compute(
            rec.video_path,
            s,
            lambda: preprocess_clip(
                rec.video_path, s.num_frames, s.size, face_crop=s.face_crop, detector=self.detector, resize=s.resize
            ),
        )

    @property
    def num_samples(self) -> int:
        """Audio samples per clip after padding (48000 for 3 s at 16 kHz)."""
        return round(self.config.sample_rate * self.config.clip_seconds)

    @property
    def audio_settings(self) -> AudioSettings:
        """What the cached audio depends on: sample rate, clip length and resampler."""
        return AudioSettings(self.config.sample_rate, self.config.clip_seconds, self.config.resampler)

    def audio_key(self, index: int) -> str:
        """The cache key of pair ``index``'s audio: its file identity and the audio settings."""
        return self.cache.key(self.pairs[index].audio_path, self.audio_settings)

    def audio_clip(self, index: int, key: str | None = None) -> ClipAudio:
        """The cached (read and resampled once) padded 16 kHz audio of pair ``index`` (``key``: its :meth:`audio_key`)."""
        c = self.config
        path = self.pairs[index].audio_path

        def compute() -> ClipAudio:
            wave, length = load_audio(path, c.sample_rate, c.clip_seconds, return_length=True, resampler=c.resampler)
            return ClipAudio.from_wave(wave.numpy(), length)

        return self.cache.audio(path, self.audio_settings, compute, key=key)

    def load_wave(self, index: int) -> tuple[torch.Tensor, int]:
        """The padded waveform ``(1, N)`` and its valid length, before augmentation (from the cache)."""
        clip = self.audio_clip(index)
        return torch.from_numpy(clip.to_float()), clip.length

    def draws(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index``'s augmentation draws in the current epoch, ``aug_f``/``aug_i``
        (:func:`~emolab.data.augment.flat_draws`; the no-op values when not augmenting).

        Both draws, always in this order, so that the randomness does not depend
        on ``modalities``; :class:`~emolab.data.resident.ResidentClips` draws
        through this method too, which keeps its batches those of the loader path.
        """
        video_params = audio_params = None
        if self.augment:
            rng = self.rng(index)
            video_params = self.video_augment.sample(rng) if self.video_augment is not None else None
            audio_params = self.audio_noise.sample(self.num_samples, rng) if self.audio_noise is not None else None
        return flat_draws(video_params, audio_params)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        rec = self.pairs[index]
        draws = self.draws(index)
        try:
            clip = self.frames(index) if "video" in self.modalities else None
            sound = None
            if "audio" in self.modalities:
                sound = self.audio_clip(index)
        except (VideoReadError, AudioReadError, OSError) as e:
            path = rec.audio_path if isinstance(e, AudioReadError) else rec.video_path
            self.failures.append(Problem(str(path), str(e)))
            log.warning("skipping pair %d (%s): %s", index, rec.stem, e)
            return None
        item: dict[str, Any] = {}
        if clip is not None:
            item["video_u8"] = torch.from_numpy(np.ascontiguousarray(clip.frames))
            item["video_valid"] = torch.from_numpy(np.asarray(clip.valid, dtype=bool))
        if sound is not None:
            item["audio_i16"] = torch.from_numpy(sound.samples)
            item["audio_scale"] = torch.tensor(sound.scale, dtype=torch.float32)
            item["audio_length"] = sound.length
        item.update(draws)
        return {
            **item,
            "label": rec.label(self.num_classes),
            "meta": {
                "actor": rec.actor,
                "emotion": rec.emotion,
                "intensity": rec.intensity,
                "statement": rec.statement,
                "repetition": rec.repetition,
                "video_path": str(rec.video_path),
                "audio_path": str(rec.audio_path),
                "index": index,
            },
        }


class RavdessMelDataset(RavdessAVDataset):
    """Video frames and log-Mel audio ``(1, 64, 301)`` (SPEC §2.1-2.2)."""

    def __init__(self, pairs: Sequence[PairRecord], **kwargs: Any):
        super().__init__(pairs, audio="mel", **kwargs)


class RavdessWavLMDataset(RavdessAVDataset):
    """Video frames and 16 kHz waveforms ``(1, 48000)`` for WavLM (SPEC §2.1, §2.3)."""

    def __init__(self, pairs: Sequence[PairRecord], **kwargs: Any):
        super().__init__(pairs, audio="wave", **kwargs)

__all__ = [
    "DataConfig",
    "LEGACY_DATA_DEFAULTS",
    "MODALITIES",
    "RavdessAVDataset",
    "RavdessMelDataset",
    "RavdessWavLMDataset",
    "resolve_noise_path",
]
