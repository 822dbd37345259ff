"""Issue 18's GPU session: the tables rendered from results JSON, the session script's time budget, the helpers it
runs (clip generation, the WavLM figure alone). A GPU session has minutes, so what it runs is checked here first."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emolab.bench.tables import SETS, main as tables_main, render

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"


def _rows(md: str, first_header_cell: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first markdown table whose header starts with ``first_header_cell``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _num(cell: str) -> float:
    return float(cell.strip("*"))


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def test_cpu_train_tables_equal_the_json() -> None:
    md = render(RESULTS, "cpu")
    for name, header in (("bench.json", "batch 8 (`bench.json`"), ("bench_b32.json", "batch 32 (`bench_b32.json`")):
        res = _json(name)
        rows = _rows(md, header)
        assert [r[0] for r in rows] == list(res["train"])
        for row, (mode, r) in zip(rows, res["train"].items()):
            want = [r["compute_samples_per_s"], r["end_to_end_samples_per_s"], r["ratio"], r["loader_samples_per_s"],
                    r["loader_ratio"], r["loader_workers"]]
            assert [_num(c) for c in row[1:7]] == pytest.approx(want, abs=0.005), mode
            assert _num(row[7]) == pytest.approx(r["epoch_s"], rel=0.01) and _num(row[8]) == pytest.approx(
                r["rss_peak_mb"], abs=0.5)
            assert row[3].startswith("**") == (r["ratio"] >= 0.9), mode  # bold: the CPU target met


def test_cpu_batch8_rows_are_the_readmes() -> None:
    """The rendered rows are those of the README's hand-made CPU table: the same shape for the GPU figures."""
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    assert _rows(render(RESULTS, "cpu"), "batch 8 (`bench.json`") == _rows(readme, "batch 8 (`bench.json`")


def test_cpu_decode_compile_jobs_wavlm_tables_equal_the_json() -> None:
    md = render(RESULTS, "cpu")
    decode = {r[0].strip("`"): r for r in _rows(md, "run | clips | workers | cores")}
    for name in ("data.json", "data_1worker.json", "bench.json", "bench_b32.json", "bench_compile.json"):
        res = _json(name)
        d = res.get("data", res) if name.startswith("bench") else res
        row = decode[name]
        assert int(row[1]) == d["clips"] and int(row[3]) == res["machine"]["cores"]
        assert [_num(c) for c in row[4:7]] == pytest.approx(
            [d["naive_clips_per_s"], d["cold_clips_per_s"], d["cold_clips_per_s"] / d["naive_clips_per_s"]], abs=0.005)
    comp = _json("bench_compile.json")["train"]
    for row in _rows(md, "mode | compile s"):
        r = comp[row[0]]
        assert [_num(c) for c in row[1:5]] == pytest.approx(
            [r["compile_s"], r["eager_compute_samples_per_s"], r["compute_samples_per_s"], r["compile_speedup"]],
            abs=0.051)
        assert int(row[5]) == r["compiled_graphs"]
    jobs = _json("jobs.json")
    rows = _rows(md, "`--jobs`")
    assert [int(r[0]) for r in rows] == [r["jobs"] for r in jobs["rows"]]
    for row, r in zip(rows, jobs["rows"]):
        assert [_num(c) for c in row[2:5]] == pytest.approx([r["wall_s"], r["runs_per_hour"], r["speedup"]], abs=0.5)
    w = _json("bench.json")["wavlm_cache"]
    (row,) = _rows(md, "run | backbone")
    assert [_num(c) for c in row[5:10]] == pytest.approx(
        [w["epoch_s_plain"], w["fill_s"], w["epoch_s_cached"], w["speedup"], w["break_even_epochs"]], abs=0.051)


