"""Tests for emolab.data.video on H.264 MP4 files generated in tmp_path."""

from __future__ import annotations

import pickle
import warnings

import av
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from emolab.data import video as V
from emolab.data.augment import (
    VideoAugment,
    VideoAugmentConfig,
    VideoAugmentParams,
    add_gaussian_noise,
    attenuate_brightness,
    gaussian_blur,
)
from emolab.data.faces import FaceDetector, center_square, crop_frames, face_box_to_square
from emolab.data.video import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipFrames,
    VideoReadError,
    denormalize,
    frames_to_float,
    frames_to_tensor,
    load_video_frames,
    normalize,
    preprocess_clip,
    probe_video,
    read_sampled_frames,
    resize_frames,
    sample_indices,
)
from tests.media import decode_index, draw_face, index_frames, truncate, write_mp4, write_wav, sine


def decoded_indices(frames: np.ndarray) -> list[int]:
    return [decode_index(f) for f in frames]


def count_decodable(path) -> int:
    """Frames that decode, counted independently of emolab."""
    n = 0
    with av.open(str(path)) as c:
        try:
            for _ in c.decode(video=0):
                n += 1
        except av.FFmpegError:
            pass
    return n


@pytest.fixture
def clip30(tmp_path):
    return write_mp4(tmp_path / "02-01-03-01-01-01-01.mp4", index_frames(30))


# --------------------------------------------------------------------------- probing and sampling


def test_probe_video(clip30):
    info = probe_video(clip30)
    assert info.path == clip30
    assert info.frames_reported == 30
    assert info.fps == pytest.approx(30.0)
    assert (info.width, info.height) == (64, 48)
    assert info.duration_s == pytest.approx(1.0, abs=0.05)


def test_sample_indices_rule():
    np.testing.assert_array_equal(sample_indices(30, 8), [0, 4, 8, 12, 17, 21, 25, 29])
    np.testing.assert_array_equal(sample_indices(8, 8), np.arange(8))
    np.testing.assert_array_equal(sample_indices(5, 8), [0, 1, 1, 2, 2, 3, 3, 4])
    np.testing.assert_array_equal(sample_indices(1, 3), [0, 0, 0])
    for n in range(8, 120):
        idx = sample_indices(n, 8)
        assert idx[0] == 0 and idx[-1] == n - 1 and np.all(np.diff(idx) > 0)
    with pytest.raises(ValueError):
        sample_indices(0, 8)
    with pytest.raises(ValueError):
        sample_indices(10, 0)


@pytest.fixture(params=["h264_shortcut", "full_decode"])
def decoder(request, monkeypatch):
    """Read H.264 clips through the shortcut that skips unneeded frames (the default), or decode them whole."""
    if request.param == "full_decode":
        monkeypatch.setattr(V, "decode_sampled", lambda *args: None)
    return request.param


def test_read_sampled_frames_picks_uniform_indices(clip30, monkeypatch, decoder):
    passes = []
    real = V._decode_pass
    monkeypatch.setattr(V, "_decode_pass", lambda *a, **k: passes.append(1) or real(*a, **k))
    frames, valid = read_sampled_frames(clip30, 8)
    assert frames.shape == (8, 48, 64, 3) and frames.dtype == np.uint8
    assert decoded_indices(frames) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert valid.dtype == bool and valid.all()
    assert len(passes) == (1 if decoder == "full_decode" else 0)  # the usual case decodes the clip once
    frames16, _ = read_sampled_frames(clip30, 16)
    assert decoded_indices(frames16) == list(sample_indices(30, 16))


def test_short_clip_repeats_frames_and_marks_them(tmp_path, decoder):
    path = write_mp4(tmp_path / "short.mp4", index_frames(5))
    frames, valid = read_sampled_frames(path, 8)
    assert decoded_indices(frames) == [0, 1, 1, 2, 2, 3, 3, 4]
    assert valid.tolist() == [True, True, False, True, False, True, False, True]


def test_container_without_frame_count(tmp_path, decoder):
    path = write_mp4(tmp_path / "clip.mkv", index_frames(20))
    frames, valid = read_sampled_frames(path, 8)
    assert decoded_indices(frames) == list(sample_indices(20, 8))
    assert valid.all()


@pytest.mark.parametrize("fraction", [0.4, 0.5, 0.6, 0.8, 0.95])
def test_container_reporting_more_frames_than_decode(tmp_path, fraction, decoder):
    """moov first, mdat cut short: the container still reports 30 frames."""
    full = write_mp4(tmp_path / "full.mp4", index_frames(30), faststart=True)
    cut = truncate(full, fraction, tmp_path / "cut.mp4")
    assert probe_video(cut).frames_reported == 30
    n = count_decodable(cut)
    assert n < 30
    if fraction >= 0.6:
        assert n > 0  # the case this test is about: reported 30, fewer decode
    if n == 0:
        with pytest.raises(VideoReadError, match="cut.mp4"):
            read_sampled_frames(cut, 8)
        return
    frames, valid = read_sampled_frames(cut, 8)
    expected = sample_indices(n, 8)
    assert decoded_indices(frames) == expected.tolist()
    assert valid.tolist() == V._valid_mask(expected).tolist()


