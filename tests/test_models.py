"""Tests for emolab.models (log-Mel audio, video, fusion, registry).

WavLM tests live in tests/test_models_wavlm.py. Full-size ResNet forwards run
on CPU with small inputs (B=2, T=2 frames).
"""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn
from torchvision.ops import StochasticDepth

import emolab.models.layers as layers_mod
from emolab.models import (
    AudioNet,
    CrossAttentionBlock,
    FusionModel,
    FusionOutput,
    ModalityDropout,
    ModelConfig,
    SpecAugment,
    VideoNet,
    available_models,
    build_model,
    count_parameters,
    forward_batch,
    lengths_to_mask,
    masked_mean,
    mel_frames_from_samples,
    resolve_model_name,
)
from emolab.models.registry import ModelRegistry
from tests.configs import model_inputs, registered_models

B, T, C = 2, 2, 8
SILENCE_DB = -80.0


def _np(t: torch.Tensor):
    """A tensor as a NumPy array, for ``pytest.approx``."""
    return t.detach().cpu().numpy()


def _video(b: int = B, t: int = T, size: int = 64) -> torch.Tensor:
    """Frames of shape ``(b, t, 3, size, size)``; the data layer uses 112, the models take any size >= 32
    (64 keeps the CPU tests fast)."""
    return torch.randn(b, t, 3, size, size)


def _mel(b: int = B, frames: int = 101) -> torch.Tensor:
    """Log-Mel of shape ``(b, 1, 64, frames)``; 101 frames = 1 s (the data layer's 3 s give 301)."""
    return torch.randn(b, 1, 64, frames) * 10 - 40


def _batch(b: int = B, t: int = T) -> dict[str, torch.Tensor]:
    return {
        "video": _video(b, t),
        "audio": _mel(b),
        "audio_length": torch.tensor([16000] + [8000] * (b - 1)),  # 101 and 51 valid Mel frames
        "video_valid": torch.ones(b, t, dtype=torch.bool),
        "label": torch.arange(b) % C,
    }


# --------------------------------------------------------------------------- counts
COUNTS = [
    # (name, use_resnet_audio, total) -- SPEC §3, num_classes=8; no WavLM, so trainable == total
    ("audio", False, 155_752),
    ("audio", True, 12_785_224),
    ("video", False, 11_180_616),
    ("late", True, 23_965_840),
    ("concat", True, 24_263_576),
    ("gated", True, 24_263_833),
    ("xattn", True, 24_273_176),
    ("xattn_concat", True, 24_273_176),
    ("xattn_gated", True, 24_239_385),
    ("late", False, 11_336_368),
    ("concat", False, 11_634_104),
    ("gated", False, 11_634_361),
]


@pytest.mark.parametrize("name,resnet,total", COUNTS)
def test_parameter_counts_match_spec(name: str, resnet: bool, total: int) -> None:
    model = build_model(name, use_resnet_audio=resnet)
    assert count_parameters(model) == total
    assert count_parameters(model, trainable=True) == total


def test_residual_resnet_option_count_and_behaviour() -> None:
    plain = build_model("audio", use_resnet_audio=True)
    residual = build_model("audio", use_resnet_audio=True, audio_residual=True)
    # identity shortcuts are parameter-free: same count and same state_dict keys
    assert count_parameters(residual) == 12_785_224
    residual.load_state_dict(plain.state_dict(), strict=True)
    x = _mel()
    with torch.no_grad():
        out_plain, out_res = plain.eval()(x).logits, residual.eval()(x).logits
    assert out_res.shape == (B, C)
    assert not torch.allclose(out_plain, out_res)


@pytest.mark.parametrize(
    "name,resnet,fusion_part",
    [
        ("concat", True, 297_736),
        ("gated", True, 297_736 + 257),
        ("xattn_concat", True, 307_336),
        ("xattn_gated", True, 273_545),
        ("concat", False, 297_736),
        ("gated", False, 297_993),
    ],
)
def test_fusion_part_counts(name: str, resnet: bool, fusion_part: int) -> None:
    model = build_model(name, use_resnet_audio=resnet)
    inner = count_parameters(model.audio_model) + count_parameters(model.video_model)
    assert count_parameters(model) - inner == fusion_part
    assert sum(p.numel() for p in model.fusion_parameters()) == fusion_part


