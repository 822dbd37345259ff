"""TrainConfig validation and JSON round trip; CLI flags → config; argparse errors; `emolab train` forwarding."""

from __future__ import annotations

import json

import pytest

from emolab.cli.main import main as emolab_main
from emolab.data.datasets import DataConfig
from emolab.data.splits import SplitConfig
from emolab.models.registry import ModelConfig
from emolab.train import OptimConfig, TrainConfig
from emolab.train.cli import build_parser, config_from_args, explicit_dests
from emolab.train.cli import main as train_main
from tests.configs import tiny_model


def _cfg(**kw) -> TrainConfig:
    model = kw.pop("model", tiny_model())
    return TrainConfig(model=model, **kw)


def test_defaults_follow_the_seed() -> None:
    cfg = TrainConfig()
    assert cfg.model.pretrained_video is True  # ImageNet video weights by default, as the seed
    assert cfg.split.mode == "actor"  # emolab's default (the seed's stratified split leaks speakers)
    assert cfg.seed == 42 and cfg.early_stopping_patience == 10 and cfg.data_root == "data"
    assert cfg.output_dir == "outputs"
    assert cfg.optim.wavlm_unfreeze_layers == 2  # the seed's stage 2 unfroze 2 layers
    assert cfg.optim.fusion_unfreeze_audio is True and cfg.optim.eta_min == 1e-5
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.epochs, cfg.batch_size) == (1e-3, 1e-4, 20, 16)
    assert cfg.data.face_crop == "all"  # the seed crops faces in every split (tests/test_seed_flags.py: every flag)


def test_json_round_trip(tmp_path) -> None:
    cfg = _cfg(
        split=SplitConfig(train_actors=[1, 2], val_actors=[3], test_actors=[4]),
        data=DataConfig(num_frames=2, frame_size=32),
        optim=OptimConfig(two_stage_training=True, stage1_epochs=2, use_cosine_annealing=True),
        epochs=5,
        shuffle_labels_seed=3,
    )
    text = json.dumps(cfg.to_dict())
    back = TrainConfig.from_dict(json.loads(text))
    assert back == cfg
    assert back.split.train_actors == (1, 2)