@pytest.mark.parametrize("reported", [300, 10])
def test_reselection_when_held_frames_do_not_cover(tmp_path, monkeypatch, reported):
    """Reported count far from the decoded one: a second pass fetches the frames (the full decode's planning)."""
    monkeypatch.setattr(V, "decode_sampled", lambda *args: None)
    path = write_mp4(tmp_path / "c.mp4", index_frames(30))
    real_info = V._info

    def lying_info(*args):
        info = real_info(*args)
        info.frames_reported = reported
        return info

    monkeypatch.setattr(V, "_info", lying_info)
    passes = []
    real_pass = V._decode_pass
    monkeypatch.setattr(V, "_decode_pass", lambda *a, **k: passes.append(1) or real_pass(*a, **k))
    frames, valid = read_sampled_frames(path, 8)
    assert decoded_indices(frames) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert valid.all()
    assert len(passes) == 2


def _bad_videos(tmp_path):
    good = write_mp4(tmp_path / "good.mp4", index_frames(30))
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    half = truncate(good, 0.5, tmp_path / "half.mp4")  # moov at the end: cut away
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 20)
    wav = write_wav(tmp_path / "audio_only.wav", sine(440, 0.5, 16000), 16000)
    wav = wav.rename(tmp_path / "audio_only.mp4")  # a WAV with an .mp4 name: no video stream
    return {
        "zero": (zero, "empty"),
        "half": (half, "not a readable video"),
        "text": (text, "not a readable video"),
        "audio_only": (wav, "no video stream"),
        "missing": (tmp_path / "missing.mp4", "does not exist"),
    }


@pytest.mark.parametrize("kind", ["zero", "half", "text", "audio_only", "missing"])
def test_bad_video_raises_naming_file(tmp_path, kind):
    path, problem = _bad_videos(tmp_path)[kind]
    for fn in (probe_video, read_sampled_frames, preprocess_clip, load_video_frames):
        with pytest.raises(VideoReadError) as err:
            fn(path)
        assert str(path) in str(err.value)
        assert problem in str(err.value)


# --------------------------------------------------------------------------- cropping


def test_face_box_to_square():
    x0, y0, x1, y1 = face_box_to_square((100, 50, 40, 60), (240, 320), margin=0.25)
    assert x1 - x0 == y1 - y0 == 90
    assert (x0 + x1) / 2 == pytest.approx(120, abs=1) and (y0 + y1) / 2 == pytest.approx(80, abs=1)
    # near the corner: shifted inside, not shrunk
    assert face_box_to_square((0, 0, 40, 40), (240, 320)) == (0, 0, 60, 60)
    assert face_box_to_square((300, 220, 20, 20), (240, 320)) == (290, 210, 320, 240)
    # bigger than the frame: capped at the shorter side
    x0, y0, x1, y1 = face_box_to_square((10, 10, 200, 230), (240, 320))
    assert (y0, y1) == (0, 240) and x1 - x0 == 240
    with pytest.raises(ValueError):
        face_box_to_square((0, 0, 10, 10), (100, 100), margin=-0.1)


def test_crop_center_and_resize():
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crop_frames(frames, (10, 5, 30, 25)), frames[:, 5:25, 10:30])
    np.testing.assert_array_equal(center_square(frames), frames[:, :, 8:56])
    with pytest.raises(ValueError):
        crop_frames(frames, (10, 5, 70, 25))
    small = resize_frames(frames, 16)
    assert small.shape == (3, 16, 16, 3) and small.dtype == np.uint8
    flat = np.full((2, 48, 64, 3), 77, np.uint8)
    assert np.all(resize_frames(flat, 112) == 77)


class FixedDetector(FaceDetector):
    def __init__(self, box):
        super().__init__()
        self.box = box
        self.calls = []

    @property
    def available(self):
        return True

    def detect(self, frame):
        self.calls.append(frame.copy())
        return self.box


def _pattern_clip(tmp_path, n=12):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    frames = [np.roll(base, 3 * i, axis=1) for i in range(n)]
    return write_mp4(tmp_path / "pattern.mp4", frames, crf=0)


