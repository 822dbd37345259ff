"""Tests for the WavLM audio encoder and WavLM fusion (no download, no network).

Full-size shapes and counts use a randomly initialised ``WavLMConfig()``
(wavlm-base's shape), built once per module; forward passes use tiny configs.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from transformers import WavLMConfig, WavLMModel

import emolab.models.layers as layers_mod
import emolab.models.speech as speech_mod
from emolab.models import FusionModel, WavLMAudioEncoder, build_model, count_parameters, forward_batch
from tests.configs import registered_models
from tests.configs import tiny_wavlm_config as tiny_config

B, T, C = 2, 2, 8
N = 4000  # samples per tiny clip (tiny configs downsample by 80: 49 frames)


def _np(t: torch.Tensor):
    return t.detach().cpu().numpy()


def _batch(b: int = B, n: int = N) -> dict[str, torch.Tensor]:
    return {
        "video": torch.randn(b, T, 3, 112, 112),
        "audio": torch.randn(b, 1, n) * 0.1,
        "audio_length": torch.tensor([n] + [n // 2] * (b - 1)),
        "video_valid": torch.ones(b, T, dtype=torch.bool),
        "label": torch.arange(b) % C,
    }


# --------------------------------------------------------------------------- full-size counts
@pytest.fixture(scope="module")
def full_wavlm() -> WavLMAudioEncoder:
    torch.manual_seed(0)
    return build_model("audio", use_wavlm=True, wavlm_config=WavLMConfig())


def test_full_size_counts_and_stages(full_wavlm: WavLMAudioEncoder) -> None:
    model = full_wavlm
    assert isinstance(model, WavLMAudioEncoder)
    assert count_parameters(model.backbone) == 94_381_936
    assert count_parameters(model) == 94_978_680
    assert count_parameters(model, trainable=True) == 596_744  # stage 1: head only
    assert sum(p.numel() for p in model.get_stage1_params()) == 596_744
    assert model.embedding_dim == model.sequence_dim == 768
    assert model.backbone_attention_mask is False  # feat_extract_norm="group", as wavlm-base
    try:
        model.unfreeze_backbone(2)
        assert count_parameters(model, trainable=True) == 14_773_552
        groups = model.get_stage2_params(backbone_lr=3e-5, head_lr=3e-4)
        assert [g["name"] for g in groups] == ["backbone", "head"]
        assert [g["lr"] for g in groups] == [3e-5, 3e-4]
        assert sum(p.numel() for p in groups[0]["params"]) == 14_773_552 - 596_744
        assert sum(p.numel() for p in groups[1]["params"]) == 596_744
        model.unfreeze_backbone(4)
        assert count_parameters(model, trainable=True) == 28_950_360
        model.unfreeze_backbone(None)
        assert count_parameters(model, trainable=True) == 94_978_680
        with pytest.raises(ValueError, match=r"num_last_layers must be in \[0, 12\]"):
            model.unfreeze_backbone(13)
    finally:
        model.freeze_backbone()
    assert count_parameters(model, trainable=True) == 596_744
    assert [g["name"] for g in model.get_stage2_params()] == ["head"]


@pytest.mark.parametrize(
    "name,total,trainable",
    [
        ("late", 106_159_296, 11_777_360),
        ("concat", 106_620_872, 12_238_936),
        ("gated", 106_621_129, 12_239_193),
    ],
)
def test_full_size_wavlm_fusion_counts(name: str, total: int, trainable: int) -> None:
    # Built on the meta device: the same constructors, no storage, so exact counts in milliseconds.
    with torch.device("meta"):
        model = build_model(name, use_wavlm=True, wavlm_config=WavLMConfig())
    assert count_parameters(model) == total
    assert count_parameters(model, trainable=True) == trainable
    assert count_parameters(model) - count_parameters(model.audio_model) - count_parameters(
        model.video_model
    ) == {"late": 0, "concat": 461_576, "gated": 461_833}[name]


# --------------------------------------------------------------------------- shapes
def test_tiny_shapes_and_input_layouts() -> None:
    torch.manual_seed(0)
    model = WavLMAudioEncoder(C, config=tiny_config()).eval()
    wave = torch.randn(B, 1, N)
    Ta = int(model.frame_lengths(torch.tensor([N])).item())
    assert Ta == 49
    with torch.no_grad():
        assert model.encode_sequence(wave).shape == (B, Ta, 32)
        assert model.encode(wave).shape == (B, 32)
        out3, out2 = model(wave).logits, model(wave.squeeze(1)).logits
    assert out3.shape == (B, C)
    assert torch.equal(out3, out2)
    with pytest.raises(ValueError, match=r"\(B, 1, N\) or \(B, N\)"):
        model(torch.randn(B, 2, N))


def test_config_can_be_a_dict() -> None:
    model = WavLMAudioEncoder(4, config=tiny_config().to_dict())
    assert model.embedding_dim == 32
    assert model.head[-1].out_features == 4


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", registered_models(reading="audio"))
def test_tiny_wavlm_every_mode_shapes(name: str, train: bool) -> None:
    torch.manual_seed(0)
    model = build_model(name, use_wavlm=True, wavlm_config=tiny_config()).train(train)
    out = forward_batch(model, _batch(), return_attn=True, return_gate=True)
    assert out.logits.shape == out.log_probs.shape == out.probs.shape == (B, C)
    assert torch.isfinite(out.log_probs).all()
    assert _np(out.probs.sum(-1)) == pytest.approx(1.0, abs=1e-5)
    if name.startswith("xattn"):
        assert out.attn_v2a.shape == (B, 4, T, 49)
        assert out.attn_a2v.shape == (B, 4, 49, T)
        assert model.uses_audio_sequence and model.audio_proj.in_features == 32
    if name in ("gated", "xattn_gated"):
        assert out.gate.shape == (B, 1)


# --------------------------------------------------------------------------- gradients
def _grads_exactly(model: torch.nn.Module, expected: set[str]) -> None:
    for name, p in model.named_parameters():
        if name in expected:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} got no gradient"
        else:
            assert p.grad is None, f"{name} should get no gradient"


def test_frozen_backbone_gets_no_gradient_and_runs_without_grad() -> None:
    torch.manual_seed(0)
    model = WavLMAudioEncoder(C, config=tiny_config()).train()
    assert model.backbone_frozen
    wave = torch.randn(B, 1, N)
    assert not model.encode_sequence(wave).requires_grad  # no_grad while fully frozen
    F.cross_entropy(model(wave).logits, torch.tensor([0, 1])).backward()
    _grads_exactly(model, {n for n, _ in model.named_parameters() if n.startswith("head.")})


def test_stage2_last_layer_gets_gradients() -> None:
    torch.manual_seed(0)
    model = WavLMAudioEncoder(C, config=tiny_config()).train()
    model.unfreeze_backbone(1)
    assert not model.backbone_frozen
    wave = torch.randn(B, 1, N)
    assert model.encode(wave).requires_grad  # gradients flow once layers are unfrozen
    F.cross_entropy(model(wave).logits, torch.tensor([0, 1])).backward()
    expected = {n for n, _ in model.named_parameters() if n.startswith(("head.", "backbone.encoder.layers.1."))}
    _grads_exactly(model, expected)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected


@pytest.mark.parametrize("name", ["late", "gated", "xattn_gated"])
def test_wavlm_fusion_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, use_wavlm=True, wavlm_config=tiny_config()).train()
    out = forward_batch(model, _batch())
    loss = F.nll_loss(out.log_probs, torch.tensor([0, 1])) if name == "late" else F.cross_entropy(
        out.logits, torch.tensor([0, 1])
    )
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("audio_model.backbone.") for n in trainable)
    _grads_exactly(model, trainable - model.unused_parameter_names())
    groups = model.parameter_groups()
    if name == "late":
        assert len(groups["audio"]) == 4  # the WavLM head
    else:
        assert groups["audio"] == []  # the WavLM head is unused outside late


def test_fusion_stage2_unfreezes_wavlm_layers() -> None:
    torch.manual_seed(0)
    model = build_model("xattn", use_wavlm=True, wavlm_config=tiny_config()).train()
    model.freeze_encoders()
    model.audio_model.unfreeze_backbone(1)
    model.video_model.unfreeze_last_blocks(1)
    out = forward_batch(model, _batch())
    F.cross_entropy(out.logits, torch.tensor([0, 1])).backward()
    expected = {n for n, p in model.named_parameters() if p.requires_grad} - model.unused_parameter_names()
    assert any(n.startswith("audio_model.backbone.encoder.layers.1.") for n in expected)
    _grads_exactly(model, expected)


# --------------------------------------------------------------------------- masks
def test_attention_mask_policy_follows_feat_extract_norm() -> None:
    assert WavLMAudioEncoder(config=tiny_config()).backbone_attention_mask is False  # "group"
    assert WavLMAudioEncoder(config=tiny_config(feat_extract_norm="layer")).backbone_attention_mask is True
    forced = WavLMAudioEncoder(config=tiny_config(), backbone_attention_mask=True)
    assert forced.backbone_attention_mask is True


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # inside transformers' WavLM
def test_attention_mask_is_passed_only_when_enabled(monkeypatch) -> None:
    seen = []
    for flag in (False, True):
        model = WavLMAudioEncoder(config=tiny_config(), backbone_attention_mask=flag).eval()
        original = model.backbone.forward

        def spy(*args, original=original, **kwargs):
            seen.append(kwargs.get("attention_mask"))
            return original(*args, **kwargs)

        monkeypatch.setattr(model.backbone, "forward", spy)
        with torch.no_grad():
            model(torch.randn(B, 1, N), audio_length=torch.tensor([N, 1000]))
    assert seen[0] is None
    assert seen[1].shape == (B, N) and seen[1].sum(1).tolist() == [N, 1000]


def test_frame_mask_and_masked_pooling_with_group_norm() -> None:
    torch.manual_seed(0)
    model = WavLMAudioEncoder(config=tiny_config()).eval()
    lengths = torch.tensor([N, 1000])
    assert model.frame_lengths(lengths).tolist() == [49, 12]  # conv arithmetic: 1000 -> 199 -> 49 -> 12
    wave = torch.randn(B, 1, N)
    with torch.no_grad():
        seq = model.encode_sequence(wave)
        pooled = model.encode(wave, audio_length=lengths)
    assert _np(pooled[1]) == pytest.approx(_np(seq[1, :12].mean(0)), abs=1e-5)
    assert _np(pooled[0]) == pytest.approx(_np(seq[0].mean(0)), abs=1e-5)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("name", ["audio", "concat", "xattn_gated"])
def test_extra_padding_leaves_output_unchanged_layer_norm_wavlm(name: str) -> None:
    """With feat_extract_norm="layer" the backbone gets the attention mask: padding is invisible."""
    torch.manual_seed(0)
    model = build_model(name, use_wavlm=True, wavlm_config=tiny_config(feat_extract_norm="layer")).eval()
    valid = torch.randn(1, 1, 2000) * 0.1
    video = torch.randn(1, T, 3, 112, 112)
    length = torch.tensor([2000])
    outs = []
    with torch.no_grad():
        for total in (2400, 4000):
            audio = F.pad(valid, (0, total - 2000))
            outs.append(forward_batch(model, {"audio": audio, "video": video, "audio_length": length}).logits)
        bare = forward_batch(model, {"audio": F.pad(valid, (0, 2000)), "video": video}).logits
    assert _np(outs[0]) == pytest.approx(_np(outs[1]), abs=1e-4)
    assert not torch.allclose(outs[1], bare, atol=1e-4)


# --------------------------------------------------------------------------- loading
def test_local_folder_roundtrip_offline(tmp_path, monkeypatch) -> None:
    """The real from_pretrained path: save a tiny WavLM, load it back by path with no network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: pytest.fail("no network probe"))
    torch.manual_seed(0)
    WavLMModel(tiny_config()).save_pretrained(tmp_path / "wavlm-tiny")
    reference = WavLMModel.from_pretrained(tmp_path / "wavlm-tiny")
    model = build_model("audio", use_wavlm=True, wavlm_name_or_path=str(tmp_path / "wavlm-tiny"))
    assert model.embedding_dim == 32 and model.backbone_frozen
    ref_state = reference.state_dict()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, ref_state[key]), key
    fusion = build_model("gated", use_wavlm=True, wavlm_name_or_path=str(tmp_path / "wavlm-tiny"))
    fusion.audio_model.load_state_dict(model.state_dict(), strict=True)  # warm start is strict


