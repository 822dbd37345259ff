"""Video tensors (SPEC §2.1): decode, sample, face-crop, resize, normalise.

The pipeline is split so that the expensive part can be cached:

* :func:`preprocess_clip` decodes a clip once (PyAV), samples ``num_frames``
  frames uniformly from what actually decodes, crops the face
  (:mod:`emolab.data.faces`; box from the first sampled frame, reused for all
  frames) and resizes to ``size x size``. Its result, :class:`ClipFrames`
  (uint8 frames + validity mask), is the unit a cache stores and what a
  dataset item carries (``video_u8``).
* :func:`frames_to_float` / :func:`normalize` turn frames into the float
  tensors models see; in training and evaluation the featuriser
  (:class:`~emolab.data.features.BatchFeaturizer`) does it per batch on the
  device, with the augmentation of :mod:`emolab.data.augment`.

:func:`load_video_frames` composes both for one-off use.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import av
import cv2
import numpy as np
import torch
from torch import Tensor

from emolab.data.augment import VideoAugment
from emolab.data.faces import FaceDetector, center_square_box, crop_frames, default_face_detector, face_box_to_square
from emolab.data.decoding import DecodeStats, decode_sampled
from emolab.utils.fileio import media_source

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_FRAMES",
    "FRAME_SIZE",
    "VideoReadError",
    "VideoInfo",
    "probe_video",
    "sample_indices",
    "read_sampled_frames",
    "read_sampled_frames_stats",
    "decode_stats",
    "DecodeStats",
    "resize_frames",
    "RESIZE_MODES",
    "ClipFrames",
    "preprocess_clip",
    "frames_to_float",
    "frames_to_tensor",
    "normalize",
    "denormalize",
    "load_video_frames",
]

PathLike = Union[str, os.PathLike]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_FRAMES = 8  # frames sampled per clip
FRAME_SIZE = 112  # output frames are FRAME_SIZE x FRAME_SIZE

# When decoding, also hold (undecoded-to-RGB) the `_SLACK` frames before each
# wanted index and the last `_SLACK + 1` frames, so that a clip that decodes a
# few frames fewer than its container reports can be re-sampled without a
# second decoding pass.
_SLACK = 3

_AV_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError)


class VideoReadError(RuntimeError):
    """A video file could not be read; the message names the file and the problem."""


# --------------------------------------------------------------------------- reading


@dataclass
class VideoInfo:
    """Container-level facts about a clip (no decoding).

    Attributes:
        path: the file.
        frames_reported: frame count the container reports (0 if it does not say);
            RAVDESS MP4s sometimes report more than actually decode.
        fps: average frame rate (0.0 if unknown).
        width: frame width in pixels.
        height: frame height in pixels.
        duration_s: stream (or container) duration in seconds (0.0 if unknown).
    """

    path: Path
    frames_reported: int
    fps: float
    width: int
    height: int
    duration_s: float


def _open(path: PathLike) -> tuple[Path, av.container.InputContainer, av.video.stream.VideoStream]:
    p = Path(path)
    if not p.is_file():
        raise VideoReadError(f"{p}: video file does not exist")
    if p.stat().st_size == 0:
        raise VideoReadError(f"{p}: video file is empty (0 bytes)")
    try:
        container = av.open(media_source(p))
    except _AV_ERRORS as e:
        raise VideoReadError(f"{p}: not a readable video file ({e})") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{p}: file has no video stream")
    return p, container, container.streams.video[0]


def _info(p: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    ctx = stream.codec_context
    return VideoInfo(
        path=p,
        frames_reported=int(stream.frames or 0),
        fps=fps,
        width=int(ctx.width),
        height=int(ctx.height),
        duration_s=duration,
    )


def probe_video(path: PathLike) -> VideoInfo:
    """Read container metadata of a video file without decoding any frame.

    Raises:
        VideoReadError: the file is missing, empty, not a video, or has no video stream.
    """
    p, container, stream = _open(path)
    try:
        return _info(p, container, stream)
    finally:
        container.close()


def sample_indices(num_available: int, num_frames: int) -> np.ndarray:
    """Uniformly spaced frame indices over a clip, first and last frame included.

    ``round(linspace(0, num_available - 1, num_frames))`` with halves rounded up.
    When ``num_available >= num_frames`` the indices are distinct; a shorter clip
    repeats frames (e.g. 5 frames, 8 samples: ``0 1 1 2 2 3 3 4``).

    Returns:
        int64 array of shape `(num_frames,)`, non-decreasing.
    """
    if num_available <= 0:
        raise ValueError(f"num_available must be positive, got {num_available}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    return np.floor(np.linspace(0, num_available - 1, num_frames) + 0.5).astype(np.int64)


def _valid_mask(indices: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each index, False where an index repeats."""
    valid = np.ones(len(indices), dtype=bool)
    valid[1:] = indices[1:] != indices[:-1]
    return valid