def test_face_box_from_first_frame_reused_for_all(tmp_path):
    path = _pattern_clip(tmp_path)
    raw, valid = read_sampled_frames(path, 8)
    det = FixedDetector((60, 20, 30, 40))
    clip = preprocess_clip(path, 8, 32, face_crop=True, detector=det)
    assert isinstance(clip, ClipFrames)
    assert clip.face == "found"
    assert len(det.calls) == 1
    np.testing.assert_array_equal(det.calls[0], raw[0])
    box = face_box_to_square((60, 20, 30, 40), (90, 160))
    assert clip.box == box
    np.testing.assert_array_equal(clip.frames, resize_frames(crop_frames(raw, box), 32))
    np.testing.assert_array_equal(clip.valid, valid)


def test_no_face_gives_center_crop(tmp_path):
    path = _pattern_clip(tmp_path)
    raw, _ = read_sampled_frames(path, 8)
    clip = preprocess_clip(path, 8, 32, face_crop=True, detector=FixedDetector(None))
    assert clip.face == "not_found"
    assert clip.box == (35, 0, 125, 90)
    np.testing.assert_array_equal(clip.frames, resize_frames(center_square(raw), 32))


def test_face_crop_off_resizes_whole_frame(tmp_path):
    path = _pattern_clip(tmp_path)
    raw, _ = read_sampled_frames(path, 8)
    det = FixedDetector((60, 20, 30, 40))
    clip = preprocess_clip(path, 8, 32, face_crop=False, detector=det)
    assert clip.face == "off" and clip.box is None and det.calls == []
    np.testing.assert_array_equal(clip.frames, resize_frames(raw, 32))
    assert clip.frames.shape == (8, 32, 32, 3)


def test_unavailable_detector_warns_and_uses_whole_frames(tmp_path):
    path = _pattern_clip(tmp_path)
    det = FaceDetector(cascade_path=tmp_path / "missing.xml")
    assert not det.available
    assert "missing.xml" in det.reason
    with pytest.raises(RuntimeError, match="missing.xml"):
        det.detect(np.zeros((48, 64, 3), np.uint8))
    with pytest.warns(UserWarning, match="missing.xml"):
        clip = preprocess_clip(path, 8, 32, face_crop=True, detector=det)
    assert clip.face == "off"


def test_real_haar_detector_finds_drawn_face(tmp_path):
    frames = [draw_face(120, 160, center=(80 + (i % 3), 60), face_h=80) for i in range(10)]
    path = write_mp4(tmp_path / "face.mp4", frames)
    det = FaceDetector()
    assert det.available and det.reason is None
    x, y, w, h = det.detect(read_sampled_frames(path, 1)[0][0])
    assert x < 80 < x + w and y < 60 < y + h
    assert 50 <= h <= 110
    clip = preprocess_clip(path, 8, 112, face_crop=True, detector=det)
    assert clip.face == "found"
    x0, y0, x1, y1 = clip.box
    assert x0 < 80 < x1 and y0 < 60 < y1
    # a clip without a face: centre crop, counted as not found
    blank = write_mp4(tmp_path / "blank.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 4)
    assert preprocess_clip(blank, 4, 112, detector=det).face == "not_found"


def test_real_detector_on_720p_frame():
    det = FaceDetector()
    frame = draw_face(720, 1280, center=(600, 380), face_h=400)
    x, y, w, h = det.detect(frame)
    assert x < 600 < x + w and y < 380 < y + h
    assert 250 <= h <= 550


def test_detector_pickles_without_cascade():
    det = FaceDetector()
    frame = draw_face(120, 160, face_h=80)
    box = det.detect(frame)
    assert det._backend is not None
    copy = pickle.loads(pickle.dumps(det))
    assert copy._backend is None
    assert copy.detect(frame) == box


# --------------------------------------------------------------------------- tensors


def test_frames_to_tensor_normalisation():
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 128, 0
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    for c, v in enumerate((255, 128, 0)):
        expected = (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(x[:, c], torch.full((2, 4, 5), expected))
    torch.testing.assert_close(denormalize(x), frames_to_float(frames))
    batched = normalize(frames_to_float(frames)[None].repeat(3, 1, 1, 1, 1))
    assert batched.shape == (3, 2, 3, 4, 5)
    torch.testing.assert_close(batched[2], x)
    # in place (the featuriser's): the same values bit for bit, written into the input, channels-last kept
    u8 = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 6, 7, 3), dtype=np.uint8))
    mine = u8.permute(0, 1, 4, 2, 3).float().div_(255.0)
    expected = normalize(mine)
    out = normalize(mine, inplace=True)
    assert out.data_ptr() == mine.data_ptr() and out.stride() == expected.stride()
    assert torch.equal(out, expected)


