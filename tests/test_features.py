"""The fast paths agree with the plain ones: audio cache, raw datasets + BatchFeaturizer, modalities."""

import numpy as np
import pytest
import torch

from emolab.data import DataConfig, RavdessMelDataset, RavdessWavLMDataset, collate_skip_failed, make_loader, pair_corpus
from emolab.data.audio import AudioNoise, load_audio, log_mel
from emolab.data.cache import ClipAudio
from emolab.data.features import BatchFeaturizer


@pytest.fixture(scope="module")
def pairs(demo_root):
    return pair_corpus(demo_root).pairs


def _batch(ds, indices):
    return collate_skip_failed([ds[i] for i in indices])


def _plain_and_raw(pairs, cls=RavdessMelDataset, **kwargs):
    cfg = DataConfig(face_crop="none")
    plain = cls(pairs, config=cfg, **kwargs)
    raw = cls(pairs, config=cfg, raw=True, **kwargs)
    return plain, raw


def test_cached_audio_matches_direct_read_within_quantisation(pairs, cache_dir):
    ds = RavdessMelDataset(pairs[:2])
    wave, length = ds.load_wave(1)
    direct, direct_len = load_audio(pairs[1].audio_path, return_length=True)
    assert length == direct_len and wave.shape == direct.shape
    peak = float(direct.abs().max())
    assert float((wave - direct).abs().max()) <= peak / 32767 * 0.51 + 1e-7  # half an int16 step of the clip's scale
    # the log-Mel of the cached clip is the plain one within tolerance where there is signal
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


