"""Disk cache of frozen-backbone features (WavLM ``last_hidden_state``): storage, keys, noise variants, serving.

While the WavLM backbone is entirely frozen its output for a clip never
changes, so :mod:`emolab.train.feature_cache` computes it once per clip and
DataLoader workers serve it from here instead of a waveform. This module is
the model-free half: where entries live, what they are keyed by, the fixed
noisy variants, and :class:`CachedFeaturesDataset`, the dataset that serves
them in place of a RAVDESS dataset's audio.

Layout: ``<cache_dir>/wavlm/<backbone tag[:16]>/<key[:2]>/<key>.npz`` holding
``features`` (float16 ``(Ta, hidden)``, ``Ta = 149`` for 3 s) and ``length``
(valid 16 kHz samples). The key hashes, like the frame cache's:

* the audio file identity (absolute path, size, mtime) and the audio settings
  (rate, clip length, cache version);
* the *backbone tag*: a fingerprint of the frozen backbone (config and every
  weight), the compute precision and whether the backbone gets an attention
  mask (:func:`emolab.train.feature_cache.backbone_tag`);
* the variant: ``0`` is the clean clip; ``1..K`` are fixed noisy versions,
  keyed also by the noise source (file identity, or Gaussian) and policy.

Writes are atomic (:func:`emolab.utils.fileio.atomic_write`); a damaged entry reads
as a miss and is recomputed by the next fill.

Noise variants (an approximation of the augmentation). Variant ``k`` of a clip
mixes noise drawn from a generator seeded by ``(clip identity, k)`` at an SNR
drawn from the policy's *noisy* levels (:func:`variant_params`). At training
time the wrapped dataset's per-epoch draws are made as always; a clip is
clean when the draw says clean (probability ``p_clean``), otherwise it is
variant ``1 + seed % K`` of the drawn noise seed (:func:`choose_variant`). So
the clean/noisy proportion follows the policy exactly, but the noise itself is
one of ``K`` fixed excerpts and SNRs per clip instead of fresh every epoch;
the variants are shared by every run and seed that uses the same clips and
noise source. With ``K = 0`` a cached stage trains on clean features only.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emolab.data.audio import AudioReadError
from emolab.data.augment import without_audio_draw
from emolab.data.cache import AudioSettings
from emolab.data.noise import GAUSSIAN_NOISE_SAMPLES, AudioNoise, AudioNoiseParams
from emolab.data.ravdess import Problem
from emolab.utils.fileio import atomic_write, atomic_write_json, mark_used

__all__ = [
    "CachedFeatures",
    "CachedFeaturesDataset",
    "FeatureStore",
    "MAX_VARIANTS",
    "choose_variant",
    "clip_identity",
    "noise_tag",
    "variant_params",
]

#: Bump when the stored features change meaning (invalidates every entry).
FEATURE_CACHE_VERSION = 1
#: Upper bound of the noisy variants per clip (``TrainConfig.feature_cache_variants``).
MAX_VARIANTS = 64
_TAG_DIGITS = 40  # a backbone tag is 40 hex digits (emolab.train.feature_cache.backbone_tag)
_VARIANT_SEED = 0x5EED_FEA7  # a fixed base: variants belong to the clip, not to a run

log = logging.getLogger(__name__)


def clip_identity(path: str | os.PathLike[str]) -> str:
    """Hex digest of an audio file's identity: absolute path, size and mtime (raises ``OSError`` if missing)."""
    p = Path(path).resolve()
    st = p.stat()
    return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def noise_tag(noise: AudioNoise | None) -> str:
    """What noisy variants depend on: the noise source (file identity or Gaussian), its rate and the policy."""
    if noise is None:
        return ""
    source = (clip_identity(noise.noise_path) if noise.noise is not None and noise.noise_path is not None
              else f"gaussian{GAUSSIAN_NOISE_SAMPLES}")  # the fixed Gaussian noise of emolab.data.audio
    c = noise.config
    policy = f"{c.p_clean:g},{c.p_moderate:g},{','.join(f'{s:g}' for s in c.moderate_snrs)},{c.heavy_snr:g}"
    return f"{source}|{noise.sample_rate}|{policy}"


