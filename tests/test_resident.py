"""The device-resident warm path gives the loader path's batches, and places a split where it fits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import emolab.data.resident as resident
from emolab.data import RavdessMelDataset, RavdessWavLMDataset, make_loader, pair_corpus, warm_cache
from emolab.data.features import BatchFeaturizer
from emolab.data.noise import AudioNoise
from emolab.data.resident import ResidentClips, make_resident_loader, resident_bytes, resident_device


@pytest.fixture(scope="module")
def pairs(demo_root):
    return pair_corpus(demo_root).pairs


def _assert_same(a, b) -> None:
    assert set(a) == set(b)
    for k in a:
        if k == "meta":
            assert set(a[k]) == set(b[k])
            for m in a[k]:
                va, vb = a[k][m], b[k][m]
                assert torch.equal(va, vb) if torch.is_tensor(va) else va == vb, m
        elif torch.is_tensor(a[k]):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]) or (a[k].is_floating_point() and torch.equal(a[k].isnan(), b[k].isnan())
                                               and torch.equal(a[k].nan_to_num(), b[k].nan_to_num())), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("cls,modalities", [(RavdessMelDataset, ("audio", "video")),
                                            (RavdessMelDataset, ("video",)),
                                            (RavdessWavLMDataset, ("audio",))])
def test_resident_batches_equal_the_loader_path(pairs, cache_dir, cls, modalities):
    """Same seed, same epochs: the same raw batches (order, draws, tensors) and the same featurised inputs."""
    ds = cls(pairs[:10], augment=True, seed=7, audio_noise=AudioNoise(None), modalities=modalities)
    warm_cache(ds, num_workers=0, progress=False)
    feat = BatchFeaturizer.for_dataset(ds)
    loader = make_loader(ds, 4, shuffle=True, seed=3, num_workers=0, drop_last=True)
    fast = make_resident_loader(ds, 4, shuffle=True, seed=3, drop_last=True)
    assert len(fast) == len(loader) == 2
    noisy = 0
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)  # the resident loader's dataset forwards set_epoch; both read ds's epoch
        fast.dataset.set_epoch(epoch)
        for a, b in zip(loader, fast, strict=True):
            _assert_same(a, b)
            noisy += int((~a["aug_f"][:, 2].isnan()).sum())
            fa, fb = feat(a), feat(b)
            for key in ("video", "audio"):
                if key in fa:
                    assert torch.equal(fa[key], fb[key]), key
    assert noisy > 0  # the draws did augment (else equality would say little)


def test_resident_item_and_dataset_answers(pairs, cache_dir):
    ds = RavdessMelDataset(pairs[:3])
    res = ResidentClips(ds)
    one = res.__getitems__([1])
    ref = ds[1]
    assert torch.equal(one["video_u8"][0], ref["video_u8"]) and torch.equal(one["audio_i16"][0], ref["audio_i16"])
    assert one["meta"]["video_path"] == [ref["meta"]["video_path"]] and int(one["meta"]["index"][0]) == 1
    assert int(one["label"][0]) == ref["label"] and res.audio_kind == "mel" and res.config is ds.config
    assert BatchFeaturizer.for_dataset(res).n_mels == ds.n_mels
    assert res.nbytes == resident_bytes(3, 8, 112, 48000)


def test_resident_clip_that_fails_names_its_file(pairs, cache_dir, tmp_path):
    bad = tmp_path / "01-01-01-01-01-01-01.mp4"
    bad.write_bytes(b"not a video")
    rec = dataclasses.replace(pairs[0], video_path=bad)
    with pytest.raises(ValueError, match="01-01-01-01-01-01-01.mp4"):
        ResidentClips(RavdessMelDataset([rec]))


def test_placement_gpu_or_pinned(monkeypatch):
    """On the CPU: plain memory; on a GPU: the GPU up to GPU_FRACTION of its free memory, pinned host memory beyond."""
    assert resident_device(10**12, "cpu") == (torch.device("cpu"), False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 16 * 2**30))
    assert resident_device(2 * 2**30, "cuda:0") == (torch.device("cuda:0"), False)
    assert resident_device(int(2.5 * 2**30), "cuda:0") == (torch.device("cpu"), True)
    assert resident.GPU_FRACTION == 0.25
    ravdess = resident_bytes(1440, 8, 112, 48000)
    assert 500 * 10**6 < ravdess < 600 * 10**6  # the "about 560 MB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pinned", [False, True], ids=["on-gpu", "pinned-host"])
def test_resident_on_cuda_gives_the_cpu_loader_paths_inputs(pairs, cache_dir, monkeypatch, pinned):
    """The GPU path as training runs it: the split resident on the GPU (or in pinned host memory when it does not
    fit), batches drawn there, augmentation and featurisation there. The raw batches are the CPU loader path's,
    bit for bit; the model inputs equal the CPU's to float rounding, but for the video noise, which CUDA's generator
    draws differently (``seeded_normal``): clips with video noise are compared on shape and range only."""
    from emolab.data.augment import split_draws

    if pinned:
        monkeypatch.setattr(resident, "GPU_FRACTION", 0.0)
    ds = RavdessMelDataset(pairs[:12], augment=True, seed=5, audio_noise=AudioNoise(None))
    warm_cache(ds, num_workers=0, progress=False)
    feat = BatchFeaturizer.for_dataset(ds)
    loader = make_loader(ds, 4, shuffle=True, seed=3, num_workers=0, drop_last=True)
    fast = make_resident_loader(ds, 4, device="cuda", shuffle=True, seed=3, drop_last=True)
    assert fast.dataset.pinned == pinned and (fast.dataset.device.type == "cpu") == pinned
    compared = blurred = 0
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        fast.dataset.set_epoch(epoch)
        for a, b in zip(loader, fast, strict=True):
            assert b["video_u8"].is_cuda != pinned and b["audio_i16"].is_cuda != pinned
            _assert_same(a, {k: v.cpu() if torch.is_tensor(v) else v for k, v in b.items()})
            fa, fb = feat(a), feat(b, "cuda")
            assert fb["video"].is_cuda and fb["audio"].is_cuda and fb["label"].is_cuda
            torch.testing.assert_close(fb["audio"].cpu(), fa["audio"], rtol=1e-4, atol=1e-2)
            video_aug, _ = split_draws(a["aug_f"], a["aug_i"])
            clean = video_aug["noise_scale"] == 0
            blur = (video_aug["blur_kernel"] > 1) & clean
            gpu_video = fb["video"].cpu()
            # uint8 -> [0, 1], darkening, normalisation: elementwise IEEE float32, the same on both devices
            torch.testing.assert_close(gpu_video[clean & ~blur], fa["video"][clean & ~blur], rtol=0, atol=1e-4)
            # the blur is a convolution, which cuDNN may run in TF32 (10-bit mantissa) on Ampere and later GPUs
            err = (gpu_video[blur] - fa["video"][blur]).abs()
            assert err.numel() == 0 or (float(err.max()) < 3e-2 and float(err.mean()) < 3e-3), (err.max(), err.mean())
            assert fb["video"].shape == fa["video"].shape and bool(torch.isfinite(fb["video"]).all())
            compared += int(clean.sum())
            blurred += int(blur.sum())
    assert compared > blurred > 0  # the blur ran on the GPU and was compared, and so were unblurred clips
