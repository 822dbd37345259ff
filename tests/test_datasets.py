import logging
import shutil

import numpy as np
import pytest
import torch

import emolab.data.datasets as ds
import emolab.data.loaders as loaders
from emolab.data import (
    DataConfig,
    RavdessMelDataset,
    RavdessWavLMDataset,
    make_loader,
    pair_corpus,
    resolve_noise_path,
    resolve_num_workers,
    warm_cache,
)
from emolab.data.features import BatchFeaturizer
from emolab.data.noise import AudioNoise


@pytest.fixture(scope="module")
def pairs(demo_root):
    return pair_corpus(demo_root).pairs


def test_mel_item_shapes_and_meta(pairs, cache_dir):
    d = RavdessMelDataset(pairs[:3])
    raw = d[1]
    assert raw["video_u8"].shape == (8, 112, 112, 3) and raw["video_u8"].dtype == torch.uint8
    assert raw["audio_i16"].shape == (1, 48000) and raw["audio_i16"].dtype == torch.int16
    assert raw["aug_f"].shape == (3,) and raw["aug_i"].shape == (4,)  # no-op draws: the dataset does not augment
    assert raw["aug_f"][:2].eq(0).all() and raw["aug_f"][2].isnan() and raw["aug_i"].eq(0).all()
    assert "video" not in raw and "audio" not in raw
    item = BatchFeaturizer.for_dataset(d).item(raw)
    assert item["video"].shape == (8, 3, 112, 112) and item["video"].dtype == torch.float32
    assert item["audio"].shape == (1, 64, 301) and torch.isfinite(item["audio"]).all()
    assert item["label"] == pairs[1].emotion - 1
    assert 0 < item["audio_length"] <= 48000
    assert item["video_valid"].dtype == torch.bool and item["video_valid"].shape == (8,)
    assert item["meta"]["actor"] == pairs[1].actor and item["meta"]["video_path"] == str(pairs[1].video_path)
    # normalised: roughly zero-centred, not in [0, 1]
    assert item["video"].min() < 0


def test_wave_dataset_and_four_classes(pairs, cache_dir):
    d = RavdessWavLMDataset(pairs[:2], config=DataConfig(num_frames=4, frame_size=64), num_classes=4)
    item = BatchFeaturizer.for_dataset(d).item(d[0])
    assert item["audio"].shape == (1, 48000)
    assert item["video"].shape == (4, 3, 64, 64)
    assert item["label"] == pairs[0].label(4)
    # the demo clips are 1 s long: the rest of the 3 s is zero padding
    assert item["audio_length"] == 16000
    assert item["audio"][0, 16000:].abs().max() == 0


def test_loader_batches(pairs, cache_dir):
    d = RavdessMelDataset(pairs[:6])
    loader = make_loader(d, batch_size=4, num_workers=0)
    raw = next(iter(loader))
    assert raw["video_u8"].shape == (4, 8, 112, 112, 3) and raw["aug_f"].shape == (4, 3)
    batch = BatchFeaturizer.for_dataset(d)(raw)
    assert batch["video"].shape == (4, 8, 3, 112, 112)
    assert batch["audio"].shape == (4, 1, 64, 301)
    assert batch["audio_length"].shape == (4,) and batch["video_valid"].shape == (4, 8)
    assert batch["label"].dtype == torch.int64 and batch["num_skipped"] == 0
    assert [int(a) for a in batch["meta"]["actor"]] == [p.actor for p in pairs[:4]]


