"""Issue #16 item 4: temporal pooling, the emotion-prior xattn bias and the CLIP-style loss.

Each option: shapes, gradients into its parameters, padding masks honoured (padded steps change nothing), and
off by default with the computation of before (the default modules and their outputs are those of a model built
without the option; ``test_defaults_compute_what_they_computed_before`` rebuilds the old arithmetic by hand).
"""

from __future__ import annotations

import json

import pytest
import torch

from emolab.cli.main import main as emolab_main
from emolab.models import build_model
from emolab.models.core import forward_batch
from emolab.models.layers import CrossAttentionBlock, masked_mean
from emolab.models.pooling import POOLINGS, EmotionPriorBias, TemporalPooling, clip_alignment_loss
from emolab.models.registry import ModelConfig, count_parameters
from emolab.train import OptimConfig
from emolab.train.run import run_training
from tests.configs import tiny_data, tiny_model, tiny_train, tiny_train_flags

MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)


def _batch(B: int = 3, T: int = 3, n_mels: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"video": torch.randn(B, T, 3, 32, 32, generator=g), "audio": torch.randn(B, 1, n_mels, 101, generator=g),
            "audio_length": torch.tensor([16000, 8000, 4000][:B]),
            "video_valid": torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]][:B], dtype=torch.bool)}


# ------------------------------------------------------------------ pooling
@pytest.mark.parametrize("kind", POOLINGS)
def test_pooling_shapes_masks_and_gradients(kind) -> None:
    torch.manual_seed(0)
    pool = TemporalPooling(kind, 16, dropout=0.0).eval()
    x = torch.randn(3, 5, 16, requires_grad=True)
    out = pool(x, MASK)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    y = x.detach().clone()
    y[~MASK] = 1e3  # padded steps: anything
    torch.testing.assert_close(pool(y, MASK), out.detach())
    assert not torch.allclose(pool(y), pool(x.detach()))  # without the mask the padding counts
    out.sum().backward()
    assert x.grad is not None and (x.grad[~MASK] == 0).all() and x.grad[MASK].abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pool.parameters())
    assert pool(x.detach()[:, :1]).shape == (3, 16)  # a single step


def test_mean_pooling_is_masked_mean_and_has_no_parameters() -> None:
    x = torch.randn(3, 5, 8)
    pool = TemporalPooling("mean", 8)
    assert list(pool.parameters()) == [] and pool.state_dict() == {}
    assert torch.equal(pool(x, MASK), masked_mean(x, MASK)) and torch.equal(pool(x), x.mean(1))


def test_attention_pooling_weights_and_counts() -> None:
    pool = TemporalPooling("attention", 512)
    w = pool.weights(torch.randn(3, 5, 512), MASK)
    assert (w[~MASK] == 0).all() and torch.allclose(w.sum(-1), torch.ones(3))
    assert count_parameters(pool) == 131_584 and count_parameters(TemporalPooling("transformer", 512)) == 2_102_784
    with pytest.raises(ValueError, match="kind must be one of"):
        TemporalPooling("max", 8)
    with pytest.raises(ValueError, match=r"expected \(B, T, 8\)"):
        TemporalPooling("mean", 8)(torch.randn(2, 8))


# ------------------------------------------------------------------ prior bias
def test_key_bias_shifts_attention_and_respects_padding() -> None:
    torch.manual_seed(0)
    block = CrossAttentionBlock(16, 4, 0.0, 0.0).eval()
    q, kv = torch.randn(3, 4, 16), torch.randn(3, 5, 16)
    plain, w0 = block(q, kv, key_valid=MASK, need_weights=True)
    zero, wz = block(q, kv, key_valid=MASK, need_weights=True, key_bias=torch.zeros(3, 5))
    torch.testing.assert_close(zero, plain)
    torch.testing.assert_close(wz, w0)
    bias = torch.zeros(3, 5)
    bias[:, 0] = 5.0  # favour the first key
    _, wb = block(q, kv, key_valid=MASK, need_weights=True, key_bias=bias)
    assert (wb[[0, 2], ..., 0] > w0[[0, 2], ..., 0]).all()  # (row 1 has one valid key: weight 1 either way)
    assert (wb[~MASK[:, None, None, :].expand_as(wb)] == 0).all()  # padded keys: no weight
    torch.testing.assert_close(wb.sum(-1), torch.ones(3, 4, 4))