def test_xattn_layout_matches_spec_breakdown() -> None:
    model = build_model("xattn", use_resnet_audio=True)
    assert count_parameters(model.video_proj) == 65_664
    assert count_parameters(model.audio_proj) == 16_512
    assert count_parameters(model.audio_fallback_conv) == 24_704
    assert count_parameters(model.v2a.attn) + count_parameters(model.a2v.attn) == 132_096
    assert count_parameters(model.v2a.norm) + count_parameters(model.a2v.norm) == 512
    assert count_parameters(model.classifier) == 307_336 - (65_664 + 16_512 + 24_704 + 132_096 + 512)
    assert isinstance(model.v2a.drop_path, StochasticDepth)
    assert model.v2a.drop_path.mode == "row" and model.v2a.drop_path.p == pytest.approx(0.1)
    assert model.v2a.attn.dropout == pytest.approx(0.1)


def test_xattn_settings_are_passed_through() -> None:
    model = build_model(
        "xattn_gated", xattn_d_model=96, xattn_heads=4, xattn_attn_dropout=0.2, xattn_stochastic_depth=0.3
    )
    assert model.xattn_head == "gated"
    assert model.v2a.attn.embed_dim == 96 and model.v2a.attn.num_heads == 4
    assert model.a2v.attn.dropout == pytest.approx(0.2)
    assert model.a2v.drop_path.p == pytest.approx(0.3)
    assert model.classifier.in_features == 96


# --------------------------------------------------------------------------- shapes
SHAPE_CASES = [(n, r) for n in registered_models() for r in ((False, True) if "audio" in model_inputs(n) else (False,))]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name,resnet", SHAPE_CASES, ids=[f"{n}-{'resnet18' if r else 'cnn'}" for n, r in SHAPE_CASES])
def test_output_shapes_every_model(name: str, resnet: bool, train: bool) -> None:
    torch.manual_seed(0)
    model = build_model(name, use_resnet_audio=resnet, num_classes=C).train(train)
    batch = _batch()
    out = forward_batch(model, batch, return_attn=True, return_gate=True)
    assert isinstance(out, FusionOutput)
    for field in (out.logits, out.log_probs, out.probs):
        assert field.shape == (B, C)
        assert torch.isfinite(field).all()
    assert _np(out.probs.sum(-1)) == pytest.approx(1.0, abs=1e-5)
    canonical, overrides = resolve_model_name(name)
    head = overrides.get("xattn_head", "concat")
    gated = canonical == "gated" or (canonical == "xattn" and head == "gated")
    assert (out.gate is not None) == gated
    if gated:
        assert out.gate.shape == (B, 1)
        assert ((out.gate > 0) & (out.gate < 1)).all()
    if canonical == "xattn":
        Ta = 4 if resnet else 25  # ceil^5(101) / floor(floor(101/2)/2)
        assert out.attn_v2a.shape == (B, 4, T, Ta)
        assert out.attn_a2v.shape == (B, 4, Ta, T)
        assert out.audio_mask.shape == (B, Ta) and out.video_mask.shape == (B, T)
        if not train:  # attention dropout off: rows are distributions
            assert _np(out.attn_v2a.sum(-1)) == pytest.approx(1.0, abs=1e-5)
            assert _np(out.attn_a2v.sum(-1)) == pytest.approx(1.0, abs=1e-5)
    else:
        assert out.attn_v2a is None and out.attn_a2v is None


def test_gate_and_attn_only_when_asked() -> None:
    model = build_model("xattn_gated").eval()
    b = _batch()
    out = model(b["video"], b["audio"])
    assert out.gate is None and out.attn_v2a is None and out.attn_a2v is None
    out = build_model("gated").eval()(b["video"], b["audio"])
    assert out.gate is None


