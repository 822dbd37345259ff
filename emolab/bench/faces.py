"""Face detectors (``--face_detector haar|mtcnn``): detection rate and decode+detect cost per clip.

    python benchmarks/face_detectors.py data/demo 22,23,24 [SKIMAGE_DATA_DIR]

On the paired clips of the given actors: how often the first sampled frame has
a face, and the decode+detect time per clip (8 frames at 112, one thread).
With SKIMAGE_DATA_DIR (the ``skimage/data`` folder of an unpacked scikit-image
wheel; scikit-image is not imported), also real photos: astronaut, camera and
matplotlib's Grace Hopper in 18 variants each (512/256/128 px wide, rotated
-15/0/15 degrees, full/half brightness), counted correct when the box holds the
hand-checked face centre and is face-sized, and ``lfw_subset`` (100 faces and
100 non-faces of 25 px, upscaled to 100). Prints lines and writes
``mtcnn_on_haar_misses.png`` (MTCNN crops of clips the Haar cascade misses).
Quoted in the main README ("Face detector").
"""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import torch
from matplotlib import cbook
from PIL import Image

from emolab.data.faces import FACE_DETECTORS, make_face_detector
from emolab.data.pairing import pair_corpus
from emolab.data.video import preprocess_clip

#: Hand-checked face boxes (x0, y0, x1, y1) in the originals (drawn and looked at).
FACES = {"astronaut": (180, 62, 268, 173), "camera": (196, 117, 255, 195), "grace_hopper": (172, 110, 354, 338)}


def corpus(root: str, actors: set[int]) -> None:
    pairs = [p for p in pair_corpus(root).pairs if int(p.actor) in actors]
    print(f"{len(pairs)} paired clips of actors {sorted(actors)} in {root}")
    missed, tiles = [], []
    for name in FACE_DETECTORS:
        det = make_face_detector(name)
        preprocess_clip(pairs[0].video_path, 8, 112, face_crop=True, detector=det)  # warm-up (loads the model)
        found, t0 = 0, time.perf_counter()
        for p in pairs:
            clip = preprocess_clip(p.video_path, 8, 112, face_crop=True, detector=det)
            found += clip.face == "found"
            if name == "haar" and clip.face != "found":
                missed.append(p.video_path)
            elif name == "mtcnn" and p.video_path in missed[:16]:
                tiles.append(clip.frames[0])
        per_clip = (time.perf_counter() - t0) / len(pairs)
        t0 = time.perf_counter()
        for p in pairs[:40]:
            preprocess_clip(p.video_path, 8, 112, face_crop=False)
        decode = (time.perf_counter() - t0) / min(40, len(pairs))
        print(f"corpus {name}: face found in {found}/{len(pairs)} clips ({found / len(pairs):.1%}), "
              f"decode+detect {per_clip * 1000:.0f} ms/clip (decode alone {decode * 1000:.0f} ms/clip)")
    if tiles:
        Image.fromarray(np.concatenate(tiles, 1)).save("mtcnn_on_haar_misses.png")


def variants(img: np.ndarray, face: tuple[int, int, int, int]) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(image, face centre, face side) for each scale, rotation and brightness."""
    h, w = img.shape[:2]
    centre = np.array([(face[0] + face[2]) / 2, (face[1] + face[3]) / 2, 1.0])
    side = max(face[2] - face[0], face[3] - face[1])
    out = []
    for scale in (1.0, 0.5, 0.25):
        im = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        for angle in (-15, 0, 15):
            m = cv2.getRotationMatrix2D((im.shape[1] / 2, im.shape[0] / 2), angle, 1.0)
            rotated = cv2.warpAffine(im, m, (im.shape[1], im.shape[0]), borderMode=cv2.BORDER_REFLECT)
            c = m @ (centre * np.array([scale, scale, 1.0]))
            for gain in (0.5, 1.0):
                out.append((np.clip(rotated * gain, 0, 255).astype(np.uint8), c, side * scale))
    return out


def correct(box, centre, side) -> bool:
    """The box holds the true face centre and is face-sized."""
    if box is None:
        return False
    x, y, bw, bh = box
    return x <= centre[0] <= x + bw and y <= centre[1] <= y + bh and 0.5 <= max(bw, bh) / side <= 2.0


def photos(skimage_data: str) -> None:
    rgb = lambda path: np.array(Image.open(path).convert("RGB"))  # noqa: E731
    images = {
        "astronaut": rgb(f"{skimage_data}/astronaut.png"),
        "camera": rgb(f"{skimage_data}/camera.png"),
        "grace_hopper": rgb(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
    }
    lfw = np.load(f"{skimage_data}/lfw_subset.npy")  # 100 faces then 100 non-faces, 25x25 grey in [0, 1]
    lfw = [cv2.resize((np.stack([x] * 3, -1) * 255).astype(np.uint8), (100, 100), interpolation=cv2.INTER_CUBIC)
           for x in lfw]
    for name in FACE_DETECTORS:
        det = make_face_detector(name)
        parts = []
        for label, img in images.items():
            vs = variants(img, FACES[label])
            t0 = time.perf_counter()
            boxes = [det.detect(v) for v, _, _ in vs]
            ms = (time.perf_counter() - t0) / len(vs) * 1000
            ok = sum(correct(b, c, s) for b, (_, c, s) in zip(boxes, vs))
            anybox = sum(b is not None for b in boxes)
            parts.append(f"{label} correct {ok}/{len(vs)} (any box {anybox}, {ms:.0f} ms/image)")
        hits = [det.detect(x) is not None for x in lfw]
        parts.append(f"lfw_subset faces {sum(hits[:100])}/100, non-faces flagged {sum(hits[100:])}/100")
        print(f"photos {name}: " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    """``CORPUS ACTORS [SKIMAGE_DATA_DIR]``, as in the module docstring."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    corpus(args[0], {int(a) for a in args[1].split(",")})
    if len(args) > 2:
        photos(args[2])
    return 0
