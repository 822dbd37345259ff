"""``emolab bench``: structure of the result on a tiny configuration (never timings)."""

from __future__ import annotations

import dataclasses

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emolab.cli.main import main

TINY = ["--size", "96x64", "--seconds", "1", "--fps", "10", "--clips", "4", "--growth_base", "1", "--split_clips", "8",
        "--batch_size", "2", "--warmup", "1", "--steps", "1", "--warm_epochs", "1", "--workers", "0",
        "--wavlm", "none", "--min_seconds", "0"]


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and x > 0


@pytest.mark.slow  # runs the benchmark
def test_bench_json_structure(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results" / "bench.json"
    assert main(["bench", *TINY, "--modes", "audio,gated", "--json", "--out", str(out),
                 "--wavlm", "small", "--wavlm_clips", "2"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # stdout holds only the JSON object
    written = json.loads(out.read_text())
    assert printed == written
    assert "training, samples/s" in captured.err  # the table goes to stderr
    assert not list(out.parent.glob("*.tmp"))  # atomic write left no temporary file

    for key in ("cpu", "cores", "gpu", "torch"):
        assert key in written["machine"]
    data = written["data"]
    for key in ("naive_clips_per_s", "cold_clips_per_s", "warm_clips_per_s",
                "cache_bytes_per_clip", "cache_frame_bytes", "cache_audio_bytes"):
        assert _positive(data[key]), key
    assert data["cache_bytes"] == data["cache_frame_bytes"] + data["cache_audio_bytes"]
    assert data["cache_audio_bytes"] >= 4 * 2 * 16000  # 1 s of int16 audio per clip at least
    assert set(written["train"]) == {"audio", "gated"}
    for mode, r in written["train"].items():
        for key in ("compute_samples_per_s", "end_to_end_samples_per_s", "ratio", "rss_peak_mb",
                    "loader_samples_per_s", "loader_ratio", "epoch_s", "resident_mb"):
            assert _positive(r[key]), (mode, key)
        # the end-to-end split is the served one, resident on the CPU, timed in whole blocks of the trainer's loop
        assert r["split_clips"] == 8 and r["resident_device"] == "cpu" and r["amp_dtype"] == "float32"
        assert r["epoch_s"] == pytest.approx(8 / r["end_to_end_samples_per_s"])
        assert r["rss_delta_mb"] >= 0 and r["steps"] >= 1
    assert [g["scale"] for g in written["growth"]] == [1, 2, 4]
    assert [g["clips"] for g in written["growth"]] == [1, 2, 4]
    for g in written["growth"]:
        assert _positive(g["cold_s"]) and _positive(g["warm_s"])
        assert g["cache_bytes_per_clip"] >= 8 * 3 * 112 * 112  # the uint8 frames at least
    assert written["config"]["modes"] == ["audio", "gated"] and written["config"]["device"] == "cpu"
    w = written["wavlm_cache"]
    assert w["clips"] == 2 and w["entries_computed"] == 2 and w["cache_bytes"] > 0
    assert _positive(w["epoch_s_plain"]) and _positive(w["epoch_s_cached"]) and _positive(w["fill_s"])
    assert "WavLM stage-1 epoch" in captured.err


@pytest.mark.slow  # runs the benchmark
def test_bench_table_to_stdout_with_compile_figures(tmp_path: Path, capsys, monkeypatch) -> None:
    """``--compile`` adds the eager twin's rate, the compile seconds and the graphs dynamo holds after every epoch
    of the measure: one training graph, reused (dynamo only here: inductor would take a minute)."""
    import functools

    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    out = tmp_path / "b.json"
    assert main(["bench", *TINY, "--modes", "audio,gated", "--compile", "--out", str(out)]) == 0
    torch._dynamo.reset()
    text = capsys.readouterr().out
    assert "naive (OpenCV" in text and "emolab warm" in text and "growth" in text
    assert f"wrote {out}" in text and "compile s" in text and "speed-up" in text
    for r in json.loads(out.read_text())["train"].values():
        assert r["end_to_end_samples_per_s"] > 0 and r["compile"] is True
        assert _positive(r["eager_compute_samples_per_s"]) and r["compile_s"] >= 0
        assert r["compile_speedup"] == pytest.approx(r["compute_samples_per_s"] / r["eager_compute_samples_per_s"])
        assert r["compiled_graphs"] == 1  # each mode's step graph, compiled once for all the epochs it ran


def test_bench_rejects_unknown_mode(tmp_path: Path, capsys) -> None:
    assert main(["bench", *TINY, "--modes", "audio,nope", "--out", str(tmp_path / "b.json")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_quick_config_is_small() -> None:
    from emolab.bench.train import DEFAULT_MODES, BenchConfig

    q, full = BenchConfig.quick_config(), BenchConfig()
    assert q.quick and q.modes == DEFAULT_MODES and q.size == (1280, 720) and q.batch_size == 8
    assert q.clips < full.clips and q.steps < full.steps and q.growth_base < full.growth_base


def test_help_does_not_import_torch() -> None:
    code = "import sys; from emolab.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_convert_checkpoint_flags_come_from_the_model_fields_without_torch() -> None:
    """``emolab convert-checkpoint --help`` reads the ModelConfig fields' declarations, and imports no torch."""
    code = ("import contextlib, io, sys; from emolab.cli.main import build_parser\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            "    build_parser().parse_args(['convert-checkpoint', '--help'])\n"
            "print('torch' in sys.modules); print(out.getvalue())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert r.splitlines()[0] == "False"
    from emolab.cli.convert import CONVERT_FIELDS
    from emolab.models.registry import ModelConfig
    from emolab.utils.settings import setting_of

    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    for name in CONVERT_FIELDS:
        assert f"--{name}" in r
        meta = setting_of(fields[name])
        if meta.choices is not None and not callable(meta.choices):
            assert "{" + ",".join(map(str, meta.choices)) + "}" in r, name  # e.g. --num_classes {8,4}


@pytest.mark.parametrize("script", ["bench_data.py", "bench_train.py", "bench_fetch.py"])
def test_scripts_show_help(script: str) -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    r = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--quick" in r.stdout


def test_naive_path_does_the_seeds_work(demo_root, cache_dir) -> None:
    """The naive loader crops the face Haar finds on the first sampled frame and resizes with INTER_LINEAR, as the seed:
    its frames match emolab's with ``resize="linear"`` up to the two decoders' YUV->RGB rounding."""
    from emolab.bench.data import NaiveDataset
    from emolab.data import DataConfig, RavdessMelDataset, pair_corpus
    from emolab.data.features import BatchFeaturizer

    pairs = pair_corpus(demo_root).pairs[:2]
    naive = NaiveDataset(pairs)
    ds = RavdessMelDataset(pairs, config=DataConfig(resize="linear", face_detector="haar", cache_dir=str(cache_dir)))
    feat = BatchFeaturizer.for_dataset(ds, channels_last=False)
    for i in range(len(pairs)):
        ref = feat.item(ds[i])["video"]
        got = naive[i]["video"]
        assert got.shape == ref.shape == (8, 3, 112, 112)
        assert ds.frames(i).face == "found"  # the demo faces are found: the crop is exercised
        # identical on the demo clips; INTER_AREA instead would differ by ~0.02, no face crop by ~0.24
        assert (got - ref).abs().mean() < 0.005, (got - ref).abs().mean()


def test_fetch_costs_script(tmp_path: Path) -> None:
    """benchmarks/bench_fetch.py times both warm paths (structure only, never timings)."""
    out = tmp_path / "fetch.json"
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fetch.py"
    r = subprocess.run([sys.executable, str(path), "--quick", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for key in ("resident_fetch_ms", "loader_fetch_ms", "resident_fetch_featurize_ms", "loader_fetch_featurize_ms"):
        assert _positive(res[key]) and len(res["all_ms"][key]) == 2, key


@pytest.mark.slow  # three tiny cv sweeps
def test_jobs_bench_times_the_same_sweep_per_jobs(cv_corpus: Path, tmp_path: Path, capsys) -> None:
    """``benchmarks/bench_jobs.py``: one untimed warm-up run, then the same sweep per ``--jobs N``, each checked to
    have trained every run; runs per hour from the wall time (never asserted beyond being consistent). On the
    session's cv corpus (the sweeps read it; runs and cache go under ``tmp_path``)."""
    from emolab.bench.jobs import main as jobs_main
    from tests.configs import tiny_train_flags

    corpus = cv_corpus
    out = tmp_path / "jobs.json"
    argv = ["--data", str(corpus), "--jobs", "1,2", "--fusion", "audio", "--folds", "0,2", "--device", "cpu",
            "--out", str(out), *tiny_train_flags(corpus, tmp_path / "cache")]
    assert jobs_main(argv) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert [r["jobs"] for r in res["rows"]] == [1, 2] and res["best_jobs"] in (1, 2)
    for r in res["rows"]:
        assert r["runs"] == 2 and _positive(r["wall_s"])
        assert r["runs_per_hour"] == pytest.approx(2 / r["wall_s"] * 3600)
    assert res["rows"][0]["speedup"] == 1.0 and _positive(res["warmup_run_s"])
    assert res["config"]["folds"] == [0, 2] and res["config"]["fusion"] == "audio" and "partial" not in res
    assert "--jobs" in text and f"best: --jobs {res['best_jobs']}" in text
    with pytest.raises(SystemExit):
        jobs_main(["--jobs", "0", "--out", str(out)])


def test_jobs_bench_leaves_the_ns_it_finished(tmp_path: Path, monkeypatch) -> None:
    """A sweep stopped after ``--jobs 1`` (a GPU session's time limit) leaves that row in the JSON, marked partial."""
    import emolab.bench.jobs as jobs

    walls = iter([5.0, 10.0])  # the warm-up run, then --jobs 1

    def sweep(cmd: list[str], out: Path, env: dict, expected: int) -> float:
        wall = next(walls, None)
        if wall is None:
            raise KeyboardInterrupt  # what the time limit's signal does to the run
        return wall

    monkeypatch.setattr(jobs, "_sweep", sweep)
    out = tmp_path / "jobs.json"
    with pytest.raises(KeyboardInterrupt):
        jobs.main(["--data", str(tmp_path), "--jobs", "1,2,4", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["partial"] is True and res["warmup_run_s"] == 5.0
    assert [(r["jobs"], r["wall_s"], r["speedup"]) for r in res["rows"]] == [(1, 10.0, 1.0)]
