"""Config-field metadata (emolab.utils.settings): every field has a flag or a reason, flags round-trip, one resume list.

The train CLI is generated from the fields' ``setting(...)`` metadata; these
tests pin what that generation must give: no field silently without a flag,
``parse(flags of a config) == config``, and ``--resume`` accepting exactly the
fields declared resumable (in the CLI and in ``resume_training`` alike).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emolab.data.datasets import DataConfig
from emolab.data.splits import SplitConfig
from emolab.models.registry import ModelConfig
from emolab.train import OptimConfig, TrainConfig
from emolab.train.cli import build_parser, config_argv_of, config_from_args, main as train_main, train_flags
from emolab.train.config import NEUTRAL_FIELDS, RESUMABLE_FIELDS
from emolab.utils.settings import (
    Alias,
    Change,
    config_argv,
    config_diff,
    config_flags,
    get_path,
    optional_bool,
    optional_float,
    replace_path,
    setting,
    setting_of,
    walk_settings,
)

#: The 13 fields that had no flag before the CLI was generated from the metadata, and theirs now.
NEW_FLAGS = {
    "publish_best": "--no_publish_best", "log_every": "--log_every", "optim.eta_min": "--eta_min",
    "data.sample_rate": "--sample_rate", "data.noise_path": "--noise_path",
    "data.memory_cache_bytes": "--memory_cache_bytes", "model.audio_residual": "--audio_residual",
    "model.spec_augment": "--no_spec_augment", "model.wavlm_freeze_backbone": "--no_wavlm_freeze_backbone",
    "model.wavlm_backbone_attention_mask": "--wavlm_backbone_attention_mask", "model.common_dim": "--common_dim",
    "model.fusion_dropout": "--fusion_dropout", "model.modality_dropout": "--modality_dropout",
}


def _parse(argv: list[str]) -> TrainConfig:
    return config_from_args(build_parser().parse_args(argv))


def test_every_field_has_a_flag_or_says_why_not() -> None:
    flags, unflagged = train_flags()
    paths = [path for path, _, _ in walk_settings(TrainConfig())]
    assert all(setting_of(f) is not None and setting_of(f).help for _, f, _ in walk_settings(TrainConfig()))
    flagged = {p for f in flags for p in f.paths}
    assert flagged | set(unflagged) == set(paths) and not flagged & set(unflagged)
    assert set(unflagged) == {"model.hop_length", "model.wavlm_config", "model.extra"}
    assert all(len(reason) > 20 for reason in unflagged.values()), unflagged
    options = build_parser()._option_string_actions
    for path, flag in NEW_FLAGS.items():
        assert flag in options and path in flagged, path


def test_each_setting_is_stored_once_and_set_by_one_flag() -> None:
    flags = {f.name: f.paths for f in train_flags()[0]}
    assert all(len(paths) == 1 for paths in flags.values()), {k: v for k, v in flags.items() if len(v) > 1}
    assert flags["num_classes"] == ("model.num_classes",)
    assert flags["audio_n_mels"] == ("model.n_mels",)
    assert flags["seed"] == ("seed",)
    cfg = _parse(["--num_classes", "4", "--audio_n_mels", "40", "--seed", "3"])
    assert (cfg.model.num_classes, cfg.model.n_mels, cfg.seed) == (4, 40, 3)
    names = [p.rpartition(".")[2] for p, _, _ in walk_settings(TrainConfig())]
    assert {"num_classes", "n_mels", "seed"}.isdisjoint(
        n for n in names if names.count(n) > 1)  # no second copy anywhere in the config


ROUND_TRIP = [
    TrainConfig(),
    TrainConfig(  # every one of the 13 new flags, and switches both ways
        model=ModelConfig(fusion="gated", pretrained_video=False, audio_residual=True, use_resnet_audio=True,
                          spec_augment=False, common_dim=64, fusion_dropout=0.1, modality_dropout=0.3,
                          gate_bias_init=None),
        data=DataConfig(sample_rate=8000, noise_path="n.wav", memory_cache_bytes=1 << 20, cache_dir="",
                        face_crop="none"),
        optim=OptimConfig(eta_min=0.0, frozen_bn_eval=False, fusion_unfreeze_audio=False),
        publish_best=False, log_every=3, amp=False, progress=False,
    ),
    TrainConfig(
        model=ModelConfig(fusion="xattn_gated", num_classes=4, n_mels=40, use_wavlm=True, wavlm_freeze_backbone=False,
                          wavlm_backbone_attention_mask=True, xattn_heads=2, xattn_d_model=32, mel_sequence="clip"),
        data=DataConfig(num_frames=2, frame_size=48, clip_seconds=1.5),
        split=SplitConfig(train_actors=(1, 2, 3), val_actors=(4,), test_actors=(5, 7)),
        optim=OptimConfig(two_stage_training=True, stage1_epochs=2, use_cosine_annealing=True, lr=3e-4),
        epochs=4, seed=9, shuffle_labels_seed=0, video_ckpt="v.pt", run_name="r", device="cpu", tensorboard=True,
    ),
    TrainConfig(split=SplitConfig(mode="kfold", protocol="luna5", fold=3), wandb=True, wandb_project="p",
                model=ModelConfig(wavlm_backbone_attention_mask=False, pretrained_video=True)),
]


@pytest.mark.parametrize("cfg", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_flags_of_a_config_parse_back_to_it(cfg: TrainConfig) -> None:
    argv = config_argv_of(cfg)
    assert _parse(argv) == cfg, argv
    assert len(argv) == len(config_diff(TrainConfig(), cfg))  # one flag per difference


def test_a_config_no_flag_can_give_is_refused() -> None:
    with pytest.raises(ValueError, match="model.hop_length"):
        config_argv_of(TrainConfig(model=ModelConfig(pretrained_video=True, hop_length=80)))

    @dataclasses.dataclass
    class Inner:  # TrainConfig stores each setting once; the mechanism still allows a flag for two fields
        k: int = setting(2, help="k", flag="k")

    @dataclasses.dataclass
    class Outer:
        k: int = setting(2, help="k")
        inner: Inner = dataclasses.field(default_factory=Inner)

    assert config_argv(Outer(k=3, inner=Inner(3)), Outer()) == ["--k=3"]
    with pytest.raises(ValueError, match="inner.k differs"):
        config_argv(Outer(inner=Inner(1)), Outer())


def test_seed_aliases_and_custom_parsers() -> None:
    assert _parse(["--no_face_crop"]).data.face_crop == "none"
    assert _parse(["--no_fusion_unfreeze_audio"]).optim.fusion_unfreeze_audio is False
    assert _parse(["--gate_bias_init", "none"]).model.gate_bias_init is None
    assert _parse(["--wavlm_backbone_attention_mask", "auto"]).model.wavlm_backbone_attention_mask is None
    assert optional_float("-2") == -2.0 and optional_bool("No") is False
    with pytest.raises(ValueError, match="true, false or auto"):
        optional_bool("maybe")


def test_bad_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match="no_flag"):
        setting(1, help="x", flag=None)

    @dataclasses.dataclass
    class Plain:
        a: int = 1

    with pytest.raises(TypeError, match="Plain.a was declared without"):
        config_flags(Plain())

    @dataclasses.dataclass
    class Inner:
        k: int = setting(2, help="k", flag="k")

    @dataclasses.dataclass
    class Outer:
        k: int = setting(1, help="k")
        inner: Inner = dataclasses.field(default_factory=Inner)

    with pytest.raises(TypeError, match="--k sets k and inner.k, whose defaults"):
        config_flags(Outer())


def test_alias_metadata_is_what_the_parser_offers() -> None:
    face = setting_of(next(f for f in dataclasses.fields(DataConfig) if f.name == "face_crop"))
    assert face.aliases == (Alias("use_face_crop", "all"), Alias("no_face_crop", "none"))
    assert "same as --face_crop none" in build_parser().format_help().replace("\n", " ").replace("  ", " ")


# ------------------------------------------------------------------ one list of what --resume may change
def test_the_resume_list_is_the_metadata() -> None:
    assert set(RESUMABLE_FIELDS) == {"data_root", "num_workers", "data_path", "device", "compile", "wandb",
                                     "wandb_project", "tensorboard", "progress", "log_every"}
    assert set(RESUMABLE_FIELDS) <= set(NEUTRAL_FIELDS)
    assert {f.name for f in train_flags()[0] if f.resumable} == {"data_root", "num_workers", "data_path", "device",
                                                                 "compile",
                                                                 "wandb", "wandb_project", "tensorboard",
                                                                 "no_progress", "log_every"}


def test_the_sweep_ignores_what_changes_no_result() -> None:
    from emolab.eval.runs import NOT_SETTINGS

    assert set(NOT_SETTINGS) == {p for p in NEUTRAL_FIELDS if "." not in p} | {"seed", "split"}


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(TrainConfig().to_dict()))
    (run / "last.pt").write_bytes(b"not read before the overrides are checked")
    return run


def test_cli_resume_passes_resumable_flags_and_refuses_the_rest(tmp_path, monkeypatch, capsys) -> None:
    import emolab.train.cli as cli

    run = _run_folder(tmp_path)
    seen = {}
    monkeypatch.setattr(cli, "resume_training", lambda run_dir, overrides: seen.update(overrides))
    argv = ["--resume", str(run), "--tensorboard", "--log_every", "5", "--no_progress", "--data_root=d"]
    assert train_main(argv) == 0
    assert seen == {"tensorboard": True, "log_every": 5, "progress": False, "data_root": "d"}
    with pytest.raises(SystemExit) as exc:
        train_main(["--resume", str(run), "--common_dim", "64", "--no_face_crop", "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "cannot change: --common_dim (the run's 256, given 64), --face_crop (the run's 'all', given 'none')" in err
    assert "--log_every" in err and "--device" not in err.split("cannot change")[1].split("(it may")[0]


def test_resume_training_refuses_a_field_not_declared_resumable(tmp_path) -> None:
    from emolab.train import SetupError, resume_training

    run = _run_folder(tmp_path)
    with pytest.raises(SetupError, match=r"cannot change model.common_dim \(256 -> 64\), seed \(42 -> 1\)"):
        resume_training(run, overrides={"seed": 1, "model.common_dim": 64, "device": "cpu"})
    with pytest.raises(SetupError, match="nope \\(not a TrainConfig field -> 1\\)"):
        resume_training(run, overrides={"nope": 1})


# ------------------------------------------------------------------ the one diff helper
def test_config_diff_lists_dotted_fields() -> None:
    a, b = TrainConfig(), TrainConfig(optim=OptimConfig(lr=3e-4), epochs=7)
    assert config_diff(a, b) == [Change("epochs", 20, 7), Change("optim.lr", 1e-3, 3e-4)]
    assert config_diff(a.to_dict(), b.to_dict()) == config_diff(a, b)
    assert [str(c) for c in config_diff({"x": {"y": [1]}}, {"x": {}, "z": 2})] == ["x.y: [1] -> None", "z: None -> 2"]
    assert get_path(replace_path(a, "model.common_dim", 32), "model.common_dim") == 32


def test_settings_module_needs_no_torch() -> None:
    code = "import sys, emolab.utils.settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_search_space_field_is_a_train_flag() -> None:
    """``SearchSpace.sample`` finds the config field of each sampled name through the flag metadata."""
    from emolab.experiments.search import SearchSpace

    dests = {f.dest for f in train_flags()[0]}
    assert {f.name for f in dataclasses.fields(SearchSpace)} - {"choices"} <= dests  # choices: named by flag dest


def test_a_plain_field_is_not_resumable_and_has_no_silent_flag() -> None:
    @dataclasses.dataclass
    class Mixed:
        a: int = setting(1, help="a", resumable=True)
        b: int = 2

    from emolab.utils.settings import neutral_fields, resumable_fields

    assert resumable_fields(Mixed()) == ("a",) and neutral_fields(Mixed()) == ("a",)
    with pytest.raises(TypeError, match=r"Mixed.b was declared without .*no_flag="):
        config_flags(Mixed())