def test_emotion_prior_bias_gradients() -> None:
    torch.manual_seed(0)
    prior = EmotionPriorBias(16, 8)
    a, v = torch.randn(3, 5, 16), torch.randn(3, 4, 16)
    p, e = prior.prior(a, v, MASK, None)
    assert p.shape == (3, 8) and e.shape == (3, 16) and torch.allclose(p.sum(-1), torch.ones(3))
    b = prior.bias(a, e)
    assert b.shape == (3, 5)
    b.pow(2).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in prior.parameters())
    a2 = a.clone()
    a2[~MASK] = 1e3  # padded audio steps do not move the prior
    torch.testing.assert_close(prior.prior(a2, v, MASK, None)[1], e.detach())


# ------------------------------------------------------------------ CLIP loss
def test_clip_alignment_loss() -> None:
    a = torch.eye(4) * 3
    aligned = clip_alignment_loss(a, a.clone(), 0.07)
    shuffled = clip_alignment_loss(a, a.flip(0), 0.07)
    assert aligned < 1e-3 < shuffled
    x, y = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    loss = clip_alignment_loss(x, y, 0.1)
    torch.testing.assert_close(loss, clip_alignment_loss(y, x, 0.1))  # symmetric
    loss.backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    assert clip_alignment_loss(x[:1], y[:1]).item() == 0.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        clip_alignment_loss(x, y, 0.0)


# ------------------------------------------------------------------ in the models
OPTIONS = [
    ("video", dict(video_pooling="attention")),
    ("late", dict(video_pooling="transformer")),
    ("concat", dict(video_pooling="attention", audio_pooling="transformer")),
    ("gated", dict(audio_pooling="attention", clip_weight=0.5)),
    ("concat", dict(clip_weight=1.0, clip_temperature=0.2)),
    ("xattn", dict(xattn_pooling="attention", xattn_prior_bias=True)),
    ("xattn_gated", dict(xattn_pooling="transformer")),
    ("xattn", dict(xattn_prior_bias=True)),
]


@pytest.mark.parametrize("fusion, options", OPTIONS, ids=[f"{f}-{'-'.join(o)}" for f, o in OPTIONS])
def test_options_build_train_and_mask(fusion, options) -> None:
    torch.manual_seed(0)
    model = build_model(fusion, n_mels=16, **options)
    plain_names = {n for n, _ in build_model(fusion, n_mels=16).named_parameters()}
    new = {n for n, _ in model.named_parameters()} - plain_names
    learned = any(v not in ("mean", 0.0) and k != "clip_temperature" and k != "clip_weight" for k, v in options.items())
    assert bool(new) == learned, new
    batch = _batch()
    model.train()
    out = forward_batch(model, batch, return_attn=fusion.startswith("xattn"))
    assert out.logits.shape == (3, 8)
    assert (out.align_loss is not None) == (options.get("clip_weight", 0) > 0)
    loss = out.logits.logsumexp(-1).sum() + (0 if out.align_loss is None else out.align_loss)
    loss.backward()
    unused = model.unused_parameter_names() if hasattr(model, "unused_parameter_names") else set()
    for name, p in model.named_parameters():
        if name in new and name not in unused:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        ref = forward_batch(model, batch, return_attn=fusion.startswith("xattn"))
        video = batch["video"].clone()
        video[~batch["video_valid"]] = 7.0  # repeated frames' content is ignored where they are masked
        padded = {**batch, "video": video}
        again = forward_batch(model, padded, return_attn=fusion.startswith("xattn"))
    assert ref.align_loss is None  # training only
    torch.testing.assert_close(again.logits, ref.logits)
    if fusion.startswith("xattn"):  # padded keys get no weight, with the prior bias too
        assert (ref.attn_a2v.sum(-2)[~ref.video_mask[:, None, :].expand(-1, 4, -1)] == 0).all()
        assert (ref.attn_v2a.sum(-2)[~ref.audio_mask[:, None, :].expand(-1, 4, -1)] == 0).all()