def _decode_pass(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    keep: set[int],
    stop_after: int | None = None,
    tail: int = 0,
) -> tuple[dict[int, av.VideoFrame], int, str | None]:
    """Decode frames in display order, holding those whose index is in ``keep``.

    Returns ``(held, n, error)``: held frames by index, the number of frames decoded
    (the whole clip unless ``stop_after`` stopped early) and the decoder error that
    ended decoding early, if any. The last ``tail`` frames are held too.
    """
    held: dict[int, av.VideoFrame] = {}
    last: deque[tuple[int, av.VideoFrame]] = deque(maxlen=max(tail, 1))
    n = 0
    error = None
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if n in keep:
                    held[n] = frame
                if tail:
                    last.append((n, frame))
                n += 1
                if stop_after is not None and n > stop_after:
                    return held, n, None
    except _AV_ERRORS as e:  # truncated or corrupt data: keep what decoded
        error = str(e)
    if tail:
        for i, frame in last:
            held.setdefault(i, frame)
    return held, n, error


def read_sampled_frames(path: PathLike, num_frames: int = NUM_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Decode a clip and return ``num_frames`` uniformly sampled full-resolution RGB frames.

    Sampling follows :func:`sample_indices` over the frames that actually decode,
    not the container's reported count (some RAVDESS MP4s report more). H.264
    clips (RAVDESS's) count their packets first and decode only the sampled
    frames and the frames they are predicted from (:func:`~emolab.data.decoding.decode_sampled`).
    Other clips, or any surprise there, are decoded whole, planning the indices
    from the reported count and holding a few frames around each and at the
    end, so that a count that differs is re-sampled from held frames or, failing
    that, a second pass. Only kept frames are converted to RGB. A file whose
    decoding fails part-way is sampled from the frames decoded before the failure
    (:func:`read_sampled_frames_stats` also returns the counts, so such a clip
    can be reported).

    Args:
        path: the video file.
        num_frames: number of frames ``T`` to sample.

    Returns:
        ``(frames, valid)``: uint8 array of shape `(T, H, W, 3)` (RGB) and bool array
        of shape `(T,)`, False where a frame repeats an earlier sampled frame
        because the clip has fewer than ``T`` frames.

    Raises:
        VideoReadError: the file is missing, empty, not a video, has no video
            stream, or no frame decodes.
    """
    frames, valid, _ = read_sampled_frames_stats(path, num_frames)
    return frames, valid


def read_sampled_frames_stats(
    path: PathLike, num_frames: int = NUM_FRAMES
) -> tuple[np.ndarray, np.ndarray, DecodeStats]:
    """:func:`read_sampled_frames` plus the :class:`DecodeStats` of the clip."""
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    p, container, stream = _open(path)
    try:
        info = _info(p, container, stream)
        expected = info.frames_reported or int(round(info.duration_s * info.fps))
        quick = decode_sampled(container, stream, lambda n: sample_indices(n, num_frames))
    finally:
        container.close()
    if quick is not None:  # H.264: only the sampled frames and their references were decoded
        held, n = quick
        indices = sample_indices(n, num_frames)
        return _to_rgb(held, indices), _valid_mask(indices), DecodeStats(int(expected), int(n))
    p, container, stream = _open(path)
    try:
        stream.thread_type = "AUTO"
        keep: set[int] = set()
        if expected > 0:
            for i in sample_indices(expected, num_frames):
                keep.update(range(max(0, int(i) - _SLACK), int(i) + 1))
        held, n, error = _decode_pass(container, stream, keep, tail=_SLACK + 1)
    finally:
        container.close()
    if n == 0:
        why = f": {error}" if error else ""
        raise VideoReadError(f"{p}: no video frame could be decoded{why}")
    indices = sample_indices(n, num_frames)
    missing = {int(i) for i in indices} - held.keys()
    if missing:  # decoded count far from the reported one: decode again, keep what is needed
        _, container, stream = _open(p)
        try:
            stream.thread_type = "AUTO"
            more, _, _ = _decode_pass(container, stream, missing, stop_after=max(missing))
        finally:
            container.close()
        held.update(more)
        if missing - held.keys():
            raise VideoReadError(f"{p}: frames decode differently on a second pass (corrupt file?)")
    return _to_rgb(held, indices), _valid_mask(indices), DecodeStats(int(expected), int(n), error)


def _to_rgb(held: dict[int, av.VideoFrame], indices: np.ndarray) -> np.ndarray:
    """The frames at ``indices`` (display order, repeats allowed) as one RGB array ``(T, H, W, 3)``."""
    rgb = {int(i): held[int(i)].to_ndarray(format="rgb24") for i in np.unique(indices)}
    return np.stack([rgb[int(i)] for i in indices])


def decode_stats(path: PathLike) -> DecodeStats:
    """Decode every frame of a clip (no conversion) and count them against what the container declares.

    Raises:
        VideoReadError: the file is missing, empty, not a video or has no video stream.
    """
    p, container, stream = _open(path)
    try:
        info = _info(p, container, stream)
        stream.thread_type = "AUTO"
        _, n, error = _decode_pass(container, stream, set())
    finally:
        container.close()
    return DecodeStats(info.frames_reported or int(round(info.duration_s * info.fps)), n, error)


#: ``resize`` names -> OpenCV interpolation: ``"area"`` (emolab's default: averages the
#: source pixels, no aliasing when shrinking 720p to 112 px) or ``"linear"`` (the seed's
#: ``cv2.resize`` default, bilinear from 4 source pixels: reproduces its tensors).
RESIZE_MODES: dict[str, int] = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


def resize_frames(frames: np.ndarray, size: int = FRAME_SIZE, resize: str = "area") -> np.ndarray:
    """Resize every frame of `(T, H, W, 3)` to `(T, size, size, 3)`.

    ``resize`` is ``"area"`` (``cv2.INTER_AREA``, the default) or ``"linear"``
    (``cv2.INTER_LINEAR``, the seed project's). The aspect ratio is not kept
    (crop to a square first to keep it).
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {sorted(RESIZE_MODES)}, got {resize!r}")
    if frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames)
    out = np.empty((frames.shape[0], size, size, frames.shape[3]), dtype=frames.dtype)
    for t, frame in enumerate(frames):
        out[t] = cv2.resize(np.ascontiguousarray(frame), (size, size), interpolation=RESIZE_MODES[resize])
    return out


@dataclass
class ClipFrames:
    """A preprocessed clip: what a frame cache stores.

    Attributes:
        frames: uint8 RGB frames of shape `(T, size, size, 3)`.
        valid: bool mask of shape `(T,)`, False for frames repeated because the clip is short.
        face: ``"found"`` (face crop), ``"not_found"`` (centre square crop) or
            ``"off"`` (face cropping not requested or no detector: whole frame resized).
        box: the ``(x0, y0, x1, y1)`` crop in source pixels, or None for the whole frame.
        decode: how much of the file decoded (``None``: not recorded, e.g. an older cache entry).
    """

    frames: np.ndarray
    valid: np.ndarray
    face: str
    box: tuple[int, int, int, int] | None = None
    decode: DecodeStats | None = None


def preprocess_clip(
    path: PathLike,
    num_frames: int = NUM_FRAMES,
    size: int = FRAME_SIZE,
    face_crop: bool = True,
    detector: FaceDetector | None = None,
    margin: float = 0.25,
    resize: str = "area",
) -> ClipFrames:
    """Decode, sample, face-crop and resize a clip (the cacheable unit).

    With ``face_crop``, the face is detected on the first sampled frame only and
    its square box (:func:`face_box_to_square`) crops every frame (SPEC §2.1);
    without a face, frames are centre-square cropped (``face="not_found"``).
    Without ``face_crop`` (the seed's ``--no_face_crop``), whole frames are resized to
    ``size x size`` and the aspect ratio is not kept. If ``face_crop`` is asked for
    but the detector is unavailable (OpenCV without ``CascadeClassifier``), a
    warning is given and whole frames are used (``face="off"``).

    Args:
        path: the video file.
        num_frames: frames sampled uniformly (:func:`read_sampled_frames`).
        size: output side in pixels.
        face_crop: crop to the face.
        detector: face detector; defaults to :func:`default_face_detector`.
        margin: context around the face box (see :func:`face_box_to_square`).
        resize: ``"area"`` or ``"linear"`` (the seed's), see :func:`resize_frames`.

    Returns:
        :class:`ClipFrames` with frames of shape `(T, size, size, 3)`.

    Raises:
        VideoReadError: the file cannot be decoded (see :func:`read_sampled_frames`).
    """
    frames, valid, stats = read_sampled_frames_stats(path, num_frames)
    face, box = "off", None
    if face_crop:
        det = detector if detector is not None else default_face_detector()
        if not det.available:
            warnings.warn(
                f"face cropping requested but the face detector is unavailable ({det.reason}); "
                "using whole frames",
                stacklevel=2,
            )
        else:
            found = det.detect(frames[0])
            if found is not None:
                face, box = "found", face_box_to_square(found, frames.shape[1:3], margin)
            else:
                face, box = "not_found", center_square_box(frames.shape[1:3])
            frames = crop_frames(frames, box)
    return ClipFrames(frames=resize_frames(frames, size, resize), valid=valid, face=face, box=box, decode=stats)


# --------------------------------------------------------------------------- tensors


def frames_to_float(frames: np.ndarray) -> Tensor:
    """uint8 frames of shape `(T, H, W, 3)` -> float32 tensor of shape `(T, 3, H, W)` in [0, 1]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return video.float().div_(255.0).contiguous()


def _stats(video: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=video.dtype, device=video.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=video.dtype, device=video.device).view(3, 1, 1)
    return mean, std


def normalize(video: Tensor, *, inplace: bool = False) -> Tensor:
    """ImageNet-normalise a [0, 1] video of shape `(..., 3, H, W)`: ``(x - mean) / std``.

    ``inplace=True`` writes into ``video`` (same values, bit for bit) for a caller that owns it: a batch of 32
    clips at 112 px is 38 MB, and a new tensor of that size costs as much in page faults as the arithmetic
    (43 -> 22 ms with the uint8 conversion, 2 CPU threads).
    """
    mean, std = _stats(video)
    return video.sub_(mean).div_(std) if inplace else (video - mean) / std


def denormalize(video: Tensor) -> Tensor:
    """Invert :func:`normalize` (clamp to [0, 1] before display)."""
    mean, std = _stats(video)
    return video * std + mean


def frames_to_tensor(frames: np.ndarray) -> Tensor:
    """uint8 frames `(T, H, W, 3)` -> ImageNet-normalised float32 `(T, 3, H, W)`."""
    return normalize(frames_to_float(frames), inplace=True)


def load_video_frames(
    path: PathLike,
    num_frames: int = NUM_FRAMES,
    size: int = FRAME_SIZE,
    *,
    augment: bool | VideoAugment = False,
    face_crop: bool = True,
    detector: FaceDetector | None = None,
    rng: np.random.Generator | None = None,
    resize: str = "area",
) -> Tensor:
    """Load a clip as the tensor the video models see (SPEC §2.1).

    :func:`preprocess_clip` (decode, uniform sampling, face crop, resize), then
    [0, 1], then :class:`VideoAugment` if ``augment``, then ImageNet normalisation.
    Datasets should cache :func:`preprocess_clip` results instead of calling this.

    Args:
        path: the video file.
        num_frames: frames ``T`` sampled uniformly.
        size: output side in pixels.
        augment: True for the default :class:`VideoAugment`, or an instance.
        face_crop: crop to the face found on the first sampled frame.
        detector: face detector; defaults to :func:`default_face_detector`.
        rng: random generator, required when ``augment`` is set.
        resize: ``"area"`` or ``"linear"`` (the seed's), see :func:`resize_frames`.

    Returns:
        float32 tensor of shape `(T, 3, size, size)`.
    """
    aug = VideoAugment() if augment is True else (augment or None)
    if aug is not None and rng is None:
        raise ValueError("load_video_frames(augment=...) needs an explicit rng (numpy Generator)")
    clip = preprocess_clip(path, num_frames, size, face_crop=face_crop, detector=detector, resize=resize)
    video = frames_to_float(clip.frames)
    if aug is not None:
        video = aug(video, rng)
    return normalize(video)
