"""Face detectors and crop boxes for face cropping: MTCNN and OpenCV's Haar cascade (``--face_detector mtcnn|haar``).

MTCNN is the datasets' default (issue #16): on the demo corpus it finds the face
in every clip where the Haar cascade misses 29 % (README 'Tensors').

Both find the largest face in an RGB ``uint8`` frame of shape ``(H, W, 3)``
and return ``(x, y, w, h)`` or ``None``; both work offline. The MTCNN is
facenet-pytorch's (P-Net, R-Net, O-Net; Zhang et al. 2016), whose weights ship
inside its wheel (``facenet_pytorch/data/{p,r,o}net.pt``). emolab pins
facenet-pytorch 2.5.3: 2.6.0 pins ``torch<2.3``, ``torchvision<0.18``,
``numpy<2`` and ``Pillow<10.3``, while 2.5.3 asks for numpy, requests,
torchvision and Pillow without versions, all already installed with emolab's
pins; the weights of the two versions are the same files (same MD5).
"""

from __future__ import annotations

import os
from typing import Union

import cv2
import numpy as np

__all__ = [
    "FACE_DETECTORS",
    "FaceDetector",
    "FaceDetectorBase",
    "MTCNNFaceDetector",
    "center_square",
    "center_square_box",
    "crop_frames",
    "default_face_detector",
    "face_box_to_square",
    "make_face_detector",
]

PathLike = Union[str, os.PathLike]



