"""emolab.eval.robustness: test-time corruptions, the evaluation table, its plot and the ``emolab robustness`` command."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from emolab.eval import analysis
from emolab.eval import robustness as R
from emolab.cli.main import main
from emolab.data.audio import log_mel
from emolab.data.augment import gaussian_blur
from emolab.data.datasets import resolve_noise_path
from emolab.data.features import BatchFeaturizer
from emolab.data.noise import AudioNoise, measure_snr
from emolab.data.video import IMAGENET_MEAN, denormalize, normalize
from emolab.viz import robustness_curves

VIDEO_FAMILIES = ("blur", "darkness", "occlusion")


@pytest.fixture(scope="module")
def runs(tiny_runs):
    """The session's tiny trained run folders (tests/conftest.py), by fusion."""
    return tiny_runs


@pytest.fixture(scope="module")
def result(runs):
    return R.evaluate(R.load_runs([runs["audio"], runs["gated"]]), max_items=6, batch_size=4, device="cpu")


def _video(seed: int = 0, size: int = 112) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((2, 3, size, size), dtype=np.float32))


# --------------------------------------------------------------------------- corruptions


def test_default_corruptions():
    cs = R.default_corruptions()
    assert [c.key for c in cs] == [
        "clean", "noise 20 dB", "noise 10 dB", "noise 5 dB", "noise 0 dB", "blur k=5", "blur k=11", "blur k=21",
        "darkness x0.5", "darkness x0.25", "darkness x0.1", "occlusion eyes", "occlusion mouth",
        "missing audio", "missing video",
    ]
    assert [c.modality for c in cs[:2]] + [cs[5].modality, cs[-2].modality, cs[-1].modality] == [
        None, "audio", "video", "audio", "video"]
    assert [c.severity for c in cs[1:5]] == [1, 2, 3, 4]
    for family, value in [("fog", None), ("blur", 4), ("occlusion", "nose"), ("darkness", 1.5), ("missing", "both"),
                          ("noise", float("nan")), ("clean", 3)]:
        with pytest.raises(ValueError):
            R.Corruption(family, value)


def test_scaled_kernel_is_odd_and_relative_to_112_px():
    assert [R.scaled_kernel(k, 112) for k in (1, 5, 11, 21)] == [1, 5, 11, 21]
    assert [R.scaled_kernel(k, 48) for k in (1, 5, 11, 21)] == [1, 3, 5, 9]
    assert all(R.scaled_kernel(k, s) % 2 == 1 for k in range(1, 30, 2) for s in (24, 48, 64, 224))


@pytest.mark.parametrize("fill, colour", [("grey", IMAGENET_MEAN), ("black", (0.0, 0.0, 0.0))])
@pytest.mark.parametrize("region, box", [("eyes", (34, 62, 22, 90)), ("mouth", (67, 92, 31, 81))])
def test_occlusion_covers_exactly_the_region(region, box, fill, colour):
    assert R.occlusion_box(region, 112) == box
    video = _video()
    out = R.corrupt_frames(video, R.Corruption("occlusion", region, 1), fill=fill)
    inside = torch.zeros(112, 112, dtype=torch.bool)
    y0, y1, x0, x1 = box
    inside[y0:y1, x0:x1] = True
    expected = torch.tensor(colour).view(1, 3, 1).expand(2, 3, int(inside.sum()))
    torch.testing.assert_close(denormalize(out)[..., inside], expected, atol=1e-6, rtol=0)
    assert torch.equal(out[..., ~inside], normalize(video)[..., ~inside])  # nothing else touched
    if fill == "grey":
        assert out[..., inside].abs().max() < 1e-6  # the mean colour is zero once normalised
    with pytest.raises(ValueError, match="nose"):
        R.occlusion_box("nose", 112)


