"""The frozen-WavLM feature cache: same outputs as the backbone, keys, reuse, noise variants, stage switch, runs.

The cache is a trainer callback (``WavLMFeatureCache``) that serves a frozen
stage from loaders over ``CachedFeaturesDataset``; the model takes the cached
hidden states through ``forward_features`` because the batch carries
``audio_features``.

Tiny random WavLM configs (no download); demo corpus clips of 1 s.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch
from transformers import WavLMModel

from emolab.data import DataConfig, RavdessWavLMDataset, make_loader, pair_corpus
from emolab.data.augment import split_draws
from emolab.data.cache import AudioSettings
from emolab.data.feature_cache import (
    CachedFeaturesDataset,
    FeatureStore,
    choose_variant,
    clip_identity,
    noise_tag,
    variant_params,
)
from emolab.data.noise import AudioNoise, AudioNoiseParams
from emolab.models import WavLMAudioEncoder, build_model, forward_batch
from emolab.models.fusion import FusionModel
from emolab.train import EmotionTrainer, OptimConfig, RunPaths, TrainConfig, resume_training, run_training
from emolab.utils.checkpoints import load_checkpoint
from emolab.train.cli import build_parser, config_from_args
from emolab.train.cli import main as train_main
from emolab.train.feature_cache import (
    WavLMFeatureCache,
    backbone_fingerprint,
    backbone_tag,
    fill_features,
)
from tests.configs import save_tiny_wavlm, tiny_data, tiny_model
from tests.configs import tiny_wavlm_config as tiny_config
from tests.helpers import InterruptAfter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SECONDS = 1.0
NOISY_LEVELS = {20.0, 15.0, 10.0, 5.0}


@pytest.fixture(scope="module")
def pairs(demo_root):
    return pair_corpus(demo_root).pairs


@pytest.fixture(scope="module")
def noise(demo_root) -> AudioNoise:
    return AudioNoise(demo_root / "Noise" / "noise.wav")


def _data(cache_dir, **kw) -> DataConfig:
    return tiny_data(cache_dir, face_crop="none", clip_seconds=SECONDS, **kw)


def _dataset(pairs, cache_dir, *, augment=False, noise=None, modalities=("audio",), seed=0) -> RavdessWavLMDataset:
    return RavdessWavLMDataset(pairs, augment=augment, audio_noise=noise, config=_data(cache_dir),
                               modalities=modalities, seed=seed)


def _encoder(seed: int = 0, **overrides) -> WavLMAudioEncoder:
    torch.manual_seed(seed)
    return WavLMAudioEncoder(config=tiny_config(**overrides)).eval()


def _count_forwards(encoder: WavLMAudioEncoder) -> list[int]:
    """Counts backbone forward calls (the expensive part the cache skips)."""
    calls = [0]
    inner = encoder.backbone.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return inner(*args, **kwargs)

    encoder.backbone.forward = counted
    return calls


def _cfg(fusion: str, cache_dir, **kw) -> TrainConfig:
    optim = kw.pop("optim", OptimConfig(lr=1e-3))
    return TrainConfig(
        model=tiny_model(fusion, use_wavlm=True, wavlm_config=tiny_config()),
        data=_data(cache_dir), optim=optim, device="cpu", progress=False, batch_size=4, num_workers=0, **kw,
    )


def _trainer(model, cfg, loaders, tmp_path) -> EmotionTrainer:
    """A trainer with the feature-cache callback run_training gives it (:func:`_cache` finds it)."""
    paths = RunPaths(tmp_path / "run", tmp_path, cfg.model.fusion)
    return EmotionTrainer(model, cfg, loaders, paths, callbacks=[WavLMFeatureCache.from_config(cfg)])


def _cache(trainer: EmotionTrainer) -> WavLMFeatureCache:
    return next(cb for cb in trainer.callbacks if isinstance(cb, WavLMFeatureCache))


def _serves_cached(trainer: EmotionTrainer, name: str) -> bool:
    return isinstance(trainer.loaders[name].dataset, CachedFeaturesDataset)


def _wavlm(model) -> WavLMAudioEncoder:
    return model if isinstance(model, WavLMAudioEncoder) else model.audio_model


# ------------------------------------------------------------------ same outputs as the backbone
@pytest.mark.parametrize("fusion", ["audio", "gated", "xattn"])
def test_cached_features_give_the_plain_logits_and_loss(fusion, pairs, cache_dir, tmp_path) -> None:
    modalities = ("audio",) if fusion == "audio" else ("audio", "video")
    ds = _dataset(pairs[:6], cache_dir, modalities=modalities)
    loaders = {"val": make_loader(ds, 4, num_workers=0)}
    torch.manual_seed(0)
    model = build_model(fusion, use_wavlm=True, wavlm_config=tiny_config(), pretrained_video=False)
    calls = _count_forwards(_wavlm(model))

    plain = _trainer(model, _cfg(fusion, cache_dir, feature_cache=False), loaders, tmp_path)
    plain._begin_stage(plain.stages[0])
    assert plain.loaders["val"] is loaders["val"] and not _cache(plain).active
    batch = next(iter(loaders["val"]))
    assert "audio_i16" in batch and "audio_features" not in batch
    with torch.no_grad():
        model.eval()
        logits_plain = forward_batch(model, plain._inputs(batch)[0]).logits
    preds_plain, _ = plain.evaluate(loaders["val"])
    assert calls[0] > 0

    cached = _trainer(model, _cfg(fusion, cache_dir), loaders, tmp_path)
    model.train()  # as during training: the fill must still run the backbone in eval mode
    cached._begin_stage(cached.stages[0])  # fills the 6 clips, then serves them
    assert _wavlm(model).backbone.training  # and give the mode back
    cache = _cache(cached)
    assert cache.active and cache.last_fill.computed == 6
    served = cached.loaders["val"]
    assert isinstance(served.dataset, CachedFeaturesDataset) and served.dataset.base is ds
    assert served.sampler is loaders["val"].sampler and served.collate_fn is loaders["val"].collate_fn
    calls[0] = 0
    batch = next(iter(served))
    assert batch["audio_features"].dtype == torch.float16 and batch["audio_features"].shape == (4, 199, 32)
    assert "audio_i16" not in batch
    with torch.no_grad():
        model.eval()
        logits_cached = forward_batch(model, cached._inputs(batch)[0]).logits
    preds_cached, _ = cached.evaluate(served)
    assert calls[0] == 0  # no backbone forward at all
    torch.testing.assert_close(logits_cached, logits_plain, rtol=0, atol=2e-3)  # float16 storage
    np.testing.assert_array_equal(preds_cached.index, preds_plain.index)
    np.testing.assert_allclose(preds_cached.loss, preds_plain.loss, rtol=0, atol=2e-3)
    assert (preds_cached.loss > 0).all()
    cache.on_fit_end(cached, {})  # the run is over: the trainer's own loaders come back
    assert cached.loaders["val"] is loaders["val"] and not cache.active


def test_encoder_entry_from_hidden_states() -> None:
    enc = _encoder()
    wave = torch.randn(2, 1, 4000) * 0.1
    length = torch.tensor([4000, 2500])
    feats = enc.backbone_sequence(wave)  # (2, 49, 32)
    with pytest.raises(ValueError, match="waveform"):
        enc(feats)  # the waveform entry does not take features
    torch.testing.assert_close(enc.forward_features(feats).logits, enc.head(feats.mean(1)))
    with torch.no_grad():  # the same outputs as the backbone path, padding masked alike
        torch.testing.assert_close(enc.forward_features(feats, audio_length=length).logits,
                                   enc(wave, audio_length=length).logits)
        torch.testing.assert_close(enc.encode_features(feats, audio_length=length),
                                   enc.encode(wave, audio_length=length))
        torch.testing.assert_close(enc.sequence_features(feats.half()), feats.half().float())
    with pytest.raises(ValueError, match="cached backbone outputs"):
        enc.forward_features(wave)
    enc.unfreeze_backbone(1)
    with pytest.raises(ValueError, match="frozen backbone"):
        enc.forward_features(feats)  # stale features for a training backbone are refused
    assert not hasattr(enc, "set_input_kind") and not hasattr(enc, "input_kind")  # no mode to switch


@pytest.mark.parametrize("fusion", ["late", "gated", "xattn"])
def test_fusion_takes_audio_features_because_the_batch_carries_them(fusion) -> None:
    torch.manual_seed(0)
    model = build_model(fusion, use_wavlm=True, wavlm_config=tiny_config(), pretrained_video=False).eval()
    video, wave, length = torch.randn(2, 2, 3, 32, 32), torch.randn(2, 1, 4000) * 0.1, torch.tensor([4000, 3000])
    with torch.no_grad():
        feats = model.audio_model.backbone_sequence(wave)
        plain = forward_batch(model, {"video": video, "audio": wave, "audio_length": length})
        cached = forward_batch(model, {"video": video, "audio_features": feats, "audio_length": length})
    torch.testing.assert_close(cached.logits, plain.logits)
    with pytest.raises(ValueError, match="not both"):
        model(video, wave, audio_features=feats)
    with pytest.raises(ValueError, match="neither"):
        model(video)
    mel = build_model(fusion, pretrained_video=False)
    assert isinstance(mel, FusionModel)
    with pytest.raises(ValueError, match="takes no cached features"):
        mel(video, audio_features=feats)
    with pytest.raises(TypeError, match="takes no cached features"):
        forward_batch(build_model("audio"), {"audio_features": feats})


# ------------------------------------------------------------------ keys
def test_key_changes_with_weights_config_file_and_variant(pairs, noise, tmp_path) -> None:
    enc = _encoder()
    fp = backbone_fingerprint(enc.backbone)
    assert backbone_fingerprint(copy.deepcopy(enc.backbone)) == fp  # same weights, same fingerprint
    ctl = WavLMFeatureCache()
    assert ctl.fingerprint(enc.backbone) == fp
    with torch.no_grad():
        enc.backbone.encoder.layers[-1].feed_forward.output_dense.bias.add_(1e-3)
    changed = ctl.fingerprint(enc.backbone)  # the memo notices the in-place change
    assert changed != fp and changed == backbone_fingerprint(enc.backbone)
    other_config = WavLMModel(tiny_config(layer_norm_eps=1e-6))
    other_config.load_state_dict(enc.backbone.state_dict())
    assert backbone_fingerprint(other_config) != changed  # same weights, different architecture settings
    tags = {backbone_tag(fp), backbone_tag(fp, precision="bfloat16"), backbone_tag(fp, attention_mask=True),
            backbone_tag(changed)}
    assert len(tags) == 4 and all(len(t) == 40 for t in tags)

    wav = tmp_path / "clip" / pairs[0].audio_path.name
    wav.parent.mkdir()
    shutil.copy(pairs[0].audio_path, wav)
    ds = RavdessWavLMDataset([dataclasses.replace(pairs[0], audio_path=wav)], augment=True, audio_noise=noise,
                             config=_data(tmp_path / "cache"))
    tag = backbone_tag(fp)
    key = lambda d, t, v: CachedFeaturesDataset(d, t).key(0, v)  # noqa: E731
    keys = [key(ds, tag, v) for v in range(3)]
    assert len(set(keys)) == 3  # clean and two variants
    assert key(ds, backbone_tag(changed), 0) != keys[0]  # weights
    gaussian = RavdessWavLMDataset(ds.pairs, augment=True, audio_noise=AudioNoise(None), config=ds.config)
    assert key(gaussian, tag, 0) == keys[0] and key(gaussian, tag, 1) != keys[1]  # noise source
    assert noise_tag(noise) != noise_tag(AudioNoise(noise.noise_path, dataclasses.replace(noise.config, heavy_snr=0.0)))
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: mtime
    assert key(ds, tag, 0) != keys[0]
    wav.write_bytes(wav.read_bytes() + b"\0\0")  # edited: size
    assert len({key(ds, tag, 0), keys[0]}) == 2
    assert FeatureStore.key("a" * 40, AudioSettings(16000, 3.0), tag) != FeatureStore.key(
        "a" * 40, AudioSettings(16000, 2.0), tag)  # audio settings
    with pytest.raises(ValueError, match="noise tag"):
        FeatureStore.key("a" * 40, AudioSettings(), tag, variant=1)


# ------------------------------------------------------------------ reuse, damage
def test_entries_are_reused_across_datasets_and_runs(pairs, cache_dir) -> None:
    enc = _encoder()
    tag = backbone_tag(backbone_fingerprint(enc.backbone))
    calls = _count_forwards(enc)
    report = fill_features(enc, [_dataset(pairs[:6], cache_dir)], tag=tag, batch_size=4)
    assert (report.entries, report.present, report.computed, calls[0]) == (6, 0, 6, 2)

    # another run: new datasets (a superset), a new encoder object with the same weights
    twin = _encoder()
    twin_tag = backbone_tag(backbone_fingerprint(twin.backbone))
    assert twin_tag == tag
    twin_calls = _count_forwards(twin)
    sets = [_dataset(pairs[:6], cache_dir), _dataset(pairs[4:8], cache_dir)]  # overlapping clips count once
    report = fill_features(twin, sets, tag=twin_tag, batch_size=4)
    assert (report.entries, report.present, report.computed, twin_calls[0]) == (8, 6, 2, 1)
    report = fill_features(twin, sets, tag=twin_tag, batch_size=4)
    assert (report.computed, twin_calls[0]) == (0, 1)  # all warm: no forward

    store = FeatureStore(cache_dir)
    files = sorted(store.root.rglob("*.npz"))
    assert len(files) == 8 and not list(store.root.rglob("*.tmp"))
    files[0].write_bytes(b"not an npz")  # damaged
    files[1].write_bytes(files[1].read_bytes()[:1000])  # truncated
    report = fill_features(twin, sets, tag=twin_tag, batch_size=4)
    assert (report.present, report.computed) == (6, 2)  # damaged entries are misses, recomputed
    assert all(np.load(f)["features"].shape == (199, 32) for f in files[:2])

    other = _encoder(seed=1)  # other weights: nothing reusable
    report = fill_features(other, sets, tag=backbone_tag(backbone_fingerprint(other.backbone)), batch_size=8)
    assert report.computed == 8


# ------------------------------------------------------------------ noisy variants
def test_noisy_variants_differ_from_clean_and_are_deterministic(pairs, noise, cache_dir) -> None:
    clip = clip_identity(pairs[0].audio_path)
    p1 = variant_params(noise, clip, 1, 16000)
    assert p1 == variant_params(noise, clip, 1, 16000)
    draws = [variant_params(noise, clip, k, 16000) for k in range(1, 9)]
    assert len({(d.start, d.seed) for d in draws}) == 8 and {d.snr_db for d in draws} <= NOISY_LEVELS
    assert variant_params(noise, clip_identity(pairs[1].audio_path), 1, 16000) != p1
    with pytest.raises(ValueError):
        variant_params(noise, clip, 0, 16000)
    assert [choose_variant(p, 3) for p in (None, AudioNoiseParams(None, 0, 7), AudioNoiseParams(10.0, 0, 7))] == [0, 0, 2]
    assert choose_variant(AudioNoiseParams(10.0, 0, 7), 0) == 0

    enc = _encoder()
    tag = backbone_tag(backbone_fingerprint(enc.backbone))
    train = _dataset(pairs[:4], cache_dir, augment=True, noise=noise, modalities=("audio", "video"), seed=5)
    val = _dataset(pairs[4:6], cache_dir)
    report = fill_features(enc, [train, val], tag=tag, variants=2, batch_size=8)
    assert report.computed == 4 * 3 + 2  # variants only for the augmenting set
    store = FeatureStore(cache_dir)
    served = CachedFeaturesDataset(train, tag, 2)
    entry = lambda i, v: store.get(tag, served.key(i, v)).features.astype(np.float32)  # noqa: E731
    for i in range(4):
        clean, v1, v2 = entry(i, 0), entry(i, 1), entry(i, 2)
        assert np.abs(v1 - clean).max() > 0.05 and np.abs(v2 - clean).max() > 0.05 and np.abs(v1 - v2).max() > 0.05
    # deterministic: variant 2 of clip 3 is the backbone on the clip mixed with its fixed noise
    wave, length = train.load_wave(3)
    noisy = noise.apply(wave, variant_params(noise, clip_identity(pairs[3].audio_path), 2, 16000))
    with torch.no_grad():
        direct = enc.backbone_sequence(noisy[None], audio_length=torch.tensor([length]))[0]
    np.testing.assert_allclose(entry(3, 2), direct.numpy(), rtol=0, atol=2e-3)

    # serving: the base's own draws pick the variant; the draws are those of the wave path
    twin = _dataset(pairs[:4], cache_dir, augment=True, noise=noise, modalities=("audio", "video"), seed=5)
    chosen = set()
    for epoch in range(4):
        served.set_epoch(epoch)  # the base's epoch
        twin.set_epoch(epoch)
        assert train.epoch == epoch
        for i in range(4):
            item, plain = served[i], twin[i]
            assert "audio_i16" not in item
            assert torch.equal(item["video_u8"], plain["video_u8"]) and item["label"] == plain["label"]
            assert item["meta"] == plain["meta"]
            video_s, audio_s = split_draws(item["aug_f"][None], item["aug_i"][None])
            video_p, a = split_draws(plain["aug_f"][None], plain["aug_i"][None])
            for k, v in video_p.items():
                assert torch.equal(video_s[k], v)
            assert torch.isnan(audio_s["snr_db"]).all() and not audio_s["start"].any()  # the noise is in the variant
            snr = None if torch.isnan(a["snr_db"]) else float(a["snr_db"])
            drawn = AudioNoiseParams(snr, int(a["start"]), int(a["seed"]))
            assert served.audio_draw(i) == drawn
            v = choose_variant(drawn, 2)
            chosen.add(v)
            np.testing.assert_array_equal(item["audio_features"].float().numpy(), entry(i, v))
            assert item["audio_length"] == plain["audio_length"]
    assert chosen == {0, 1, 2}
    assert "audio_i16" in train[0]  # the base itself never changes mode


def test_cached_dataset_checks_missing_entry_and_unreadable_file(pairs, tmp_path) -> None:
    ds = _dataset(pairs[:1], tmp_path / "cache")
    tag = "cd" * 20
    with pytest.raises(ValueError, match="40 lower-case hex digits"):
        CachedFeaturesDataset(ds, "ab")
    with pytest.raises(ValueError, match="variants"):
        CachedFeaturesDataset(ds, tag, 65)
    with pytest.raises(ValueError, match="disk cache folder"):
        CachedFeaturesDataset(_dataset(pairs[:1], ""), tag)
    with pytest.raises(ValueError, match="does not read audio"):
        CachedFeaturesDataset(_dataset(pairs[:1], tmp_path / "cache", modalities=("video",)), tag)
    with pytest.raises(TypeError, match="RAVDESS dataset"):
        CachedFeaturesDataset(list(range(3)), tag)
    served = CachedFeaturesDataset(ds, tag)
    assert len(served) == 1 and served.pairs is ds.pairs
    with pytest.raises(RuntimeError, match="no_feature_cache"):
        served[0]  # the entry is missing although the file reads

    wav = tmp_path / "clip" / pairs[0].audio_path.name
    wav.parent.mkdir()
    wav.write_bytes(b"RIFF not audio")
    broken = _dataset([dataclasses.replace(pairs[0], audio_path=wav)], tmp_path / "cache")
    served = CachedFeaturesDataset(broken, tag)
    assert served[0] is None  # unreadable and not cached: skipped and counted, as the base does
    assert [p.path for p in broken.failures] == [str(wav)]
    wav.unlink()
    assert served[0] is None and len(broken.failures) == 2  # gone


def test_memory_only_cache_runs_the_backbone(pairs, tmp_path, capsys) -> None:
    ds = RavdessWavLMDataset(pairs[:2], config=_data(""), modalities=("audio",))
    torch.manual_seed(0)
    model = build_model("audio", use_wavlm=True, wavlm_config=tiny_config())
    trainer = _trainer(model, _cfg("audio", ""), {"val": make_loader(ds, 2, num_workers=0)}, tmp_path)
    trainer.log = print
    trainer._begin_stage(trainer.stages[0])
    assert not _cache(trainer).active and not _serves_cached(trainer, "val")
    assert "feature cache: off (no disk cache folder" in capsys.readouterr().out
    preds, _ = trainer.evaluate(trainer.loaders["val"])
    assert len(preds.index) == 2


def test_trainer_set_loaders_and_autocast(pairs, tmp_path) -> None:
    ds = RavdessWavLMDataset(pairs[:2], config=_data(""), modalities=("audio",))
    loaders = {"val": make_loader(ds, 2, num_workers=0), "test": make_loader(ds, 1, num_workers=0)}
    trainer = _trainer(build_model("audio", use_wavlm=True, wavlm_config=tiny_config()), _cfg("audio", ""), loaders,
                       tmp_path)
    other = make_loader(ds, 1, num_workers=0)
    assert trainer.set_loaders({"val": other}) == {"val": loaders["val"]}
    assert trainer.loaders == {"val": other, "test": loaders["test"]}
    with pytest.raises(KeyError, match="no split train"):
        trainer.set_loaders({"train": other})
    assert trainer.loaders["val"] is other  # a refused call changes nothing
    with trainer.autocast():  # CPU, no AMP: a no-op context
        assert not torch.is_autocast_enabled()


# ------------------------------------------------------------------ stage switch
def test_stage_switch_frozen_then_unfrozen_goes_back_to_waveforms(pairs, noise, cache_dir, tmp_path) -> None:
    train = _dataset(pairs[:8], cache_dir, augment=True, noise=noise, modalities=("audio", "video"))
    val = _dataset(pairs[8:12], cache_dir, modalities=("audio", "video"))
    loaders = {"train": make_loader(train, 4, num_workers=1, shuffle=True),  # the cached loader gets its own worker
               "val": make_loader(val, 4, num_workers=0)}
    optim = OptimConfig(lr=1e-3, two_stage_training=True, stage1_epochs=1, fusion_unfreeze_wavlm_layers=1)
    cfg = _cfg("gated", cache_dir, optim=optim, epochs=2, feature_cache_variants=2)
    torch.manual_seed(0)
    model = build_model("gated", use_wavlm=True, wavlm_config=tiny_config(), pretrained_video=False)
    enc = model.audio_model
    trainer = _trainer(model, cfg, loaders, tmp_path)
    calls = _count_forwards(enc)

    trainer._begin_stage(trainer.stages[0])
    cache = _cache(trainer)
    assert cache.active and _serves_cached(trainer, "train") and _serves_cached(trainer, "val")
    cached_train = trainer.loaders["train"]
    assert cached_train.dataset.variants == 2 and cached_train.dataset.base is train
    assert cached_train.sampler is loaders["train"].sampler and cached_train.generator is loaders["train"].generator
    assert cached_train.num_workers == 1 and cached_train.persistent_workers and cached_train.batch_size == 4
    calls[0] = 0
    preds, _ = trainer.train_epoch(0)
    trainer.evaluate(trainer.loaders["val"])
    assert calls[0] == 0 and len(preds.index) == 8

    layer = enc.backbone.encoder.layers[-1].feed_forward.output_dense.weight
    before = layer.detach().clone()
    trainer._begin_stage(trainer.stages[1])  # the last WavLM layer trains: waveforms again
    assert not cache.active and trainer.loaders == loaders
    preds, _ = trainer.train_epoch(1)
    assert calls[0] == 2 and len(preds.index) == 8  # the worker now ships waveforms
    assert not torch.equal(layer, before)  # and the backbone trained
    assert "audio_i16" in next(iter(loaders["val"]))


# ------------------------------------------------------------------ whole runs
@pytest.fixture(scope="module")
def tiny_wavlm_dir(tmp_path_factory) -> str:
    return save_tiny_wavlm(tmp_path_factory.mktemp("tiny-wavlm"))


@pytest.mark.slow  # whole training runs
def test_short_runs_with_and_without_the_cache(demo_root, tiny_wavlm_dir, tmp_path, capsys) -> None:
    common = (f"--data_root {demo_root} --fusion audio --use_wavlm --audio_backbone {tiny_wavlm_dir} "
              "--epochs 2 --batch_size 16 --lr 1e-3 --frames 1 --frame_size 32 --clip_seconds 1 --num_workers 0 "
              f"--no_progress --device cpu --output_dir {tmp_path / 'out'}").split()
    histories = {}
    for name, extra in (("cached", ["--feature_cache_variants", "2"]), ("plain", ["--no_feature_cache"])):
        cache = tmp_path / f"cache-{name}"
        assert train_main([*common, "--cache_dir", str(cache), "--run_name", name, *extra]) == 0
        out = capsys.readouterr().out
        run = tmp_path / "out" / "runs" / name
        histories[name] = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
        assert json.loads((run / "test_metrics.json").read_text())["num_samples"] == 60
        saved = json.loads((run / "config.json").read_text())
        if name == "cached":
            assert "feature cache: WavLM backbone frozen" in out and "2 fixed noisy variants" in out
            assert saved["feature_cache"] is True and saved["feature_cache_variants"] == 2
            assert len(list((cache / "wavlm").rglob("*.npz"))) == 120 * 3 + 60 + 60
        else:
            assert "feature cache" not in out and not (cache / "wavlm").exists()
            assert saved["feature_cache"] is False
    for h in histories.values():
        assert [r["epoch"] for r in h] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in h)


@pytest.mark.slow  # a whole training run
def test_two_stage_fusion_run_switches_back(demo_root, tmp_path, capsys) -> None:
    optim = OptimConfig(lr=1e-3, two_stage_training=True, stage1_epochs=1, fusion_unfreeze_wavlm_layers=1,
                        fusion_unfreeze_video_blocks=0)
    cfg = dataclasses.replace(_cfg("gated", tmp_path / "cache", optim=optim, epochs=2), data_root=str(demo_root),
                              output_dir=str(tmp_path / "out"), batch_size=16)
    result = run_training(cfg)
    out = capsys.readouterr().out
    assert [r["stage"] for r in result.history] == [1, 2]
    assert out.index("feature cache: WavLM backbone frozen") < out.index("stage 1:") < out.index("stage 2:")
    assert len(list((tmp_path / "cache" / "wavlm").rglob("*.npz"))) == 240  # clean only (no variants asked for)
    assert "noise augmentation off" in out


def test_resume_inside_the_cached_stage_reaches_the_same_results(demo_root, tmp_path, capsys) -> None:
    optim = OptimConfig(lr=1e-3, two_stage_training=True, stage1_epochs=2, fusion_unfreeze_wavlm_layers=1,
                        fusion_unfreeze_video_blocks=0)

    def cfg(out: str) -> TrainConfig:
        return dataclasses.replace(_cfg("gated", tmp_path / "cache", optim=optim, epochs=3, feature_cache_variants=2),
                                   data_root=str(demo_root), output_dir=str(tmp_path / out), batch_size=16)

    full = run_training(cfg("a"))
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg("b"), callbacks=[InterruptAfter(1)])  # inside stage 1, served from the cache
    (run_dir,) = (tmp_path / "b" / "runs").iterdir()
    assert load_checkpoint(run_dir / "last.pt")["callbacks"]["WavLMFeatureCache"] == {}
    capsys.readouterr()
    resumed = resume_training(run_dir, overrides={"device": "cpu"})
    out = capsys.readouterr().out
    assert "feature cache: WavLM backbone frozen" in out and "0 computed" in out  # the entries of the first start
    comparable = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert comparable(resumed.history) == comparable(full.history)
    assert [r["stage"] for r in resumed.history] == [1, 1, 2]
    drop = lambda m: {k: v for k, v in m.items() if k != "checkpoint"}  # noqa: E731
    assert drop(resumed.test_metrics) == drop(full.test_metrics)


def test_cli_flags_and_config_checks() -> None:
    cfg = config_from_args(build_parser().parse_args(["--no_feature_cache", "--feature_cache_variants", "3"]))
    assert cfg.feature_cache is False and cfg.feature_cache_variants == 3
    assert TrainConfig().feature_cache is True and TrainConfig().feature_cache_variants == 0
    with pytest.raises(ValueError, match="feature_cache_variants"):
        TrainConfig(feature_cache_variants=-1)
    with pytest.raises(ValueError, match="at most 64"):
        TrainConfig(feature_cache_variants=65)
    assert TrainConfig.from_dict(TrainConfig(feature_cache_variants=4).to_dict()).feature_cache_variants == 4


@pytest.mark.slow  # runs the benchmark
def test_measure_wavlm_cache_structure(tmp_path) -> None:
    from emolab.bench.wavlm import measure_wavlm_cache

    threads = torch.get_num_threads()
    res = measure_wavlm_cache(4, wavlm=tiny_config(), batch_size=2, seconds=SECONDS, variants=1,
                              num_threads=threads + 1, workdir=tmp_path)
    assert res["clips"] == 4 and res["entries_computed"] == 8 and res["variants"] == 1
    assert res["threads"] == threads + 1 and torch.get_num_threads() == threads  # restored
    for key in ("epoch_s_plain", "fill_s", "epoch_s_cached", "speedup", "warm_start_s", "cache_bytes"):
        assert res[key] > 0
    assert res["backbone_params"] == sum(p.numel() for p in WavLMModel(tiny_config()).parameters())


def test_a_failed_fill_on_another_ddp_rank_turns_the_cache_off_here(pairs, cache_dir, tmp_path, capsys) -> None:
    """Rank 0 fills its share; rank 1's disk is full. Rank 0 must not wait in the barrier or serve cached features
    while rank 1 runs the backbone on waveforms: both turn the cache off (the failure is gathered)."""
    from emolab.train.distributed import DistContext

    class OtherRankFails(DistContext):
        barriers = 0

        def all_gather_object(self, obj):
            return [obj, obj] if obj is not None else [None, "No space left on device"]  # the tag; this rank's fill

        def barrier(self):
            OtherRankFails.barriers += 1

    ds = _dataset(pairs[:4], cache_dir, modalities=("audio",))
    model = build_model("audio", use_wavlm=True, wavlm_config=tiny_config())
    trainer = _trainer(model, _cfg("audio", cache_dir), {"val": make_loader(ds, 2, num_workers=0)}, tmp_path)
    trainer._begin_stage(trainer.stages[0])  # one process: the stage freezes the backbone, the cache serves
    cache = _cache(trainer)
    assert cache.active
    cache.release(trainer)
    trainer.dist = OtherRankFails(rank=0, world_size=2)  # the callback alone: no process group to wrap DDP in
    trainer.log = print
    cache.begin_stage(trainer)
    assert not _cache(trainer).active and not _serves_cached(trainer, "val")
    assert OtherRankFails.barriers == 0
    assert ds.cache.write_error == "No space left on device"
    assert "feature cache: off (cache folder" in capsys.readouterr().out
