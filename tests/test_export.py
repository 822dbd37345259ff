"""emolab.eval.export and OnnxModel: ONNX round trip against PyTorch (fp32 within 1e-3), INT8, the sidecar,
the ``emolab export`` command and its errors, on tiny runs trained on the generated corpus."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from emolab.eval import analysis
from emolab.cli.main import main
from emolab.data.features import BatchFeaturizer
from emolab.data.loaders import make_loader
from emolab.eval import export as E
from emolab.eval.onnx_runtime import OnnxModel, is_export_dir
from emolab.models.fusion import forward_batch
from emolab.eval.robustness import load_runs


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # slow: trains and exports runs


@pytest.fixture(scope="module")
def runs(tiny_runs):
    """The session's tiny trained run folders (tests/conftest.py), by fusion."""
    return tiny_runs


@pytest.fixture(scope="module")
def gated_export(runs, tmp_path_factory):
    """``emolab export RUN --int8 --max_items 7 --batch_size 3`` of the gated run, and what it printed."""
    out = tmp_path_factory.mktemp("gated-onnx")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["export", str(runs["gated"]), "--int8", "--out", str(out), "--max_items", "7",
                     "--batch_size", "3"])
    assert code == 0
    return out, buf.getvalue()


def _test_batch(cfg, n: int) -> dict:
    ds = analysis.test_dataset(cfg, max_items=n)
    raw = next(iter(make_loader(ds, n, num_workers=0, pin_memory=False)))
    return BatchFeaturizer.for_dataset(ds, channels_last=False)(raw)


def test_gated_export_matches_pytorch(runs, gated_export):
    out, printed = gated_export
    assert {p.name for p in out.iterdir()} == {"model.onnx", "model.int8.onnx", "emolab_export.json"}
    assert "max |logit difference|" in printed and "INT8" in printed
    # an independent check: other clips, another batch size (5) than the export's example (2), run by OnnxModel
    ((_, (model, cfg)),) = load_runs([runs["gated"]]).items()
    batch = _test_batch(cfg, 5)
    with torch.no_grad():
        ref = forward_batch(model, batch, return_gate=True)
    onnx = OnnxModel(out)
    assert onnx.input_names == ["video", "audio", "audio_length", "video_valid"]
    assert onnx.output_names == ["logits", "probs", "gate"]
    got = onnx.forward_batch(batch)
    assert got.logits.shape == (5, 8) and got.gate.shape == (5, 1)
    assert np.abs(got.logits.numpy() - ref.logits.numpy()).max() < 1e-3
    assert np.abs(got.probs.numpy() - ref.probs.numpy()).max() < 1e-4
    assert np.abs(got.gate.numpy() - ref.gate.numpy()).max() < 1e-4
    # a batch of one goes through the dynamic axis too
    one = onnx(**{k: batch[k][:1] for k in onnx.input_names})
    assert one.logits.shape == (1, 8)
    np.testing.assert_allclose(one.logits.numpy(), ref.logits[:1].numpy(), atol=1e-3)


def test_sidecar(runs, gated_export):
    out, printed = gated_export
    side = json.loads((out / E.SIDECAR).read_text())
    cfg = json.loads((runs["gated"] / "config.json").read_text())
    assert side["format"] == "emolab-onnx" and side["fusion"] == "gated" and side["audio_kind"] == "mel"
    mel_and_classes = {"num_classes": cfg["model"]["num_classes"], "n_mels": cfg["model"]["n_mels"]}  # the model's
    assert side["preprocessing"] == {**cfg["data"], **mel_and_classes} and side["config"]["model"] == cfg["model"]
    assert side["class_names"] == json.loads((runs["gated"] / "test_metrics.json").read_text())["class_names"]
    shapes = {i["name"]: (i["shape"], i["dtype"]) for i in side["inputs"]}
    assert shapes == {"video": (["batch", 2, 3, 48, 48], "float32"), "audio": (["batch", 1, 64, 301], "float32"),
                      "audio_length": (["batch"], "int64"), "video_valid": (["batch", 2], "bool")}
    v = side["verification"]
    assert v["n_clips"] == 7 and 0 <= v["max_abs_diff"] < 1e-3
    assert f"{v['max_abs_diff']:.2e}" in printed
    assert v["accuracy"]["onnx"] == pytest.approx(v["accuracy"]["torch"])
    assert set(v["accuracy"]) == {"torch", "onnx", "int8"} and 0 <= v["agreement_int8"] <= 1