def test_unimodal_shapes_and_encoders() -> None:
    mel = _mel(frames=301)  # the data layer's 3 s clip
    for resnet, Ta in ((False, 75), (True, 10)):
        model = build_model("audio", use_resnet_audio=resnet).eval()
        assert model.embedding_dim == 128 and model.sequence_dim == 128
        assert model.encode(mel).shape == (B, 128)
        assert model.encode_sequence(mel).shape == (B, Ta, 128)
        assert model(mel).logits.shape == (B, C)
        assert model(mel.squeeze(1)).logits.shape == (B, C)  # (B, n_mels, T) accepted too
    video = build_model("video").eval()
    v = _video(size=112)
    assert video.encode_sequence(v).shape == (B, T, 512)
    assert video.encode(v).shape == (B, 512)
    assert video(v).logits.shape == (B, C)


def test_bad_input_shapes_raise() -> None:
    with pytest.raises(ValueError, match="log-Mel of shape"):
        build_model("audio")(torch.randn(B, 1, 40, 301))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        build_model("video")(torch.randn(B, 3, 112, 112))


def test_four_class_models() -> None:
    b = _batch()
    for name in ("audio", "video", "late", "xattn_gated"):
        out = forward_batch(build_model(name, num_classes=4).eval(), b)
        assert out.logits.shape == (B, 4)


def test_audio_cnn_sequence_layout_reuses_the_linear() -> None:
    """Each step is the encode Linear applied to that column repeated over the 4 time bins."""
    model = AudioNet(encoder="cnn").eval()
    mel = _mel()
    with torch.no_grad():
        seq = model.encode_sequence(mel)  # (B, 75, 128)
        feat = model.encoder.features(mel)  # (B, 64, 16, 75)
        cols = F.adaptive_avg_pool2d(feat, (4, feat.shape[-1]))  # (B, 64, 4, 75)
        t = 17
        tiled = cols[..., t : t + 1].expand(-1, -1, -1, 4)  # (B, 64, 4, 4): stationary clip
        expected = F.relu(model.encoder.fc(tiled.flatten(1)))
    assert _np(seq[:, t]) == pytest.approx(_np(expected), abs=1e-5)


def test_audio_resnet_sequence_is_frequency_pool_then_linear() -> None:
    model = AudioNet(encoder="resnet18").eval()
    mel = _mel()
    with torch.no_grad():
        feat = model.encoder.feature_map(mel)  # (B, 512, 2, 10)
        expected = model.encoder.fc(feat.mean(dim=2).transpose(1, 2))
        assert _np(model.encode_sequence(mel)) == pytest.approx(_np(expected), abs=1e-5)
        # and encode is the unmasked time mean of the pre-Linear sequence
        assert _np(model.encode(mel)) == pytest.approx(_np(model.encoder.fc(feat.mean(dim=(2, 3)))), abs=1e-5)