def test_broken_local_folder_names_the_folder(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="empty"):
        WavLMAudioEncoder(name_or_path=tmp_path / "empty")
    with pytest.raises(ValueError, match="no such folder"):
        WavLMAudioEncoder(name_or_path=str(tmp_path / "missing"))


def _alternatives_named(message: str) -> None:
    assert "--audio_backbone" in message
    assert "wavlm_config" in message


def test_offline_hub_name_fails_fast_with_alternatives(monkeypatch) -> None:
    """Real transformers lookup (cache only), then our offline check: no retries, seconds not minutes."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: pytest.fail("no network probe"))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="offline mode") as err:
        build_model("audio", use_wavlm=True, wavlm_name_or_path="emolab-tests/not-a-cached-model")
    assert time.monotonic() - start < 20
    _alternatives_named(str(err.value))


def test_unreachable_hub_fails_without_download_attempt(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(speech_mod, "_offline_env", lambda: False)
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: False)
    calls = []

    def fake_from_pretrained(name, **kwargs):
        calls.append(kwargs)
        if not kwargs.get("local_files_only"):
            pytest.fail("must not download when the hub is unreachable")
        raise OSError("not in cache")

    monkeypatch.setattr(speech_mod.AutoConfig, "from_pretrained", fake_from_pretrained)
    with pytest.raises(RuntimeError, match="unreachable") as err:
        build_model("gated", use_wavlm=True)
    _alternatives_named(str(err.value))
    assert calls == [{"local_files_only": True}]


def test_download_error_is_reported_with_alternatives(monkeypatch) -> None:
    monkeypatch.setattr(speech_mod, "_offline_env", lambda: False)
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: True)

    def fake_from_pretrained(name, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(speech_mod.AutoConfig, "from_pretrained", fake_from_pretrained)
    with pytest.raises(RuntimeError, match="download failed") as err:
        WavLMAudioEncoder(name_or_path="microsoft/wavlm-base")
    _alternatives_named(str(err.value))


def test_fusion_holds_the_same_wavlm_encoder() -> None:
    cfg = tiny_config()
    audio = build_model("audio", use_wavlm=True, wavlm_config=cfg)
    for name in ("late", "xattn_gated"):
        fusion = build_model(name, use_wavlm=True, wavlm_config=cfg)
        assert isinstance(fusion, FusionModel)
        fusion.audio_model.load_state_dict(audio.state_dict(), strict=True)


def test_ddp_find_unused_follows_the_registry_and_the_backbone() -> None:
    """DDP's ``find_unused_parameters``: needed for a waveform model (the registry's ``audio_kind``, WavLM, whose
    LayerDrop skips layers) once its backbone trains, not while it is frozen, never for a log-Mel audio model."""
    from emolab.models import build_model_from_config
    from emolab.train import trainer as trainer_mod
    from tests.configs import tiny_model

    cfg = tiny_model("audio", use_wavlm=True, wavlm_config=tiny_config())
    model = build_model_from_config(cfg)
    assert not trainer_mod._needs_find_unused(model, cfg)  # backbone frozen (stage 1)
    model.backbone.requires_grad_(True)
    assert trainer_mod._needs_find_unused(model, cfg)
    mel = tiny_model("audio")
    assert not trainer_mod._needs_find_unused(build_model_from_config(mel), mel)
