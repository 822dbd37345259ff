"""Seed-project checkpoints: conversion, the seed's outputs, warm starts and ``emolab convert-checkpoint``.

The reference is measured from the seed's own code (``shared/seed-reference/models.json``):
key lists, a rule to rebuild the weights, fixed inputs and the seed's outputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from emolab.models import (
    SEED_MODEL_OPTIONS,
    SeedLayoutError,
    build_model,
    is_seed_state_dict,
    load_seed_checkpoint,
    seed_build_kwargs,
)
from emolab.train.checkpoint import load_warm_start
from emolab.utils.checkpoints import WarmStartError
from tests.seed_reference import (
    MISSING_REASON,
    MODELS_JSON,
    case_names,
    case_state_dict,
    expected_output,
    models_json,
    seed_case_output,
    seed_inputs,
)

pytestmark = pytest.mark.skipif(not MODELS_JSON.is_file(), reason=MISSING_REASON)

TOL = 1e-4  # absolute, as the reference README asks


def _max_err(model: torch.nn.Module, name: str) -> float:
    return (seed_case_output(model, name) - expected_output(name)).abs().max().item()


@pytest.fixture(autouse=True)
def _cpu_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


def test_reference_covers_every_seed_model() -> None:
    names = set(case_names())
    fusions = {f"{f}_{a}" for f in ("late", "concat", "gated", "xattn_concat", "xattn_gated")
               for a in ("cnn", "resnet", "wavlm")}
    assert names == {"audio_cnn", "audio_resnet", "audio_wavlm", "video"} | fusions  # 19 models


@pytest.mark.slow  # every full-size seed model
@pytest.mark.parametrize("name", case_names())
def test_converted_seed_model_reproduces_seed_outputs(name: str) -> None:
    sd = case_state_dict(name)
    assert is_seed_state_dict(sd)
    kwargs = seed_build_kwargs(sd)
    spec = models_json()["cases"][name]["emolab_build_model"]
    for key, value in spec.items():  # the network read from the keys is the one the reference names
        assert kwargs.get(key, False) == value, key
    if spec.get("use_wavlm"):
        small = models_json()["small_wavlm_config"]
        assert {k: kwargs["wavlm_config"][k] for k in small} == small
    model = load_seed_checkpoint(sd)
    assert not model.training
    out = seed_case_output(model, name)
    assert out.shape == (2, 8)
    assert (out - expected_output(name)).abs().max().item() < TOL


@pytest.mark.slow  # full-size seed models
def test_seed_checkpoint_from_a_file_and_in_emolab_layout(tmp_path) -> None:
    name = "xattn_gated_cnn"
    sd = case_state_dict(name)
    torch.save(sd, tmp_path / "raw.pt")
    torch.save({"model": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    for file in ("raw.pt", "wrapped.pt"):
        assert _max_err(load_seed_checkpoint(tmp_path / file), name) < TOL
    converted = load_seed_checkpoint(sd).state_dict()
    assert not is_seed_state_dict(converted)
    again = load_seed_checkpoint(converted, **seed_build_kwargs(sd))  # emolab's layout loads as it is
    assert _max_err(again, name) < TOL
    with pytest.raises(SeedLayoutError, match="pass fusion="):
        load_seed_checkpoint(converted)
    with pytest.raises(FileNotFoundError):
        load_seed_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("xattn_gated_cnn", "xattn_attention", "parallel"),
        ("xattn_gated_cnn", "xattn_fuse_order", "av"),
        ("xattn_concat_cnn", "xattn_fuse_order", "av"),
    ],
)
def test_each_seed_option_is_needed(name: str, option: str, value: str) -> None:
    """Without the seed's value of any one option the outputs leave the tolerance: the options are the seed's.

    (``mel_sequence`` is not among them: on the reference's stationary noise
    input every time step looks alike, so one step or many give the same
    output within 1e-5; tests/test_models_seed_options.py checks it directly.)
    """
    assert SEED_MODEL_OPTIONS[option] != value
    model = load_seed_checkpoint(case_state_dict(name), **{option: value})
    assert _max_err(model, name) > 10 * TOL


def test_wavlm_embedding_option_is_needed() -> None:
    # emolab's default WavLM embedding (the mean hidden state, 64-d here) cannot take the seed's 768-d projection
    with pytest.raises(SeedLayoutError, match="audio_proj.weight"):
        load_seed_checkpoint(case_state_dict("concat_wavlm"), wavlm_embedding="hidden")


def test_neither_layout_names_both_layouts_and_keys() -> None:
    sd = case_state_dict("gated_cnn")
    sd["mystery.weight"] = sd.pop("gate.0.weight")
    with pytest.raises(ValueError) as exc:
        load_seed_checkpoint(sd)
    msg = str(exc.value)
    assert "seed project's layout" in msg and "emolab's layout" in msg
    assert "missing keys" in msg and "gate.0.weight" in msg
    assert "unexpected keys" in msg and "mystery.weight" in msg
    assert isinstance(exc.value, SeedLayoutError)


# --------------------------------------------------------------------------- warm starts
def test_warm_start_accepts_seed_encoder_files(tmp_path, capsys, caplog) -> None:
    torch.save(case_state_dict("audio_resnet"), tmp_path / "best_audio.pt")  # the seed saves plain state dicts
    torch.save(case_state_dict("video"), tmp_path / "best_video.pt")
    fusion = build_model("gated", use_resnet_audio=True)
    with caplog.at_level(logging.INFO, logger="emolab.models.seed"):
        load_warm_start(fusion.audio_model, tmp_path / "best_audio.pt", role="audio_model")
        load_warm_start(fusion.video_model, tmp_path / "best_video.pt", role="video_model")
    assert "seed-project checkpoint" in capsys.readouterr().out
    assert "converted from the seed project's layout" in caplog.text
    x = seed_inputs()
    with torch.no_grad():
        a = fusion.audio_model.eval()(x["mel"]).logits
        v = fusion.video_model.eval()(x["video"]).logits
    assert (a - expected_output("audio_resnet")).abs().max().item() < TOL
    assert (v - expected_output("video")).abs().max().item() < TOL

    with pytest.raises(WarmStartError) as exc:  # a seed video file where the audio model goes
        load_warm_start(fusion.audio_model, tmp_path / "best_video.pt", role="audio_model")
    msg = str(exc.value)
    assert "best_video.pt" in msg and "audio_model" in msg
    assert "seed project's layout" in msg and "emolab's layout" in msg
    assert "missing keys" in msg and "unexpected keys" in msg and "backbone.conv1.weight" in msg


# --------------------------------------------------------------------------- convert-checkpoint
@pytest.mark.slow  # converts and evaluates a run
def test_convert_checkpoint_writes_a_run_that_emolab_loads(tmp_path, capsys, demo_root) -> None:
    from emolab.eval import robustness
    from emolab.eval.analysis import load_model
    from emolab.cli.main import main
    from emolab.data import SplitConfig

    name = "xattn_gated_cnn"
    torch.save(case_state_dict(name), tmp_path / "best_xattn.pt")
    run = tmp_path / "runs" / "seed-xattn"
    rc = main(["convert-checkpoint", str(tmp_path / "best_xattn.pt"), "--out", str(run), "--data_root", str(demo_root)])
    assert rc == 0, capsys.readouterr().err
    assert f"robustness --run {run}" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["fusion"] == "xattn" and config["model"]["xattn_head"] == "gated"
    for key, value in SEED_MODEL_OPTIONS.items():
        assert config["model"][key] == value, key
    assert config["data_root"] == str(demo_root)

    model, cfg = load_model(run / "best_xattn.pt")  # emolab's own loader, as notebooks 05-06 use it
    assert _max_err(model, name) < TOL

    assert main(["convert-checkpoint", str(tmp_path / "best_xattn.pt"), "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    bad = case_state_dict(name)
    bad["extra.weight"] = bad.pop("v_in_proj.weight")
    torch.save(bad, tmp_path / "bad.pt")
    assert main(["convert-checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "emolab's layout" in err and "extra.weight" in err and "Traceback" not in err

    # robustness on the converted run (two test clips of the generated corpus)
    models = robustness.load_runs(run, data_root=demo_root)
    split = SplitConfig(mode="actor", train_actors=(1,), val_actors=(3,), test_actors=(4,))
    models = {k: (m, dataclasses.replace(c, split=split)) for k, (m, c) in models.items()}
    result = robustness.evaluate(models, noise="gaussian", max_items=2, batch_size=2, device="cpu")
    table = result.table
    assert (table["n"] == 2).all() and table["accuracy"].between(0, 1).all()
    assert table["mean_gate"].notna().all()  # the gated head's gate is reported


def test_convert_checkpoint_keeps_the_wavlm_shape_in_the_config(tmp_path) -> None:
    from emolab.eval.analysis import load_model
    from emolab.cli.convert import ConvertError, convert_seed_checkpoint

    name = "gated_wavlm"
    torch.save({"model": case_state_dict(name)}, tmp_path / "best_gated.pt")
    best = convert_seed_checkpoint(tmp_path / "best_gated.pt", tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    small = models_json()["small_wavlm_config"]
    assert {k: config["model"]["wavlm_config"][k] for k in small} == small  # rebuilt offline, no download
    assert config["model"]["wavlm_embedding"] == "head"
    model, _ = load_model(best)
    assert _max_err(model, name) < TOL
    with pytest.raises(ConvertError, match="no such checkpoint"):
        convert_seed_checkpoint(tmp_path / "nope.pt", tmp_path / "run2")