def variant_params(noise: AudioNoise, clip_id: str, variant: int, length: int) -> AudioNoiseParams:
    """The fixed noise of variant ``variant >= 1`` of a clip: an SNR among the policy's noisy levels, an excerpt.

    The SNR follows the policy conditioned on "not clean": one of
    ``moderate_snrs`` (uniformly) with probability ``p_moderate / (1 - p_clean)``,
    else ``heavy_snr``. Deterministic in ``(clip_id, variant)``.

    Raises:
        ValueError: ``variant < 1``, or a policy that is never noisy (``p_clean == 1``).
    """
    if variant < 1:
        raise ValueError(f"noisy variants are numbered from 1, got {variant}")
    c = noise.config
    p_noisy = 1.0 - c.p_clean
    if p_noisy <= 0:
        raise ValueError("the noise policy is never noisy (p_clean == 1): no noisy variants to make")
    rng = np.random.default_rng([_VARIANT_SEED, int(clip_id[:15], 16), int(variant)])
    if rng.random() * p_noisy < c.p_moderate:
        snr = float(c.moderate_snrs[int(rng.integers(len(c.moderate_snrs)))])
    else:
        snr = float(c.heavy_snr)
    start, seed = noise.sample_excerpt(length, rng)
    return AudioNoiseParams(snr, start, seed)


def choose_variant(params: AudioNoiseParams | None, variants: int) -> int:
    """The cached variant standing in for one drawn augmentation: 0 (clean) or ``1 + seed % variants``.

    Clean draws (and any draw when ``variants == 0``) map to the clean entry;
    a noisy draw picks a variant from its (uniform, independent) noise seed,
    so the dataset's draws are used as they are.
    """
    if params is None or params.snr_db is None or variants <= 0:
        return 0
    return 1 + int(params.seed) % int(variants)


@dataclass
class CachedFeatures:
    """One entry: float16 backbone features ``(Ta, hidden)`` and the clip's valid samples."""

    features: np.ndarray
    length: int


