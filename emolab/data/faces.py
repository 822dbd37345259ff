"""Face detectors for face cropping: OpenCV's Haar cascade and MTCNN (``--face_detector haar|mtcnn``).

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

import numpy as np

from emolab.data.video import FaceDetector

__all__ = ["FACE_DETECTORS", "MTCNNFaceDetector", "make_face_detector"]

#: ``--face_detector`` choices; the first is the default.
FACE_DETECTORS: tuple[str, ...] = ("haar", "mtcnn")


class MTCNNFaceDetector:
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
        if detect_width < 24:
            raise ValueError(f"detect_width must be >= 24, got {detect_width}")
        self.detect_width = detect_width
        self.min_face_size = min_face_size
        self.thresholds = tuple(thresholds)
        self.min_prob = min_prob
        self._net = None
        self._reason: str | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_net"] = None
        state["_reason"] = None
        return state

    def _load(self):
        if self._net is None and self._reason is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as err:
                self._reason = f"facenet-pytorch is not installed ({err}; pip install facenet-pytorch==2.5.3)"
                return None
            self._net = MTCNN(
                min_face_size=self.min_face_size, thresholds=list(self.thresholds), keep_all=True, device="cpu"
            ).eval()
        return self._net

    @property
    def available(self) -> bool:
        """Whether detection can run (builds the network)."""
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
        import cv2
        import torch

        net = self._load()
        if net is None:
            raise RuntimeError(f"face detector unavailable: {self._reason}")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        scale = min(1.0, self.detect_width / w)
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
        x0, y0, x1, y1 = (float(v) / scale for v in (x0, y0, x1, y1))
        x, y = min(max(round(x0), 0), w - 1), min(max(round(y0), 0), h - 1)
        return x, y, max(1, min(round(x1) - x, w - x)), max(1, min(round(y1) - y, h - y))


def make_face_detector(name: str) -> FaceDetector | MTCNNFaceDetector:
    """A new detector by its ``--face_detector`` name (``haar`` or ``mtcnn``)."""
    if name == "haar":
        return FaceDetector()
    if name == "mtcnn":
        return MTCNNFaceDetector()
    raise ValueError(f"face_detector must be one of {FACE_DETECTORS}, got {name!r}")
