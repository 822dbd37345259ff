"""Every flag of the seed's ``src/train.py`` is accepted by ``emolab train`` with the seed's default.

The reference is ``shared/seed-reference/train_flags.json`` (measured from the
seed's own parser), beside the repository: each flag must parse, take a value
of its type (or none, for switches), and its default must be what the
resolved :class:`TrainConfig` holds when the flag is not given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from emolab.data.splits import default_actor_lists, parse_actor_list
from emolab.train import TrainConfig
from emolab.train.cli import build_parser, config_from_args

SEED_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "seed-reference"
FLAGS_JSON = SEED_REFERENCE / "train_flags.json"

_FULL_CORPUS = default_actor_lists(range(1, 25))  # what None resolves to on the 24 RAVDESS actors
_FACE = {"all": True, "none": False}  # --face_crop train has no seed equivalent

#: seed flag dest -> the value the resolved config holds, in the seed's terms.
GETTERS: dict[str, Callable[[TrainConfig], Any]] = {
    "data_root": lambda c: c.data_root,
    "num_classes": lambda c: c.model.num_classes,
    "fusion": lambda c: c.model.fusion,
    "epochs": lambda c: c.epochs,
    "batch_size": lambda c: c.batch_size,
    "frames": lambda c: c.data.num_frames,
    "lr": lambda c: c.optim.lr,
    "seed": lambda c: c.seed,
    "split_mode": lambda c: c.split.mode,
    "train_actors": lambda c: tuple(c.split.train_actors or _FULL_CORPUS[0]),
    "val_actors": lambda c: tuple(c.split.val_actors or _FULL_CORPUS[1]),
    "test_actors": lambda c: tuple(c.split.test_actors or _FULL_CORPUS[2]),
    "train_ratio": lambda c: c.split.train_ratio,
    "val_ratio": lambda c: c.split.val_ratio,
    "no_pretrained_video": lambda c: not c.model.pretrained_video,
    "use_cosine_annealing": lambda c: c.optim.use_cosine_annealing,
    "cosine_stage2_only": lambda c: c.optim.cosine_stage2_only,
    "wandb": lambda c: c.wandb,
    "xattn_head": lambda c: c.model.xattn_head,
    "xattn_d_model": lambda c: c.model.xattn_d_model,
    "xattn_heads": lambda c: c.model.xattn_heads,
    "xattn_attn_dropout": lambda c: c.model.xattn_attn_dropout,
    "xattn_stochastic_depth": lambda c: c.model.xattn_stochastic_depth,
    "label_smoothing": lambda c: c.optim.label_smoothing,
    "audio_n_mels": lambda c: c.model.n_mels,
    "weight_decay": lambda c: c.optim.weight_decay,
    "early_stopping_patience": lambda c: c.early_stopping_patience,
    "use_resnet_audio": lambda c: c.model.use_resnet_audio,
    "two_stage_training": lambda c: c.optim.two_stage_training,
    "use_wavlm": lambda c: c.model.use_wavlm,
    "wavlm_stage": lambda c: c.optim.wavlm_stage,
    "backbone_lr": lambda c: c.optim.backbone_lr,
    "stage1_epochs": lambda c: c.optim.stage1_epochs,
    "audio_backbone_lr": lambda c: c.optim.audio_backbone_lr,
    "video_backbone_lr": lambda c: c.optim.video_backbone_lr,
    "fusion_unfreeze_wavlm_layers": lambda c: c.optim.fusion_unfreeze_wavlm_layers,
    "fusion_unfreeze_video_blocks": lambda c: c.optim.fusion_unfreeze_video_blocks,
    "fusion_unfreeze_audio": lambda c: c.optim.fusion_unfreeze_audio,
    "audio_ckpt": lambda c: c.audio_ckpt or "",  # the seed's "" and emolab's None both mean "no checkpoint"
    "video_ckpt": lambda c: c.video_ckpt or "",
    "use_face_crop": lambda c: _FACE.get(c.data.face_crop),
    "num_workers": lambda c: c.num_workers,
}

#: Deliberate differences from the seed's defaults: dest -> (emolab's default, why).
EXCEPTIONS: dict[str, tuple[Any, str]] = {
    "split_mode": ("actor", "the seed's stratified split puts every actor in train and test (SPEC §1.3)"),
    "data_root": ("data", "the seed's parser has no default (None); every seed command passes --data_root data"),
}

#: Flags that only make sense with others: extra argv for the "takes a value" check.
CONTEXT: dict[str, list[str]] = {
    "cosine_stage2_only": ["--fusion", "gated", "--use_cosine_annealing", "--two_stage_training"],
    "two_stage_training": ["--fusion", "gated"],
    "wavlm_stage": ["--use_wavlm"],
    "video_ckpt": ["--fusion", "gated"],
    "train_actors": ["--train_actors", "1-4", "--val_actors", "5", "--test_actors", "6"],
    "val_actors": ["--train_actors", "1-4", "--val_actors", "5", "--test_actors", "6"],
    "test_actors": ["--train_actors", "1-4", "--val_actors", "5", "--test_actors", "6"],
}


def _seed_flags() -> list[dict[str, Any]]:
    if not FLAGS_JSON.is_file():
        pytest.skip(f"seed reference not found at {FLAGS_JSON} (shared/ must sit beside the repository)")
    return json.loads(FLAGS_JSON.read_text())["flags"]


def _seed_default(entry: dict[str, Any]) -> Any:
    if entry["dest"] in ("train_actors", "val_actors", "test_actors"):
        return parse_actor_list(entry["default"])
    return entry["default"]


def _resolve(argv: list[str]) -> TrainConfig:
    return config_from_args(build_parser().parse_args(argv))


def _other_value(entry: dict[str, Any]) -> str:
    """A value of the flag's type other than its default."""
    default, choices = entry["default"], entry["choices"]
    if choices:
        return str(next(c for c in choices if c != default))
    if entry["type"] == "int":
        return str(default * 2 if default > 0 else default + 1)
    if entry["type"] == "float":
        return repr(default / 2 if default else 0.05)
    return {"data_root": "elsewhere", "audio_ckpt": "a.pt", "video_ckpt": "v.pt",
            "train_actors": "1-3", "val_actors": "7,8", "test_actors": "9"}[entry["dest"]]