# --------------------------------------------------------------------------- late fusion
def test_late_outputs_sum_to_one_and_log_is_finite_for_extreme_logits() -> None:
    model = build_model("late").eval()
    for sub, bias in ((model.audio_model.head, 1e4), (model.video_model.head, -1e4)):
        with torch.no_grad():
            sub.weight.zero_()
            sub.bias.copy_(torch.tensor([bias, -bias, 0, 0, 0, 0, 0, 0]))
    b = _batch()
    out = model(b["video"], b["audio"])
    # audio puts all mass on class 0, video on class 1: the average is (0.5, 0.5, 0, ...)
    assert _np(out.probs.sum(-1)) == pytest.approx(1.0, abs=1e-6)
    assert _np(out.probs[:, :2]) == pytest.approx(0.5, abs=1e-6)
    assert torch.isfinite(out.log_probs).all()
    assert _np(out.log_probs[:, 0]) == pytest.approx(-0.6931472, abs=1e-5)
    assert _np(out.log_probs.exp()) == pytest.approx(_np(out.probs), abs=1e-6)
    assert torch.equal(out.logits, out.log_probs)
    assert out.audio_logits.shape == (B, C) and out.video_logits.shape == (B, C)
    loss = F.nll_loss(out.log_probs, torch.tensor([2, 3]))  # classes with probability ~0
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- gradients
def _backward(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    out = forward_batch(model, batch)
    if getattr(model, "mode", None) == "late":
        loss = F.nll_loss(out.log_probs, batch["label"])
    else:
        loss = F.cross_entropy(out.logits, batch["label"])
    loss.backward()


def _check_grads(model: nn.Module, expect_grad: set[str]) -> None:
    for name, p in model.named_parameters():
        if name in expect_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        else:
            assert p.grad is None, f"{name} should get no gradient"


@pytest.mark.parametrize("name", registered_models())
def test_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).train()
    unused = model.unused_parameter_names() if isinstance(model, FusionModel) else set()
    if isinstance(model, FusionModel):
        expected_unused = set() if model.mode == "late" else {
            n for n, _ in model.named_parameters() if n.startswith(("audio_model.head.", "video_model.head."))
        }
        if model.mode == "xattn":
            expected_unused |= {n for n, _ in model.named_parameters() if n.startswith("audio_fallback_conv.")}
        assert unused == expected_unused
    _backward(model, _batch())
    _check_grads(model, {n for n, p in model.named_parameters() if p.requires_grad} - unused)


@pytest.mark.parametrize("name", ["late", "gated", "xattn_gated"])
def test_fusion_with_frozen_encoders_trains_only_the_fusion_head(name: str) -> None:
    model = build_model(name).train()
    model.freeze_encoders()
    groups = model.parameter_groups()
    assert groups["audio"] == [] and groups["video"] == []
    n_fallback = 2 if model.mode == "xattn" else 0  # the unused Conv1d fallback (weight, bias)
    assert len(groups["fusion"]) == len(model.fusion_parameters()) - n_fallback
    if name == "late":  # nothing left to train
        assert count_parameters(model, trainable=True) == 0
        return
    _backward(model, _batch())
    fusion_names = {n for n, _ in model.named_parameters() if not n.startswith(("audio_model.", "video_model."))}
    fusion_names -= model.unused_parameter_names()
    _check_grads(model, fusion_names)


def test_video_unfreeze_last_blocks() -> None:
    model = build_model("video").train()
    model.unfreeze_last_blocks(1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("backbone.layer4.", "head."))}
    _backward(model, _batch())
    _check_grads(model, trainable)
    model.unfreeze_last_blocks(2)
    assert any(p.requires_grad for p in model.backbone.layer3.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer2.parameters())
    model.unfreeze_last_blocks(5)
    assert count_parameters(model, trainable=True) == 11_180_616
    model.unfreeze_last_blocks(0)
    assert count_parameters(model, trainable=True) == 512 * C + C
    with pytest.raises(ValueError, match="unfreeze_last_blocks"):
        model.unfreeze_last_blocks(6)


def test_audio_freeze_backbone() -> None:
    model = build_model("audio").train()
    model.freeze_backbone()
    assert count_parameters(model, trainable=True) == 128 * C + C
    _backward(model, _batch())
    _check_grads(model, {"head.weight", "head.bias"})
    model.unfreeze_backbone()
    assert count_parameters(model, trainable=True) == 155_752


def test_fusion_stage2_with_partially_unfrozen_video() -> None:
    model = build_model("concat").train()
    model.freeze_encoders()
    model.video_model.unfreeze_last_blocks(1)
    groups = model.parameter_groups()
    assert groups["audio"] == []
    # the video head is unused in concat mode, so it is left out of the groups
    video_names = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("video_model.")}
    assert len(groups["video"]) == len(video_names - model.unused_parameter_names())
    _backward(model, _batch())
    expected = {
        n
        for n, p in model.named_parameters()
        if p.requires_grad and n not in model.unused_parameter_names()
    }
    assert any(n.startswith("video_model.backbone.layer4.") for n in expected)
    _check_grads(model, expected)


