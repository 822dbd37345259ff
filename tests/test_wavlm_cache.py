"""The frozen-WavLM feature cache: same outputs as the backbone, keys, reuse, noise variants, stage switch, runs.

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
from emolab.data.audio import AudioNoise, AudioNoiseParams
from emolab.data.cache import AudioSettings
from emolab.data.feature_cache import (
    FeatureStore,
    FeatureSwitch,
    choose_variant,
    clip_identity,
    noise_tag,
    variant_params,
)
from emolab.models import WavLMAudioEncoder, build_model, forward_batch
from emolab.train import EmotionTrainer, OptimConfig, RunPaths, TrainConfig, run_training
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
    return RavdessWavLMDataset(pairs, augment=augment, audio_noise=noise, config=_data(cache_dir), raw=True,
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
    paths = RunPaths(tmp_path / "run", tmp_path, cfg.model.fusion)
    return EmotionTrainer(model, cfg, loaders, paths, callbacks=[])


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
    assert not ds.feature_switch.enabled and _wavlm(model).input_kind == "wave"
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
    assert cached.feature_cache.active and ds.feature_switch.enabled and _wavlm(model).input_kind == "features"
    assert cached.feature_cache.last_fill.computed == 6
    calls[0] = 0
    batch = next(iter(loaders["val"]))
    assert batch["audio_features"].dtype == torch.float16 and batch["audio_features"].shape == (4, 199, 32)
    assert "audio_i16" not in batch
    with torch.no_grad():
        model.eval()
        logits_cached = forward_batch(model, cached._inputs(batch)[0]).logits
    preds_cached, _ = cached.evaluate(loaders["val"])
    assert calls[0] == 0  # no backbone forward at all
    torch.testing.assert_close(logits_cached, logits_plain, rtol=0, atol=2e-3)  # float16 storage
    np.testing.assert_array_equal(preds_cached.index, preds_plain.index)
    np.testing.assert_allclose(preds_cached.loss, preds_plain.loss, rtol=0, atol=2e-3)
    assert (preds_cached.loss > 0).all()


def test_encoder_input_kind_is_explicit() -> None:
    enc = _encoder()
    wave = torch.randn(2, 1, 4000) * 0.1
    feats = enc.backbone_sequence(wave)  # (2, 49, 32)
    with pytest.raises(ValueError, match="waveform"):
        enc(feats)  # wave mode does not take features
    enc.set_input_kind("features")
    torch.testing.assert_close(enc(feats), enc.head(feats.mean(1)))
    with pytest.raises(ValueError, match="cached backbone outputs"):
        enc(wave)
    with pytest.raises(ValueError, match="input kind"):
        enc.set_input_kind("mel")
    enc.unfreeze_backbone(1)
    with pytest.raises(ValueError, match="frozen backbone"):
        enc(feats)  # stale features for a training backbone are refused
    enc.set_input_kind("wave")
    with pytest.raises(ValueError, match="frozen backbone"):
        enc.set_input_kind("features")


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
    keys = [ds.feature_key(0, tag, v) for v in range(3)]
    assert len(set(keys)) == 3  # clean and two variants
    assert ds.feature_key(0, backbone_tag(changed), 0) != keys[0]  # weights
    gaussian = RavdessWavLMDataset(ds.pairs, augment=True, audio_noise=AudioNoise(None), config=ds.config)
    assert gaussian.feature_key(0, tag, 0) == keys[0] and gaussian.feature_key(0, tag, 1) != keys[1]  # noise source
    assert noise_tag(noise) != noise_tag(AudioNoise(noise.noise_path, dataclasses.replace(noise.config, heavy_snr=0.0)))
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: mtime
    assert ds.feature_key(0, tag, 0) != keys[0]
    wav.write_bytes(wav.read_bytes() + b"\0\0")  # edited: size
    assert len({ds.feature_key(0, tag, 0), keys[0]}) == 2
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
    entry = lambda i, v: store.get(tag, train.feature_key(i, tag, v)).features.astype(np.float32)  # noqa: E731
    for i in range(4):
        clean, v1, v2 = entry(i, 0), entry(i, 1), entry(i, 2)
        assert np.abs(v1 - clean).max() > 0.05 and np.abs(v2 - clean).max() > 0.05 and np.abs(v1 - v2).max() > 0.05
    # deterministic: variant 2 of clip 3 is the backbone on the clip mixed with its fixed noise
    wave, length = train.load_wave(3)
    noisy = noise.apply(wave, variant_params(noise, clip_identity(pairs[3].audio_path), 2, 16000))
    with torch.no_grad():
        direct = enc.backbone_sequence(noisy[None], audio_length=torch.tensor([length]))[0]
    np.testing.assert_allclose(entry(3, 2), direct.numpy(), rtol=0, atol=2e-3)

    # serving: the dataset's own draws pick the variant; the draws are those of the wave path
    twin = _dataset(pairs[:4], cache_dir, augment=True, noise=noise, modalities=("audio", "video"), seed=5)
    train.feature_switch.enable(tag, 2)
    chosen = set()
    for epoch in range(4):
        train.set_epoch(epoch)
        twin.set_epoch(epoch)
        for i in range(4):
            served, plain = train[i], twin[i]
            assert "audio_i16" not in served and "audio_aug" not in served
            for k, v in plain["video_aug"].items():
                assert torch.equal(served["video_aug"][k], v)
            a = plain["audio_aug"]
            snr = None if torch.isnan(a["snr_db"]) else float(a["snr_db"])
            v = choose_variant(AudioNoiseParams(snr, int(a["start"]), int(a["seed"])), 2)
            chosen.add(v)
            np.testing.assert_array_equal(served["audio_features"].float().numpy(), entry(i, v))
            assert served["audio_length"] == plain["audio_length"]
    assert chosen == {0, 1, 2}
    train.feature_switch.disable()
    assert "audio_i16" in train[0]


def test_feature_switch_state_and_missing_entry(pairs, tmp_path) -> None:
    sw = FeatureSwitch()
    assert not sw.enabled
    sw.enable("ab" * 20, 3)
    assert sw.state() == {"enabled": True, "variants": 3, "backbone": "ab" * 20}
    with pytest.raises(ValueError):
        sw.enable("ab", 1)
    with pytest.raises(ValueError):
        sw.enable("ab" * 20, 65)
    ds = _dataset(pairs[:1], tmp_path / "cache")
    ds.feature_switch.enable("cd" * 20, 0)
    with pytest.raises(RuntimeError, match="no_feature_cache"):
        ds[0]


def test_memory_only_cache_runs_the_backbone(pairs, tmp_path, capsys) -> None:
    ds = RavdessWavLMDataset(pairs[:2], config=_data(""), raw=True, modalities=("audio",))
    torch.manual_seed(0)
    model = build_model("audio", use_wavlm=True, wavlm_config=tiny_config())
    trainer = _trainer(model, _cfg("audio", ""), {"val": make_loader(ds, 2, num_workers=0)}, tmp_path)
    trainer.log = print
    trainer._begin_stage(trainer.stages[0])
    assert not trainer.feature_cache.active and model.input_kind == "wave" and not ds.feature_switch.enabled
    assert "feature cache: off (no disk cache folder" in capsys.readouterr().out
    preds, _ = trainer.evaluate(trainer.loaders["val"])
    assert len(preds.index) == 2


# ------------------------------------------------------------------ stage switch
def test_stage_switch_frozen_then_unfrozen_goes_back_to_waveforms(pairs, noise, cache_dir, tmp_path) -> None:
    train = _dataset(pairs[:8], cache_dir, augment=True, noise=noise, modalities=("audio", "video"))
    val = _dataset(pairs[8:12], cache_dir, modalities=("audio", "video"))
    loaders = {"train": make_loader(train, 4, num_workers=1, shuffle=True),  # a persistent worker sees the switch
               "val": make_loader(val, 4, num_workers=0)}
    optim = OptimConfig(lr=1e-3, two_stage_training=True, stage1_epochs=1, fusion_unfreeze_wavlm_layers=1)
    cfg = _cfg("gated", cache_dir, optim=optim, epochs=2, feature_cache_variants=2)
    torch.manual_seed(0)
    model = build_model("gated", use_wavlm=True, wavlm_config=tiny_config(), pretrained_video=False)
    enc = model.audio_model
    trainer = _trainer(model, cfg, loaders, tmp_path)
    calls = _count_forwards(enc)

    trainer._begin_stage(trainer.stages[0])
    assert trainer.feature_cache.active and enc.input_kind == "features"
    assert train.feature_switch.state()["variants"] == 2 and val.feature_switch.enabled
    calls[0] = 0
    trainer.train_epoch(0)
    trainer.evaluate(loaders["val"])
    assert calls[0] == 0

    layer = enc.backbone.encoder.layers[-1].feed_forward.output_dense.weight
    before = layer.detach().clone()
    trainer._begin_stage(trainer.stages[1])  # the last WavLM layer trains: waveforms again
    assert not trainer.feature_cache.active and enc.input_kind == "wave"
    assert not train.feature_switch.enabled and not val.feature_switch.enabled
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
    common = (f"--data_root {demo_root} --fusion audio --use_wavlm --wavlm_name_or_path {tiny_wavlm_dir} "
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
    from emolab.bench_wavlm import measure_wavlm_cache

    threads = torch.get_num_threads()
    res = measure_wavlm_cache(4, wavlm=tiny_config(), batch_size=2, seconds=SECONDS, variants=1,
                              num_threads=threads + 1, workdir=tmp_path)
    assert res["clips"] == 4 and res["entries_computed"] == 8 and res["variants"] == 1
    assert res["threads"] == threads + 1 and torch.get_num_threads() == threads  # restored
    for key in ("epoch_s_plain", "fill_s", "epoch_s_cached", "speedup", "warm_start_s", "cache_bytes"):
        assert res[key] > 0
    assert res["backbone_params"] == sum(p.numel() for p in WavLMModel(tiny_config()).parameters())
