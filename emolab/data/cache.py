"""Decode-once cache of frames and resampled audio.

H.264 at 720p decodes at only a few clips per second on a small machine, and
sampling 8 frames still decodes the whole clip, so decoding every clip every
epoch (the seed project's way) starves the model. :class:`FrameCache` keeps each
clip's sampled, face-cropped, resized ``uint8`` frames in memory (a bounded LRU
per process) and on disk (one ``.npz`` per clip, shared by DataLoader workers
and later runs). Entries are keyed by the file (absolute path, size, mtime) and
the preprocessing settings, so an edited file or a changed setting is a miss,
never a stale hit. Augmentations run on the cached frames.

Audio gets the same treatment (:meth:`FrameCache.audio`): the WAV read and the
48 -> 16 kHz resampling happen once, and later epochs read the padded 16 kHz
clip as ``int16`` (96 KB for 3 s) with its peak scale, which is what the
batched featurisation of :mod:`emolab.data.features` ships to the device.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emolab.data.video import RESIZE_MODES, ClipFrames, DecodeStats
from emolab.utils.fileio import atomic_write, mark_used
from emolab.utils.lru import ByteLRU

class CacheWriteWarning(UserWarning):
    """The cache folder cannot be written (read-only, full, gone): the cache went memory-only."""


#: Bump when the preprocessing changes in a way that invalidates old entries.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$EMOLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/emolab``, else ``~/.cache/emolab``."""
    if os.environ.get("EMOLAB_CACHE_DIR"):
        return Path(os.environ["EMOLAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emolab"


@dataclass(frozen=True)
class FrameSettings:
    """The preprocessing that a cached clip depends on.

    Attributes:
        num_frames: frames sampled uniformly over the clip.
        size: output side in pixels (frames are ``size x size``).
        face_crop: crop to the face found on the first sampled frame.
        resize: ``"area"`` or ``"linear"`` interpolation (:func:`~emolab.data.video.resize_frames`).
        detector: the face detector's name (``"haar"`` or ``"mtcnn"``, see :mod:`emolab.data.faces`).
    """

    num_frames: int = 8
    size: int = 112
    face_crop: bool = True
    resize: str = "area"
    detector: str = "haar"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {sorted(RESIZE_MODES)}, got {self.resize!r}")

    def tag(self) -> str:
        # "area" adds nothing, so that entries written before `resize` existed stay valid
        interp = "" if self.resize == "area" else f"-i{self.resize}"
        # likewise "haar" (and any detector without face cropping) adds nothing
        det = f"-d{self.detector}" if self.face_crop and self.detector != "haar" else ""
        return f"v{CACHE_VERSION}-t{self.num_frames}-s{self.size}-f{int(self.face_crop)}{interp}{det}"


@dataclass(frozen=True)
class AudioSettings:
    """The audio preprocessing a cached clip depends on: rate (Hz), padded length (s) and resampler."""

    sample_rate: int = 16000
    seconds: float = 3.0
    resampler: str = "torchaudio"

    def tag(self) -> str:
        # "torchaudio" adds nothing, so that entries written before `resampler` existed stay valid
        resampler = "" if self.resampler == "torchaudio" else f"-{self.resampler}"
        return f"a{CACHE_VERSION}-r{self.sample_rate}-s{self.seconds:g}{resampler}"


@dataclass
class ClipAudio:
    """A padded mono clip as ``int16`` samples ``(1, N)`` plus its scale and valid length.

    ``samples / 32767 * scale`` is the float wave; ``scale`` is the clip's peak
    (at least 1e-8), so quiet clips keep their resolution.
    """

    samples: np.ndarray
    scale: float
    length: int

    @classmethod
    def from_wave(cls, wave: np.ndarray, length: int) -> ClipAudio:
        """Quantise a float wave ``(1, N)``."""
        wave = np.asarray(wave, dtype=np.float32)
        scale = max(float(np.abs(wave).max(initial=0.0)), 1e-8)
        samples = np.clip(np.rint(wave / scale * 32767.0), -32767, 32767).astype(np.int16)
        return cls(samples, scale, int(length))

    def to_float(self) -> np.ndarray:
        """The float32 wave ``(1, N)``."""
        factor = np.float32(self.scale) / np.float32(32767.0)  # in float32, as BatchFeaturizer computes it
        return self.samples.astype(np.float32) * factor

    @property
    def nbytes(self) -> int:
        return self.samples.nbytes


def _os_reason(err: OSError) -> str:
    """``No space left on device`` rather than ``[Errno 28] No space left on device: '/long/tmp/path'``."""
    return err.strerror or str(err)


def _read_frames(z: Any) -> ClipFrames:
    box = tuple(int(v) for v in z["box"]) if z["box"].size == 4 else None
    decode = None
    if "decode" in z.files:  # entries written before the counts were recorded have none
        declared, decoded, has_error = (int(v) for v in z["decode"])
        decode = DecodeStats(declared, decoded, str(z["decode_error"]) if has_error else None)
    return ClipFrames(frames=z["frames"], valid=z["valid"], face=str(z["face"]), box=box, decode=decode)


def _read_audio(z: Any) -> ClipAudio:
    return ClipAudio(z["samples"], float(z["scale"]), int(z["length"]))


def _frame_arrays(clip: ClipFrames) -> dict[str, np.ndarray]:
    box = np.asarray(clip.box if clip.box is not None else (), dtype=np.int64)
    out = {"frames": clip.frames, "valid": clip.valid, "face": np.str_(clip.face), "box": box}
    if clip.decode is not None:
        d = clip.decode
        out["decode"] = np.asarray([d.declared, d.decoded, d.error is not None], dtype=np.int64)
        out["decode_error"] = np.str_(d.error or "")
    return out


def _audio_arrays(entry: ClipAudio) -> dict[str, np.ndarray]:
    return {"samples": entry.samples, "scale": np.float64(entry.scale), "length": np.int64(entry.length)}


def _entry_bytes(entry: ClipFrames | ClipAudio) -> int:
    if isinstance(entry, ClipAudio):
        return entry.nbytes
    return entry.frames.nbytes + entry.valid.nbytes


class FrameCache:
    """Memory + disk cache of :class:`~emolab.data.video.ClipFrames` and :class:`ClipAudio`.

    Args:
        directory: where ``.npz`` entries live (created on demand); ``None``
            keeps the cache in memory only.
        memory_bytes: bound of the in-process LRU (0 disables it). With
            DataLoader workers each process has its own; the disk entries (and
            the OS page cache over them) are what they share.

    The object is picklable, so a dataset holding it can go to worker processes.

    A cache failure is never a data failure: when an entry cannot be written
    (read-only folder, full disk), the cache warns once, naming the folder and
    the cause, stops writing (:attr:`write_error`) and keeps entries in memory;
    existing disk entries are still read. A damaged entry (empty, truncated,
    not a zip) is a miss, recomputed and rewritten.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, memory_bytes: int = 1 << 30):
        self.directory = Path(directory) if directory is not None else None
        self._memory: ByteLRU[ClipFrames | ClipAudio] = ByteLRU(memory_bytes, _entry_bytes)
        self._resolved: dict[str | os.PathLike[str], Path] = {}
        self.hits_memory = 0
        self.hits_disk = 0
        self.misses = 0
        #: why disk writes stopped (``None`` while they work)
        self.write_error: str | None = None

    def disable_writes(self, reason: str, *, warn: bool = True) -> None:
        """Stop writing to disk (memory-only from now on); warn once naming the folder and ``reason``."""
        if self.write_error is not None or self.directory is None:
            return
        self.write_error = reason
        if warn:
            warnings.warn(
                f"cache folder {self.directory} cannot be written ({reason}); "
                "caching in memory only for this run (no clip is left out)",
                CacheWriteWarning,
                stacklevel=2,
            )

    def check_writable(self) -> bool:
        """Try to write a small file into the cache folder; on failure :meth:`disable_writes` (warns once).

        Returns whether disk writes are on.
        """
        if self.directory is None or self.write_error is not None:
            return self.directory is not None and self.write_error is None
        probe = self.directory / f".probe.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as fh:
                fh.write(b"\0" * 4096)
            probe.unlink()
        except OSError as err:
            try:
                probe.unlink()
            except OSError:
                pass
            self.disable_writes(_os_reason(err))
            return False
        return True

    @property
    def memory_bytes(self) -> int:
        """Bound of the in-process memory (workers start empty: a pickled ByteLRU arrives empty)."""
        return self._memory.max_bytes

    def key(self, path: str | os.PathLike[str], settings: FrameSettings | AudioSettings) -> str:
        """Hex digest of the file identity and the settings."""
        p = self._resolved.get(path)
        if p is None:  # resolving walks every path component: once per path and process
            p = self._resolved[path] = Path(path).resolve()
        st = p.stat()
        ident = f"{p}|{st.st_size}|{st.st_mtime_ns}|{settings.tag()}"
        # surrogateescape: a folder name that is not UTF-8 hashes by its bytes (UTF-8 names: the same keys)
        return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()

    def _disk_path(self, key: str, kind: str = "frames") -> Path:
        assert self.directory is not None
        return self.directory / kind / key[:2] / f"{key}.npz"

    def get(self, path: str | os.PathLike[str], settings: FrameSettings) -> ClipFrames | None:
        """The cached clip, or ``None``."""
        return self._get(self.key(path, settings))

    def _get(self, key: str) -> ClipFrames | None:
        return self._lookup(key, "frames", _read_frames)

    def _lookup(self, key: str, kind: str, read: Callable[[Any], Any]) -> Any:
        """The entry from memory, else from disk (``read`` parses the open ``.npz``), else ``None``."""
        entry = self._memory.get(key)
        if entry is not None:
            self.hits_memory += 1
            return entry
        if self.directory is None:
            return None
        try:
            path = self._disk_path(key, kind)
            with np.load(path, allow_pickle=False) as z:
                entry = read(z)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # a damaged (empty, truncated, not a zip) entry is a miss; it is rewritten atomically
        self.hits_disk += 1
        mark_used(path)  # once per process and entry: later reads are memory hits
        self._remember(key, entry)
        return entry

    def _remember(self, key: str, entry: ClipFrames | ClipAudio) -> None:
        self._memory.put(key, entry)

    def put(self, path: str | os.PathLike[str], settings: FrameSettings, clip: ClipFrames) -> None:
        """Store a clip (atomically on disk: temporary file, then rename)."""
        self._put(self.key(path, settings), clip)

    def _put(self, key: str, clip: ClipFrames) -> None:
        self._store(key, "frames", clip, _frame_arrays)

    def _store(self, key: str, kind: str, entry: Any, arrays: Callable[[Any], dict[str, np.ndarray]]) -> None:
        """Remember ``entry`` and write ``arrays(entry)`` atomically (temporary file, then rename).

        A failed write turns disk writes off (:meth:`disable_writes`); the entry stays in memory.
        """
        self._remember(key, entry)
        if self.directory is None or self.write_error is not None:
            return

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                np.savez(fh, **arrays(entry))

        try:
            atomic_write(self._disk_path(key, kind), write, durable=False)
        except OSError as err:
            # in a loader worker the main process warns (warm_cache); here only the switch
            from torch.utils.data import get_worker_info

            self.disable_writes(_os_reason(err), warn=get_worker_info() is None)

    def _cached(self, key: str, kind: str, read: Callable[[Any], Any], compute: Callable[[], Any],
                arrays: Callable[[Any], dict[str, np.ndarray]]) -> Any:
        entry = self._lookup(key, kind, read)
        if entry is not None:
            return entry
        self.misses += 1
        entry = compute()
        self._store(key, kind, entry, arrays)
        return entry

    def get_or_compute(
        self,
        path: str | os.PathLike[str],
        settings: FrameSettings,
        compute: Callable[[], ClipFrames],
    ) -> ClipFrames:
        """The cached clip, or ``compute()`` stored and returned."""
        return self._cached(self.key(path, settings), "frames", _read_frames, compute, _frame_arrays)

    def audio(
        self,
        path: str | os.PathLike[str],
        settings: AudioSettings,
        compute: Callable[[], ClipAudio],
        *,
        key: str | None = None,
    ) -> ClipAudio:
        """The cached audio clip, or ``compute()`` stored (atomically) and returned.

        ``key``: :meth:`key` of ``(path, settings)`` when the caller has it already.
        """
        return self._cached(key or self.key(path, settings), "audio", _read_audio, compute, _audio_arrays)

    def disk_bytes(self, kind: str | None = "frames") -> int:
        """Total size of the disk entries of ``kind`` (``"frames"``, ``"audio"``; None: both)."""
        if self.directory is None:
            return 0
        kinds = ("frames", "audio") if kind is None else (kind,)
        return sum(
            f.stat().st_size for k in kinds if (self.directory / k).exists() for f in (self.directory / k).rglob("*.npz")
        )

    def clear_memory(self) -> None:
        self._memory.clear()