def test_reference_covers_every_dest_we_map() -> None:
    dests = {e["dest"] for e in _seed_flags()}
    assert dests == set(GETTERS), "train_flags.json and this test's map differ"


def test_every_seed_default_is_emolabs() -> None:
    cfg = _resolve([])
    assert cfg == TrainConfig(), "the CLI's defaults are the config dataclasses' (one source of truth)"
    wrong = {}
    for entry in _seed_flags():
        dest = entry["dest"]
        got = GETTERS[dest](cfg)
        want = EXCEPTIONS[dest][0] if dest in EXCEPTIONS else _seed_default(entry)
        if got != want:
            wrong[dest] = (got, want)
    assert not wrong, f"emolab default != seed default (got, want): {wrong}"
    # the exceptions are real differences, each with its reason
    seed = {e["dest"]: e["default"] for e in _seed_flags()}
    assert all(seed[d] != value for d, (value, _) in EXCEPTIONS.items())


@pytest.mark.parametrize("dest, value", [("lr", 1e-3), ("weight_decay", 1e-4), ("epochs", 20), ("batch_size", 16),
                                         ("seed", 42)])
def test_the_defaults_named_in_the_issue(dest, value) -> None:
    """Pinned by hand too, so that a wrong reference file cannot hide them."""
    assert GETTERS[dest](TrainConfig()) == value


def test_every_seed_flag_parses_and_sets_the_config() -> None:
    parser = build_parser()
    for entry in _seed_flags():
        dest = entry["dest"]
        for flag in entry["flags"]:
            action = parser._option_string_actions.get(flag)
            assert action is not None, f"{flag} is not an emolab train flag"
            kind = entry["action"]
            if kind in ("_StoreTrueAction", "_StoreFalseAction"):
                assert action.nargs == 0, f"{flag} is a switch in the seed"
                cfg = _resolve([*CONTEXT.get(dest, []), flag])
                assert GETTERS[dest](cfg) is (kind == "_StoreTrueAction"), flag
                continue
            if entry["choices"]:
                assert set(entry["choices"]) <= set(action.choices), f"{flag}: a seed choice is refused"
            value = _other_value(entry)
            argv = CONTEXT.get(dest, []) + [flag, value]
            cfg = _resolve(argv)
            if dest in ("train_actors", "val_actors", "test_actors"):
                want: Any = parse_actor_list(value)
            elif entry["type"] in ("int", "float"):
                want = {"int": int, "float": float}[entry["type"]](value)
            else:
                want = value
            assert GETTERS[dest](cfg) == want, f"{' '.join(argv)}: got {GETTERS[dest](cfg)!r}"


def test_face_crop_flags_map_onto_face_crop() -> None:
    assert _resolve([]).data.face_crop == "all"  # the seed crops faces in every split by default
    assert _resolve(["--use_face_crop"]).data.face_crop == "all"
    assert _resolve(["--no_face_crop"]).data.face_crop == "none"
    assert _resolve(["--face_crop", "train", "--use_face_crop"]).data.face_crop == "all"  # the last one wins
    assert _resolve(["--no_face_crop", "--face_crop", "train"]).data.face_crop == "train"


def test_the_split_default_is_said(tmp_path, capsys) -> None:
    """A seed command without --split_mode gets emolab's actor split, and is told so."""
    from emolab.train.cli import SPLIT_DEFAULT_NOTE, main

    assert main(["--data_root", str(tmp_path / "missing"), "--output_dir", str(tmp_path)]) == 2  # no corpus there
    assert SPLIT_DEFAULT_NOTE in capsys.readouterr().err and "'stratified'" in SPLIT_DEFAULT_NOTE
    main(["--data_root", str(tmp_path / "missing"), "--split_mode", "actor", "--output_dir", str(tmp_path)])
    assert SPLIT_DEFAULT_NOTE not in capsys.readouterr().err