def test_blur_and_darkness_act_before_normalisation():
    video = _video(1, 48)
    blurred = R.corrupt_frames(video, R.Corruption("blur", 21, 3))
    torch.testing.assert_close(blurred, normalize(gaussian_blur(video, 9)))  # 21 px at 112 -> 9 px at 48
    assert denormalize(blurred).std() < 0.5 * video.std()
    dark = R.corrupt_frames(video, R.Corruption("darkness", 0.25, 2))
    torch.testing.assert_close(denormalize(dark), 0.25 * video, atol=1e-6, rtol=0)
    assert torch.equal(R.corrupt_frames(video, R.Corruption("clean")), normalize(video))
    assert torch.equal(R.corrupt_frames(video, R.Corruption("noise", 0.0, 1)), normalize(video))


def test_missing_modalities():
    video = _video(2)
    gone = R.corrupt_frames(video, R.Corruption("missing", "video", 2))
    assert gone.shape == video.shape and not gone.any()  # the mean colour once normalised
    torch.testing.assert_close(denormalize(gone)[0, :, 5, 5], torch.tensor(IMAGENET_MEAN))
    mel = log_mel(torch.randn(1, 48000))
    silent = R.silent_audio(mel, "mel")
    assert silent.shape == mel.shape == (1, 64, 301)
    assert torch.equal(silent, log_mel(torch.zeros(1, 48000))) and (silent == -100.0).all()
    wave = torch.randn(1, 48000)
    assert torch.equal(R.silent_audio(wave, "wave"), torch.zeros_like(wave))


@pytest.mark.slow  # trains tiny_runs
def test_noise_mixes_at_the_snr_per_clip_and_deterministically(runs, monkeypatch):
    _, cfg = analysis.load_model(runs["gated"] / "best_gated.pt")
    wave_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_wavlm=True))
    waves, mels = analysis.test_dataset(wave_cfg, max_items=3), analysis.test_dataset(cfg, max_items=3)
    assert waves.audio_kind == "wave" and mels.audio_kind == "mel"
    sources = [AudioNoise(resolve_noise_path(cfg.data_root), sample_rate=16000), AudioNoise(None)]
    assert [s.source for s in sources] == ["file", "gaussian"]
    for noise in sources:
        residuals = []
        featurize = {ds.audio_kind: BatchFeaturizer.for_dataset(ds, audio_noise=noise) for ds in (waves, mels)}

        def heard(ds, c, i, seed=0):
            cond = R.condition_for(c, cfg.data.frame_size, seed=seed)
            return featurize[ds.audio_kind].with_condition(cond).item(ds[i])["audio"]

        for snr in R.NOISE_SNRS:
            c = R.Corruption("noise", snr, 1)
            for i in range(3):
                clean, _ = waves.load_wave(i)
                noisy = heard(waves, c, i)
                assert measure_snr(clean, noisy) == pytest.approx(snr, abs=0.5)
                assert torch.equal(noisy, heard(waves, c, i))  # deterministic per clip
                mel = heard(mels, c, i)
                torch.testing.assert_close(mel, log_mel(noisy), atol=1e-3, rtol=0)  # same excerpt, Mel of it
                if snr == 0.0:
                    residuals.append(noisy - clean)
        assert not torch.allclose(residuals[0], residuals[1])  # each clip its own excerpt
        other = heard(waves, R.Corruption("noise", 0.0, 4), 0, seed=1)
        assert not torch.allclose(other - waves.load_wave(0)[0], residuals[0])  # and the seed matters


def test_conditions_of_the_corruptions():
    assert R.condition_for(R.Corruption("clean"), 112) is None
    assert R.condition_for(R.Corruption("blur", 21, 3), 48).blur_kernel == R.scaled_kernel(21, 48)
    assert R.condition_for(R.Corruption("darkness", 0.25, 2), 112).brightness == 0.75
    eyes = R.condition_for(R.Corruption("occlusion", "eyes", 1), 64, fill="black")
    assert eyes.occlusion == R.occlusion_box("eyes", 64) and eyes.fill == (0.0, 0.0, 0.0)
    assert R.condition_for(R.Corruption("missing", "audio", 1), 112).drop == "audio"
    noisy = R.condition_for(R.Corruption("noise", 5.0, 3), 112, seed=7)
    assert (noisy.snr_db, noisy.noise_seed) == (5.0, 7)
    with pytest.raises(ValueError, match="fill"):
        R.condition_for(R.Corruption("occlusion", "eyes", 1), 64, fill="pink")