# --------------------------------------------------------------------------- masks
def _padded_mel(valid: torch.Tensor, total: int) -> torch.Tensor:
    pad = torch.full((*valid.shape[:-1], total - valid.shape[-1]), SILENCE_DB)
    return torch.cat([valid, pad], dim=-1)


def test_mask_helpers() -> None:
    assert lengths_to_mask(torch.tensor([2, 0, 9]), 4).tolist() == [
        [True, True, False, False],
        [True, False, False, False],  # empty rows keep one step
        [True, True, True, True],
    ]
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == pytest.approx(2.0)
    assert masked_mean(x, torch.tensor([[False, False, False]])).item() == pytest.approx(104 / 3)
    assert masked_mean(x, None).item() == pytest.approx(104 / 3)
    assert mel_frames_from_samples(torch.tensor([48000, 0, 159, 160])).tolist() == [301, 1, 1, 2]


def test_audio_frame_masks() -> None:
    n = torch.tensor([48000, 24000, 0])
    cnn = AudioNet(encoder="cnn")
    res = AudioNet(encoder="resnet18")
    assert cnn.frame_mask(n, 75).sum(1).tolist() == [75, 38, 1]  # ceil(ceil(151/2)/2) = 38
    assert res.frame_mask(n, 10).sum(1).tolist() == [10, 5, 1]


@pytest.mark.parametrize("name", registered_models(reading="audio"))
def test_extra_audio_padding_leaves_output_unchanged(name: str) -> None:
    """Same 60 valid Mel frames followed by 60 or 200 frames of silence."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    valid = _mel(1, 60)
    length = torch.tensor([59 * 160 + 5])  # 1 + len // 160 = 60 frames
    video = _video(1)
    outs = []
    with torch.no_grad():
        for total in (120, 260):
            batch = {"audio": _padded_mel(valid, total), "video": video, "audio_length": length}
            outs.append(forward_batch(model, batch).logits)
        unmasked = forward_batch(model, {"audio": _padded_mel(valid, 260), "video": video}).logits
    assert _np(outs[0]) == pytest.approx(_np(outs[1]), abs=1e-4)
    assert not torch.allclose(outs[0], unmasked, atol=1e-4)  # the mask does change the result


def test_extra_audio_padding_resnet_audio() -> None:
    """AudioResNet18's receptive field is ~490 frames: keep the padding beyond it."""
    torch.manual_seed(0)
    model = build_model("xattn", use_resnet_audio=True).eval()
    valid = _mel(1, 30)
    length = torch.tensor([29 * 160])
    video = _video(1)
    with torch.no_grad():
        outs = [
            model(video, _padded_mel(valid, total), audio_length=length, return_attn=True) for total in (300, 420)
        ]
    assert _np(outs[0].logits) == pytest.approx(_np(outs[1].logits), abs=1e-4)
    assert outs[0].audio_mask.sum().item() == 1
    assert outs[0].attn_v2a[..., 1:].abs().max().item() == 0.0  # padded audio steps get no attention


