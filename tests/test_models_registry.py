"""The registry's model metadata, checked against what each model actually does (issue 17, item 3).

Parametrised over ``available_models()``: the inputs a name declares are the
ones its model's forward reads, every model returns a ``FusionOutput``, and
``param_groups(stage, optim_cfg)`` puts every trainable parameter the model
uses into exactly one group. Full-size ResNets on small inputs (B=2, T=2
frames of 64 px, 1 s of log-Mel), as in tests/test_models.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from transformers import WavLMConfig

from emolab.models import (
    ConcatFusion,
    CrossAttentionFusion,
    EmotionModel,
    FusionModel,
    FusionOutput,
    GatedFusion,
    LateFusion,
    ModelConfig,
    ModelSpec,
    VideoNet,
    AudioNet,
    available_models,
    build_model,
    forward_batch,
    model_spec,
)
from emolab.models.core import CACHED_AUDIO_KEY
from emolab.models.registry import ModelRegistry
from emolab.train.config import OptimConfig

B, T, C = 2, 2, 8
COMPANIONS = {"audio": "audio_length", "video": "video_valid"}


def _batch() -> dict[str, torch.Tensor]:
    return {
        "video": torch.randn(B, T, 3, 64, 64),
        "audio": torch.randn(B, 1, 64, 101) * 10 - 40,
        "audio_length": torch.tensor([16000, 8000]),
        "video_valid": torch.ones(B, T, dtype=torch.bool),
        "label": torch.arange(B),
    }


class _Recording(dict):
    """A batch that records which keys were read (``[]`` and ``get``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, nn.Module]]:
    """One eval-mode model per registered name, built once for the module (ResNet-18s are slow to build)."""
    torch.manual_seed(0)
    yield {name: build_model(name).eval() for name in available_models()}


@pytest.mark.parametrize("name", available_models())
def test_spec_matches_the_built_model(name: str, models: dict[str, nn.Module]) -> None:
    model, spec = models[name], model_spec(name)
    assert isinstance(model, EmotionModel)
    assert model.inputs == spec.inputs
    assert ModelConfig(fusion=name).spec == spec
    if isinstance(model, FusionModel):
        assert spec.inputs == ("audio", "video")
        # a fusion head is exactly "trainable parameters outside the two branches"
        assert spec.fusion_head == model.has_fusion_head == bool(model.fusion_parameters())
    else:
        assert not spec.fusion_head and len(spec.inputs) == 1


@pytest.mark.parametrize("name", available_models())
def test_forward_reads_exactly_the_declared_inputs(name: str, models: dict[str, nn.Module]) -> None:
    model, inputs = models[name], model_spec(name).inputs
    full = _batch()
    batch = _Recording(full)
    with torch.no_grad():
        out = forward_batch(model, batch)
    assert type(out) is FusionOutput and out.logits.shape == (B, C)
    cached = {CACHED_AUDIO_KEY} if "audio" in inputs else set()  # looked up: a frozen-WavLM stage's stand-in
    assert batch.read - {"label"} == {k for i in inputs for k in (i, COMPANIONS[i])} | cached
    # without the modalities it does not declare, the forward gives the same scores ...
    only = {k: v for k, v in full.items() if k in batch.read}
    with torch.no_grad():
        assert torch.allclose(forward_batch(model, only).logits, out.logits, atol=1e-5)
    # ... and without one it declares, it fails
    for missing in inputs:
        with pytest.raises(KeyError, match=missing):
            forward_batch(model, {k: v for k, v in only.items() if k != missing})


@pytest.mark.parametrize("name", available_models())
def test_every_model_returns_the_same_output_dataclass(name: str, models: dict[str, nn.Module]) -> None:
    model, b = models[name], _batch()
    with torch.no_grad():
        if model.inputs == ("audio", "video"):
            out = model(b["video"], b["audio"], audio_length=b["audio_length"], video_valid=b["video_valid"])
        else:
            key = model.inputs[0]
            out = model(b[key], **{COMPANIONS[key]: b[COMPANIONS[key]]})
    assert type(out) is FusionOutput
    assert torch.allclose(out.probs.sum(-1), torch.ones(B), atol=1e-5)


@pytest.mark.parametrize("name", available_models())
def test_gate_metadata_matches_the_output(name: str, models: dict[str, nn.Module]) -> None:
    """``ModelConfig.has_gate`` (the registry's ``gate``, what the ONNX export and gate plots ask) is whether the
    forward returns a gate; for xattn it follows ``xattn_head`` (an alias sets it)."""
    heads = ("concat", "gated") if model_spec(name).gate == "gated_head" else ("concat",)
    for head in heads:
        cfg = ModelConfig(fusion=name, xattn_head=head)
        model = models[name] if head == "concat" else build_model(name, xattn_head=head).eval()
        with torch.no_grad():
            out = forward_batch(model, _batch(), return_gate=True)
        assert cfg.has_gate == (out.gate is not None), (name, head)
    assert ModelConfig(fusion="xattn_gated", xattn_head="concat").has_gate  # the alias's head wins
    assert not ModelConfig(fusion="xattn_concat", xattn_head="gated").has_gate
    with pytest.raises(ValueError, match="gate must be one of"):
        ModelSpec(gate="sometimes")