class FeatureStore:
    """The ``<cache_dir>/wavlm`` folder: keys, atomic writes, reads that treat damage as a miss.

    Args:
        directory: the frame cache folder (entries go under ``directory/wavlm``).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory) / "wavlm"

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    @staticmethod
    def key(clip_id: str, audio: AudioSettings, backbone: str, variant: int = 0, noise: str = "") -> str:
        """Hex digest of clip identity, audio settings, backbone tag, variant (and noise tag for ``variant > 0``)."""
        if variant < 0:
            raise ValueError(f"variant must be >= 0, got {variant}")
        if variant > 0 and not noise:
            raise ValueError("a noisy variant needs the noise tag of its source")
        ident = f"f{FEATURE_CACHE_VERSION}|{clip_id}|{audio.tag()}|{backbone}|v{variant}|{noise if variant else ''}"
        return hashlib.sha1(ident.encode()).hexdigest()

    def path(self, backbone: str, key: str) -> Path:
        return self.root / backbone[:16] / key[:2] / f"{key}.npz"

    def get(self, backbone: str, key: str, *, touch: bool = True) -> CachedFeatures | None:
        """The entry, or ``None`` when it is missing or damaged; ``touch`` marks it used (see :mod:`emolab.cli.cache`)."""
        path = self.path(backbone, key)
        try:
            with np.load(path, allow_pickle=False) as z:
                features, length = z["features"], int(z["length"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # damaged: a miss, rewritten atomically by the next fill
        if features.ndim != 2 or features.dtype != np.float16 or features.shape[0] == 0:
            return None
        if touch:
            mark_used(path)
        return CachedFeatures(features, length)

    def describe(self, backbone: str, info: dict) -> Path:
        """Write ``backbone.json`` (which backbone a tag is, for ``emolab cache info``) unless it is there."""
        path = self.root / backbone[:16] / "backbone.json"
        if not path.is_file():
            atomic_write_json({"tag": backbone, **info, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, path)
        return path

    def put(self, backbone: str, key: str, features: np.ndarray, length: int) -> Path:
        """Store an entry atomically (features are stored as float16)."""
        arr = np.ascontiguousarray(features, dtype=np.float16)
        if arr.ndim != 2:
            raise ValueError(f"features must be (Ta, hidden), got shape {arr.shape}")

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                np.savez(fh, features=arr, length=np.int64(length))

        return atomic_write(self.path(backbone, key), write)

    def disk_bytes(self, backbone: str | None = None) -> int:
        """Total size of the entries (of one backbone tag, or all)."""
        base = self.root / backbone[:16] if backbone else self.root
        return sum(f.stat().st_size for f in base.rglob("*.npz")) if base.exists() else 0


class CachedFeaturesDataset(Dataset):
    """A RAVDESS dataset's items with cached WavLM features in place of the audio (frozen-backbone stages).

    Wraps a :class:`~emolab.data.datasets.RavdessAVDataset` without changing
    it: the same items in the same order, the same augmentation draws (the
    base's :meth:`rng`, video draw then audio draw, exactly as the base draws
    them), but the audio keys are replaced by ``audio_features`` (float16
    ``(Ta, hidden)``, the stored ``last_hidden_state``) and ``audio_length``.
    The entry is the clean clip, or for a noisy draw the fixed variant
    :func:`choose_variant` picks from it (noise is already in the entry).
    Everything else of an item (video, label, meta) comes from the base,
    read without its audio, so it stays whatever the base makes it.

    It is a separate dataset rather than a mode of the base so that switching
    is building loaders over it (:class:`emolab.train.feature_cache.WavLMFeatureCache`):
    neither the base, its persistent DataLoader workers nor the model ever
    change mode, and the base's own loaders are untouched for the stages that
    run the backbone.

    Args:
        base: the dataset to stand in for; it must read audio and have a disk
            cache folder.
        backbone: the backbone tag the entries are filed under (40 hex digits,
            :func:`emolab.train.feature_cache.backbone_tag`).
        variants: noisy variants ``K`` per augmenting clip (``0``: clean only).

    Raises:
        TypeError: ``base`` lacks what the wrapper reads (not a RAVDESS dataset).
        ValueError: a malformed tag, ``variants`` outside ``[0, MAX_VARIANTS]``,
            no disk cache folder, or a base that does not read audio.
    """

    #: what the wrapper reads from its base
    BASE_MEMBERS = ("pairs", "cache", "modalities", "augment", "rng", "audio_clip", "load_wave", "audio_settings",
                    "audio_noise", "num_samples", "failures", "set_epoch")

    def __init__(self, base: Any, backbone: str, variants: int = 0) -> None:
        missing = [m for m in self.BASE_MEMBERS if not hasattr(base, m)]
        if missing:
            raise TypeError(f"CachedFeaturesDataset: {type(base).__name__} has no {', '.join(missing)} "
                            "(a RAVDESS dataset of emolab.data.datasets is needed)")
        if len(backbone) != _TAG_DIGITS or any(c not in "0123456789abcdef" for c in backbone):
            raise ValueError(f"a backbone tag has {_TAG_DIGITS} lower-case hex digits, got {backbone!r}")
        if not 0 <= variants <= MAX_VARIANTS:
            raise ValueError(f"variants must be in [0, {MAX_VARIANTS}], got {variants}")
        if base.cache.directory is None:
            raise ValueError("cached features need a disk cache folder (DataConfig.cache_dir is '')")
        if "audio" not in base.modalities:
            raise ValueError(f"cached audio features for a dataset that does not read audio "
                             f"(modalities {base.modalities!r})")
        self.base = base
        self.backbone = backbone
        self.variants = int(variants)
        self.store = FeatureStore(base.cache.directory)
        self._noise_tag: str | None = None
        # the base without its audio: video, label and meta exactly as it makes them, no audio read
        # (its draws do not depend on `modalities`; it shares the base's epoch counter, cache and failures)
        self._rest = copy.copy(base)
        self._rest.modalities = tuple(m for m in base.modalities if m != "audio")

    def __repr__(self) -> str:
        return (f"CachedFeaturesDataset({type(self.base).__name__}, {len(self)} items, "
                f"tag {self.backbone[:8]}, K={self.variants})")

    def __len__(self) -> int:
        return len(self.base)

    # the base's own members that loaders and the trainer read
    @property
    def pairs(self) -> list[Any]:
        return self.base.pairs

    @property
    def cache(self) -> Any:
        return self.base.cache

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.base.modalities

    @property
    def augment(self) -> bool:
        return self.base.augment

    @property
    def raw(self) -> bool:
        return bool(getattr(self.base, "raw", False))

    @property
    def failures(self) -> list[Any]:
        return self.base.failures

    def set_epoch(self, epoch: int) -> None:
        """The base's epoch (its shared-memory counter: persistent workers see it)."""
        self.base.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return int(self.base.epoch)

    # keys and entries
    @property
    def noise_tag(self) -> str:
        """What the base's noisy variants depend on (:func:`noise_tag`; computed once, on first use)."""
        if self._noise_tag is None:
            self._noise_tag = noise_tag(self.base.audio_noise)
        return self._noise_tag

    def key(self, index: int, variant: int = 0) -> str:
        """The entry key of pair ``index``'s audio, variant ``variant`` (0: clean); ``OSError`` if the file is gone."""
        ident = clip_identity(self.base.pairs[index].audio_path)
        return FeatureStore.key(ident, self.base.audio_settings, self.backbone, variant,
                                self.noise_tag if variant else "")

    def audio_draw(self, index: int) -> AudioNoiseParams | None:
        """The audio augmentation the base draws for ``index`` this epoch (``None``: no augmentation).

        The base draws from ``rng(index)`` the video augmentation first, then
        the audio noise; the same sequence here gives the same draw.
        """
        base = self.base
        if not base.augment or base.audio_noise is None:
            return None
        rng = base.rng(index)
        video_augment = getattr(base, "video_augment", None)
        if video_augment is not None:
            video_augment.sample(rng)
        return base.audio_noise.sample(base.num_samples, rng)

    def features(self, index: int, audio_params: AudioNoiseParams | None = None) -> CachedFeatures:
        """The entry standing in for pair ``index``'s audio under the drawn ``audio_params``.

        Raises:
            AudioReadError: the entry is missing and the audio file is unreadable.
            OSError: the audio file is gone.
            RuntimeError: the entry is missing although the file reads (removed
                during the run?); training with ``--no_feature_cache`` avoids the cache.
        """
        variant = choose_variant(audio_params, self.variants)
        key = self.key(index, variant)
        entry = self.store.get(self.backbone, key)
        if entry is None:
            self.base.audio_clip(index)  # an unreadable file raises here and the pair is skipped as usual
            raise RuntimeError(
                f"feature cache: no entry for {self.base.pairs[index].audio_path} (variant {variant}) at "
                f"{self.store.path(self.backbone, key)}; was the cache folder changed during the run? "
                "(train with --no_feature_cache to run the backbone instead)"
            )
        return entry

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self._rest[index]
        if item is None:  # the video failed: the base logged and counted it
            return None
        rec = self.base.pairs[index]
        try:
            entry = self.features(index, self.audio_draw(index))
        except (AudioReadError, OSError) as e:
            self.base.failures.append(Problem(str(rec.audio_path), str(e)))
            log.warning("skipping pair %d (%s): %s", index, rec.stem, e)
            return None
        out = without_audio_draw({k: v for k, v in item.items() if not k.startswith("audio") and k not in ("label", "meta")})
        out["audio_features"] = torch.from_numpy(entry.features)  # noise (if any) is already in the variant
        out["audio_length"] = entry.length
        out["label"], out["meta"] = item["label"], item["meta"]
        return out