def test_defaults_compute_what_they_computed_before() -> None:
    """Off = the old arithmetic: xattn's masked means and concat's ``encode`` embeddings, bit for bit."""
    torch.manual_seed(0)
    off = dict(video_pooling="mean", audio_pooling="mean", clip_weight=0.0)
    a = build_model("concat", n_mels=16)
    torch.manual_seed(0)
    b = build_model("concat", n_mels=16, **off)
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.audio_pool is None and not any(n.startswith("video_model.pool") for n, _ in a.named_parameters())
    batch = _batch()
    a.train()
    out = forward_batch(a, batch)
    assert out.align_loss is None
    a.eval()
    with torch.no_grad():
        emb_a = a.audio_proj(a.audio_model.encode(batch["audio"], audio_length=batch["audio_length"]))
        emb_v = a.video_proj(masked_mean(a.video_model.encode_sequence(batch["video"]), batch["video_valid"]))
        assert torch.equal(forward_batch(a, batch).logits, a.classifier(torch.cat([emb_a, emb_v], -1)))

        x = build_model("xattn", n_mels=16).eval()
        assert x.prior_bias is None and count_parameters(x.video_pool) == count_parameters(x.audio_pool) == 0
        v = x.video_proj(x.video_model.encode_sequence(batch["video"]))
        s, s_valid = x.audio_sequence(batch["audio"], batch["audio_length"])
        v_out, _ = x.v2a(v, s, key_valid=s_valid)
        a_out, _ = x.a2v(s, v_out, key_valid=batch["video_valid"])
        fused = torch.cat([masked_mean(a_out, s_valid), masked_mean(v_out, batch["video_valid"])], -1)
        assert torch.equal(forward_batch(x, batch).logits, x.classifier(fused))