def test_json_round_trip_with_wavlm_config() -> None:
    from transformers import WavLMConfig

    cfg = _cfg(model=ModelConfig(fusion="audio", use_wavlm=True, wavlm_config=WavLMConfig(hidden_size=32)))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["model"]["wavlm_config"]["hidden_size"] == 32
    assert TrainConfig.from_dict(d).model.wavlm_config["hidden_size"] == 32
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({**d, "bogus": 1})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "epochs must be an integer >= 1"),
        (dict(batch_size=0), "batch_size"),
        (dict(num_workers=-2), "num_workers"),
        (dict(device="gpu7"), "device must be"),
        (dict(optim=OptimConfig(two_stage_training=True, stage1_epochs=5), epochs=5), "stage1_epochs"),
        (dict(model=ModelConfig(fusion="late", pretrained_video=False), optim=OptimConfig(two_stage_training=True)),
         "late fusion has no trainable fusion parameters"),
        (dict(model=ModelConfig(fusion="audio"), optim=OptimConfig(two_stage_training=True)), "two_stage_training"),
        (dict(optim=OptimConfig(wavlm_stage=2)), "wavlm_stage 2 applies to --fusion audio --use_wavlm"),
        (dict(model=ModelConfig(fusion="audio"), video_ckpt="x.pt"), "video_ckpt needs a model with a video"),
        (dict(optim=OptimConfig(fusion_unfreeze_video_blocks=6)), "fusion_unfreeze_video_blocks must be 0-5 for"),
        (dict(model=ModelConfig(fusion="gated", video_backbone="efficientnet_b0"),
              optim=OptimConfig(fusion_unfreeze_video_blocks=10)), "must be 0-9 for video_backbone 'efficientnet_b0'"),
        (dict(run_name="a/b"), "run_name"),
    ],
)
def test_invalid_configs(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        _cfg(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=0.0), "lr must be a positive number"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(wavlm_stage=3), "wavlm_stage"),
        (dict(fusion_unfreeze_video_blocks=-1), "fusion_unfreeze_video_blocks must be an integer >= 0"),
        (dict(cosine_stage2_only=True), "cosine_stage2_only needs"),
    ],
)
def test_invalid_optim(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        OptimConfig(**kwargs)


def test_every_seed_flag_maps_onto_the_config() -> None:
    argv = (
        "--data_root d --num_classes 4 --fusion xattn_gated --epochs 7 --batch_size 3 --split_mode stratified "
        "--train_ratio 0.75 --val_ratio 0.1 --use_wavlm --wavlm_stage 1 --backbone_lr 2e-5 --lr 3e-4 "
        "--weight_decay 1e-4 --label_smoothing 0.05 --xattn_head gated --xattn_d_model 96 --xattn_heads 4 "
        "--xattn_attn_dropout 0.2 --xattn_stochastic_depth 0.3 --num_workers 0 --use_cosine_annealing "
        "--early_stopping_patience 8 --audio_ckpt a.pt --video_ckpt v.pt --two_stage_training --stage1_epochs 2 "
        "--audio_backbone_lr 8e-6 --video_backbone_lr 9e-6 --fusion_unfreeze_wavlm_layers 1 "
        "--fusion_unfreeze_video_blocks 2 --no_fusion_unfreeze_audio --seed 5 --frames 3 --no_pretrained_video "
        "--cosine_stage2_only --audio_n_mels 40 --wandb --audio_backbone w --output_dir o --device cpu "
        "--compile --frame_size 48 --face_crop train --clip_seconds 2"
    ).split()
    cfg = config_from_args(build_parser().parse_args(argv))
    m, d, s, o = cfg.model, cfg.data, cfg.split, cfg.optim
    assert (cfg.data_root, m.num_classes, m.fusion, cfg.epochs, cfg.batch_size) == ("d", 4, "xattn_gated", 7, 3)
    assert (s.mode, s.train_ratio, s.val_ratio) == ("stratified", 0.75, 0.1)
    assert m.use_wavlm and not m.use_resnet_audio and m.audio_backbone == "w" and not m.pretrained_video
    assert (o.wavlm_stage, o.backbone_lr, o.lr, o.weight_decay, o.label_smoothing) == (1, 2e-5, 3e-4, 1e-4, 0.05)
    assert (m.xattn_head, m.xattn_d_model, m.xattn_heads, m.xattn_attn_dropout, m.xattn_stochastic_depth) == (
        "gated", 96, 4, 0.2, 0.3)
    assert cfg.num_workers == 0 and o.use_cosine_annealing and o.cosine_stage2_only and cfg.early_stopping_patience == 8
    assert (cfg.audio_ckpt, cfg.video_ckpt) == ("a.pt", "v.pt")
    assert o.two_stage_training and o.stage1_epochs == 2
    assert (o.audio_backbone_lr, o.video_backbone_lr) == (8e-6, 9e-6)
    assert (o.fusion_unfreeze_wavlm_layers, o.fusion_unfreeze_video_blocks, o.fusion_unfreeze_audio) == (1, 2, False)
    assert cfg.seed == 5 and d.num_frames == 3 and d.frame_size == 48 and d.face_crop == "train"
    assert m.n_mels == 40 and d.clip_seconds == 2.0
    assert cfg.wandb and cfg.output_dir == "o" and cfg.device == "cpu" and cfg.compile


def test_actor_lists_and_kfold_flags() -> None:
    args = build_parser().parse_args(["--train_actors", "1-4,9", "--val_actors", "5", "--test_actors", "6,7"])
    cfg = config_from_args(args)
    assert cfg.split.train_actors == (1, 2, 3, 4, 9) and cfg.split.test_actors == (6, 7)
    cfg = config_from_args(build_parser().parse_args(["--split_mode", "kfold", "--protocol", "luna5", "--fold", "4"]))
    assert (cfg.split.mode, cfg.split.protocol, cfg.split.fold) == ("kfold", "luna5", 4)
    assert config_from_args(build_parser().parse_args(["--fusion_unfreeze_audio"])).optim.fusion_unfreeze_audio


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fusion", "nope"], "invalid choice: 'nope'"),
        (["--train_actors", "1-x"], "cannot read actor list"),
        (["--train_ratio", "0.9", "--val_ratio", "0.2"], "train_ratio + val_ratio must be < 1"),
        (["--lr", "-1"], "lr must be a positive number"),
        (["--use_wavlm", "--use_resnet_audio"], "exclusive"),
        (["--xattn_d_model", "30", "--xattn_heads", "4"], "divisible"),
        (["--fusion_unfreeze_video_blocks", "9"], "0-5"),
        (["--video_backbone", "resnet101"], "invalid choice: 'resnet101'"),
        (["--fusion", "late", "--two_stage_training", "--epochs", "9"], "late fusion"),
        (["--frame_size", "4"], "frame_size"),
        (["--resume", "r", "--lr", "0.1"], "cannot change: --lr"),
    ],
)
def test_bad_values_are_argparse_errors(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        train_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_explicit_flags_are_detected_exactly() -> None:
    parser = build_parser()
    assert explicit_dests(parser, ["--resume", "x", "--device=cpu", "--no_progress"]) == {"resume", "device", "progress"}


def test_emolab_train_forwards_to_the_train_cli(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        emolab_main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--fusion_unfreeze_video_blocks", "--no_fusion_unfreeze_audio", "--resume", "--wavlm_stage"):
        assert flag in out
    with pytest.raises(SystemExit):
        emolab_main(["train", "--fusion", "nope"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # other commands still reject unknown flags
        emolab_main(["inspect", "--data_root", "x", "--fusion", "gated"])
    assert "unrecognized arguments" in capsys.readouterr().err
