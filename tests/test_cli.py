import json
import subprocess
import sys

import pytest

from emolab.cli.main import main


def test_inspect_text(demo_root, capsys):
    assert main(["inspect", "--data_root", str(demo_root)]) == 0
    out = capsys.readouterr().out
    assert "pairs: 240" in out and "actors: 4" in out
    assert "Pairs per actor and emotion" in out
    assert "actor split: train 1-2, val 3, test 4" in out
    assert "speaker leakage" in out  # the stratified split's note
    assert "six_fold" in out and "luna5" in out
    assert "240 audio-video (modality 01) files" in out


def test_inspect_json_reports_problems(demo_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(demo_root, root)
    next(root.rglob("03-01-02-01-01-01-01.wav")).unlink()
    (root / "Video_Speech_Actor_01" / "Actor_01" / "02-01-09-01-01-01-01.mp4").write_bytes(b"x")
    next(root.rglob("02-01-03-01-01-01-02.mp4")).write_bytes(b"")
    assert main(["inspect", "--data_root", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pairs"] == 238
    assert [p["path"].rsplit("/", 1)[1] for p in info["unpaired_video"]] == ["02-01-02-01-01-01-01.mp4"]
    assert info["unpaired_audio"][0]["path"].endswith("03-01-03-01-01-01-02.wav")
    assert "partner unreadable" in info["unpaired_audio"][0]["reason"]
    assert "emotion 09" in info["unparsable"][0]["reason"]
    assert "empty" in info["unreadable"][0]["reason"]
    assert info["duplicates"] == []
    assert info["per_actor_emotion"]["1"][1] == 7  # calm of actor 1 lost one pair
    assert info["splits"]["actor"]["test"]["actors"] == [4]


def test_inspect_bad_roots(tmp_path, capsys):
    assert main(["inspect", "--data_root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["inspect", "--data_root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no RAVDESS pairs found" in err and "Actor_NN" in err


def test_demo_data_command(tmp_path, capsys):
    out = tmp_path / "d"
    rc = main(["demo-data", "--out", str(out), "--actors", "1", "--size", "64x48", "--seconds", "0.5",
               "--fps", "8", "--workers", "0"])
    assert rc == 0
    assert len(list(out.rglob("*.wav"))) == 61  # 60 recordings + noise
    assert len(list(out.rglob("*.mp4"))) == 120
    assert main(["demo-data", "--out", str(out), "--size", "65x48"]) == 2
    assert "even" in capsys.readouterr().err


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "emolab", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in ("demo", "demo-data", "inspect"):
        assert cmd in r.stdout


@pytest.mark.slow  # the whole demo
def test_demo_runs_notebook_04_on_its_xattn_model_and_05_06_on_the_gated_one(tmp_path):
    from emolab.cli import notebooks as nbs
    from pathlib import Path

    from emolab.cli.main import demo_notebook_runs

    names = nbs.list_notebooks()
    ckpts = {"gated": tmp_path / "g" / "best_gated.pt", "xattn": tmp_path / "x" / "best_xattn.pt"}
    runs = demo_notebook_runs(names, tmp_path / "corpus", ckpts)
    by_notebook = {Path(n).name[:2]: params for group, params in runs for n in group}
    assert sorted(by_notebook) == [p.name[:2] for p in names]  # each notebook once
    assert by_notebook["04"]["checkpoint"] == str(ckpts["xattn"]) and by_notebook["04"]["SMOKE"] is False
    assert by_notebook["05"]["checkpoint"] == by_notebook["06"]["checkpoint"] == str(ckpts["gated"])
    assert all(by_notebook[k]["SMOKE"] is True and "checkpoint" not in by_notebook[k] for k in ("01", "02", "03"))
    for group, params in runs:
        for n in group:
            nbs.check_parameters(n, params)  # every name is a parameter of its notebook
    without_xattn = demo_notebook_runs(names, tmp_path, {"gated": ckpts["gated"]})
    assert any(any(Path(n).name.startswith("04") for n in g) and p["SMOKE"] for g, p in without_xattn)