def test_raw_eval_batch_featurizes_to_the_plain_batch(pairs, cache_dir):
    plain, raw = _plain_and_raw(pairs[:4])
    p, r = _batch(plain, range(4)), _batch(raw, range(4))
    assert r["video_u8"].dtype == torch.uint8 and r["video_u8"].shape == (4, 8, 112, 112, 3)
    assert r["audio_i16"].dtype == torch.int16 and r["audio_i16"].shape == (4, 1, 48000)
    assert "video" not in r and "audio" not in r and "video_aug" not in r
    f = BatchFeaturizer.for_dataset(raw)(r)
    assert f["video"].shape == p["video"].shape and f["audio"].shape == p["audio"].shape
    torch.testing.assert_close(f["video"], p["video"], rtol=0, atol=1e-6)
    torch.testing.assert_close(f["audio"], p["audio"], rtol=1e-5, atol=1e-3)
    assert torch.equal(f["audio_length"], p["audio_length"]) and torch.equal(f["video_valid"], p["video_valid"])
    assert f["video"].is_contiguous(memory_format=torch.channels_last) or f["video"].stride()[2] == 1
    flat = BatchFeaturizer.for_dataset(raw, channels_last=False)(r)["video"]
    assert flat.is_contiguous()
    torch.testing.assert_close(flat, p["video"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("noise", ["file", "gaussian"])
def test_raw_augmented_batch_matches_plain_augmentation(pairs, cache_dir, demo_root, noise):
    noise_src = AudioNoise(demo_root / "Noise" / "noise.wav" if noise == "file" else None)
    kwargs = dict(augment=True, seed=3, audio_noise=noise_src)
    plain, raw = _plain_and_raw(pairs[:6], **kwargs)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        raw.set_epoch(epoch)
        p, r = _batch(plain, range(6)), _batch(raw, range(6))
        assert set(r["video_aug"]) == {"blur_kernel", "brightness", "noise_scale", "noise_seed"}
        assert set(r["audio_aug"]) == {"snr_db", "start", "seed"}
        f = BatchFeaturizer.for_dataset(raw)(r)
        torch.testing.assert_close(f["video"], p["video"], rtol=0, atol=1e-5)
        torch.testing.assert_close(f["audio"], p["audio"], rtol=1e-4, atol=2e-3)
    # the draws did something: some clips blurred, darkened, noised, some audio mixed, some clean
    assert (r["video_aug"]["blur_kernel"] > 0).any() or (r["video_aug"]["brightness"] > 0).any()
    snr = r["audio_aug"]["snr_db"]
    clean = _plain_and_raw(pairs[:6])[0]
    cp = _batch(clean, range(6))
    differs = [(not torch.equal(cp["audio"][i], p["audio"][i])) for i in range(6)]
    assert differs == [not bool(torch.isnan(s)) for s in snr]


def test_same_loss_on_the_same_batch(pairs, cache_dir, demo_root, one_torch_thread):
    from emolab.models import build_model, forward_batch
    from emolab.train.optim import make_loss

    torch.manual_seed(0)
    model = build_model("gated", pretrained_video=False).eval()
    loss_fn = make_loss("gated")
    plain, raw = _plain_and_raw(pairs[:4], augment=True, seed=1,
                                audio_noise=AudioNoise(demo_root / "Noise" / "noise.wav"))
    p = _batch(plain, range(4))
    f = BatchFeaturizer.for_dataset(raw)(_batch(raw, range(4)))
    with torch.no_grad():
        losses = []
        for b in (p, f):
            out = forward_batch(model, b)
            losses.append(loss_fn(out.logits, out.log_probs, b["label"]).mean())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)


def test_wave_dataset_raw_path(pairs, cache_dir):
    plain, raw = _plain_and_raw(pairs[:3], cls=RavdessWavLMDataset)
    f = BatchFeaturizer.for_dataset(raw)(_batch(raw, range(3)))
    torch.testing.assert_close(f["audio"], _batch(plain, range(3))["audio"], rtol=0, atol=0)


def test_modalities_leave_out_the_other_input_and_keep_the_draws(pairs, cache_dir):
    both = RavdessMelDataset(pairs[:3], augment=True, seed=5, audio_noise=AudioNoise(None))
    audio = RavdessMelDataset(pairs[:3], augment=True, seed=5, audio_noise=AudioNoise(None), modalities=("audio",))
    video = RavdessMelDataset(pairs[:3], augment=True, seed=5, audio_noise=AudioNoise(None), modalities=("video",))
    b, a, v = both[2], audio[2], video[2]
    assert "video" not in a and "video_valid" not in a and "audio" not in v and "audio_length" not in v
    torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0)
    torch.testing.assert_close(v["video"], b["video"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="modalities"):
        RavdessMelDataset(pairs[:1], modalities=("smell",))


def test_featurizer_errors_and_passthrough(pairs, cache_dir):
    plain = RavdessMelDataset(pairs[:2])
    p = _batch(plain, range(2))
    f = BatchFeaturizer()(p)
    assert f["video"] is p["video"] and f["audio"] is p["audio"]  # a plain batch passes through
    with pytest.raises(ValueError, match="uint8"):
        BatchFeaturizer().video(torch.zeros(1, 2, 8, 8, 3))
    with pytest.raises(ValueError, match="noise source"):
        BatchFeaturizer().wave(torch.zeros(1, 1, 10, dtype=torch.int16), torch.ones(1),
                               {"snr_db": torch.tensor([5.0]), "start": torch.tensor([0]), "seed": torch.tensor([1])})
    with pytest.raises(ValueError, match="audio_kind"):
        BatchFeaturizer("spectrum")


def test_raw_loader_with_workers_matches_in_process(pairs, cache_dir):
    raw = RavdessMelDataset(pairs[:4], config=DataConfig(face_crop="none"), raw=True, augment=True, seed=2,
                            audio_noise=AudioNoise(None))
    feat = BatchFeaturizer.for_dataset(raw)
    a = feat(next(iter(make_loader(raw, 4, num_workers=0))))
    b = feat(next(iter(make_loader(raw, 4, num_workers=2))))
    torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)
    torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_featurizer_on_cuda_matches_cpu(pairs, cache_dir):
    raw = RavdessMelDataset(pairs[:4], config=DataConfig(face_crop="none"), raw=True)
    b = _batch(raw, range(4))
    feat = BatchFeaturizer.for_dataset(raw)
    cpu, gpu = feat(b), feat(b, "cuda")
    assert gpu["video"].is_cuda and gpu["audio"].is_cuda
    assert gpu["video"].is_contiguous(memory_format=torch.channels_last) or gpu["video"].stride()[2] == 1
    torch.testing.assert_close(gpu["video"].cpu(), cpu["video"], rtol=0, atol=1e-5)
    torch.testing.assert_close(gpu["audio"].cpu(), cpu["audio"], rtol=1e-4, atol=1e-2)
    # Gaussian audio noise is the same fixed noise on both devices
    noisy = RavdessMelDataset(pairs[:4], config=DataConfig(face_crop="none"), raw=True, augment=True, seed=1,
                              audio_noise=AudioNoise(None), modalities=("audio",))
    b = _batch(noisy, range(4))
    feat = BatchFeaturizer.for_dataset(noisy)
    torch.testing.assert_close(feat(b, "cuda")["audio"].cpu(), feat(b)["audio"], rtol=1e-4, atol=1e-2)


def _raw_audio_batches(pairs, demo_root, n=6, **kwargs):
    ds = RavdessMelDataset(pairs[:n], config=DataConfig(face_crop="none"), raw=True, modalities=("audio",),
                           audio_noise=AudioNoise(demo_root / "Noise" / "noise.wav"), **kwargs)
    return ds, [_batch(ds, range(i, min(i + 3, n))) for i in range(0, n, 3)]


