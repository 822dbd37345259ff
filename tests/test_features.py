"""The data path: raw items, default_collate, and the one featuriser against independent references."""

import cv2
import numpy as np
import pytest
import torch
import torchaudio

from emolab.data import DataConfig, RavdessMelDataset, RavdessWavLMDataset, collate_skip_failed, make_loader, pair_corpus
from emolab.data.audio import load_audio, log_mel
from emolab.data.augment import AUG_F, AUG_I, VideoAugmentParams, flat_draws, seeded_normal, split_draws
from emolab.data.cache import ClipAudio
from emolab.data.features import BatchFeaturizer, Condition
from emolab.data.noise import AudioNoise, AudioNoiseParams
from emolab.data.video import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def pairs(demo_root):
    return pair_corpus(demo_root).pairs


def _batch(ds, indices):
    return collate_skip_failed([ds[i] for i in indices])


def _reference_log_mel(wave: torch.Tensor, n_mels: int = 64) -> torch.Tensor:
    """torchaudio's transforms, built here independently of emolab."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, win_length=400, hop_length=160,
                                               n_mels=n_mels)
    return torchaudio.transforms.AmplitudeToDB()(mel(wave))


def _reference_video(frames: np.ndarray, blur: int, brightness: float, noise_scale: float, noise_seed: int) -> np.ndarray:
    """numpy/cv2 version of the video path: [0, 1], blur, darken, noise, ImageNet normalisation -> (T, 3, H, W)."""
    x = frames.astype(np.float32) / 255.0
    if blur > 1:  # OpenCV's sigma rule for a kernel side, reflect-101 borders: what torchvision's blur does
        sigma = 0.3 * ((blur - 1) * 0.5 - 1) + 0.8  # given: for sides <= 7 OpenCV's sigma 0 uses a fixed table
        x = np.stack([cv2.GaussianBlur(f, (blur, blur), sigma, borderType=cv2.BORDER_REFLECT_101) for f in x])
    x = x * (1.0 - brightness)
    x = x.transpose(0, 3, 1, 2)
    if noise_scale > 0:
        x = np.clip(x + seeded_normal(x.shape, noise_seed).numpy() * noise_scale, 0.0, 1.0)
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    return (x - mean[:, None, None]) / std[:, None, None]


def _reference_mix(wave: torch.Tensor, noise: AudioNoise, snr: float, start: int) -> torch.Tensor:
    """The noise excerpt at ``start`` scaled to ``snr`` dB over the whole wave, in float64."""
    n = wave.shape[-1]
    excerpt = noise.samples[0].double()[torch.arange(start, start + n) % noise.samples.shape[-1]]
    w = wave.double()
    scale = torch.sqrt(w.pow(2).sum() / (excerpt.pow(2).sum() * 10 ** (snr / 10)))
    return (w + scale * excerpt).float()


def test_cached_audio_matches_direct_read_within_quantisation(pairs, cache_dir):
    ds = RavdessMelDataset(pairs[:2])
    wave, length = ds.load_wave(1)
    direct, direct_len = load_audio(pairs[1].audio_path, return_length=True)
    assert length == direct_len and wave.shape == direct.shape
    peak = float(direct.abs().max())
    assert float((wave - direct).abs().max()) <= peak / 32767 * 0.51 + 1e-7  # half an int16 step of the clip's scale
    # the log-Mel of the cached clip is the direct one within tolerance where there is signal
    a, b = log_mel(wave), log_mel(direct)
    loud = b > b.max() - 60
    assert float((a - b)[loud].abs().max()) < 0.5
    # a second dataset reads it from disk (no WAV read): same samples
    again = RavdessMelDataset(pairs[:2]).load_wave(1)[0]
    torch.testing.assert_close(again, wave, rtol=0, atol=0)
    assert any((cache_dir / "audio").rglob("*.npz"))


def test_clip_audio_quantisation_roundtrip():
    wave = np.sin(np.linspace(0, 100, 48000, dtype=np.float32))[None] * 1e-3  # a quiet clip keeps its resolution
    clip = ClipAudio.from_wave(wave, 30000)
    assert clip.samples.dtype == np.int16 and clip.length == 30000
    assert np.abs(clip.to_float() - wave).max() <= 1e-3 / 32767
    silent = ClipAudio.from_wave(np.zeros((1, 10), np.float32), 0)
    assert np.all(silent.to_float() == 0)


def test_flat_draws_layout_and_no_op_values():
    empty = flat_draws(None, None)
    assert empty["aug_f"].dtype == torch.float32 and empty["aug_i"].dtype == torch.int64
    assert empty["aug_f"][:2].tolist() == [0.0, 0.0] and empty["aug_f"][2].isnan() and empty["aug_i"].tolist() == [0] * 4
    drawn = flat_draws(VideoAugmentParams(5, 0.3, None, 2**61 + 7), AudioNoiseParams(10.0, 123, 2**60 + 1))
    video, audio = split_draws(drawn["aug_f"][None], drawn["aug_i"][None])
    assert set(video) == {k for g, k, _ in AUG_F + AUG_I if g == "video"} and set(audio) == {"snr_db", "start", "seed"}
    assert int(video["blur_kernel"]) == 5 and float(video["noise_scale"]) == 0.0
    assert int(video["noise_seed"]) == 2**61 + 7 and int(audio["seed"]) == 2**60 + 1  # seeds survive exactly
    assert float(audio["snr_db"]) == 10.0 and int(audio["start"]) == 123
    with pytest.raises(ValueError, match="shape"):
        split_draws(torch.zeros(3), torch.zeros(4, dtype=torch.int64))


def test_items_are_raw_and_collate_with_default_collate(pairs, cache_dir, demo_root):
    ds = RavdessMelDataset(pairs[:5], config=DataConfig(face_crop="none"), augment=True, seed=4,
                           audio_noise=AudioNoise(demo_root / "Noise" / "noise.wav"))
    items = [ds[i] for i in range(5)]
    assert all(set(it) == {"video_u8", "video_valid", "audio_i16", "audio_scale", "audio_length", "aug_f", "aug_i",
                           "label", "meta"} for it in items)
    batch = collate_skip_failed(items + [None])  # a failed sample is dropped and counted
    plain = torch.utils.data.default_collate(items)
    assert batch["num_skipped"] == 1 and set(batch) == set(plain) | {"num_skipped"}
    for k in ("video_u8", "audio_i16", "audio_scale", "aug_f", "aug_i", "label", "audio_length"):
        torch.testing.assert_close(batch[k], plain[k], rtol=0, atol=0, equal_nan=True)
    assert batch["aug_f"].shape == (5, 3) and batch["aug_i"].shape == (5, 4)
    assert torch.equal(batch["meta"]["index"], torch.arange(5))
    assert make_loader(ds, 2, num_workers=0).collate_fn is collate_skip_failed
    assert collate_skip_failed([None, None]) is None


def test_eval_batch_matches_cv2_and_torchaudio_references(pairs, cache_dir):
    ds = RavdessMelDataset(pairs[:4], config=DataConfig(face_crop="none"))
    r = _batch(ds, range(4))
    f = BatchFeaturizer.for_dataset(ds)(r)
    assert f["video"].shape == (4, 8, 3, 112, 112) and f["audio"].shape == (4, 1, 64, 301)
    assert "video_u8" not in f and "aug_f" not in f
    for i in range(4):
        want = _reference_video(ds.frames(i).frames, 0, 0.0, 0.0, 0)
        np.testing.assert_allclose(f["video"][i].numpy(), want, rtol=0, atol=1e-5)
        torch.testing.assert_close(f["audio"][i], _reference_log_mel(ds.load_wave(i)[0]), rtol=1e-5, atol=1e-3)
    assert f["video"].is_contiguous(memory_format=torch.channels_last) or f["video"].stride()[2] == 1
    flat = BatchFeaturizer.for_dataset(ds, channels_last=False)(r)["video"]
    assert flat.is_contiguous() and torch.equal(flat, f["video"])


@pytest.mark.parametrize("noise", ["file", "gaussian"])
def test_augmented_batch_matches_the_references_of_its_draws(pairs, cache_dir, demo_root, noise):
    noise_src = AudioNoise(demo_root / "Noise" / "noise.wav" if noise == "file" else None)
    ds = RavdessMelDataset(pairs[:6], config=DataConfig(face_crop="none"), augment=True, seed=3, audio_noise=noise_src)
    feat = BatchFeaturizer.for_dataset(ds)
    noisy_clips = blurred = 0
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        r = _batch(ds, range(6))
        f = feat(r)
        video, audio = split_draws(r["aug_f"], r["aug_i"])
        for i in range(6):
            want = _reference_video(ds.frames(i).frames, int(video["blur_kernel"][i]), float(video["brightness"][i]),
                                    float(video["noise_scale"][i]), int(video["noise_seed"][i]))
            np.testing.assert_allclose(f["video"][i].numpy(), want, rtol=0, atol=1e-4)
            wave = ds.load_wave(i)[0]
            snr = float(audio["snr_db"][i])
            if not np.isnan(snr):
                wave = _reference_mix(wave, noise_src, snr, int(audio["start"][i]))
                noisy_clips += 1
            blurred += int(video["blur_kernel"][i]) > 1
            torch.testing.assert_close(f["audio"][i], _reference_log_mel(wave), rtol=1e-4, atol=2e-3)
    assert 0 < noisy_clips < 12 and blurred > 0  # the draws did something, not everything


def test_video_batch_augmentation_in_place_is_bit_identical() -> None:
    """The featuriser augments its own float copy in place (no 38 MB buffers per batch of 32): the values are
    those of the out-of-place call, bit for bit, which leaves its input alone; both equal the per-clip ops."""
    from emolab.data.augment import add_gaussian_noise, apply_video_batch, gaussian_blur

    u8 = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 3, 16, 20, 3), dtype=np.uint8))
    video = u8.permute(0, 1, 4, 2, 3).float().div_(255.0)  # channels-last strides, as the featuriser has them
    params = {"blur_kernel": torch.tensor([0, 5, 3, 0, 5, 0]), "brightness": torch.tensor([0, 0.3, 0, 0.5, 0, 0]),
              "noise_scale": torch.tensor([0, 0, 0.05, 0.02, 0, 0]), "noise_seed": torch.tensor([0, 0, 7, 9, 0, 0])}
    for p in ({**params}, {**params, "blur_kernel": torch.zeros(6, dtype=torch.int64)}):  # with and without blur
        before = video.clone()
        copied = apply_video_batch(video, p)
        assert torch.equal(video, before)  # the input stays as it was
        mine = video.clone()
        done = apply_video_batch(mine, p, inplace=True)
        assert done.data_ptr() == mine.data_ptr() and torch.equal(done, copied)
        for i in range(6):
            k, b, s, seed = (int(p["blur_kernel"][i]), float(p["brightness"][i]), float(p["noise_scale"][i]),
                             int(p["noise_seed"][i]))
            one = gaussian_blur(video[i], k) if k > 1 else video[i]
            one = one * (1.0 - b)
            one = add_gaussian_noise(one, s, seed) if s > 0 else one
            torch.testing.assert_close(copied[i], one, rtol=0, atol=1e-6)


def test_item_featurises_as_its_batch(pairs, cache_dir, demo_root):
    ds = RavdessMelDataset(pairs[:3], augment=True, seed=1, audio_noise=AudioNoise(demo_root / "Noise" / "noise.wav"))
    feat = BatchFeaturizer.for_dataset(ds, channels_last=False)
    batch = feat(_batch(ds, range(3)))
    for i in range(3):
        one = feat.item(ds[i])
        assert set(one) == {"video", "video_valid", "audio", "audio_length", "label", "meta"}
        torch.testing.assert_close(one["video"], batch["video"][i], rtol=0, atol=1e-6)
        torch.testing.assert_close(one["audio"], batch["audio"][i], rtol=1e-5, atol=1e-4)


def test_wave_dataset_gives_the_cached_wave(pairs, cache_dir):
    ds = RavdessWavLMDataset(pairs[:3])
    f = BatchFeaturizer.for_dataset(ds)(_batch(ds, range(3)))
    want = torch.stack([ds.load_wave(i)[0] for i in range(3)])
    torch.testing.assert_close(f["audio"], want, rtol=0, atol=0)


def test_conditions_blur_darken_occlude_drop_and_mix(pairs, cache_dir, demo_root):
    ds = RavdessMelDataset(pairs[:3], config=DataConfig(face_crop="none"))
    noise = AudioNoise(demo_root / "Noise" / "noise.wav")
    feat = BatchFeaturizer.for_dataset(ds, channels_last=False, audio_noise=noise)
    r = _batch(ds, range(3))
    frames = ds.frames(1).frames
    blur = feat.with_condition(Condition(blur_kernel=5, brightness=0.75))(r)
    np.testing.assert_allclose(blur["video"][1].numpy(), _reference_video(frames, 5, 0.75, 0.0, 0), rtol=0, atol=1e-5)
    occluded = feat.with_condition(Condition(occlusion=(10, 20, 30, 60), fill=(0.0, 0.0, 0.0)))(r)["video"]
    black = (-np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)).astype(np.float32)
    np.testing.assert_allclose(occluded[:, :, :, 10:20, 30:60].amax((0, 1, 3, 4)).numpy(), black, atol=1e-6)
    assert torch.equal(occluded[..., 20:, :], feat(r)["video"][..., 20:, :])  # the rest untouched
    gone = feat.with_condition(Condition(drop="video"))(r)
    assert not gone["video"].any() and torch.equal(gone["audio"], feat(r)["audio"])
    silent = feat.with_condition(Condition(drop="audio"))(r)["audio"]
    assert (silent == -100.0).all()
    # noise at an exact SNR, its excerpt fixed by (seed, clip index, level): batch order does not matter
    cond = Condition(snr_db=5.0, noise_seed=2)
    mixed = feat.with_condition(cond)(r)["audio"]
    for i in range(3):
        start, _ = cond.noise_draw(noise, i, 48000)
        want = _reference_log_mel(_reference_mix(ds.load_wave(i)[0], noise, 5.0, start))
        torch.testing.assert_close(mixed[i], want, rtol=1e-4, atol=2e-3)
    alone = feat.with_condition(cond)(_batch(ds, [2]))["audio"][0]
    torch.testing.assert_close(alone, mixed[2], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="noise source"):
        BatchFeaturizer.for_dataset(ds, condition=cond)(r)
    with pytest.raises(ValueError, match="drop"):
        Condition(drop="smell")


def test_modalities_leave_out_the_other_input_and_keep_the_draws(pairs, cache_dir):
    both = RavdessMelDataset(pairs[:3], augment=True, seed=5, audio_noise=AudioNoise(None))
    audio = RavdessMelDataset(pairs[:3], augment=True, seed=5, audio_noise=AudioNoise(None), modalities=("audio",))
    video = RavdessMelDataset(pairs[:3], augment=True, seed=5, audio_noise=AudioNoise(None), modalities=("video",))
    b, a, v = both[2], audio[2], video[2]
    assert "video_u8" not in a and "video_valid" not in a and "audio_i16" not in v and "audio_length" not in v
    for k in ("aug_f", "aug_i"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(v[k], b[k], rtol=0, atol=0, equal_nan=True)
    feat = BatchFeaturizer.for_dataset(both)
    fb, fa, fv = feat.item(b), feat.item(a), feat.item(v)
    assert "video" not in fa and "audio" not in fv
    torch.testing.assert_close(fa["audio"], fb["audio"], rtol=0, atol=0)
    torch.testing.assert_close(fv["video"], fb["video"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="modalities"):
        RavdessMelDataset(pairs[:1], modalities=("smell",))


def test_featurizer_errors_and_passthrough():
    floats = {"video": torch.zeros(2, 1, 3, 8, 8), "audio": torch.zeros(2, 1, 64, 301), "label": torch.zeros(2)}
    f = BatchFeaturizer()(floats)
    assert f["video"] is floats["video"] and f["audio"] is floats["audio"]  # a batch of model inputs passes through
    with pytest.raises(ValueError, match="uint8"):
        BatchFeaturizer().video(torch.zeros(1, 2, 8, 8, 3))
    with pytest.raises(ValueError, match="noise source"):
        BatchFeaturizer().wave(torch.zeros(1, 1, 10, dtype=torch.int16), torch.ones(1),
                               {"snr_db": torch.tensor([5.0]), "start": torch.tensor([0]), "seed": torch.tensor([1])})
    with pytest.raises(ValueError, match="audio_kind"):
        BatchFeaturizer("spectrum")


def test_loader_with_workers_matches_in_process(pairs, cache_dir):
    ds = RavdessMelDataset(pairs[:4], config=DataConfig(face_crop="none"), augment=True, seed=2,
                           audio_noise=AudioNoise(None))
    feat = BatchFeaturizer.for_dataset(ds)
    a = feat(next(iter(make_loader(ds, 4, num_workers=0))))
    b = feat(next(iter(make_loader(ds, 4, num_workers=2))))
    torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)
    torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_featurizer_on_cuda_matches_cpu(pairs, cache_dir):
    ds = RavdessMelDataset(pairs[:4], config=DataConfig(face_crop="none"))
    b = _batch(ds, range(4))
    feat = BatchFeaturizer.for_dataset(ds)
    cpu, gpu = feat(b), feat(b, "cuda")
    assert gpu["video"].is_cuda and gpu["audio"].is_cuda
    assert all(v.is_cuda for k, v in gpu.items() if torch.is_tensor(v)), {k: v.device for k, v in gpu.items()
                                                                          if torch.is_tensor(v)}
    assert gpu["video"].is_contiguous(memory_format=torch.channels_last) or gpu["video"].stride()[2] == 1
    torch.testing.assert_close(gpu["video"].cpu(), cpu["video"], rtol=0, atol=1e-5)
    torch.testing.assert_close(gpu["audio"].cpu(), cpu["audio"], rtol=1e-4, atol=1e-2)
    # Gaussian audio noise is the same fixed noise on both devices
    noisy = RavdessMelDataset(pairs[:4], config=DataConfig(face_crop="none"), augment=True, seed=1,
                              audio_noise=AudioNoise(None), modalities=("audio",))
    b = _batch(noisy, range(4))
    feat = BatchFeaturizer.for_dataset(noisy)
    torch.testing.assert_close(feat(b, "cuda")["audio"].cpu(), feat(b)["audio"], rtol=1e-4, atol=1e-2)


def test_featurizer_moves_every_tensor_but_meta() -> None:
    """Consumers (trainer, evaluation, robustness, analysis) rely on it and keep no copy loop of their own: the
    labels, validity masks and lengths land on the device with the features; ``meta`` is read on the host."""
    batch = {"label": torch.tensor([1, 2]), "video_valid": torch.ones(2, 3, dtype=torch.bool),
             "audio_length": torch.tensor([5, 6]), "audio": torch.zeros(2, 1, 4, 5),
             "meta": {"index": torch.tensor([0, 1])}}
    out = BatchFeaturizer()(batch, "meta")  # the meta device: a move shows, no computation needed
    assert {k: v.device.type for k, v in out.items() if torch.is_tensor(v)} == dict.fromkeys(
        ("label", "video_valid", "audio_length", "audio"), "meta")
    assert out["meta"]["index"].device.type == "cpu"
