"""The notebook layer: conventions of the committed notebooks, the headless runner, grids, refresh.

nbval itself re-runs the committed notebooks (``notebooks/*.ipynb`` are collected
by ``make test``); these tests check what nbval cannot: that every notebook is
thin and parameterised, that committed outputs are clean, and that the runner,
the grid summary and the refresh work.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from emolab.cli import notebooks as nbs
from emolab.eval import notebook as nbh
from emolab.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED_PARAMETERS = {"data_root", "run_dir", "seed", "SMOKE"}
# Things a thin notebook leaves to emolab (STYLE.md "Notebooks").
FORBIDDEN = [
    (re.compile(r"^\s*(async\s+)?def\s", re.M), "a function definition"),
    (re.compile(r"^\s*class\s", re.M), "a class definition"),
    (re.compile(r"\bnn\.Module\b|\btorch\.nn\b"), "a model definition"),
    (re.compile(r"\bDataset\)|\bDataLoader\("), "a dataset or loader"),
    (re.compile(r"\.backward\(|\boptimizer\.step\(|\.zero_grad\("), "a training loop"),
    (re.compile(r"\bfor\s+epoch\b"), "an epoch loop"),
]


def _tiny_notebook(path: Path, body: str = "", params: str = "") -> Path:
    """A thin notebook in the house layout that records its parameters."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    cells = [
        new_markdown_cell("# tiny"),
        new_code_cell("from emolab.cli.notebooks import record, smoke_default"),
        new_code_cell(f"run_dir = None\nseed = 0\nscale = 1.0\nSMOKE = smoke_default()\n{params}"),
        new_code_cell(body or "print('seed', seed)\nrecord(run_dir, seed=seed, value=seed * scale, smoke=SMOKE)"),
    ]
    cells[2].metadata["tags"] = ["parameters"]
    nb.cells = cells
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------- committed notebooks


def test_there_are_numbered_notebooks():
    names = [p.name for p in COMMITTED]
    assert names[:2] == ["01_pairing_inspection.ipynb", "02_augmentation_preview.ipynb"]
    assert [p.stem for p in nbs.list_notebooks()] == [p.stem for p in COMMITTED]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_notebook_is_thin_and_parameterised(path):
    from papermill.translators import PythonTranslator

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    names = {p.name for p in PythonTranslator.inspect(tagged[0])}
    assert REQUIRED_PARAMETERS <= names, f"parameters cell lacks {REQUIRED_PARAMETERS - names}"
    assert "smoke_default()" in tagged[0].source
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for pattern, what in FORBIDDEN:
            assert not pattern.search(cell.source), f"cell {i} holds {what}: keep it in emolab"
    code = [c for c in nb.cells if c.cell_type == "code"]
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert len(markdown) >= len(code) // 2, "explain what the reader is looking at between code cells"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_outputs_are_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert nbs.clean_notebook(copy.deepcopy(nb)) == nb, "run `make notebooks-refresh` (outputs not cleaned)"
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "every code cell executed, in order"
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata
    nbs._check_outputs(nb, path)  # no stderr or errors outside nbval-ignore-output cells
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    for volatile in (str(ROOT), "/tmp/", "/home/", "Traceback"):
        assert volatile not in text, f"{volatile!r} in the committed outputs"


# --------------------------------------------------------------------------- helpers


def test_resolve_notebook_by_number_name_and_path(tmp_path):
    first = COMMITTED[0]
    assert nbs.resolve_notebook("01") == first
    assert nbs.resolve_notebook("1") == first
    assert nbs.resolve_notebook(first.stem) == first
    assert nbs.resolve_notebook(first.stem[3:]) == first
    assert nbs.resolve_notebook(str(first)) == first
    with pytest.raises(FileNotFoundError, match="known: 01_pairing_inspection"):
        nbs.resolve_notebook("99")


@pytest.mark.parametrize(
    "text, value",
    [("3", 3), ("0.5", 0.5), ("True", True), ("false", False), ("None", None), ("[1, 2]", [1, 2]),
     ("data/demo", "data/demo"), ("'x'", "x"), ("six_fold", "six_fold")],
)
def test_parse_value(text, value):
    assert nbs.parse_value(text) == value