def test_gpu_set_renders_cuda_memory_every_core_count_and_the_wavlm_run(tmp_path: Path, capsys) -> None:
    """The GPU names: files made from the CPU ones, as the session would write them on a GPU machine."""
    names = SETS["gpu"]
    for cpu, gpu in (("bench.json", names["b8"]), ("bench_b32.json", names["b32"]), ("jobs.json", names["jobs"])):
        res = _json(cpu)
        res["machine"]["gpu"] = "NVIDIA H200"
        for r in res.get("train", {}).values():
            r["cuda_max_allocated_mb"] = 1234.4
        if cpu == "bench.json":
            res["train"]["video"]["ratio"] = 0.93  # the CPU's target met, the GPU's not
        (tmp_path / gpu).write_text(json.dumps(res))
    for cores in (2, 16):
        res = _json("data.json")
        res["machine"]["cores"], res["workers"] = cores, cores
        (tmp_path / f"data_gpu_{cores}cores.json").write_text(json.dumps(res))
    wav = {"machine": _json("bench.json")["machine"], "wavlm_cache": {**_json("bench.json")["wavlm_cache"], "clips": 1080}}
    (tmp_path / names["wavlm"]).write_text(json.dumps(wav))
    assert tables_main(["--dir", str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert "GPU NVIDIA H200" in md and "target ≥ 0.95" in md
    rows = _rows(md, "batch 8 (`bench_gpu.json`")
    assert all(r[9] == "1234" for r in rows) and len(rows[0]) == 10
    assert [r[3] for r in rows] == ["**1.01**", "0.93", "**0.97**", "**0.98**"]  # bold: at least 0.95
    decode = _rows(md, "run | clips | workers | cores")
    assert [(r[0], r[3]) for r in decode[:2]] == [("`data_gpu_16cores.json`", "16"), ("`data_gpu_2cores.json`", "2")]
    assert [r[2] for r in _rows(md, "run | backbone")] == ["1080", "16"]  # wavlm_gpu.json, then bench_gpu.json's
    assert f"Not found in {tmp_path}: {names['compile']}." in md


def test_tables_name_the_folder_when_nothing_is_there(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        tables_main(["--dir", str(tmp_path)])
    assert err.value.code == 1
    assert str(tmp_path) in capsys.readouterr().err
    (tmp_path / SETS["gpu"]["b8"]).write_text("{not json")
    with pytest.raises(SystemExit):
        tables_main(["--dir", str(tmp_path)])
    assert "not valid JSON" in capsys.readouterr().err


def _limits() -> dict[str, int]:
    """Each step's nominal seconds, as the script passes them to ``step``."""
    text = SCRIPT.read_text()
    return {m[0]: int(m[1]) for m in re.findall(r"\bstep (\w+) (\d+) ", text)}


def test_session_parts_fit_one_call() -> None:
    """PART=1 and PART=2 each fit BUDGET with the setup (wheels, import check: ~30 s), and BUDGET ends the command
    inside one 590 s call; the header's table says the same limits as the code."""
    text = SCRIPT.read_text()
    budget = int(re.search(r"BUDGET=\$\{BUDGET:-(\d+)\}", text)[1])
    limits = _limits()
    parts = {p: re.search(rf"\n    {p}\) STEPS=\$\{{STEPS:-\"([\w ]+)\"\}}", text)[1].split() for p in ("1", "2", "all")}
    assert parts["1"] + parts["2"] == parts["all"] and set(parts["all"]) | {"clips"} == set(limits)
    setup = 30 + limits["clips"]
    for p in ("1", "2"):
        assert setup + sum(limits[s] for s in parts[p]) + 10 <= budget, p
    assert budget + 20 <= 590
    for name, secs in limits.items():
        if name != "clips":
            assert re.search(rf"#\s+\d\. {name}\s.*\s{secs} s\n", text), name
    assert parts["all"][:3] == ["b8", "b32", "jobs"]  # the issue's first figures first


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_session_script_parses_and_rejects_a_bad_part(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    r = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PART": "3", "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path)})
    assert r.returncode == 2 and "PART must be 1, 2 or all" in r.stderr


@pytest.mark.slow  # encodes H.264 clips
def test_generated_clips_are_the_same_from_several_processes(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "bench_data.py"
    for procs in (1, 2):
        r = subprocess.run([sys.executable, str(script), "--generate", str(tmp_path / f"p{procs}"), "--clips", "3",
                            "--size", "96x64", "--seconds", "1", "--fps", "10", "--processes", str(procs)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(tmp_path / "p1") for p in (tmp_path / "p1").rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".wav"]) == 3
    assert files == sorted(p.relative_to(tmp_path / "p2") for p in (tmp_path / "p2").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "p1" / f).read_bytes() == (tmp_path / "p2" / f).read_bytes(), f


@pytest.mark.slow  # builds a small WavLM and trains its head
def test_wavlm_script_writes_the_cache_figure(tmp_path: Path) -> None:
    out = tmp_path / "wavlm.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_wavlm.py"), "--clips", "4", "--wavlm",
                        "small", "--batch_size", "2", "--epochs", "1", "--device", "cpu", "--processes", "2",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    w = res["wavlm_cache"]
    assert w["clips"] == 4 and w["entries_computed"] == 4 and w["epoch_s_plain"] > 0 and res["machine"]["cores"] >= 1
    assert "break-even after" in r.stdout
