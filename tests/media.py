"""Synthetic media for the data-layer tests: WAVs (soundfile) and H.264 MP4s (PyAV).

Also holds ``draw_face``, a drawing the OpenCV Haar frontal-face cascade detects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import av
import cv2
import numpy as np
import soundfile as sf


def sine(freq: float, seconds: float, sample_rate: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """A sine of shape `(samples, channels)` (soundfile's layout)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def write_wav(path: Path, data: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), data, sample_rate, subtype=subtype)
    return Path(path)


def index_value(i: int) -> int:
    """Grey level painted on frame ``i`` by :func:`index_frames` (valid for i < 30)."""
    return 10 + 8 * i


def decode_index(frame: np.ndarray) -> int:
    """Recover the frame index from a frame painted by :func:`index_frames`."""
    return int(round((float(frame.mean()) - 10) / 8))


def index_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """``n`` constant grey RGB frames `(n, H, W, 3)`, frame i at level :func:`index_value`."""
    assert n <= 30
    return np.stack([np.full((height, width, 3), index_value(i), np.uint8) for i in range(n)])


def write_mp4(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: int = 30,
    *,
    faststart: bool = False,
    preset: str = "ultrafast",
    crf: int | None = None,
    bit_rate: int | None = None,
) -> Path:
    """Encode RGB uint8 frames `(H, W, 3)` to H.264 yuv420p MP4.

    ``faststart`` puts the moov atom first, so a file cut short still opens and
    reports the full frame count while fewer frames decode.
    """
    container = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {})
    stream = None
    for frame in frames:
        if stream is None:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frame.shape[:2]
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": preset, **({"crf": str(crf)} if crf is not None else {})}
            if bit_rate is not None:
                stream.bit_rate = bit_rate
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            container.mux(packet)
    assert stream is not None, "no frames"
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return Path(path)


def truncate(path: Path, fraction: float, out: Path | None = None) -> Path:
    """Write the first ``fraction`` of the file's bytes to ``out`` (default: in place)."""
    data = Path(path).read_bytes()
    out = Path(out or path)
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def draw_face(
    height: int,
    width: int,
    center: tuple[int, int] | None = None,
    face_h: int | None = None,
    background: int = 60,
) -> np.ndarray:
    """An RGB uint8 frame `(H, W, 3)` with a drawn face the Haar cascade detects.

    Recipe (grey levels): background 60, dark hair cap 30 over the top half,
    skin ellipse 190 (width 0.78 * face_h), dark eyes 40 and brows 50, lighter
    nose bridge 220, mouth 90, then a Gaussian blur of sigma ``face_h / 60``.
    Tinted to a skin colour (R, 0.85 G, 0.7 B). The cascade needs the face at
    least ~45 px tall in the image it runs on (FaceDetector downsizes to 320 px wide).
    """
    cx, cy = center if center is not None else (width // 2, height // 2)
    fh = face_h if face_h is not None else int(height * 0.6)
    fw = int(fh * 0.78)
    g = np.full((height, width), background, np.uint8)
    cv2.ellipse(g, (cx, cy - fh // 12), (int(fw * 0.56), int(fh * 0.56)), 0, 180, 360, 30, -1)
    cv2.ellipse(g, (cx, cy), (fw // 2, fh // 2), 0, 0, 360, 190, -1)
    ey, ex = cy - int(fh * 0.1), int(fw * 0.2)
    for s in (-1, 1):
        cv2.ellipse(g, (cx + s * ex, ey), (int(fw * 0.12), int(fh * 0.05)), 0, 0, 360, 40, -1)
        brow = (cx + s * ex, ey - int(fh * 0.09))
        cv2.ellipse(g, brow, (int(fw * 0.14), int(fh * 0.025)), 0, 0, 360, 50, -1)
    cv2.ellipse(g, (cx, cy + int(fh * 0.05)), (int(fw * 0.06), int(fh * 0.12)), 0, 0, 360, 220, -1)
    cv2.ellipse(g, (cx, cy + int(fh * 0.18)), (int(fw * 0.08), int(fh * 0.02)), 0, 0, 360, 130, -1)
    cv2.ellipse(g, (cx, cy + int(fh * 0.26)), (int(fw * 0.18), int(fh * 0.04)), 0, 0, 360, 90, -1)
    g = cv2.GaussianBlur(g, (0, 0), max(fh / 60, 0.5))
    rgb = np.stack([g, g * 0.85, g * 0.7], axis=-1)
    return rgb.astype(np.uint8)


def ravdess_like_clip(path: Path, seconds: float = 3.5, fps: int = 30, size=(1280, 720), seed: int = 0,
                      bit_rate: int = 8_000_000) -> Path:
    """A RAVDESS-like clip: 1280x720, 30 fps, a drawn face that moves a little over a
    textured background with sensor-like noise, encoded at ``bit_rate`` (RAVDESS
    MP4s are a few MB for 3-5 s, i.e. several Mbit/s), so H.264 has real work to do."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = draw_face(h, w, face_h=int(h * 0.55))
    texture = rng.integers(0, 12, size=(h, w, 1), dtype=np.uint8)
    n = int(round(seconds * fps))

    def frames():
        for i in range(n):
            dx = int(20 * np.sin(2 * np.pi * i / n))
            img = np.roll(base, dx, axis=1) + texture
            img = img + rng.integers(0, 16, size=(h, w, 1), dtype=np.uint8)
            yield img

    return write_mp4(path, frames(), fps, preset="veryfast", bit_rate=bit_rate)
