"""Inputs as the seed project made them: ``--resize linear`` (cv2.INTER_LINEAR) and the soxr resampler.

References are independent of emolab's pipeline: ``cv2.resize`` called
directly on the decoded frames, and ``soxr.resample`` as librosa calls it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from emolab.data import DataConfig, RavdessMelDataset
from emolab.data.cache import FrameCache, FrameSettings
from emolab.data.ravdess import PairRecord
from emolab.data.video import read_sampled_frames, resize_frames
from emolab.train.cli import build_parser, config_from_args
from tests.media import sine, write_mp4, write_wav


def _textured(n: int, h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """Frames with fine detail, where bilinear and area interpolation differ."""
    rng = np.random.default_rng(seed)
    smooth = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.stack([np.roll(smooth, 3 * i, axis=1) for i in range(n)])


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> PairRecord:
    root = tmp_path_factory.mktemp("seed-inputs")
    video = write_mp4(root / "02-01-05-01-01-01-01.mp4", _textured(6), crf=10)
    audio = write_wav(root / "03-01-05-01-01-01-01.wav", sine(440.0, 1.0, 48000), 48000)
    return PairRecord(video, audio, 5, 1, 1, 1, 1)


def test_resize_frames_is_opencvs_interpolation() -> None:
    frames = _textured(3, 200, 300, seed=1)
    for name, flag in (("linear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA)):
        want = np.stack([cv2.resize(f, (112, 112), interpolation=flag) for f in frames])
        np.testing.assert_array_equal(resize_frames(frames, 112, name), want)
    np.testing.assert_array_equal(resize_frames(frames, 112), resize_frames(frames, 112, "area"))  # the default
    assert np.abs(resize_frames(frames, 112, "linear").astype(int) - resize_frames(frames, 112).astype(int)).max() > 10
    with pytest.raises(ValueError, match="resize must be one of"):
        resize_frames(frames, 112, "cubic")
    with pytest.raises(ValueError, match="resize must be"):
        DataConfig(resize="nearest")


def test_dataset_frames_with_resize_linear_are_the_seeds(clip, tmp_path) -> None:
    """Same cache folder for both: the interpolation is part of the key (no stale hit)."""
    decoded, _ = read_sampled_frames(clip.video_path, 4)
    expected = {
        name: np.stack([cv2.resize(f, (64, 64), interpolation=flag) for f in decoded])
        for name, flag in (("linear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA))
    }
    assert not np.array_equal(expected["linear"], expected["area"])
    cache = str(tmp_path / "cache")
    for name in ("area", "linear", "area"):
        cfg = DataConfig(num_frames=4, frame_size=64, face_crop="none", resize=name, cache_dir=cache)
        ds = RavdessMelDataset([clip], config=cfg, modalities=("video",))
        np.testing.assert_array_equal(ds[0]["video_u8"].numpy(), expected[name], err_msg=name)
        assert ds.frame_settings.resize == name
    keys = {FrameCache(None).key(clip.video_path, FrameSettings(4, 64, False, r)) for r in ("area", "linear")}
    assert len(keys) == 2
    assert FrameSettings(8, 112, True).tag() == "v1-t8-s112-f1"  # entries written before --resize stay valid


def test_resize_flag() -> None:
    parse = lambda argv: config_from_args(build_parser().parse_args(argv))  # noqa: E731
    assert parse([]).data.resize == "area"
    assert parse(["--resize", "linear"]).data.resize == "linear"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--resize", "cubic"])
    from emolab.train import TrainConfig

    cfg = parse(["--resize", "linear"])
    assert TrainConfig.from_dict(cfg.to_dict()).data.resize == "linear"  # config.json keeps it (e.g. for --resume)


def _librosa_load(path: Path, sr: int = 16000) -> np.ndarray:
    """What the seed's ``librosa.load(path, sr=sr)`` returns, without librosa: soundfile float32,
    mean over channels, ``soxr.resample(quality="soxr_hq")`` (librosa's default ``res_type``),
    then ``fix_length`` to ``ceil(n * sr / sr_native)`` samples."""
    import soundfile as sf
    import soxr

    y, sr_native = sf.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    n = int(np.ceil(len(y) * sr / sr_native))
    y = soxr.resample(y, sr_native, sr, quality="soxr_hq")
    return np.pad(y[:n], (0, max(0, n - len(y))))


def _broadband(seconds: float = 1.0, sr: int = 48000, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = 0.05 * rng.standard_normal((int(seconds * sr), channels)) + sine(440.0, seconds, sr, channels, amp=0.3)
    return x.astype(np.float32)


@pytest.mark.parametrize("channels", [1, 2])
def test_soxr_resampler_is_librosas(tmp_path, channels) -> None:
    pytest.importorskip("soxr", reason="soxr is pinned in pyproject.toml; this environment lacks it")
    from emolab.data.audio import load_audio

    path = write_wav(tmp_path / "x.wav", _broadband(1.0, 48000, channels), 48000)
    wave, length = load_audio(path, 16000, 3.0, return_length=True, resampler="soxr")
    want = _librosa_load(path)
    assert length == len(want) == 16000 and wave.shape == (1, 48000)
    np.testing.assert_allclose(wave[0, :length].numpy(), want, rtol=0, atol=1e-7)
    assert wave[0, length:].abs().max() == 0  # zero padding to 3 s
    default = load_audio(path, 16000, 3.0)
    assert (default - wave).abs().max() > 1e-3  # torchaudio, the default, is another filter


def test_resampler_config_flag_and_cache_key(clip, tmp_path) -> None:
    pytest.importorskip("soxr", reason="soxr is pinned in pyproject.toml; this environment lacks it")
    parse = lambda argv: config_from_args(build_parser().parse_args(argv))  # noqa: E731
    assert parse([]).data.resampler == "torchaudio"
    assert parse(["--resampler", "soxr"]).data.resampler == "soxr"
    with pytest.raises(ValueError, match="resampler must be"):
        DataConfig(resampler="sinc")
    cache = str(tmp_path / "cache")
    waves = {}
    for name in ("torchaudio", "soxr", "torchaudio"):
        ds = RavdessMelDataset([clip], config=DataConfig(resampler=name, cache_dir=cache, face_crop="none"),
                               modalities=("audio",))
        wave, length = ds.load_wave(0)
        waves.setdefault(name, wave)
        np.testing.assert_array_equal(wave.numpy(), waves[name].numpy())  # no stale hit across resamplers
    want = _librosa_load(clip.audio_path)
    np.testing.assert_allclose(waves["soxr"][0, : len(want)].numpy(), want, atol=2e-4)  # int16 cache: 1/32767 steps
    assert (waves["soxr"] - waves["torchaudio"]).abs().max() > 1e-4


def test_soxr_missing_is_a_clear_error(monkeypatch) -> None:
    import emolab.data.datasets as datasets

    monkeypatch.setattr(datasets, "soxr_available", lambda: False)
    with pytest.raises(ValueError, match=r"needs the soxr package \(pip install soxr"):
        DataConfig(resampler="soxr")


def test_noise_file_follows_the_resampler(clip, tmp_path) -> None:
    """The training noise file is resampled like the clips (the seed loads it with librosa too)."""
    pytest.importorskip("soxr", reason="soxr is pinned in pyproject.toml; this environment lacks it")
    path = write_wav(tmp_path / "noise.wav", _broadband(1.0, 48000, 2), 48000)
    ds = RavdessMelDataset([clip], config=DataConfig(resampler="soxr", noise_path=str(path), face_crop="none",
                                                     cache_dir=str(tmp_path / "cache")),
                           modalities=("audio",), augment=True)
    np.testing.assert_allclose(ds.audio_noise.noise[0].numpy(), _librosa_load(path), rtol=0, atol=1e-7)
    default = RavdessMelDataset([clip], config=DataConfig(noise_path=str(path), face_crop="none",
                                                          cache_dir=str(tmp_path / "cache")),
                                modalities=("audio",), augment=True)
    assert (default.audio_noise.noise - ds.audio_noise.noise).abs().max() > 1e-3