def test_grid_points():
    assert nbs.grid_points({}) == [{}]
    assert nbs.grid_points({"seed": [0, 1], "fold": [0, 1, 2]})[:4] == [
        {"seed": 0, "fold": 0}, {"seed": 0, "fold": 1}, {"seed": 0, "fold": 2}, {"seed": 1, "fold": 0}
    ]
    with pytest.raises(ValueError, match="list of values"):
        nbs.grid_points({"seed": "01"})


def test_record_merges_and_skips_without_run_dir(tmp_path):
    import numpy as np

    assert nbh.record(None, a=1) == {"a": 1}
    assert not list(tmp_path.iterdir())
    nbh.record(tmp_path, a=1, b=np.float32(0.5), c={"x": (1, 2)})
    nbh.record(tmp_path, a=2, d=float("nan"))
    assert nbh.read_metrics(tmp_path) == {"a": 2, "b": 0.5, "c": {"x": [1, 2]}, "d": None}
    with pytest.raises(TypeError, match="cannot record"):
        nbh.record(tmp_path, bad=object())
    assert nbs._flatten({"split": {"train": 3, "test": 1}, "n": 4, "empty": {}}) == {
        "split.train": 3, "split.test": 1, "n": 4, "empty": {}}


def test_smoke_default(monkeypatch):
    monkeypatch.delenv("EMOLAB_SMOKE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert nbh.smoke_default() is False
    monkeypatch.setenv("CI", "true")
    assert nbh.smoke_default() is True
    monkeypatch.setenv("EMOLAB_SMOKE", "0")
    assert nbh.smoke_default() is False
    monkeypatch.setenv("EMOLAB_SMOKE", "1")
    monkeypatch.delenv("CI")
    assert nbh.smoke_default() is True


def test_resolve_data_root_and_display_path(tmp_path, monkeypatch):
    assert nbh.resolve_data_root(tmp_path) == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="not a folder"):
        nbh.resolve_data_root(tmp_path / "missing")
    assert nbh.display_path(ROOT / "data" / "demo") == "data/demo"
    monkeypatch.chdir(tmp_path)
    assert nbh.display_path(tmp_path / "x" / "y") == "x/y"
    # The default is the checkout's data/demo whatever the working folder.
    default = nbh.resolve_data_root(None, generate=False) if (ROOT / "data/demo").is_dir() else None
    if default is not None:
        assert default == (ROOT / "data" / "demo").resolve()


def test_clean_notebook_strips_volatile_metadata():
    nb = new_notebook()
    nb.metadata.update(
        papermill={"duration": 1.2}, widgets={"application/vnd.jupyter.widget-state+json": {}},
        language_info={"name": "python", "version": "3.11.7", "file_extension": ".py"},
        kernelspec={"name": "emolab-current-env", "display_name": "x", "language": "python"},
    )
    params = new_code_cell("seed = 0", execution_count=7, metadata={"tags": ["parameters"]})
    injected = new_code_cell("seed = 1", execution_count=8, metadata={"tags": ["injected-parameters"]})
    shown = new_code_cell("panel", execution_count=9, metadata={"tags": [], "execution": {"iopub.status.busy": "t"},
                                                                   "papermill": {"duration": 0.1}})
    shown.outputs = [
        new_output("execute_result", data={"text/plain": "Panel()",
                                           "application/vnd.jupyter.widget-view+json": {"model_id": "abc"}},
                   execution_count=9),
        new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "def"}}),
        new_output("stream", name="stdout", text="hi\n"),
    ]
    empty = new_code_cell("")
    nb.cells = [new_markdown_cell("# t"), params, injected, shown, empty]
    out = nbs.clean_notebook(nb)
    assert "papermill" not in out.metadata and "widgets" not in out.metadata
    assert out.metadata["kernelspec"]["name"] == "python3"
    assert out.metadata["language_info"] == {"name": "python", "file_extension": ".py"}
    assert [c.source for c in out.cells] == ["# t", "seed = 0", "panel", ""]
    assert [c.get("execution_count") for c in out.cells[1:]] == [1, 2, None]
    assert out.cells[2].metadata == {}
    assert [o.output_type for o in out.cells[2].outputs] == ["execute_result", "stream"]
    assert out.cells[2].outputs[0].data == {"text/plain": "Panel()"}
    assert out.cells[2].outputs[0].execution_count == 2
    assert nbs.clean_notebook(copy.deepcopy(out)) == out


# --------------------------------------------------------------------------- running