# --------------------------------------------------------------------------- evaluation


@pytest.mark.slow  # trains tiny_runs
def test_table_structure(result):
    t = result.table
    assert list(t.columns) == ["model", "fusion", "corruption", "level", "modality", "severity", "input_used", "n",
                               "accuracy", "uar", "macro_f1", "weighted_f1", "nll", "mean_gate"]
    assert len(t) == 2 * 15 and (t["n"] == 6).all()
    assert list(t["model"].unique()) == ["audio-seed0", "gated-seed0"]
    assert t[["accuracy", "macro_f1"]].stack().between(0, 1).all() and (t["nll"] > 0).all()
    audio, gated = t[t["fusion"] == "audio"], t[t["fusion"] == "gated"]
    assert audio["mean_gate"].isna().all() and gated["mean_gate"].between(0, 1).all()
    assert not audio[audio["modality"] == "video"]["input_used"].any() and gated["input_used"].all()
    assert len(result.clips) == 2 * 15 * 6
    from sklearn.metrics import balanced_accuracy_score, f1_score

    for row in t.itertuples():  # UAR and weighted F1 from the clips, with scikit-learn
        c = result.clips[(result.clips["model"] == row.model) & (result.clips["corruption"] == row.corruption)
                         & (result.clips["level"] == row.level)]
        assert row.uar == pytest.approx(balanced_accuracy_score(c["label"], c["pred"]))
        assert row.weighted_f1 == pytest.approx(f1_score(c["label"], c["pred"], average="weighted"))
    assert result.pivot("accuracy").shape == (15, 2)
    summary = result.summary("gated-seed0")
    assert set(summary) == {"accuracy", "macro_f1", "mean_gate"} and len(summary["accuracy"]) == 15
    assert set(result.summary()) == {"accuracy", "macro_f1"}  # the first model has no gate
    info = result.meta["models"]["gated-seed0"]
    assert info["test_clips"] == 6 and info["noise_source"] == "file" and info["frame_size"] == 48


@pytest.mark.slow  # trains tiny_runs
def test_audio_model_ignores_video_corruptions_but_not_silence(result):
    clips = result.clips[result.clips["model"] == "audio-seed0"]
    clean = clips[clips["corruption"] == "clean"]
    for family in (*VIDEO_FAMILIES, "missing"):
        for level, part in clips[clips["corruption"] == family].groupby("level"):
            same = np.allclose(part["nll"].to_numpy(), clean["nll"].to_numpy(), atol=1e-5, rtol=0)
            if (family, level) == ("missing", "audio"):
                assert not same
            else:
                assert same, (family, level)
                assert part["pred"].tolist() == clean["pred"].tolist()
    gated = result.clips[result.clips["model"] == "gated-seed0"]
    g_clean = gated[gated["corruption"] == "clean"]["nll"].to_numpy()
    for key in [("noise", "0 dB"), ("missing", "video"), ("occlusion", "mouth")]:
        part = gated[(gated["corruption"] == key[0]) & (gated["level"] == key[1])]
        assert not np.allclose(part["nll"].to_numpy(), g_clean, atol=1e-5, rtol=0), key  # it reads both


@pytest.mark.slow  # trains tiny_runs
def test_evaluation_is_deterministic(runs, result):
    models = R.load_runs(runs["gated"])
    keys = ("clean", "noise 0 dB", "occlusion mouth", "missing video")
    cs = [c for c in R.default_corruptions() if c.key in keys]
    again = R.evaluate(models, cs, max_items=6, batch_size=5, device="cpu").table  # other batches, same numbers
    t = result.table
    first = t[(t["corruption"] + " " + t["level"]).isin(keys) | (t["corruption"] == "clean")]
    first = first[first["model"] == "gated-seed0"].reset_index(drop=True)
    assert len(again) == len(first) == 4
    assert again["accuracy"].tolist() == first["accuracy"].tolist()
    np.testing.assert_allclose(again["mean_gate"], first["mean_gate"], atol=1e-6)