def test_load_video_frames_shapes_and_rng(clip30):
    x = load_video_frames(clip30)
    assert x.shape == (8, 3, 112, 112) and x.dtype == torch.float32
    with pytest.raises(ValueError, match="rng"):
        load_video_frames(clip30, augment=True)
    a = load_video_frames(clip30, augment=True, face_crop=False, rng=np.random.default_rng(3))
    b = load_video_frames(clip30, augment=True, face_crop=False, rng=np.random.default_rng(3))
    torch.testing.assert_close(a, b)
    y = load_video_frames(clip30, num_frames=4, size=64, face_crop=False)
    assert y.shape == (4, 3, 64, 64)


# --------------------------------------------------------------------------- augmentation


def _noise_video(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 32, 32, generator=g)


def _high_freq_energy(v: torch.Tensor) -> float:
    return float((v[..., 1:, :] - v[..., :-1, :]).pow(2).mean() + (v[..., 1:] - v[..., :-1]).pow(2).mean())


def test_blur_reduces_high_frequency_energy():
    v = _noise_video()
    energies = [_high_freq_energy(v)] + [_high_freq_energy(gaussian_blur(v, k)) for k in (3, 5, 7)]
    assert all(a > b for a, b in zip(energies, energies[1:]))
    torch.testing.assert_close(gaussian_blur(v, 5), TF.gaussian_blur(v, [5, 5]))
    with pytest.raises(ValueError):
        gaussian_blur(v, 4)


def test_brightness_attenuation_exact_mean():
    v = _noise_video()
    for f in (0.2, 0.45, 0.6):
        out = attenuate_brightness(v, f)
        assert out.mean().item() == pytest.approx((1 - f) * v.mean().item(), rel=1e-6)
        torch.testing.assert_close(out, v * (1 - f))
    with pytest.raises(ValueError):
        attenuate_brightness(v, 1.5)


def test_noise_has_requested_std():
    v = torch.full((4, 3, 64, 64), 0.5)
    for scale in (0.01, 0.03, 0.05):
        out = add_gaussian_noise(v, scale, np.random.default_rng(0))
        assert (out - v).std().item() == pytest.approx(scale, rel=0.03)
        assert (out - v).mean().item() == pytest.approx(0.0, abs=scale * 0.02)
    clipped = add_gaussian_noise(torch.ones(1, 3, 8, 8), 0.5, np.random.default_rng(0))
    assert clipped.max() <= 1.0 and clipped.min() >= 0.0


def test_augment_probabilities_and_ranges():
    aug = VideoAugment()
    rng = np.random.default_rng(0)
    params = [aug.sample(rng) for _ in range(4000)]
    kernels = [p.blur_kernel for p in params if p.blur_kernel is not None]
    bright = [p.brightness for p in params if p.brightness is not None]
    noise = [p.noise_scale for p in params if p.noise_scale is not None]
    for applied in (kernels, bright, noise):
        assert len(applied) / len(params) == pytest.approx(0.5, abs=0.03)
    for k in (3, 5, 7):
        assert kernels.count(k) / len(kernels) == pytest.approx(1 / 3, abs=0.04)
    assert 0.2 <= min(bright) and max(bright) <= 0.6
    assert 0.01 <= min(noise) and max(noise) <= 0.05
    never = VideoAugment(VideoAugmentConfig(p_blur=0.0, p_brightness=0.0, p_noise=0.0))
    v = _noise_video()
    assert torch.equal(never(v, np.random.default_rng(0)), v)


def test_augment_applies_sampled_params():
    aug = VideoAugment()
    v = _noise_video()
    params = VideoAugmentParams(blur_kernel=5, brightness=0.3, noise_scale=None)
    torch.testing.assert_close(
        aug.apply(v, params), attenuate_brightness(gaussian_blur(v, 5), 0.3)
    )


def test_augment_same_rng_same_result():
    aug = VideoAugment(VideoAugmentConfig(p_blur=1.0, p_brightness=1.0, p_noise=1.0))
    v = _noise_video()
    a = aug(v, np.random.default_rng(42))
    b = aug(v, np.random.default_rng(42))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, aug(v, np.random.default_rng(43)))
    assert a.shape == v.shape


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(p_blur=1.5), "p_blur"),
        (dict(p_noise=-0.1), "p_noise"),
        (dict(blur_kernels=(3, 4)), "blur_kernels"),
        (dict(blur_kernels=()), "blur_kernels"),
        (dict(brightness=(0.6, 0.2)), "brightness"),
        (dict(brightness=(0.2, 1.2)), "brightness"),
        (dict(noise_scale=(-0.01, 0.05)), "noise_scale"),
        (dict(noise_scale=(0.01,)), "noise_scale"),
    ],
)
def test_augment_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        VideoAugmentConfig(**kwargs)


def test_no_warnings_on_normal_path(clip30):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preprocess_clip(clip30, 8, 112, face_crop=True)