def test_int8_model_runs_and_is_close(runs, gated_export):
    out, _ = gated_export
    ((_, (model, cfg)),) = load_runs([runs["gated"]]).items()
    batch = _test_batch(cfg, 4)
    with torch.no_grad():
        ref = forward_batch(model, batch).probs.numpy()
    int8 = OnnxModel(out, int8=True)
    assert int8.path.name == "model.int8.onnx" and int8.path.stat().st_size < 0.5 * (out / "model.onnx").stat().st_size
    got = int8.forward_batch(batch).probs.numpy()
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert np.abs(got - ref).max() < 0.05  # quantized, not exact


def test_predict_with_the_export_folder_gives_the_runs_probabilities(runs, gated_export, demo_root, tmp_path,
                                                                     capsys):
    """``emolab predict EXPORT_DIR`` (onnxruntime) on a clip = ``emolab predict RUN`` on it (fp32 within 1e-4)."""
    import pandas as pd

    out, _ = gated_export
    video = next(demo_root.rglob("02-01-05-01-01-01-04.mp4"))
    wav = next(demo_root.rglob("03-01-05-01-01-01-04.wav"))
    tables = {}
    for key, argv in {"run": [str(runs["gated"])], "onnx": [str(out)], "int8": [str(out), "--int8"]}.items():
        csv = tmp_path / f"{key}.csv"
        assert main(["predict", *argv, str(video), "--audio", str(wav), "--out", str(csv), "--device", "cpu"]) == 0
        tables[key] = pd.read_csv(csv)
    printed = capsys.readouterr().out
    assert "(ONNX)" in printed and "(ONNX INT8)" in printed
    cols = [c for c in tables["run"].columns if c.startswith("prob_")] + ["gate"]
    ref = tables["run"][cols].to_numpy()
    assert len(cols) == 9 and np.isfinite(ref).all()
    assert np.abs(tables["onnx"][cols].to_numpy() - ref).max() < 1e-4
    assert (tables["onnx"]["pred"] == tables["run"]["pred"]).all()
    assert np.abs(tables["int8"][cols].to_numpy() - ref).max() < 0.05  # quantized, not exact
    # errors: --attention needs PyTorch, --int8 an export (with the INT8 file), a folder that is neither
    for argv, msg in [([str(out), "--attention", str(tmp_path / "a")], "--attention needs a PyTorch run"),
                      ([str(runs["gated"]), "--int8"], "--int8 needs an export folder"),
                      ([str(tmp_path)], "neither a run folder")]:
        assert main(["predict", *argv, str(video), "--audio", str(wav), "--out", str(tmp_path / "x.csv")]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_an_export_folder_scores_as_the_run(runs, gated_export, tmp_path, capsys):
    """``emolab evaluate EXPORT_DIR`` (onnxruntime) = ``emolab evaluate RUN``: same clips, probabilities within 1e-4;
    ``--int8`` scores the INT8 model; ``--int8`` with a PyTorch run is one clear line."""
    import pandas as pd

    from emolab.eval.evaluate import evaluate_run

    out, _ = gated_export
    run = evaluate_run(runs["gated"], batch_size=4)
    onnx = evaluate_run(out, batch_size=4)
    cols = [c for c in run.predictions.columns if c.startswith("prob_")]
    assert onnx.predictions["stem"].tolist() == run.predictions["stem"].tolist()
    assert np.abs(onnx.predictions[cols].to_numpy() - run.predictions[cols].to_numpy()).max() < 1e-4
    assert onnx.metrics["checkpoint"].endswith("model.onnx") and onnx.metrics["num_samples"] == run.metrics["num_samples"]
    assert main(["evaluate", str(out), "--int8", "--out", str(tmp_path / "int8")]) == 0
    int8 = pd.read_csv(tmp_path / "int8" / "predictions.csv")
    assert np.abs(int8[cols].to_numpy() - run.predictions[cols].to_numpy()).max() < 0.05  # quantized, not exact
    capsys.readouterr()
    assert main(["evaluate", str(runs["gated"]), "--int8", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--int8 needs an export folder" in err and len(err.strip().splitlines()) == 1, err


def test_predict_int8_without_the_int8_file(runs, tmp_path, demo_root, capsys):
    ((_, (model, cfg)),) = load_runs([runs["audio"]]).items()
    E.export_onnx(model, cfg, tmp_path / "onnx", max_items=2, batch_size=2)
    wav = next(demo_root.rglob("03-01-05-01-01-01-04.wav"))
    assert main(["predict", str(tmp_path / "onnx"), str(wav), "--int8", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "model.int8.onnx" in err and "--int8" in err and len(err.strip().splitlines()) == 1, err
    assert main(["predict", str(tmp_path / "onnx"), str(wav), "--out", str(tmp_path / "y.csv")]) == 0


def test_audio_export_in_library(runs, tmp_path):
    ((_, (model, cfg)),) = load_runs([runs["audio"]]).items()
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.int8.onnx").write_bytes(b"stale")  # an earlier --int8 export's
    r = E.export_onnx(model, cfg, tmp_path / "onnx", max_items=4, batch_size=4)
    assert r.n_clips == 4 and r.max_abs_diff < 1e-3 and r.int8_max_abs_diff is None
    assert not (tmp_path / "onnx" / "model.int8.onnx").exists()
    m = OnnxModel(tmp_path / "onnx")
    assert m.input_names == ["audio", "audio_length"] and m.output_names == ["logits", "probs"]
    assert m.input_modality == "audio" and m.config.model.fusion == "audio" and is_export_dir(tmp_path / "onnx")
    with pytest.raises(KeyError, match="audio_length"):
        m.run({"audio": np.zeros((1, 1, 64, 301), np.float32)})
    with pytest.raises(FileNotFoundError, match="--int8"):
        OnnxModel(tmp_path / "onnx", int8=True)


def test_export_fails_above_tolerance(runs, tmp_path):
    ((_, (model, cfg)),) = load_runs([runs["audio"]]).items()
    with pytest.raises(E.ExportError, match="differ from PyTorch"):
        E.export_onnx(model, cfg, tmp_path, max_items=2, tolerance=0.0)


def test_export_errors(runs, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["export", str(runs["audio"]), "--data_root", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "test split" in err and str(tmp_path) in err
    with pytest.raises(FileNotFoundError, match="emolab export"):
        OnnxModel(tmp_path)


def test_wavlm_export_round_trip(tmp_path):
    """A tiny random WavLM (waveform in, padding masked by audio_length): ONNX equals PyTorch on a batch of
    another size than the example, with padded clips. (WavLM fusion models export the same way: 1e-7 measured
    for gated; left out here for time, the ResNet18 export takes most of a minute.)"""
    import onnxruntime as ort

    from emolab.models import ModelConfig, build_model_from_config
    from tests.configs import tiny_wavlm_config

    torch.manual_seed(0)
    cfg = ModelConfig(fusion="audio", use_wavlm=True, wavlm_config=tiny_wavlm_config(), pretrained_video=False)
    model = build_model_from_config(cfg).eval()
    n = 4000

    def batch(b: int) -> dict:
        g = torch.Generator().manual_seed(b)
        return {"audio": torch.randn(b, 1, n, generator=g), "audio_length": torch.tensor([n, 2000, 3500][:b]),
                "video": torch.randn(b, 2, 3, 32, 32, generator=g),
                "video_valid": torch.tensor([[1, 1], [1, 0], [1, 1]][:b], dtype=torch.bool)}

    path = E.write_onnx(model, batch(2), tmp_path / "m.onnx", model_cfg=cfg)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert tuple(names) == E.input_names(model) and [o.name for o in sess.get_outputs()] == list(E.output_names(cfg))
    b = batch(3)
    assert names == ["audio", "audio_length"]
    with torch.no_grad():
        ref = forward_batch(model, b)
    got = sess.run(None, {k: b[k].numpy() for k in names})
    np.testing.assert_allclose(got[0], ref.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(got[1], ref.probs.numpy(), atol=1e-5)