@pytest.mark.slow  # trains tiny_runs
def test_noise_file_is_required_unless_gaussian(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/Noise/noise.wav here either
    (model, cfg), = R.load_runs(runs["audio"]).values()
    quiet = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, noise_path=str(tmp_path / "none.wav")))
    cs = [R.Corruption("noise", 0.0, 1)]
    with pytest.raises(R.InputError, match="--noise gaussian"):
        R.evaluate({"a": (model, quiet)}, cs, max_items=2, device="cpu")
    res = R.evaluate({"a": (model, quiet)}, cs, noise="gaussian", max_items=2, device="cpu")
    assert res.meta["models"]["a"]["noise_source"] == "gaussian" and res.table["n"].tolist() == [2]


@pytest.mark.slow  # trains tiny_runs
def test_plot(result):
    fig = robustness_curves(result.table)
    assert len(fig.axes) == 2 * 5
    assert [ax.get_title() for ax in fig.axes[:5]][0].startswith("audio noise")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["clean", "20 dB", "10 dB", "5 dB", "0 dB"]
    assert len(fig.axes[0].lines) == 2  # one line per model
    gate = robustness_curves(result.table.to_dict("records"), metrics=("mean_gate",))
    assert len(gate.axes) == 5 and len(gate.axes[0].lines) == 1  # only the gated model has a gate
    with pytest.raises(ValueError, match="empty"):
        robustness_curves([])
    with pytest.raises(ValueError, match="not a column"):
        robustness_curves(result.table, metrics=("auc",))
    with pytest.raises(ValueError, match="only clean"):
        robustness_curves(result.table[result.table["corruption"] == "clean"])


# --------------------------------------------------------------------------- command line


@pytest.mark.slow  # trains tiny_runs
def test_cli_writes_three_files(runs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["robustness", "--run", str(runs["audio"]), "--run", str(runs["gated"]), "--out", str(out),
               "--max_items", "2", "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "missing" in text and "gated-seed0" in text and f"wrote {out / 'robustness.png'}" in text
    import pandas as pd

    table = pd.read_csv(out / "robustness.csv")
    assert len(table) == 30 and (table["n"] == 2).all()
    data = json.loads((out / "robustness.json").read_text())
    assert len(data["rows"]) == 30 and data["rows"][0]["mean_gate"] is None  # NaN as null
    assert data["regions"]["eyes"] == {"top": 0.3, "bottom": 0.55, "left": 0.2, "right": 0.8}
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary file

    import shutil

    own = shutil.copytree(runs["gated"], tmp_path / "gated-run")  # the default output goes into the run folder:
    assert main(["robustness", "--run", str(own / "best_gated.pt"), "--max_items", "2",  # not the shared one
                 "--noise", "gaussian", "--device", "cpu"]) == 0
    assert (own / "robustness" / "robustness.csv").is_file()  # default: beside the first run
    assert not (runs["gated"] / "robustness").exists()


@pytest.mark.slow  # trains tiny_runs
def test_cli_bad_input(runs, tmp_path, capsys):
    empty = tmp_path / "no_ckpt"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "best_gated.pt").write_bytes((runs["gated"] / "best_gated.pt").read_bytes())
    cases = [(empty, "no checkpoint (best_*.pt)"), (no_config, "no config.json"), (tmp_path / "nope", "no such file")]
    for path, message in cases:
        assert main(["robustness", "--run", str(runs["audio"]), "--run", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(path) in err and "Traceback" not in err
    assert main(["robustness", "--run", str(runs["audio"]), "--max_items", "0"]) == 2
    assert "--max_items" in capsys.readouterr().err
    assert main(["robustness", "--run", str(runs["audio"]), "--data_root", str(tmp_path / "gone"),
                 "--device", "cpu"]) == 2
    assert str(tmp_path / "gone") in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["robustness", "--run", str(runs["audio"]), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
