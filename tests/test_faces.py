"""``--face_detector haar|mtcnn`` (issue #16): both find a real face, the frame cache keys MTCNN, the CLI maps it."""

from __future__ import annotations

import builtins
import pickle

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from emolab.data import DataConfig, RavdessMelDataset
from emolab.data.cache import CACHE_VERSION, FrameSettings
from emolab.data.faces import FACE_DETECTORS, FaceDetector, MTCNNFaceDetector, make_face_detector
from emolab.data.pairing import pair_corpus
from emolab.train.cli import build_parser, config_from_args

pytest.importorskip("facenet_pytorch")

#: Grace Hopper's face in matplotlib's sample photo (600 x 512), drawn and checked by eye: (x0, y0, x1, y1).
HOPPER_FACE = (172, 110, 354, 338)


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    return np.array(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))


@pytest.mark.parametrize("name", FACE_DETECTORS)
def test_finds_a_real_face(hopper, name) -> None:
    det = make_face_detector(name)
    assert det.available and det.reason is None and det.name == name
    x, y, w, h = det.detect(hopper)
    cx, cy = (HOPPER_FACE[0] + HOPPER_FACE[2]) / 2, (HOPPER_FACE[1] + HOPPER_FACE[3]) / 2
    assert x <= cx <= x + w and y <= cy <= y + h  # the box holds the face's centre
    side = max(HOPPER_FACE[2] - HOPPER_FACE[0], HOPPER_FACE[3] - HOPPER_FACE[1])
    assert 0.5 <= max(w, h) / side <= 2.0  # and is about face-sized
    assert det.detect(np.full((120, 160, 3), 128, np.uint8)) is None  # a flat grey frame has no face


def test_mtcnn_pickles_without_its_network(hopper) -> None:
    det = MTCNNFaceDetector()
    box = det.detect(hopper)
    again = pickle.loads(pickle.dumps(det))  # what a DataLoader worker receives
    assert again._backend is None and again.detect(hopper) == box


def test_mtcnn_unavailable_names_the_package(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_facenet(name, *args, **kwargs):
        if name.startswith("facenet_pytorch"):
            raise ImportError("No module named 'facenet_pytorch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_facenet)
    det = MTCNNFaceDetector()
    assert not det.available and "pip install facenet-pytorch==2.5.3" in det.reason
    with pytest.raises(RuntimeError, match="face detector unavailable"):
        det.detect(np.zeros((32, 32, 3), np.uint8))


def test_detector_is_part_of_the_frame_cache_key() -> None:
    haar = FrameSettings(8, 112, True, "area")
    assert haar.tag() == f"v{CACHE_VERSION}-t8-s112-f1"  # unchanged: entries written before the option stay valid
    assert FrameSettings(8, 112, True, "area", "haar").tag() == haar.tag()
    assert FrameSettings(8, 112, True, "area", "mtcnn").tag() == haar.tag() + "-dmtcnn"
    assert FrameSettings(8, 112, False, "area", "mtcnn").tag() == FrameSettings(8, 112, False).tag()  # no crop


def test_config_and_cli() -> None:
    assert DataConfig().face_detector == "mtcnn" and FACE_DETECTORS[0] == "mtcnn"  # the default since issue #16
    with pytest.raises(ValueError, match="face_detector must be one of"):
        DataConfig(face_detector="dlib")
    assert config_from_args(build_parser().parse_args(["--data_root", "d"])).data.face_detector == "mtcnn"
    args = build_parser().parse_args(["--data_root", "d", "--face_detector", "haar"])
    assert config_from_args(args).data.face_detector == "haar"
    assert isinstance(make_face_detector("haar"), FaceDetector)
    assert isinstance(make_face_detector("mtcnn"), MTCNNFaceDetector)
    with pytest.raises(ValueError, match="face_detector"):
        make_face_detector("dlib")


def test_dataset_with_mtcnn(demo_root, cache_dir) -> None:
    pairs = pair_corpus(demo_root).pairs[:2]
    cfg = DataConfig(num_frames=2, frame_size=32)  # MTCNN by default
    d = RavdessMelDataset(pairs, config=cfg)
    assert isinstance(d.detector, MTCNNFaceDetector) and d.frame_settings.detector == "mtcnn"
    item = d[0]
    assert item["video_u8"].shape == (2, 32, 32, 3)
    plain = RavdessMelDataset(pairs, config=DataConfig(num_frames=2, frame_size=32, face_detector="haar"))
    assert isinstance(plain.detector, FaceDetector)
    keys = {d.cache.key(pairs[0].video_path, s) for s in (d.frame_settings, plain.frame_settings)}
    assert len(keys) == 2  # a Haar entry is never served to an MTCNN run
    assert d.cache.get(pairs[0].video_path, d.frame_settings) is not None  # stored under the MTCNN key
    assert d.cache.get(pairs[0].video_path, plain.frame_settings) is None
    assert plain[0]["video_u8"].shape == (2, 32, 32, 3)  # haar still works, under its unchanged key
    assert plain.cache.get(pairs[0].video_path, plain.frame_settings).face in ("found", "not_found")


def test_a_config_saved_before_mtcnn_was_the_default_keeps_haar() -> None:
    from emolab.train import TrainConfig

    saved = TrainConfig().to_dict()
    del saved["data"]["face_detector"]  # what config.json held before the field existed
    assert TrainConfig.from_dict(saved).data.face_detector == "haar"
    assert TrainConfig.from_dict(TrainConfig().to_dict()).data.face_detector == "mtcnn"