class FaceDetectorBase:
    """What every largest-face detector shares: a backend built lazily on first use and
    dropped when pickled (rebuilt in each DataLoader worker), detection on a copy
    downscaled to at most ``detect_width`` pixels wide, and one box format.

    Subclasses set ``name`` and implement ``_load()`` (the backend, or None with
    ``_reason`` set) and ``_find(backend, frame, scale)``: the largest face found on the
    copy downscaled by ``scale`` (each detector makes its own copy), as ``(x0, y0, x1, y1)``
    in the frame's pixel coordinates, or None.
    """

    name = ""

    def __init__(self, detect_width: int) -> None:
        if detect_width < 24:
            raise ValueError(f"detect_width must be >= 24, got {detect_width}")
        self.detect_width = detect_width
        self._backend = None
        self._reason: str | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_backend"] = None
        state["_reason"] = None
        return state

    def _load(self):
        raise NotImplementedError  # pragma: no cover - every detector overrides it

    def _find(self, backend, frame: np.ndarray, scale: float) -> tuple[float, float, float, float] | None:
        raise NotImplementedError  # pragma: no cover - every detector overrides it

    @property
    def available(self) -> bool:
        """Whether detection can run (builds the backend)."""
        return self._load() is not None

    @property
    def reason(self) -> str | None:
        """Why the detector is unavailable (None when it is available)."""
        self._load()
        return self._reason

    def detect(self, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        """Find the largest face in an RGB uint8 frame of shape ``(H, W, 3)``.

        Returns:
            ``(x, y, w, h)`` in the frame's pixel coordinates, or None if no face.

        Raises:
            RuntimeError: the detector is unavailable (see :attr:`reason`).
        """
        backend = self._load()
        if backend is None:
            raise RuntimeError(f"face detector unavailable: {self._reason}")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        box = self._find(backend, frame, min(1.0, self.detect_width / w))
        if box is None:
            return None
        x0, y0, x1, y1 = box
        x, y = min(max(round(x0), 0), w - 1), min(max(round(y0), 0), h - 1)
        return x, y, max(1, min(round(x1) - x, w - x)), max(1, min(round(y1) - y, h - y))


class FaceDetector(FaceDetectorBase):
    """Largest-face detector on OpenCV's bundled Haar cascade (works offline).

    The cascade is loaded lazily on first use and dropped when pickled (it is
    rebuilt in each DataLoader worker). Detection runs on a grayscale,
    histogram-equalised copy downscaled to at most ``detect_width`` pixels wide.

    Args:
        cascade_path: cascade XML; defaults to ``haarcascade_frontalface_default.xml``
            from ``cv2.data.haarcascades``.
        detect_width: width of the downscaled copy detection runs on.
        scale_factor: ``detectMultiScale`` pyramid step.
        min_neighbors: ``detectMultiScale`` neighbour threshold (higher: fewer false faces).
        min_size: smallest face side, in pixels of the downscaled copy.
    """

    name = "haar"

    def __init__(
        self,
        cascade_path: PathLike | None = None,
        detect_width: int = 320,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
    ) -> None:
        super().__init__(detect_width)
        self.cascade_path = cascade_path
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def _load(self):  # the cascade, or None with _reason set
        if self._backend is None and self._reason is None:
            if not hasattr(cv2, "CascadeClassifier"):
                self._reason = (
                    f"OpenCV {cv2.__version__} has no CascadeClassifier "
                    "(install opencv-python-headless<5)"
                )
                return None
            path = self.cascade_path
            if path is None:
                base = getattr(getattr(cv2, "data", None), "haarcascades", None)
                if base is None:
                    self._reason = "cv2.data.haarcascades is missing from this OpenCV build"
                    return None
                path = os.path.join(base, "haarcascade_frontalface_default.xml")
            if not os.path.isfile(path):
                self._reason = f"Haar cascade file {path} not found"
                return None
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                self._reason = f"Haar cascade file {path} could not be loaded"
                return None
            self._backend = cascade
        return self._backend

    def _find(self, cascade, frame: np.ndarray, scale: float) -> tuple[int, int, int, int] | None:
        h, w = frame.shape[:2]
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        boxes = cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        if len(boxes) == 0:
            return None
        x, y, bw, bh = max((tuple(int(v) for v in b) for b in boxes), key=lambda b: b[2] * b[3])
        if scale < 1.0:
            x, y, bw, bh = (round(v / scale) for v in (x, y, bw, bh))
        return x, y, x + bw, y + bh


_DEFAULT_DETECTOR: FaceDetector | None = None


def default_face_detector() -> FaceDetector:
    """The shared Haar :class:`FaceDetector` (built lazily on first call) that the low-level video functions
    use when given no detector; datasets pass the ``--face_detector`` one (MTCNN by default)."""
    global _DEFAULT_DETECTOR
    if _DEFAULT_DETECTOR is None:
        _DEFAULT_DETECTOR = FaceDetector()
    return _DEFAULT_DETECTOR


def face_box_to_square(
    box: tuple[int, int, int, int], frame_hw: tuple[int, int], margin: float = 0.25
) -> tuple[int, int, int, int]:
    """Turn a face box into a square crop box with context around the face.

    The square is centred on the box, its side is ``max(w, h) * (1 + 2 * margin)``
    (``margin`` of the face size added on every side), capped at the shorter frame
    side, and shifted (not shrunk) to lie inside the frame.

    Args:
        box: ``(x, y, w, h)`` face box.
        frame_hw: ``(H, W)`` of the frame.
        margin: extra context per side as a fraction of the face size.

    Returns:
        ``(x0, y0, x1, y1)`` with ``x1 - x0 == y1 - y0``, inside the frame.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x, y, w, h = box
    fh, fw = frame_hw
    if w <= 0 or h <= 0:
        raise ValueError(f"face box must have positive size, got {box}")
    side = min(int(round(max(w, h) * (1 + 2 * margin))), fh, fw)
    cx, cy = x + w / 2, y + h / 2
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), fw - side)
    y0 = min(max(y0, 0), fh - side)
    return x0, y0, x0 + side, y0 + side


def crop_frames(frames: np.ndarray, box_xyxy: tuple[int, int, int, int]) -> np.ndarray:
    """Crop every frame of `(T, H, W, 3)` to ``(x0, y0, x1, y1)`` -> `(T, y1-y0, x1-x0, 3)`."""
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    h, w = frames.shape[1:3]
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"crop box {box_xyxy} does not fit frames of size {w}x{h}")
    return frames[:, y0:y1, x0:x1]


def center_square_box(hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The central square ``(x0, y0, x1, y1)`` of a frame of size ``(H, W)``."""
    h, w = hw
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    return x0, y0, x0 + side, y0 + side


def center_square(frames: np.ndarray) -> np.ndarray:
    """Central square crop of `(T, H, W, 3)` -> `(T, S, S, 3)`, ``S = min(H, W)``."""
    return crop_frames(frames, center_square_box(frames.shape[1:3]))


#: ``--face_detector`` choices; the first is the default.
FACE_DETECTORS: tuple[str, ...] = ("mtcnn", "haar")


class MTCNNFaceDetector(FaceDetectorBase):
    """Largest-face detector on facenet-pytorch's MTCNN, on the CPU (works offline).

    The network is built lazily on first use and dropped when pickled (it is
    rebuilt in each DataLoader worker). Detection runs on a copy downscaled to
    at most ``detect_width`` pixels wide, as for the Haar cascade.

    Args:
        detect_width: width of the downscaled copy detection runs on.
        min_face_size: smallest face side, in pixels of the downscaled copy.
        thresholds: P-Net, R-Net and O-Net score thresholds (facenet-pytorch's defaults).
        min_prob: faces scored below this are ignored.
    """

    name = "mtcnn"

    def __init__(
        self,
        detect_width: int = 320,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        min_prob: float = 0.9,
    ) -> None:
        super().__init__(detect_width)
        self.min_face_size = min_face_size
        self.thresholds = tuple(thresholds)
        self.min_prob = min_prob

    def _load(self):
        if self._backend is None and self._reason is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as err:
                self._reason = f"facenet-pytorch is not installed ({err}; pip install facenet-pytorch==2.5.3)"
                return None
            self._backend = MTCNN(
                min_face_size=self.min_face_size, thresholds=list(self.thresholds), keep_all=True, device="cpu"
            ).eval()
        return self._backend

    def _find(self, net, frame: np.ndarray, scale: float) -> tuple[float, float, float, float] | None:
        import cv2
        import torch

        h, w = frame.shape[:2]
        small = frame
        if scale < 1.0:
            small = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        with torch.inference_mode():
            boxes, probs = net.detect(np.ascontiguousarray(small))
        if boxes is None:
            return None
        kept = [b for b, p in zip(boxes, probs) if p is not None and p >= self.min_prob]
        if not kept:
            return None
        x0, y0, x1, y1 = max(kept, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        return tuple(float(v) / scale for v in (x0, y0, x1, y1))


def make_face_detector(name: str) -> FaceDetector | MTCNNFaceDetector:
    """A new detector by its ``--face_detector`` name (``haar`` or ``mtcnn``)."""
    if name == "haar":
        return FaceDetector()
    if name == "mtcnn":
        return MTCNNFaceDetector()
    raise ValueError(f"face_detector must be one of {FACE_DETECTORS}, got {name!r}")