def test_frames_decoded_once(pairs, cache_dir, monkeypatch):
    calls = []
    real = ds.preprocess_clip
    monkeypatch.setattr(ds, "preprocess_clip", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    d = RavdessMelDataset(pairs[:4])
    for _ in range(3):
        for i in range(len(d)):
            d[i]
    assert len(calls) == 4
    # a new dataset (another run) reads the disk cache, no decode either
    d2 = RavdessMelDataset(pairs[:4])
    d2[0]
    assert len(calls) == 4 and d2.cache.hits_disk == 2  # the frames and the audio


def test_augmentation_is_seeded_per_epoch_and_sample(pairs, cache_dir):
    d = RavdessMelDataset(pairs[:2], augment=True, seed=3)
    feat = BatchFeaturizer.for_dataset(d)
    a = feat.item(d[0])
    b = feat.item(d[0])
    torch.testing.assert_close(a["video"], b["video"])
    torch.testing.assert_close(a["audio"], b["audio"])
    d.set_epoch(1)
    c = feat.item(d[0])
    assert not (torch.equal(a["video"], c["video"]) and torch.equal(a["audio"], c["audio"]))
    clean = feat.item(RavdessMelDataset(pairs[:2], augment=False)[0])
    d.set_epoch(0)
    assert d.epoch == 0 and d.rng(0).integers(1 << 30) == np.random.default_rng([3, 0, 0]).integers(1 << 30)
    assert clean["video"].shape == a["video"].shape


@pytest.mark.slow
def test_workers_give_the_same_batches(pairs, cache_dir):
    d = RavdessMelDataset(pairs[:8], augment=True, seed=5)
    d.set_epoch(2)
    feat = BatchFeaturizer.for_dataset(d)
    serial = [feat(b) for b in make_loader(d, batch_size=4, num_workers=0)]
    parallel = [feat(b) for b in make_loader(d, batch_size=4, num_workers=2)]
    for s, p in zip(serial, parallel):
        torch.testing.assert_close(s["video"], p["video"])
        torch.testing.assert_close(s["audio"], p["audio"])


def test_bad_clip_is_skipped_and_reported(pairs, cache_dir, tmp_path, caplog):
    bad_video = tmp_path / pairs[1].video_path.name
    bad_video.write_bytes(b"")
    bad_audio = tmp_path / pairs[2].audio_path.name
    bad_audio.write_bytes(pairs[2].audio_path.read_bytes()[:30])
    from dataclasses import replace

    recs = [pairs[0], replace(pairs[1], video_path=bad_video), replace(pairs[2], audio_path=bad_audio), pairs[3]]
    d = RavdessMelDataset(recs)
    with caplog.at_level(logging.WARNING, logger="emolab.data.datasets"):
        batch = next(iter(make_loader(d, batch_size=4, num_workers=0)))
    assert batch["video_u8"].shape[0] == 2 and batch["num_skipped"] == 2
    assert {f.path for f in d.failures} == {str(bad_video), str(bad_audio)}
    assert str(bad_video.name) in caplog.text or str(bad_video) in caplog.text
    report = warm_cache(RavdessMelDataset(recs), num_workers=0, progress=False)
    assert [f.path for f in report.failed] == [str(bad_video), str(bad_audio)]  # the cold pass reads the audio too
    assert sum(report.faces.values()) == 3


def test_warm_cache_fills_disk_in_parallel(pairs, cache_dir, monkeypatch):
    d = RavdessMelDataset(pairs[:6])
    report = warm_cache(d, num_workers=2, progress=False)
    assert report.clips == 6 and not report.failed
    calls = []
    monkeypatch.setattr(ds, "preprocess_clip", lambda *a, **k: calls.append(1))
    for i in range(6):
        d[i]
    assert calls == []  # everything came from the cache the workers wrote


def test_face_crop_modes(pairs, cache_dir):
    train = RavdessMelDataset(pairs[:1], augment=True, config=DataConfig(face_crop="train"))
    test = RavdessMelDataset(pairs[:1], augment=False, config=DataConfig(face_crop="train"))
    assert train.frame_settings.face_crop is True and test.frame_settings.face_crop is False
    assert RavdessMelDataset(pairs[:1], config=DataConfig(face_crop="none")).frame_settings.face_crop is False
    assert RavdessMelDataset(pairs[:1]).frame_settings.face_crop is True
    with pytest.raises(ValueError, match="face_crop"):
        DataConfig(face_crop="sometimes")
    with pytest.raises(ValueError, match="num_classes"):
        RavdessMelDataset(pairs[:1], num_classes=6)
    with pytest.raises(ValueError, match="n_mels"):
        RavdessMelDataset(pairs[:1], n_mels=0)


def test_noise_file_resolution(demo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_noise_path(demo_root) == demo_root / "Noise" / "noise.wav"
    assert resolve_noise_path(tmp_path) is None
    (tmp_path / "data" / "Noise").mkdir(parents=True)
    shutil.copy(demo_root / "Noise" / "noise.wav", tmp_path / "data" / "Noise" / "noise.wav")
    assert str(resolve_noise_path(tmp_path)) == "data/Noise/noise.wav"
    assert str(resolve_noise_path(None, "x.wav")) == "x.wav"
    noise = AudioNoise(resolve_noise_path(demo_root))
    assert noise.source == "file"


def test_num_workers_policy(monkeypatch):
    assert resolve_num_workers(3) == 3 and resolve_num_workers(0) == 0
    with pytest.raises(ValueError):
        resolve_num_workers(-2)
    monkeypatch.setattr(loaders.platform, "system", lambda: "Windows")
    assert resolve_num_workers(-1) == 0
    monkeypatch.setattr(loaders.platform, "system", lambda: "Linux")
    monkeypatch.setattr(loaders, "_is_wsl", lambda: True)
    assert resolve_num_workers(-1, "/mnt/c/data") == 0
    assert resolve_num_workers(-1, "/home/me/data") == 2
    monkeypatch.setattr(loaders, "_is_wsl", lambda: False)
    for cpus, want in ((1, 2), (2, 2), (8, 4), (32, 8)):
        monkeypatch.setattr(loaders.os, "cpu_count", lambda c=cpus: c)
        assert resolve_num_workers(-1) == want


def test_auto_workers_load_audio_only_log_mel_in_process(pairs, cache_dir):
    from emolab.data.loaders import loads_in_process

    audio = RavdessMelDataset(pairs[:2], modalities=("audio",))
    assert loads_in_process(audio) and resolve_num_workers(-1, dataset=audio) == 0
    assert make_loader(audio, 2).num_workers == 0 and make_loader(audio, 2, num_workers=2).num_workers == 2
    auto = resolve_num_workers(-1)
    for other in (RavdessMelDataset(pairs[:2]),  # reads frames too
                  RavdessWavLMDataset(pairs[:2], modalities=("audio",))):  # waves / WavLM features
        assert not loads_in_process(other) and resolve_num_workers(-1, dataset=other) == auto


def test_loader_worker_settings(pairs, cache_dir):
    loader = make_loader(RavdessMelDataset(pairs[:2]), batch_size=1, num_workers=2, shuffle=True, seed=1)
    assert loader.persistent_workers and loader.prefetch_factor == 2 and loader.num_workers == 2
    assert make_loader(RavdessMelDataset(pairs[:2]), batch_size=1, num_workers=0).num_workers == 0