def _stage_plans(name: str) -> list[tuple[OptimConfig, list[int]]]:
    plans = [(OptimConfig(), [1])]
    if model_spec(name).fusion_head:
        plans.append((OptimConfig(two_stage_training=True, stage1_epochs=1, fusion_unfreeze_video_blocks=1), [1, 2]))
        plans.append((OptimConfig(two_stage_training=True, stage1_epochs=1, fusion_unfreeze_audio=True), [1, 2]))
    return plans


def _check_cover(model: nn.Module, groups: list[dict[str, Any]], *, skip_unused: bool) -> None:
    seen: list[int] = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)), "a parameter is in two groups"
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert all(isinstance(g["lr"], float) and g["name"] for g in groups)
    unused = model.unused_parameter_names() if skip_unused else set()
    expected = {id(p) for n, p in model.named_parameters() if p.requires_grad and n not in unused}
    assert set(seen) == expected


@pytest.mark.parametrize("name", available_models())
def test_param_groups_cover_each_trainable_parameter_once(name: str) -> None:
    torch.manual_seed(0)
    for optim_cfg, stages in _stage_plans(name):
        model = build_model(name)
        for stage in stages:
            groups = model.param_groups(stage, optim_cfg)
            _check_cover(model, groups, skip_unused=optim_cfg.two_stage_training)
            if optim_cfg.two_stage_training:
                names = [g["name"] for g in groups]
                assert names == (["fusion"] if stage == 1 else ["fusion", "audio", "video"])
                if stage == 1:
                    assert not any(p.requires_grad for p in model.audio_model.parameters())


def test_wavlm_param_groups_cover_each_trainable_parameter_once() -> None:
    tiny = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16, 16, 16), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4),
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=32,
                       max_bucket_distance=64)
    model = build_model("audio", use_wavlm=True, wavlm_config=tiny)
    o = OptimConfig(wavlm_unfreeze_layers=1, backbone_lr=3e-5, lr=3e-4)
    groups = model.param_groups(1, o)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 3e-4)]
    _check_cover(model, groups, skip_unused=False)
    groups = model.param_groups(2, o)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 3e-5), ("head", 3e-4)]
    _check_cover(model, groups, skip_unused=False)
    fusion = build_model("gated", use_wavlm=True, wavlm_config=tiny)
    two = OptimConfig(two_stage_training=True, stage1_epochs=1, fusion_unfreeze_wavlm_layers=1)
    fusion.param_groups(1, two)
    groups = fusion.param_groups(2, two)
    _check_cover(fusion, groups, skip_unused=True)
    layers = fusion.audio_model.backbone.encoder.layers
    assert all(p.requires_grad for p in layers[-1].parameters()) and not any(p.requires_grad for p in layers[0].parameters())


@pytest.mark.parametrize(
    "mode,cls", [("late", LateFusion), ("concat", ConcatFusion), ("gated", GatedFusion), ("xattn", CrossAttentionFusion)]
)
def test_fusion_model_builds_the_family_of_its_mode(mode: str, cls: type) -> None:
    model = FusionModel(AudioNet(), VideoNet(), mode=mode)
    assert type(model) is cls and model.mode == mode and isinstance(model, FusionModel)
    assert type(build_model(mode)) is cls
    assert type(cls(AudioNet(), VideoNet())) is cls
    with pytest.raises(ValueError, match="mode"):
        cls(AudioNet(), VideoNet(), mode="late" if mode != "late" else "concat")


def test_fusion_model_argument_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        FusionModel(AudioNet(), VideoNet(), mode="sum")
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['xattn_dmodel'\\]"):
        FusionModel(AudioNet(), VideoNet(), mode="concat", xattn_dmodel=64)
    with pytest.raises(ValueError, match="xattn_attention"):
        FusionModel(AudioNet(), VideoNet(), mode="gated", xattn_attention="both")
    with pytest.raises(ValueError, match="xattn_head"):
        FusionModel(AudioNet(), VideoNet(), mode="xattn", xattn_head="sum")


def test_registered_metadata_for_custom_models_and_audio_kind() -> None:
    reg = ModelRegistry()
    reg.register("mine", lambda cfg: nn.Identity(), ModelSpec(inputs=("video",)))
    reg.register("both", lambda cfg: nn.Identity())
    reg.register_alias("mine_too", "mine")
    assert reg.spec("mine_too") == ModelSpec(inputs=("video",), fusion_head=False)
    assert reg.spec("both").inputs == ("audio", "video")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        reg.spec("nope")
    with pytest.raises(ValueError, match="inputs must be one of"):
        ModelSpec(inputs=("video", "audio"))
    assert ModelConfig(fusion="video", use_wavlm=True).audio_kind is None
    assert ModelConfig(fusion="xattn_gated", use_wavlm=True).audio_kind == "wave"
    assert ModelConfig(fusion="audio").audio_kind == "mel"