@pytest.mark.parametrize("fusion, options, message", [
    ("xattn", dict(video_pooling="attention"), "video_pooling='attention' applies to video, late, concat, gated"),
    ("video", dict(audio_pooling="attention"), "audio_pooling='attention' applies to audio, concat, gated"),
    ("xattn", dict(audio_pooling="transformer"), "audio_pooling='transformer' applies to audio, concat, gated"),
    ("audio", dict(audio_pooling="attention", use_wavlm=True, wavlm_embedding="head"), "wavlm_embedding='hidden'"),
    ("gated", dict(xattn_pooling="transformer"), "xattn_pooling='transformer' applies to xattn"),
    ("concat", dict(xattn_prior_bias=True), "xattn_prior_bias=True applies to xattn"),
    ("xattn_gated", dict(clip_weight=0.1), "clip_weight=0.1 applies to concat, gated"),
    ("concat", dict(clip_weight=-1.0), "clip_weight must be a finite number >= 0"),
    ("concat", dict(clip_temperature=0.0), "clip_temperature must be > 0"),
    ("concat", dict(video_pooling="max"), r"video_pooling must be one of \('mean'"),
    ("gated", dict(audio_pooling="attention", use_wavlm=True, wavlm_embedding="head"), "wavlm_embedding='hidden'"),
])
def test_config_refuses_an_option_the_model_does_not_have(fusion, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(fusion=fusion, **options)


def test_two_stage_trains_a_learned_video_pooling_with_the_head() -> None:
    model = build_model("concat", n_mels=16, video_pooling="attention")
    groups = model.param_groups(1, OptimConfig(two_stage_training=True, lr=1e-3))
    (fusion,) = [g for g in groups if g["name"] == "fusion"]
    pool = {id(p) for p in model.video_model.pool.parameters()}
    assert pool and pool <= {id(p) for p in fusion["params"]}
    assert all(p.requires_grad for p in model.video_model.pool.parameters())
    assert not any(p.requires_grad for p in model.video_model.backbone.parameters())


def test_trainer_adds_and_logs_the_clip_loss(demo_root, tmp_path, cache_dir, one_torch_thread) -> None:
    cfg = tiny_train(demo_root, cache_dir, tmp_path / "out", fusion="concat", epochs=1,
                     model=tiny_model("concat", clip_weight=0.5), data=tiny_data(cache_dir, face_crop="none"))
    result = run_training(cfg)
    (record,) = result.history
    # the whole record in the message: a failure (seen once in a full run, never reproduced) then says what ran
    assert "train_clip_loss" in record and record["train_clip_loss"] > 0, record
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert history[0]["train_clip_loss"] == pytest.approx(record["train_clip_loss"])


# ------------------------------------------------------------------ whole runs
RUN_OPTIONS = [
    ("video", ["--video_pooling", "transformer"]),
    ("gated", ["--video_pooling", "attention", "--audio_pooling", "transformer", "--clip_weight", "0.3"]),
    ("concat", ["--audio_pooling", "attention", "--clip_weight", "1", "--clip_temperature", "0.1"]),
    ("audio", ["--audio_pooling", "transformer"]),
    ("xattn", ["--xattn_pooling", "transformer", "--xattn_prior_bias", "--xattn_d_model", "16", "--xattn_heads", "2"]),
    ("xattn_gated", ["--xattn_pooling", "attention", "--xattn_d_model", "16", "--xattn_heads", "2"]),
]


@pytest.mark.slow  # whole training runs
@pytest.mark.parametrize("fusion, flags", RUN_OPTIONS, ids=[f for f, _ in RUN_OPTIONS])
def test_every_option_trains_through_emolab_train(fusion, flags, demo_root, demo_frame_cache, tmp_path,
                                                   one_torch_thread, capsys) -> None:
    """Each run trains on the session's frame cache: the frames are decoded once, not once per option."""
    out = tmp_path / "out"
    rc = emolab_main(["train", "--fusion", fusion, *flags, *tiny_train_flags(demo_root, demo_frame_cache),
                      "--output_dir", str(out)])
    assert rc in (0, None), capsys.readouterr().err[-3000:]
    (run,) = (out / "runs").glob("*")
    saved = json.loads((run / "config.json").read_text())["model"]
    assert json.loads((run / "test_metrics.json").read_text())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert ("train_clip_loss" in history[0]) == ("--clip_weight" in flags)
    if "--xattn_prior_bias" in flags:
        assert saved["xattn_prior_bias"] is True
    for name in ("video_pooling", "audio_pooling", "xattn_pooling"):
        if f"--{name}" in flags:
            assert saved[name] == flags[flags.index(f"--{name}") + 1]


@pytest.mark.slow  # cross-validation runs
def test_options_train_through_emolab_cv(cv_corpus, tmp_path, one_torch_thread, capsys) -> None:
    corpus = cv_corpus
    out = tmp_path / "cv"
    rc = emolab_main(["cv", "--protocol", "six_fold", "--folds", "0", "--fusion", "gated", "--out", str(out),
                      "--video_pooling", "attention", "--audio_pooling", "transformer", "--clip_weight", "0.5",
                      *tiny_train_flags(corpus, tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err[-3000:]
    (cfg_file,) = out.rglob("config.json")
    saved = json.loads(cfg_file.read_text())["model"]
    assert (saved["video_pooling"], saved["audio_pooling"], saved["clip_weight"]) == ("attention", "transformer", 0.5)


def test_readme_counts_of_the_options() -> None:
    """The 'parameters added' column of README 'Models' (AudioCNN, ResNet18, xattn d=128, 8 classes)."""
    def added(fusion: str, **options) -> int:
        return count_parameters(build_model(fusion, **options)) - count_parameters(build_model(fusion))

    assert added("video", video_pooling="attention") == 131_584
    assert added("concat", video_pooling="transformer") == 2_102_784
    assert (added("gated", audio_pooling="attention"), added("gated", audio_pooling="transformer")) == (8_320, 132_480)
    assert (added("xattn", xattn_pooling="attention"), added("xattn", xattn_pooling="transformer")) == (16_640, 264_960)
    assert added("xattn_gated", xattn_prior_bias=True) == 3_081 and added("concat", clip_weight=0.5) == 0
    assert count_parameters(TemporalPooling("attention", 768)) == 295_680  # WavLM-base hidden size
    assert count_parameters(TemporalPooling("transformer", 768)) == 4_727_040
