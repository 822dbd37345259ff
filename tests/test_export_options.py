"""ONNX export of the model options and speech backbones: ONNX Runtime's outputs equal PyTorch's.

Every option that changes the graph is exported on every model it applies to: each learned pooling kind
(``--video_pooling``, ``--audio_pooling`` incl. the audio-only model, ``--xattn_pooling``), the emotion-prior bias,
the xattn time encoding, a model trained with the CLIP loss (training-only; its model must still export), and each
speech encoder family (wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper with its in-torch log-Mel front end), alone
and inside fusion models. Models are randomly initialised, built through the registry from a ``ModelConfig``, and
checked on a batch of another size than the export's example (and on a batch of one), with padded clips; fp32
within :data:`~emolab.eval.export.FP32_TOLERANCE` (logits), ``--int8`` probabilities within 0.05 (as
tests/test_export.py). No option needs a refusal: every one exports.

The video models' per-frame ResNet18 is swapped for a tiny CNN of the same output size (:func:`_tiny_frames`): no
option touches the per-frame backbone, and exporting a ResNet18 takes most of a minute per model (the gated
run's export in tests/test_export.py covers it). The whole commands (train, export --int8, evaluate and predict an
export folder) run once with a speech backbone, marked slow.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from emolab.cli.main import main
from emolab.eval import export as E
from emolab.eval.onnx_runtime import OnnxModel
from emolab.models import ModelConfig, build_model_from_config
from emolab.models.fusion import forward_batch
from tests.configs import TINY_SPEECH_CONFIGS, save_tiny_speech, tiny_train_flags

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_MELS = 16
XATTN = dict(xattn_d_model=16, xattn_heads=2)  # a small xattn: the options, not the width, are under test

#: (id, ModelConfig fields, also check --int8). Each (model, option value) pair appears at least once; the
#: cases of :data:`FAST` run in the not-slow suite (one per model family, each with --int8), the others are slow.
CASES: list[tuple[str, dict, bool]] = [
    ("video-attention", dict(fusion="video", video_pooling="attention"), True),
    ("video-transformer", dict(fusion="video", video_pooling="transformer"), False),
    ("late-attention", dict(fusion="late", video_pooling="attention"), False),
    ("late-transformer", dict(fusion="late", video_pooling="transformer"), False),
    ("concat-vattn-atrans-clip", dict(fusion="concat", video_pooling="attention", audio_pooling="transformer",
                                      clip_weight=0.5), True),
    ("concat-vtrans-aattn", dict(fusion="concat", video_pooling="transformer", audio_pooling="attention"), False),
    ("gated-vtrans-aattn-clip", dict(fusion="gated", video_pooling="transformer", audio_pooling="attention",
                                     clip_weight=1.0, clip_temperature=0.1), True),
    ("gated-vattn-atrans", dict(fusion="gated", video_pooling="attention", audio_pooling="transformer"), False),
    ("audio-attention", dict(fusion="audio", audio_pooling="attention"), True),
    ("audio-resnet-transformer", dict(fusion="audio", use_resnet_audio=True, audio_pooling="transformer"), False),
    ("xattn-attention-prior", dict(fusion="xattn", xattn_pooling="attention", xattn_prior_bias=True, **XATTN), True),
    ("xattn_gated-transformer-time", dict(fusion="xattn_gated", xattn_pooling="transformer",
                                          xattn_time_encoding=1.0, **XATTN), False),
    ("xattn-clipseq-prior-time", dict(fusion="xattn", mel_sequence="clip", xattn_prior_bias=True,
                                      xattn_time_encoding=2.0, **XATTN), False),
]
#: Each speech family alone (with a pooling kind each, the mean too) and in fusion models.
SPEECH_CASES: list[tuple[str, dict, bool]] = [
    ("wav2vec2-audio", dict(fusion="audio", audio_pooling="attention"), False),
    ("hubert-audio", dict(fusion="audio", audio_pooling="transformer"), False),
    ("wavlm-audio", dict(fusion="audio"), False),
    ("data2vec-audio-audio", dict(fusion="audio", audio_pooling="attention"), False),
    ("whisper-audio", dict(fusion="audio"), True),
    ("whisper-audio-transformer", dict(fusion="audio", audio_pooling="transformer"), False),
    ("whisper-xattn_gated", dict(fusion="xattn_gated", xattn_pooling="attention", xattn_prior_bias=True,
                                 xattn_time_encoding=1.0, **XATTN), True),
    ("wav2vec2-gated", dict(fusion="gated", audio_pooling="attention", clip_weight=0.5), False),
]


FAST = {"video-attention", "gated-vtrans-aattn-clip", "audio-attention", "xattn-attention-prior", "whisper-audio"}


def _params(cases: list[tuple[str, dict, bool]], *, with_id: bool = False) -> list:
    return [pytest.param(*(c if with_id else c[1:]), id=c[0], marks=() if c[0] in FAST else pytest.mark.slow)
            for c in cases]


def _family(case_id: str) -> str:
    return next(f for f in sorted(TINY_SPEECH_CONFIGS, key=len, reverse=True) if case_id.startswith(f))


def _tiny_frames(model: nn.Module) -> None:
    """Swap the VideoNet backbone(s) of ``model`` for a tiny CNN with the same 512-d output per frame."""
    video = model if getattr(model, "input_modality", None) == "video" else getattr(model, "video_model", None)
    if video is not None:
        video.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                       nn.Linear(8, video.sequence_dim))


def _build(fields: dict, family: str | None = None) -> tuple[nn.Module, ModelConfig]:
    speech = {} if family is None else dict(use_wavlm=True, wavlm_config=dict(TINY_SPEECH_CONFIGS[family]))
    cfg = ModelConfig(pretrained_video=False, n_mels=N_MELS, **speech, **fields)
    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    _tiny_frames(model)
    return model.eval(), cfg


def _batch(b: int, wave: bool) -> dict[str, torch.Tensor]:
    """``b`` clips of one second, the second and third padded (8000 and 12000 valid samples)."""
    g = torch.Generator().manual_seed(b)
    audio = torch.randn(b, 1, 16000, generator=g) * 0.1 if wave else torch.randn(b, 1, N_MELS, 101, generator=g)
    return {"audio": audio, "audio_length": torch.tensor([16000, 8000, 12000][:b]),
            "video": torch.randn(b, 2, 3, 32, 32, generator=g),
            "video_valid": torch.tensor([[1, 1], [1, 0], [1, 1]][:b], dtype=torch.bool)}


def _round_trip(model: nn.Module, cfg: ModelConfig, tmp_path, int8: bool) -> None:
    wave = cfg.audio_kind == "wave"
    path = E.write_onnx(model, _batch(2, wave), tmp_path / "m.onnx", model_cfg=cfg)
    sessions = {"fp32": ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])}
    if int8:
        q = E.quantize_int8(path, tmp_path / "m.int8.onnx")
        sessions["int8"] = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
    names = [i.name for i in sessions["fp32"].get_inputs()]
    assert tuple(names) == E.input_names(model)
    # a symbolic batch axis on every input (Whisper's log-Mel front end included), the other axes the example's
    assert all(isinstance(i.shape[0], str) for i in sessions["fp32"].get_inputs())
    assert [o.name for o in sessions["fp32"].get_outputs()] == list(E.output_names(cfg))
    for b in (3, 1):  # another batch size than the example's 2, and one
        batch = _batch(b, wave)
        with torch.no_grad():
            ref = forward_batch(model, batch, return_gate=cfg.has_gate)
        feeds = {k: batch[k].numpy() for k in names}
        got = sessions["fp32"].run(None, feeds)
        assert got[0].shape == (b, cfg.num_classes)
        np.testing.assert_allclose(got[0], ref.logits.numpy(), atol=E.FP32_TOLERANCE, rtol=0)
        np.testing.assert_allclose(got[1], ref.probs.numpy(), atol=1e-4, rtol=0)
        if cfg.has_gate:
            np.testing.assert_allclose(got[2], ref.gate.numpy(), atol=1e-4, rtol=0)
        if int8:
            probs = sessions["int8"].run(None, feeds)[1]
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
            assert np.abs(probs - ref.probs.numpy()).max() < 0.05  # quantized, not exact


@pytest.mark.parametrize("fields, int8", _params(CASES))
def test_option_exports_and_matches_pytorch(fields, int8, tmp_path) -> None:
    model, cfg = _build(fields)
    _round_trip(model, cfg, tmp_path, int8)


@pytest.mark.parametrize("case_id, fields, int8", _params(SPEECH_CASES, with_id=True))
def test_speech_backbone_exports_and_matches_pytorch(case_id, fields, int8, tmp_path) -> None:
    model, cfg = _build(fields, _family(case_id))
    assert model.input_modality != "video" and cfg.audio_kind == "wave"
    _round_trip(model, cfg, tmp_path, int8)


@pytest.mark.slow  # a whole training run, then the export, evaluate and predict commands
def test_speech_run_through_export_evaluate_and_predict(demo_root, tmp_path, capsys) -> None:
    """``emolab train`` with a tiny Whisper (audio-only, attention pooling), ``emolab export --int8``, then
    ``emolab evaluate`` and ``emolab predict`` of the export folder give the run's probabilities."""
    import pandas as pd

    folder = save_tiny_speech("whisper", tmp_path / "whisper")
    cache = tmp_path / "cache"
    assert main(["train", "--fusion", "audio", "--use_wavlm", "--audio_backbone", folder, "--audio_pooling",
                 "attention", *tiny_train_flags(demo_root, cache), "--output_dir", str(tmp_path / "out"),
                 "--run_name", "r"]) == 0
    run, out = tmp_path / "out" / "runs" / "r", tmp_path / "onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(run), "--int8", "--out", str(out), "--max_items", "6", "--batch_size", "4"]) == 0
    side = json.loads((out / E.SIDECAR).read_text())
    assert side["audio_kind"] == "wave" and side["config"]["model"]["audio_pooling"] == "attention"
    assert side["verification"]["max_abs_diff"] < E.FP32_TOLERANCE
    assert OnnxModel(out).input_names == ["audio", "audio_length"]
    capsys.readouterr()
    tables = {}
    for key, argv in {"run": [str(run)], "onnx": [str(out)], "int8": [str(out), "--int8"]}.items():
        assert main(["evaluate", *argv, "--out", str(tmp_path / f"ev-{key}"), "--device", "cpu"]) == 0, \
            capsys.readouterr().err
        tables[key] = pd.read_csv(tmp_path / f"ev-{key}" / "predictions.csv")
    cols = [c for c in tables["run"].columns if c.startswith("prob_")]
    assert tables["onnx"]["stem"].tolist() == tables["run"]["stem"].tolist() and len(cols) == 8
    assert np.abs(tables["onnx"][cols].to_numpy() - tables["run"][cols].to_numpy()).max() < 1e-4
    assert np.abs(tables["int8"][cols].to_numpy() - tables["run"][cols].to_numpy()).max() < 0.05
    wav = next(demo_root.rglob("03-01-05-01-01-01-04.wav"))
    for key, argv in {"run": [str(run)], "onnx": [str(out)]}.items():
        assert main(["predict", *argv, str(wav), "--out", str(tmp_path / f"{key}.csv"), "--device", "cpu"]) == 0
    run_p, onnx_p = (pd.read_csv(tmp_path / f"{k}.csv") for k in ("run", "onnx"))
    assert np.abs(onnx_p[cols].to_numpy() - run_p[cols].to_numpy()).max() < 1e-4
