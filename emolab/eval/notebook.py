"""What a notebook cell calls: where the corpus is, where outputs go, the numbers it records.

Every numbered notebook starts with ``from emolab.eval.notebook import ...``:

* :func:`resolve_data_root`: the corpus a notebook reads (``data_root``, else the
  demo corpus, generated on first use);
* :func:`output_folder`: where its training runs go (a temporary folder in smoke
  mode, ``outputs/notebooks/<name>`` otherwise);
* :func:`record`: its key numbers, into ``<run_dir>/metrics.json`` when run headless
  (:mod:`emolab.cli.notebooks` runs them and reads the numbers back);
* :func:`display_path`, :func:`display_output_dir`: paths printed relative to the
  checkout, so committed outputs hold no path of the machine that ran them;
* :func:`smoke_default`: whether the small (smoke) settings apply.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emolab.data.synthetic.config import DEFAULT_DEMO_DIR
from emolab.utils.fileio import atomic_write_json

__all__ = [
    "METRICS_FILE",
    "OutputFolder",
    "display_output_dir",
    "display_path",
    "output_folder",
    "read_metrics",
    "record",
    "repo_root",
    "resolve_data_root",
    "smoke_default",
]

METRICS_FILE = "metrics.json"


def repo_root() -> Path | None:
    """The source checkout emolab is imported from (editable install), or None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the checkout (or the working folder) when inside it, for printing.

    Notebooks print paths through this, so their outputs do not depend on where
    the repository was cloned.
    """
    p = Path(path).resolve()
    for base in (repo_root(), Path.cwd()):
        if base is not None:
            with contextlib.suppress(ValueError):
                return p.relative_to(base.resolve()).as_posix() or "."
    return str(p)


#: Name prefix of the temporary output folders of smoke runs (printed as ``<temporary folder>``).
TEMP_PREFIX = "emolab-nb"


def display_output_dir(path: str | os.PathLike[str]) -> str:
    """:func:`display_path`, except that a smoke run's temporary folder (:func:`output_folder`) reads
    ``<temporary folder>``: committed notebook outputs hold no path of the machine that ran them."""
    p = Path(path).resolve()
    if p.name.startswith(TEMP_PREFIX) and p.parent == Path(tempfile.gettempdir()).resolve():
        return "<temporary folder>"
    return display_path(p)


class OutputFolder:
    """Where a notebook writes its training runs: :attr:`path`, removed by :meth:`cleanup`
    only when it is a temporary folder."""

    def __init__(self, path: Path, temporary: bool) -> None:
        self.path, self.temporary = path, temporary

    def cleanup(self) -> None:
        """Remove the folder if it is temporary (a smoke run's); keep it otherwise."""
        if self.temporary:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"OutputFolder({display_path(self.path)!r}, temporary={self.temporary})"


def output_folder(run_dir: str | os.PathLike[str] | None, notebook: str, *, smoke: bool) -> OutputFolder:
    """The folder a notebook's training runs go to.

    ``run_dir`` when given (``emolab notebooks run`` gives each run one). Else, in smoke
    mode (CI, nbval, the refresh), a temporary folder that :meth:`OutputFolder.cleanup`
    removes, so tests leave nothing behind; otherwise ``outputs/notebooks/<notebook>`` of
    the checkout (of the working folder outside one), where the trained model stays.
    """
    if run_dir is not None and str(run_dir) != "":
        path = Path(run_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return OutputFolder(path.resolve(), temporary=False)
    if smoke:
        return OutputFolder(Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{notebook}-")), temporary=True)
    path = (repo_root() or Path.cwd()) / "outputs" / "notebooks" / notebook
    path.mkdir(parents=True, exist_ok=True)
    return OutputFolder(path.resolve(), temporary=False)


def smoke_default() -> bool:
    """Whether notebooks run their small (smoke) settings: ``EMOLAB_SMOKE`` (``1``/``0``) if set,
    else whether ``CI`` is in the environment (as in pyro's tutorials)."""
    value = os.environ.get("EMOLAB_SMOKE")
    if value is not None and value.strip() != "":
        return value.strip().lower() not in ("0", "false", "no", "off")
    return "CI" in os.environ


def resolve_data_root(data_root: str | os.PathLike[str] | None = None, *, generate: bool = True) -> Path:
    """The corpus a notebook reads: ``data_root`` if given, else the demo corpus.

    The demo corpus is ``data/demo`` of the checkout (of the working folder when
    emolab is not run from a checkout); it is generated with
    :func:`emolab.cli.main.ensure_demo_corpus` when absent (about a minute on 2 cores),
    quietly but for one line. A relative ``data_root`` is taken relative to the
    working folder.

    Raises:
        FileNotFoundError: ``data_root`` does not exist, or the demo corpus is absent and
            ``generate`` is False.
    """
    if data_root is not None and str(data_root) != "":
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data_root {str(root)!r} is not a folder")
        return root.resolve()
    from emolab.data.synthetic import ensure_demo_corpus, is_generated

    base = repo_root() or Path.cwd()
    root = (base / DEFAULT_DEMO_DIR).resolve()
    if not is_generated(root):
        if not generate:
            raise FileNotFoundError(f"the demo corpus {root} is absent; run `emolab demo-data --out {root}`")
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            ensure_demo_corpus(root, progress=False)
        print(f"demo corpus: generated {display_path(root)} in {time.perf_counter() - start:.0f} s")
    return root


# --------------------------------------------------------------------------- metrics


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a {type(value).__name__}: record numbers, strings, lists or dicts")


def record(run_dir: str | os.PathLike[str] | None, **metrics: Any) -> dict[str, Any]:
    """Record a notebook's key numbers in ``<run_dir>/metrics.json`` (merged with what is there).

    With ``run_dir=None`` (interactive runs, nbval) nothing is written. Values must
    be JSON-able (numbers, strings, lists, dicts; numpy/torch scalars are converted).

    Returns:
        The recorded metrics (only those of this call), so a cell ending with
        ``record(...)`` shows them.
    """
    clean = {k: _jsonable(v) for k, v in metrics.items()}
    if run_dir is not None:
        merged = {**read_metrics(run_dir), **clean}
        atomic_write_json(merged, Path(run_dir) / METRICS_FILE, sort_keys=True)
    return clean


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The metrics a run recorded (``{}`` when it recorded none)."""
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