def test_clean_log_mel_memory_gives_the_computed_log_mel(pairs, cache_dir, demo_root):
    ds, batches = _raw_audio_batches(pairs, demo_root, augment=True, seed=7)
    assert all(len(b["audio_key"]) == len(b["audio_i16"]) for b in batches)
    fresh = BatchFeaturizer.for_dataset(ds)
    fresh.mel_memory_bytes = 0
    remembering = BatchFeaturizer.for_dataset(ds)
    snr = torch.cat([b["aug_f"][:, 2] if "aug_f" in b else b["audio_aug"]["snr_db"] for b in batches])
    assert bool(torch.isnan(snr).any()) and not bool(torch.isnan(snr).all())  # clean and noisy clips
    for epoch in range(2):  # the second pass takes the clean clips' log-Mels from memory
        for b in batches:
            torch.testing.assert_close(remembering(b)["audio"], fresh(b)["audio"], rtol=1e-5, atol=1e-4)
    assert len(remembering._mel_memory) == int(torch.isnan(snr).sum())  # clean clips only
    # an evaluation set (no augmentation): every clip remembered, then all served from memory
    ev, ev_batches = _raw_audio_batches(pairs, demo_root)
    feat = BatchFeaturizer.for_dataset(ev)
    first = [feat(b)["audio"] for b in ev_batches]
    assert len(feat._mel_memory) == 6
    for b, want in zip(ev_batches, first):
        torch.testing.assert_close(feat(b)["audio"], want, rtol=0, atol=0)
    # the bound holds: room for two log-Mels keeps the two most recent
    small = BatchFeaturizer.for_dataset(ev)
    small.mel_memory_bytes = 2 * first[0][0].numel() * 4
    for b in ev_batches:
        small(b)
    assert list(small._mel_memory) == list(ev_batches[-1]["audio_key"][-2:])


def test_one_segment_batches_unpickle_to_the_plain_batch(pairs, cache_dir, demo_root):
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers the tensor reductions)

    from emolab.data.handover import OneSegment, stack_batch

    columns = {"a": [torch.arange(6, dtype=torch.int16).view(2, 3)] * 3, "b": torch.tensor([0.5, 1.5]),
               "meta": {"index": torch.tensor([4, 5, 6]), "name": ["x", "y", "z"]}, "n": 2,
               "flag": [torch.tensor(True), torch.tensor(False), torch.tensor(True)]}
    plain = stack_batch(columns, one_segment=False)
    packed = stack_batch(columns, one_segment=True)
    assert isinstance(packed, OneSegment) and packed.buffer.is_shared()
    got = ForkingPickler.loads(ForkingPickler.dumps(packed))
    assert isinstance(got, dict) and set(got) == set(plain) and got["meta"]["name"] == ["x", "y", "z"] and got["n"] == 2
    for key in ("a", "b", "flag"):
        assert got[key].dtype == plain[key].dtype and torch.equal(got[key], plain[key])
    assert torch.equal(got["meta"]["index"], plain["meta"]["index"])
    storages = {got[k].untyped_storage().data_ptr() for k in ("a", "b", "flag")}
    assert len(storages) == 1  # one segment
    # a raw loader's batches from workers are the in-process ones, key by key
    ds, _ = _raw_audio_batches(pairs, demo_root, augment=True, seed=3)
    a = next(iter(make_loader(ds, 3, num_workers=0)))
    b = next(iter(make_loader(ds, 3, num_workers=1)))
    assert set(a) == set(b) and a["audio_key"] == b["audio_key"]
    for k in ("audio_i16", "audio_scale", "audio_length", "label", "aug_f", "aug_i"):
        assert a[k].dtype == b[k].dtype, k
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)


def test_packed_raw_batches_featurize_like_unpacked(pairs, cache_dir, demo_root):
    from emolab.data.features import collate_raw, unpack_augment

    raw = RavdessMelDataset(pairs[:5], config=DataConfig(face_crop="none"), raw=True, augment=True, seed=4,
                            audio_noise=AudioNoise(demo_root / "Noise" / "noise.wav"))
    items = [raw[i] for i in range(5)] + [None]  # a failed sample is dropped and counted
    loose, packed = collate_skip_failed(items), collate_raw(items)
    assert packed["num_skipped"] == 1 and packed["aug_f"].shape == (5, 3) and packed["aug_i"].shape == (5, 4)
    assert "video_aug" not in packed and "audio_aug" not in packed
    assert torch.equal(packed["meta"]["index"], torch.arange(5)) and packed["meta"]["actor"] == [p.actor for p in pairs[:5]]
    video, audio = unpack_augment(packed)
    for got, want in ((video, loose["video_aug"]), (audio, loose["audio_aug"])):
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k].to(got[k].dtype), rtol=0, atol=0, equal_nan=True)
    feat = BatchFeaturizer.for_dataset(raw)
    a, b = feat(loose), feat(packed)
    torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)
    torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0)
    assert make_loader(raw, 2, num_workers=0).collate_fn is collate_raw
    # an unaugmented raw batch has nothing to pack
    assert "aug_f" not in collate_raw([RavdessMelDataset(pairs[:1], raw=True)[0]])