@pytest.mark.slow  # starts a kernel and executes a notebook
def test_run_notebook_writes_run_folder(tmp_path):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    out = nbs.run_notebook(nb, {"seed": 3}, tmp_path / "run", timeout=120)
    assert out == (tmp_path / "run" / "tiny.ipynb").resolve()
    assert nbh.read_metrics(out.parent) == {"seed": 3, "value": 3.0, "smoke": nbh.smoke_default()}
    executed = nbformat.read(out, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


@pytest.mark.slow  # starts a kernel and executes a notebook
def test_run_grid_summary_and_failures(tmp_path):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb", body=(
        "if seed == 2:\n    raise RuntimeError('seed 2 fails')\n"
        "record(run_dir, seed=seed, value=seed * scale)"
    ))
    summary = nbs.run_grid([nb], {"seed": [0, 2], "scale": [1.0, 0.5]}, {"SMOKE": True}, tmp_path / "grid",
                           timeout=120)
    assert list(summary["status"]) == ["ok", "ok", "failed", "failed"]
    assert list(summary.columns[:4]) == ["notebook", "seed", "scale", "status"]
    assert summary["value"].tolist()[:2] == [0.0, 0.0]
    assert summary["error"].iloc[2].startswith("RuntimeError: seed 2 fails")
    csv = (tmp_path / "grid" / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("notebook,seed,scale,status") and len(csv) == 5
    assert (tmp_path / "grid" / "tiny" / "seed=0,scale=0.5" / "tiny.ipynb").is_file()


@pytest.mark.slow  # starts a kernel and executes a notebook
def test_cli_notebooks_run_with_grid(tmp_path, capsys):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    rc = main(["notebooks", "run", str(nb), "-p", "scale", "2", "--grid", "seed=1,2", "--out", str(tmp_path / "o")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "tiny [seed=1]: ok" in text and "summary:" in text
    rows = (tmp_path / "o" / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and "value" in rows[0]
    assert rows[0].startswith("notebook,seed,status,") and rows[0].endswith("seconds,run_dir,error")
    assert nbh.read_metrics(tmp_path / "o" / "tiny" / "seed=2") == {"seed": 2, "value": 4, "smoke": nbh.smoke_default()}
    assert main(["notebooks", "run", "no_such_notebook"]) == 2
    assert main(["notebooks", "run", str(nb), "--grid", "seed"]) == 2


def test_unknown_parameter_is_an_error_listing_the_parameters(tmp_path, capsys):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    assert nbs.notebook_parameters(nb) == {"run_dir": "None", "seed": "0", "scale": "1.0", "SMOKE": "smoke_default()"}
    with pytest.raises(ValueError, match=r"tiny has no parameter 'sede'; its parameters: run_dir \(default None\), seed"):
        nbs.run_notebook(nb, {"sede": 1}, tmp_path / "run")
    assert not (tmp_path / "run" / "tiny.ipynb").exists()
    with pytest.raises(ValueError, match="'fold'"):
        nbs.run_grid([nb], {"fold": [0, 1]}, {}, tmp_path / "grid")
    capsys.readouterr()
    assert main(["notebooks", "run", str(nb), "-p", "sede", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no parameter 'sede'" in err and "scale (default 1.0)" in err
    assert not (tmp_path / "o").exists()  # nothing ran


@pytest.mark.slow  # starts a kernel and executes a notebook
def test_headless_kernels_start_quietly(tmp_path, capfd):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    nbs.run_notebook(nb, {"seed": 1}, tmp_path / "run", timeout=120)
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out
    assert "WARNING" not in captured.err


@pytest.mark.slow  # starts a kernel and executes a notebook
def test_refresh_committed_cleans_and_refuses_stderr(tmp_path):
    nb = _tiny_notebook(tmp_path / "05_tiny.ipynb")
    (done,) = nbs.refresh_committed([nb], timeout=120)
    refreshed = nbformat.read(done, as_version=4)
    assert nbs.clean_notebook(copy.deepcopy(refreshed)) == refreshed
    assert refreshed.cells[-1].outputs[0].text == "seed 0\n"
    assert "True" in json.dumps(refreshed.cells[-1].outputs)  # smoke mode while refreshing

    noisy = _tiny_notebook(tmp_path / "06_noisy.ipynb", body="import sys\nprint('oops', file=sys.stderr)")
    before = noisy.read_text()
    with pytest.raises(ValueError, match="oops"):
        nbs.refresh_committed([noisy], timeout=120)
    assert noisy.read_text() == before


@pytest.mark.slow  # starts a kernel and executes a notebook
def test_refresh_refuses_a_run_that_overlapped_a_code_edit(tmp_path):
    """A refresh once committed notebook 04's outputs from a run that overlapped a 20-s mutation of the
    trainer in the same checkout; every later nbval run then failed on them. The run here edits a watched
    source file the way that mutation did."""
    src = tmp_path / "pkg"
    (src / "train").mkdir(parents=True)
    (src / "train" / "trainer.py").write_text("STEP = True\n")
    (src / "notes.txt").write_text("not a source file\n")
    edit = tmp_path / "05_edit.ipynb"
    _tiny_notebook(edit, body=f"import pathlib\npathlib.Path({str(src / 'train' / 'trainer.py')!r}).write_text('STEP = False\\n')")
    before = edit.read_text()
    with pytest.raises(ValueError, match=r"05_edit.ipynb: 1 source file\(s\) under .* changed while it ran \(train/trainer.py\)"):
        nbs.refresh_committed([edit], timeout=120, watch=src)
    assert edit.read_text() == before

    touch = tmp_path / "06_other.ipynb"  # a file that is not Python source may change
    _tiny_notebook(touch, body=f"import pathlib\npathlib.Path({str(src / 'notes.txt')!r}).write_text('changed')")
    (done,) = nbs.refresh_committed([touch], timeout=120, watch=src)
    assert nbformat.read(done, as_version=4).cells[-1].execution_count == 3


@pytest.mark.slow  # starts a kernel and executes a notebook
def test_pairing_notebook_on_a_small_corpus(tmp_path, demo_root):
    out = nbs.run_notebook("01", {"data_root": str(demo_root), "SMOKE": True}, tmp_path / "run01", timeout=300)
    metrics = nbh.read_metrics(out.parent)
    assert metrics["pairs"] == 240 and metrics["actors"] == 4 and metrics["problems"] == 0
    assert metrics["stratified_shared_actors"] == 4
    assert sum(metrics["actor_split"].values()) == 240


@pytest.mark.slow  # starts a kernel and executes a notebook
def test_augmentation_notebook_on_a_small_corpus(tmp_path, demo_root):
    out = nbs.run_notebook("02", {"data_root": str(demo_root), "num_frames": 4}, tmp_path / "run02", timeout=300)
    metrics = nbh.read_metrics(out.parent)
    assert metrics["clip"] == "01-05-02-01-01-01"
    assert metrics["frames"] == [4, 112, 112, 3] and metrics["log_mel"] == [1, 64, 301]
    assert metrics["measured_snr_db"] == {"20 dB": 20.0, "10 dB": 10.0, "5 dB": 5.0, "0 dB": 0.0}


def test_output_folder_keeps_the_model_unless_smoke(tmp_path, monkeypatch):
    given = nbh.output_folder(tmp_path / "given", "03", smoke=True)
    assert given.path == (tmp_path / "given").resolve() and not given.temporary
    (given.path / "best_gated.pt").write_bytes(b"x")
    given.cleanup()
    assert (given.path / "best_gated.pt").is_file()  # a folder the caller chose is never removed

    smoke = nbh.output_folder(None, "03", smoke=True)
    assert smoke.temporary and smoke.path.is_dir()
    smoke.cleanup()
    assert not smoke.path.exists()  # CI and nbval leave nothing behind

    monkeypatch.setattr(nbh, "repo_root", lambda: tmp_path)
    kept = nbh.output_folder(None, "04", smoke=False)
    assert kept.path == (tmp_path / "outputs" / "notebooks" / "04").resolve() and not kept.temporary
    kept.cleanup()
    assert kept.path.is_dir()


def test_display_output_dir_hides_only_smoke_temporary_folders(tmp_path):
    smoke = nbh.output_folder(None, "03", smoke=True)
    try:
        assert nbh.display_output_dir(smoke.path) == "<temporary folder>"
        assert nbh.display_output_dir(smoke.path / "runs" / "x").endswith("/runs/x")  # only the folder itself
    finally:
        smoke.cleanup()
    assert nbh.display_output_dir(tmp_path) == str(tmp_path.resolve())  # a folder the caller chose: as it is
    assert nbh.display_output_dir(nbh.repo_root() / "outputs" / "x") == "outputs/x"
