"""Disk cache of frozen-backbone features (WavLM ``last_hidden_state``): storage, keys, noise variants, serving.

While the WavLM backbone is entirely frozen its output for a clip never
changes, so :mod:`emolab.train.feature_cache` computes it once per clip and
DataLoader workers serve it from here instead of a waveform. This module is
the model-free half: where entries live, what they are keyed by, the fixed
noisy variants, and the shared-memory switch that tells (persistent) workers
to serve features.

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

Writes are atomic (:func:`emolab.fileio.atomic_write`); a damaged entry reads
as a miss and is recomputed by the next fill.

Noise variants (an approximation of the augmentation). Variant ``k`` of a clip
mixes noise drawn from a generator seeded by ``(clip identity, k)`` at an SNR
drawn from the policy's *noisy* levels (:func:`variant_params`). At training
time the dataset still draws its per-epoch parameters as always; a clip is
clean when the draw says clean (probability ``p_clean``), otherwise it is
variant ``1 + seed % K`` of the drawn noise seed (:func:`choose_variant`). So
the clean/noisy proportion follows the policy exactly, but the noise itself is
one of ``K`` fixed excerpts and SNRs per clip instead of fresh every epoch;
the variants are shared by every run and seed that uses the same clips and
noise source. With ``K = 0`` a cached stage trains on clean features only.
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emolab.data.cache import AudioSettings
from emolab.data.noise import GAUSSIAN_NOISE_SAMPLES, AudioNoise, AudioNoiseParams
from emolab.fileio import atomic_write, atomic_write_json, mark_used

__all__ = [
    "CachedFeatures",
    "FeatureStore",
    "FeatureSwitch",
    "MAX_VARIANTS",
    "choose_variant",
    "clip_identity",
    "noise_tag",
    "variant_params",
]

#: Bump when the stored features change meaning (invalidates every entry).
FEATURE_CACHE_VERSION = 1
#: Upper bound of the noisy variants per clip (the switch stores K in one byte).
MAX_VARIANTS = 64
_TAG_BYTES = 20  # a backbone tag is 40 hex digits
_VARIANT_SEED = 0x5EED_FEA7  # a fixed base: variants belong to the clip, not to a run


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
        """The entry, or ``None`` when it is missing or damaged; ``touch`` marks it used (see :mod:`emolab.cachetool`)."""
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


class FeatureSwitch:
    """Shared-memory mode of a dataset: serve cached features (with a backbone tag and ``K``) or waveforms.

    Like the dataset's epoch counter it lives in shared memory, so persistent
    DataLoader workers see a switch made between epochs.
    """

    def __init__(self) -> None:
        self._state = torch.zeros(2 + _TAG_BYTES, dtype=torch.uint8).share_memory_()

    def enable(self, backbone: str, variants: int = 0) -> None:
        """Serve the entries of backbone tag ``backbone`` (40 hex digits), with ``variants`` noisy variants."""
        raw = bytes.fromhex(backbone)
        if len(raw) != _TAG_BYTES:
            raise ValueError(f"a backbone tag has {2 * _TAG_BYTES} hex digits, got {backbone!r}")
        if not 0 <= variants <= MAX_VARIANTS:
            raise ValueError(f"variants must be in [0, {MAX_VARIANTS}], got {variants}")
        self._state[2:] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        self._state[1] = int(variants)
        self._state[0] = 1  # last: a reader that sees the flag sees the tag

    def disable(self) -> None:
        """Serve waveforms again."""
        self._state[0] = 0

    @property
    def enabled(self) -> bool:
        return bool(self._state[0])

    @property
    def variants(self) -> int:
        return int(self._state[1])

    @property
    def backbone(self) -> str:
        return bytes(self._state[2:].tolist()).hex()

    def state(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "variants": self.variants, "backbone": self.backbone}
