"""tools/check_layers.py: the real tree is clean, and each rule fails on a small synthetic tree that breaks it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "check_layers.py"

_spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
check_layers = importlib.util.module_from_spec(_spec)
sys.modules["check_layers"] = check_layers  # dataclasses look their module up there
_spec.loader.exec_module(check_layers)


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """Writes ``emolab/<path>`` files (dedented) plus an empty ``__init__.py`` in every folder that lacks one."""
    pkg = root / "emolab"
    for rel, text in {"__init__.py": "", **files}.items():
        f = pkg / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    for d in [pkg, *(p for p in pkg.rglob("*") if p.is_dir())]:
        if not (d / "__init__.py").exists():
            (d / "__init__.py").write_text("")
    return root


def violations(root: Path, rule: str) -> list[str]:
    return check_layers.check(root)[rule]


# ------------------------------------------------------------------ the real tree
def test_the_real_tree_is_clean() -> None:
    res = run_script()
    assert res.returncode == 0, f"tools/check_layers.py found violations:\n{res.stdout}{res.stderr}"
    assert "ok (" in res.stdout


# ------------------------------------------------------------------ a clean synthetic tree
CLEAN = {
    "utils/files.py": "import os\n",
    "data/video.py": "from emolab.utils import files\nfrom emolab.utils.files import os\n",
    "data/audio.py": "from .video import files\nfrom . import video\n",
    # over 500 lines, but exempt
    "data/synthetic/demo.py": "from ..audio import video\nfrom emolab.utils.files import os\n" + "x = 1\n" * 600,
    "models/net.py": "import emolab.data.video\nfrom emolab.data import audio\n",
    "cli/main.py": "from emolab.models import net\nfrom emolab.data.audio import __doc__\n",
    "__init__.py": "from emolab.cli.main import net\n",
    "__main__.py": "import emolab\nfrom emolab.cli import main\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = make_tree(tmp_path, CLEAN)
    assert check_layers.check(root) == {"import cycles": [], "layers": [], "private names": [], "module size": []}
    res = run_script(str(root))
    assert res.returncode == 0 and "ok (13 modules" in res.stdout, res.stdout + res.stderr


# ------------------------------------------------------------------ a) cycles
@pytest.mark.parametrize("a_text, b_text", [
    ("import emolab.data.b\n", "from emolab.data.a import x\n"),  # module level
    ("def f():\n    from emolab.data import b\n", "from emolab.data.a import x\n"),  # inside a function
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from emolab.data.b import B\n",
     "from .a import x\n"),  # under TYPE_CHECKING, and a relative import
    ("from . import b\n", "import importlib\nm = importlib.import_module('emolab.data.a')\n"),
], ids=["module-level", "in-function", "type-checking-relative", "from-package-import-submodule"])
def test_a_two_module_cycle_fails(tmp_path: Path, a_text: str, b_text: str) -> None:
    root = make_tree(tmp_path, {"data/a.py": a_text, "data/b.py": b_text})
    (cycle,) = violations(root, "import cycles")
    assert "emolab.data.a -> emolab.data.b (emolab/data/a.py:" in cycle
    assert "-> emolab.data.a (emolab/data/b.py:" in cycle
    res = run_script(str(root))
    assert res.returncode == 1 and "== import cycles: 1" in res.stdout and "1 violation(s)" in res.stderr


def test_importing_a_package_counts_as_importing_its_init(tmp_path: Path) -> None:
    # data/__init__ re-exports from data.a, and data.a imports the package (its __init__) back
    root = make_tree(tmp_path, {"data/__init__.py": "from emolab.data.a import f\n",
                                "data/a.py": "def f():\n    import emolab.data\n    from emolab.data import g\n"})
    (cycle,) = violations(root, "import cycles")
    assert cycle.startswith("import cycle: emolab.data -> emolab.data.a (emolab/data/__init__.py:1)")


def test_a_longer_cycle_across_packages_is_reported_once_with_its_chain(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"cli/a.py": "from ..eval import b\n", "eval/b.py": "from emolab.viz.c import x\n",
                                "viz/c.py": "def f():\n    from emolab.cli.a import y\n",
                                "viz/d.py": "from emolab.viz import c\n"})
    (cycle,) = violations(root, "import cycles")
    assert cycle == ("import cycle: emolab.cli.a -> emolab.eval.b (emolab/cli/a.py:1) -> emolab.viz.c "
                     "(emolab/eval/b.py:1) -> emolab.cli.a (emolab/viz/c.py:2)")


def test_parent_packages_of_an_import_are_not_counted(tmp_path: Path) -> None:
    # Python initialises emolab.data before emolab.data.b whoever imports it: that is no cycle to report
    root = make_tree(tmp_path, {"data/__init__.py": "from emolab.data.a import f\n",
                                "data/a.py": "import emolab.data.b\nf = 1\n", "data/b.py": ""})
    assert violations(root, "import cycles") == []


# ------------------------------------------------------------------ b) layers
@pytest.mark.parametrize("path, text, expected", [
    ("data/video.py", "from emolab.models import net\n", "emolab.data.video (layer data) imports emolab.models"),
    ("data/synthetic/demo.py", "def f():\n    import emolab.train.loop\n",
     "emolab.data.synthetic.demo (layer data) imports emolab.train.loop (a higher layer, train)"),
    ("experiments/cv.py", "from emolab.bench import speed\n",
     "emolab.experiments.cv (layer experiments) imports emolab.bench.speed (a same-rank layer, bench)"),
    ("viz/plots.py", "from emolab.train import loop\n",
     "emolab.viz.plots (layer viz) imports emolab.train.loop (a higher layer, train)"),
    ("models/net.py", "from ..viz import plots\n",
     "emolab.models.net (layer models) imports emolab.viz.plots (a same-rank layer, viz)"),
    ("utils/lru.py", "from emolab.data import thing\n", "emolab.utils.lru (layer utils) imports emolab.data"),
])
def test_an_upward_import_fails(tmp_path: Path, path: str, text: str, expected: str) -> None:
    files = {"data/thing.py": "", "models/net.py": "", "train/loop.py": "", "bench/speed.py": "", "viz/plots.py": "",
             path: text}
    root = make_tree(tmp_path, files)
    (msg,) = violations(root, "layers")
    assert msg.startswith(f"emolab/{path}:") and expected in msg
    assert run_script(str(root)).returncode == 1


def test_the_root_package_is_importable_only_while_it_is_a_leaf(tmp_path: Path) -> None:
    files = {"data/thing.py": "from emolab import __version__\n", "cli/main.py": "", "__init__.py": "__version__ = '1'\n"}
    assert violations(make_tree(tmp_path / "leaf", files), "layers") == []
    files["__init__.py"] = "from emolab.cli import main\n__version__ = '1'\n"
    (msg,) = violations(make_tree(tmp_path / "top", files), "layers")
    assert "emolab.data.thing (layer data) imports emolab (a higher layer, top)" in msg


def test_a_module_outside_every_layer_folder_fails(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"fileio.py": "", "misc/thing.py": ""})
    assert [m.split(":")[0] for m in violations(root, "layers")] == ["emolab/fileio.py", "emolab/misc/__init__.py",
                                                                      "emolab/misc/thing.py"]


# ------------------------------------------------------------------ c) private names
def test_a_private_name_imported_from_another_module_fails(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "utils/a.py": "_x = 1\n__version__ = '1'\n",
        "utils/b.py": "from emolab.utils.a import __version__\ndef f():\n    from .a import _x, __version__\n",
    })
    assert violations(root, "private names") == [
        "emolab/utils/b.py:3: emolab.utils.b imports private name(s) _x from emolab.utils.a"]


def test_a_private_module_is_private_to_its_package(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "viz/_common.py": "def new_figure():\n    pass\n",
        "viz/plots.py": "from emolab.viz._common import new_figure\nfrom emolab.viz import _common\n",
        "cli/main.py": "from emolab.viz._common import new_figure\n",
    })
    assert violations(root, "private names") == [
        "emolab/cli/main.py:1: emolab.cli.main imports the private module emolab.viz._common "
        "from outside its package emolab.viz"]


# ------------------------------------------------------------------ d) module size
def test_a_module_over_500_lines_fails_unless_exempt(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"data/ok.py": "x = 1\n" * 500, "data/big.py": "x = 1\n" * 501,
                                "data/synthetic/faces.py": "x = 1\n" * 900})
    assert violations(root, "module size") == [
        "emolab/data/big.py: 501 lines (at most 500; split it or add a commented exemption)"]


def test_a_stale_exemption_fails(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"data/synthetic/faces.py": "x = 1\n" * 100})
    (msg,) = violations(root, "module size")
    assert "stale exemption 'emolab/data/synthetic/*.py'" in msg


# ------------------------------------------------------------------ unreadable trees
def test_a_tree_it_cannot_read_is_an_error_naming_the_file(tmp_path: Path) -> None:
    res = run_script(str(tmp_path))
    assert res.returncode == 2 and "no emolab package here" in res.stderr
    make_tree(tmp_path, {"data/broken.py": "def f(:\n"})
    res = run_script(str(tmp_path))
    assert res.returncode == 2 and "emolab/data/broken.py:1: cannot parse" in res.stderr
