"""Optimisation paths: parameter groups and LRs, frozen parameters per stage, stages, cosine schedules, losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emolab.models import build_model
from emolab.train import OptimConfig, TrainConfig, configure_stage, cosine_lr, make_loss, make_optimizer, plan_stages
from emolab.train.optim import make_scheduler
from tests.configs import WAVLM_640X, registered_models, tiny_model, tiny_wavlm_config

TINY_WAVLM = tiny_wavlm_config(**WAVLM_640X, mask_time_prob=0.05)  # wavlm-base's default: it has masked_spec_embed


def _cfg(fusion: str, *, use_wavlm: bool = False, epochs: int = 10, **optim) -> TrainConfig:
    model = tiny_model(fusion, use_wavlm=use_wavlm, wavlm_config=TINY_WAVLM if use_wavlm else None)
    return TrainConfig(model=model, optim=OptimConfig(**optim), epochs=epochs)


def _build(cfg: TrainConfig) -> nn.Module:
    torch.manual_seed(0)
    m = cfg.model
    return build_model(m.fusion, use_wavlm=m.use_wavlm, wavlm_config=m.wavlm_config)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _summary(groups) -> list[tuple[str, float]]:
    return [(g["name"], g["lr"]) for g in groups]


# ------------------------------------------------------------------ unimodal paths
@pytest.mark.parametrize("fusion", registered_models(fusion=False))
def test_mel_audio_and_video_train_everything_at_lr(fusion) -> None:
    cfg = _cfg(fusion, lr=3e-4)
    model = _build(cfg)
    (stage,) = plan_stages(cfg)
    groups = configure_stage(model, cfg, stage)
    assert _summary(groups) == [("all", 3e-4)]
    assert _ids(groups[0]["params"]) == _ids(model.parameters())


def test_wavlm_stage1_trains_the_head_only() -> None:
    cfg = _cfg("audio", use_wavlm=True, wavlm_stage=1, lr=3e-4)
    model = _build(cfg)
    (stage,) = plan_stages(cfg)
    assert stage.index == 1
    groups = configure_stage(model, cfg, stage)
    assert _summary(groups) == [("head", 3e-4)]
    assert _ids(groups[0]["params"]) == _ids(model.head.parameters())
    assert _trainable_names(model) == {n for n, _ in model.named_parameters() if n.startswith("head.")}


def test_wavlm_stage2_groups_last_layers_and_head() -> None:
    cfg = _cfg("audio", use_wavlm=True, wavlm_stage=2, backbone_lr=3e-5, lr=3e-4, wavlm_unfreeze_layers=1)
    model = _build(cfg)
    (stage,) = plan_stages(cfg)
    assert stage.index == 2
    groups = configure_stage(model, cfg, stage)
    assert _summary(groups) == [("backbone", 3e-5), ("head", 3e-4)]
    assert _ids(groups[0]["params"]) == _ids(model.backbone.encoder.layers[-1].parameters())
    trainable = _trainable_names(model)
    assert any(n.startswith("backbone.encoder.layers.1.") for n in trainable)
    assert not any(n.startswith(("backbone.encoder.layers.0.", "backbone.feature_extractor.")) for n in trainable)
    opt = make_optimizer(groups, cfg)
    assert [g["lr"] for g in opt.param_groups] == [3e-5, 3e-4]
    assert isinstance(opt, torch.optim.Adam)


def test_wavlm_stage2_default_unfreezes_two_layers() -> None:
    cfg = _cfg("audio", use_wavlm=True, wavlm_stage=2)
    model = _build(cfg)
    groups = configure_stage(model, cfg, plan_stages(cfg)[0])
    expected = _ids(p for layer in model.backbone.encoder.layers[-2:] for p in layer.parameters())
    assert _ids(groups[0]["params"]) == expected


# ------------------------------------------------------------------ fusion paths
@pytest.mark.parametrize("fusion", registered_models(fusion=True))
def test_fusion_default_is_adam_over_all_trainable(fusion) -> None:
    cfg = _cfg(fusion, lr=2e-4, weight_decay=1e-4)
    model = _build(cfg)
    (stage,) = plan_stages(cfg)
    groups = configure_stage(model, cfg, stage)
    assert _summary(groups) == [("all", 2e-4)]
    assert _ids(groups[0]["params"]) == _ids(p for p in model.parameters() if p.requires_grad)
    opt = make_optimizer(groups, cfg)
    assert opt.param_groups[0]["weight_decay"] == 1e-4


def test_fusion_default_with_wavlm_keeps_its_backbone_frozen() -> None:
    cfg = _cfg("gated", use_wavlm=True)
    model = _build(cfg)
    groups = configure_stage(model, cfg, plan_stages(cfg)[0])
    params = _ids(groups[0]["params"])
    assert not params & _ids(model.audio_model.backbone.parameters())
    assert _ids(model.video_model.parameters()) <= params


def test_two_stage_mel_audio() -> None:
    cfg = _cfg(
        "gated", two_stage_training=True, stage1_epochs=3, lr=3e-4, audio_backbone_lr=1e-5,
        video_backbone_lr=2e-5, fusion_unfreeze_video_blocks=1,
    )
    model = _build(cfg)
    s1, s2 = plan_stages(cfg)
    assert (s1.index, s1.start, s1.end, s2.index, s2.start, s2.end) == (1, 0, 3, 2, 3, 10)

    groups = configure_stage(model, cfg, s1)
    assert _summary(groups) == [("fusion", 3e-4)]
    assert _ids(groups[0]["params"]) == _ids(model.fusion_parameters())
    assert not any(p.requires_grad for p in model.audio_model.parameters())
    assert not any(p.requires_grad for p in model.video_model.parameters())

    groups = configure_stage(model, cfg, s2)
    assert _summary(groups) == [("fusion", 3e-4), ("audio", 1e-5), ("video", 2e-5)]
    audio_used = _ids(p for n, p in model.audio_model.named_parameters() if not n.startswith("head."))
    assert _ids(groups[1]["params"]) == audio_used  # the unused unimodal head is left out
    assert _ids(groups[2]["params"]) == _ids(model.video_model.backbone.layer4.parameters())
    video_trainable = {n for n, p in model.video_model.named_parameters() if p.requires_grad}
    assert video_trainable == {n for n, _ in model.video_model.named_parameters() if n.startswith(("backbone.layer4.", "head."))}


def test_two_stage_keeps_mel_audio_frozen_with_no_fusion_unfreeze_audio() -> None:
    cfg = _cfg("concat", two_stage_training=True, stage1_epochs=2, fusion_unfreeze_audio=False,
               fusion_unfreeze_video_blocks=2)
    model = _build(cfg)
    groups = configure_stage(model, cfg, plan_stages(cfg)[1])
    assert [g["name"] for g in groups] == ["fusion", "video"]
    assert not any(p.requires_grad for p in model.audio_model.parameters())
    expected = _ids([*model.video_model.backbone.layer4.parameters(), *model.video_model.backbone.layer3.parameters()])
    assert _ids(groups[1]["params"]) == expected


def test_two_stage_wavlm_unfreezes_last_layers_and_head() -> None:
    cfg = _cfg("xattn", use_wavlm=True, two_stage_training=True, stage1_epochs=1, fusion_unfreeze_wavlm_layers=1,
               fusion_unfreeze_video_blocks=0, audio_backbone_lr=8e-6)
    model = _build(cfg)
    s1, s2 = plan_stages(cfg)
    groups = configure_stage(model, cfg, s1)
    assert [g["name"] for g in groups] == ["fusion"]
    assert "audio_fallback_conv.weight" not in {n for n, p in model.named_parameters() if id(p) in _ids(groups[0]["params"])}
    groups = configure_stage(model, cfg, s2)
    assert _summary(groups) == [("fusion", cfg.optim.lr), ("audio", 8e-6)]  # no video block unfrozen
    audio = model.audio_model
    assert audio.head[0].weight.requires_grad  # the WavLM head is always trainable
    assert _ids(groups[1]["params"]) == _ids(audio.backbone.encoder.layers[-1].parameters())  # head unused in xattn
    assert not any(p.requires_grad for p in audio.backbone.encoder.layers[0].parameters())
    assert not any(p.requires_grad for p in model.video_model.backbone.parameters())


# ------------------------------------------------------------------ schedules
def test_cosine_t_max_per_stage() -> None:
    cfg = _cfg("gated", epochs=10, two_stage_training=True, stage1_epochs=4, use_cosine_annealing=True)
    s1, s2 = plan_stages(cfg)
    assert (s1.cosine, s1.t_max, s2.cosine, s2.t_max) == (True, 4, True, 6)
    cfg = _cfg("gated", epochs=10, two_stage_training=True, stage1_epochs=4, use_cosine_annealing=True,
               cosine_stage2_only=True)
    s1, s2 = plan_stages(cfg)
    assert (s1.cosine, s2.cosine, s2.t_max) == (False, True, 6)
    (only,) = plan_stages(_cfg("audio", epochs=7, use_cosine_annealing=True))
    assert only.t_max == 7 and only.cosine
    (only,) = plan_stages(_cfg("audio", epochs=7))
    assert not only.cosine


def test_scheduler_matches_cosine_annealing_lr() -> None:
    cfg = _cfg("gated", epochs=10, two_stage_training=True, stage1_epochs=4, use_cosine_annealing=True)
    stage = plan_stages(cfg)[1]
    p = nn.Parameter(torch.zeros(1))
    ours = make_optimizer([{"name": "fusion", "params": [p], "lr": 3e-4}], cfg)
    sched = make_scheduler(ours, stage, cfg)
    ref_opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=3e-4)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=stage.t_max, eta_min=1e-5)
    for _ in range(stage.t_max):
        assert ours.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9)
        ours.step()  # no gradients: no update, but the schedulers expect a step first
        ref_opt.step()
        sched.step()
        ref.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert make_scheduler(ours, plan_stages(_cfg("audio"))[0], cfg) is None


def test_cosine_lr_function() -> None:
    assert cosine_lr(0, 1e-3, 5) == pytest.approx(1e-3)
    assert cosine_lr(5, 1e-3, 5) == pytest.approx(1e-5)
    assert cosine_lr(2, 1e-3, 4) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert cosine_lr(3, 8e-6, 6) == pytest.approx(8e-6)  # below eta_min: held, not annealed upwards
    with pytest.raises(ValueError):
        cosine_lr(0, 1e-3, 0)


# ------------------------------------------------------------------ losses
def test_losses() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 8) * 50
    y = torch.tensor([0, 3, 7, 1])
    log_probs = F.log_softmax(logits, -1)
    late = make_loss("late", label_smoothing=0.1)  # NLL on log-probabilities; smoothing does not apply
    assert torch.allclose(late(logits, log_probs, y), F.nll_loss(log_probs, y, reduction="none"))
    ce = make_loss("gated", label_smoothing=0.1)
    expected = nn.CrossEntropyLoss(label_smoothing=0.1, reduction="none")(logits, y)
    assert torch.allclose(ce(logits, log_probs, y), expected)
    assert torch.isfinite(late(logits, log_probs, y)).all()


def test_late_fusion_trains_with_nll_end_to_end() -> None:
    torch.manual_seed(0)
    model = build_model("late")
    batch = {"video": torch.randn(2, 1, 3, 32, 32), "audio": torch.randn(2, 1, 64, 40), "label": torch.tensor([1, 2])}
    from emolab.models import forward_batch

    out = forward_batch(model, batch)
    loss = make_loss("late")(out.logits, out.log_probs, batch["label"]).mean()
    loss.backward()
    assert math.isfinite(loss.item())
    assert model.audio_model.head.weight.grad is not None and model.video_model.head.weight.grad is not None


def test_frozen_batchnorm_runs_in_eval_mode_and_keeps_its_statistics() -> None:
    from emolab.train.optim import frozen_batchnorm_to_eval

    cfg = _cfg("gated", two_stage_training=True, stage1_epochs=1, fusion_unfreeze_video_blocks=1, epochs=2)
    model = _build(cfg)
    s1, s2 = plan_stages(cfg)
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    configure_stage(model, cfg, s1)
    model.train()
    switched = frozen_batchnorm_to_eval(model)
    assert set(switched) == set(bns)  # stage 1: both encoders frozen, every BatchNorm in them
    assert all(not m.training for m in bns.values()) and model.training and model.fusion_parameters()
    before = {n: m.running_mean.clone() for n, m in bns.items()}
    batch = {"video": torch.randn(2, 8, 3, 112, 112), "audio": torch.randn(2, 1, 64, 301)}
    from emolab.models import forward_batch

    forward_batch(model, batch)
    assert all(torch.equal(before[n], m.running_mean) for n, m in bns.items())  # statistics untouched
    # stage 2 unfreezes the audio model and the video model's layer4: their BatchNorms train again
    configure_stage(model, cfg, s2)
    model.train()
    switched = set(frozen_batchnorm_to_eval(model))
    training = {n for n, m in bns.items() if m.training}
    assert training == {n for n in bns if n.startswith(("audio_model.", "video_model.backbone.layer4."))}
    assert switched == set(bns) - training and switched
    forward_batch(model, batch)
    changed = {n for n, m in bns.items() if not torch.equal(before[n], m.running_mean)}
    assert changed == training
