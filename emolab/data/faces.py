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

from emolab.data.video import FaceDetector, FaceDetectorBase

__all__ = ["FACE_DETECTORS", "MTCNNFaceDetector", "make_face_detector"]

#: ``--face_detector`` choices; the first is the default.
FACE_DETECTORS: tuple[str, ...] = ("haar", "mtcnn")


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