@pytest.mark.parametrize("name", registered_models(reading="video"))
def test_repeated_video_frames_leave_output_unchanged(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    frames = _video(1, 2)
    repeated = frames[:, [0, 0, 1, 1]]
    valid = torch.tensor([[True, False, True, False]])
    audio = _mel(1)
    with torch.no_grad():
        a = forward_batch(model, {"video": frames, "audio": audio}).logits
        b = forward_batch(model, {"video": repeated, "audio": audio, "video_valid": valid}).logits
        unmasked = forward_batch(model, {"video": frames[:, [0, 0, 0, 1]], "audio": audio}).logits
    assert _np(a) == pytest.approx(_np(b), abs=1e-4)
    assert not torch.allclose(a, unmasked, atol=1e-4)


def test_xattn_attention_ignores_invalid_frames() -> None:
    model = build_model("xattn").eval()
    b = _batch(2, 3)
    b["video_valid"] = torch.tensor([[True, True, True], [True, False, False]])
    out = forward_batch(model, b, return_attn=True)
    assert out.attn_a2v[1, :, :, 1:].abs().max().item() == 0.0
    audio_valid = out.audio_mask
    assert audio_valid[0].all() and audio_valid[1].sum().item() == 13  # 51 Mel frames -> 26 -> 13
    assert out.attn_v2a[1, :, :, 13:].abs().max().item() == 0.0
    assert torch.equal(out.video_mask, b["video_valid"])


def test_xattn_time_encoding_makes_identical_frames_distinct_keys() -> None:
    """Frames the encoder cannot tell apart (here: the same frame 4 times) are identical keys: a2v is exactly
    uniform; with the time encoding (no parameters, same state_dict) each frame is its own key."""
    torch.manual_seed(0)
    plain = build_model("xattn").eval()
    timed = build_model("xattn", xattn_time_encoding=4.0).eval()
    timed.load_state_dict(plain.state_dict())  # the same weights: the option adds no parameter
    b = _batch(2, 4)
    b["video"] = b["video"][:, :1].expand(-1, 4, -1, -1, -1).contiguous()
    with torch.no_grad():
        flat = forward_batch(plain, b, return_attn=True)
        coded = forward_batch(timed, b, return_attn=True)
    assert torch.allclose(flat.attn_a2v, torch.full_like(flat.attn_a2v, 0.25), atol=1e-5)
    valid = coded.attn_a2v[0]  # clip 0: every audio step valid
    assert (valid.amax(-1) - valid.amin(-1)).mean().item() > 0.05
    assert torch.allclose(coded.attn_a2v.sum(-1), torch.ones(()), atol=1e-5)
    assert coded.attn_v2a[1, :, :, 13:].abs().max().item() == 0.0  # padded audio still masked

    pos = layers_mod.clip_positions(5, torch.tensor([[True] * 5, [True, True, True, False, False]]), 2, "cpu")
    assert pos[0].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0] and pos[1, :3].tolist() == [0.0, 0.5, 1.0]
    code = layers_mod.time_encoding(pos, 16)
    assert code.shape == (2, 5, 16) and code.abs().max().item() <= 1.0
    assert torch.allclose(code[1, 2], code[0, 4])  # the end of each clip's valid span: the same code
    with pytest.raises(ValueError, match="even"):
        layers_mod.time_encoding(pos, 15)


def test_masks_none_equals_full_masks() -> None:
    torch.manual_seed(0)
    b = _batch()
    full = {**b, "audio_length": torch.full((B,), 16000), "video_valid": torch.ones(B, T, dtype=torch.bool)}
    bare = {"video": b["video"], "audio": b["audio"]}
    for name, resnet in (("audio", False), ("audio", True), ("video", False), ("gated", False), ("xattn_gated", True)):
        model = build_model(name, use_resnet_audio=resnet).eval()
        with torch.no_grad():
            masked = forward_batch(model, full).logits
            unmasked = forward_batch(model, bare).logits
        assert _np(masked) == pytest.approx(_np(unmasked), abs=1e-4)


class _MelOnlyAudio(nn.Module):
    """A custom audio model without encode_sequence: xattn falls back to the Conv1d."""

    input_modality = "audio"
    embedding_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 16)
        self.head = nn.Linear(16, C)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=-1).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x))


def test_xattn_mel_fallback_path() -> None:
    torch.manual_seed(0)
    model = FusionModel(_MelOnlyAudio(), VideoNet(), mode="xattn").eval()
    assert not model.uses_audio_sequence
    assert model.audio_proj.in_features == 128
    assert all(n.startswith("audio_model.") or ".head." in n for n in model.unused_parameter_names())
    valid = _mel(1, 40)
    length = torch.tensor([39 * 160])
    video = _video(1)
    with torch.no_grad():
        outs = [model(video, _padded_mel(valid, total), audio_length=length, return_attn=True) for total in (50, 90)]
    assert outs[0].attn_v2a.shape == (1, 4, T, 50)
    assert _np(outs[0].logits) == pytest.approx(_np(outs[1].logits), abs=1e-4)
    model.train()
    _backward(model, {"video": _video(), "audio": _mel(), "label": torch.tensor([0, 1])})
    assert model.audio_fallback_conv.weight.grad is not None
    assert model.audio_model.proj.weight.grad is None


# --------------------------------------------------------------------------- warm start
@pytest.mark.parametrize("resnet", [False, True])
@pytest.mark.parametrize("name", ["late", "concat", "gated", "xattn_gated"])
def test_unimodal_state_dicts_load_strictly_into_fusion(name: str, resnet: bool) -> None:
    fusion = build_model(name, use_resnet_audio=resnet)
    audio = build_model("audio", use_resnet_audio=resnet)
    video = build_model("video")
    fusion.audio_model.load_state_dict(audio.state_dict(), strict=True)
    fusion.video_model.load_state_dict(video.state_dict(), strict=True)
    first = next(iter(audio.state_dict()))
    assert torch.equal(fusion.audio_model.state_dict()[first], audio.state_dict()[first])


# --------------------------------------------------------------------------- augmentation blocks
def test_spec_augment_training_only_with_torchaudio_masks() -> None:
    aug = SpecAugment()
    assert isinstance(aug.freq_mask, torchaudio.transforms.FrequencyMasking)
    assert isinstance(aug.time_mask, torchaudio.transforms.TimeMasking)
    assert (aug.num_masks, aug.p) == (2, 0.5)
    x = torch.randn(256, 1, 64, 301) + 5.0  # no zeros in the clean input
    assert torch.equal(aug.eval()(x), x)
    torch.manual_seed(0)
    y = aug.train()(x)
    changed = (y != x).flatten(1).any(1)
    assert 0.35 < changed.float().mean().item() < 0.65  # p = 0.5 per sample
    assert ((y == 0) | (y == x)).all()  # masked bins hold mask_value 0
    masked = (y == 0)[changed]  # (n, 1, 64, 301)
    freq_masked = masked.all(dim=-1).sum(dim=(1, 2))  # whole masked Mel rows
    assert freq_masked.max().item() <= 2 * 20
    time_masked = masked.all(dim=-2).sum(dim=(1, 2))
    assert time_masked.max().item() <= 2 * 40
    assert torch.equal(SpecAugment(p=0.0).train()(x), x)


def test_audio_net_uses_spec_augment_in_training_only() -> None:
    model = build_model("audio").train()
    assert isinstance(model.spec_augment, SpecAugment)
    x = _mel(8)
    torch.manual_seed(1)
    assert model.encode(x).shape == (8, 128)
    assert build_model("audio", spec_augment=False).spec_augment is None
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(x), model.encode(x))


def test_modality_dropout() -> None:
    md = ModalityDropout(0.5, 0.5)
    a, v = torch.ones(1000, 4), torch.ones(1000, 4)
    assert md.eval()(a, v) == (a, v)
    torch.manual_seed(0)
    a2, v2 = md.train()(a, v)
    kept_a, kept_v = a2[:, 0] == 1, v2[:, 0] == 1
    assert (kept_a | kept_v).all()  # never both dropped
    assert 0.15 < (~kept_a).float().mean().item() < 0.35  # P(drop a only) = 0.25
    assert set(a2.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="p_audio"):
        ModalityDropout(1.0, 0.2)


def test_cross_attention_block_uses_stochastic_depth_rows() -> None:
    block = CrossAttentionBlock(32, 4, attn_dropout=0.0, stochastic_depth=0.999).train()
    q, kv = torch.randn(64, 3, 32), torch.randn(64, 5, 32)
    torch.manual_seed(0)
    out, w = block(q, kv)
    assert w is None
    # with p ~ 1 almost every row's residual branch is dropped: out = LayerNorm(q)
    same = torch.isclose(out, block.norm(q), atol=1e-5).flatten(1).all(1)
    assert same.float().mean().item() > 0.9
    with pytest.raises(ValueError, match="divisible"):
        CrossAttentionBlock(30, 4)


# --------------------------------------------------------------------------- registry
def test_registry_names_and_aliases() -> None:
    names = available_models()
    for n in ("audio", "video", "late", "concat", "gated", "xattn", "xattn_concat", "xattn_gated"):
        assert n in names
    assert resolve_model_name("xattn_gated") == ("xattn", {"xattn_head": "gated"})
    assert resolve_model_name("xattn_concat") == ("xattn", {"xattn_head": "concat"})
    assert build_model("xattn_gated", xattn_head="concat").xattn_head == "gated"  # the alias wins
    assert build_model("xattn", xattn_head="gated").xattn_head == "gated"
    assert isinstance(build_model("audio"), AudioNet)
    assert isinstance(build_model("video"), VideoNet)
    assert build_model("late").mode == "late"


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'xatn'.*audio.*video.*late.*concat.*gated.*xattn_gated"):
        build_model("xatn")


def test_duplicate_registration_raises() -> None:
    reg = ModelRegistry()
    reg.register("a", lambda cfg: nn.Identity())
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", lambda cfg: nn.Identity())
    reg.register_alias("b", "a")
    with pytest.raises(ValueError, match="already registered"):
        reg.register_alias("b", "a")
    with pytest.raises(ValueError, match="unknown target"):
        reg.register_alias("c", "missing")
    from emolab.models import register_model

    with pytest.raises(ValueError, match="'gated' is already registered"):
        register_model("gated")(lambda cfg: nn.Identity())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"xattn_d_model": 130, "xattn_heads": 4}, "divisible"),
        ({"xattn_attn_dropout": 1.0}, "xattn_attn_dropout"),
        ({"xattn_stochastic_depth": -0.1}, "xattn_stochastic_depth"),
        ({"xattn_head": "sum"}, "xattn_head"),
        ({"use_wavlm": True, "use_resnet_audio": True}, "exclusive"),
        ({"audio_residual": True}, "use_resnet_audio"),
        ({"n_mels": 0}, "n_mels"),
        ({"wavlm_config": 3}, "wavlm_config"),
    ],
)
def test_model_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig(fusion="xattn", **kwargs)


def test_build_model_rejects_unknown_keywords() -> None:
    with pytest.raises(TypeError, match="unexpected keyword"):
        build_model("audio", use_resent_audio=True)


def test_forward_batch_rejects_models_without_modality() -> None:
    with pytest.raises(TypeError, match="declares no inputs"):
        forward_batch(nn.Linear(2, 2), _batch())


# --------------------------------------------------------------------------- pretrained video offline
def test_pretrained_video_offline_fails_fast_with_alternatives(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty torch.hub cache
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: False)

    def no_download(*args, **kwargs):
        raise AssertionError("must not try to download when the host is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(RuntimeError, match="pretrained_video=False") as err:
        build_model("video", pretrained_video=True)
    assert "--no_pretrained_video" in str(err.value)
    assert "unreachable" in str(err.value)


def test_pretrained_video_download_error_is_reported(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: True)

    def failing_download(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", failing_download)
    with pytest.raises(RuntimeError, match="download failed.*--no_pretrained_video"):
        build_model("gated", pretrained_video=True)


def test_pretrained_video_uses_the_torch_hub_cache(monkeypatch, tmp_path) -> None:
    """A cached checkpoint loads with no network at all (the offline path for ImageNet weights)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: False)
    ref = build_model("video").backbone
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    state = {k: v for k, v in ref.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    torch.save(state, ckpt / "resnet18-f37072fd.pth")
    model = build_model("video", pretrained_video=True)
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)


def test_host_reachable_is_false_for_unresolvable_host(monkeypatch) -> None:
    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    assert layers_mod.host_reachable("https://emolab-test.invalid/x", timeout=1.0) is False
