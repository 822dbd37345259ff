"""Headless notebook runs (papermill), parameter grids, recorded metrics, committed-output refresh.

The numbered notebooks in ``notebooks/`` are thin: they call emolab and record
a few numbers. This module runs them and collects those numbers.

Conventions every notebook follows (so the runner, the grid and nbval work):

* a cell tagged ``parameters`` assigning at least ``data_root = None`` (None:
  the demo corpus, :func:`resolve_data_root`), ``run_dir = None`` (the run
  folder; papermill runs set it), ``seed`` and ``SMOKE = smoke_default()``;
* the numbers worth comparing across runs are recorded with
  ``record(run_dir, name=value, ...)``, which writes ``metrics.json`` into the
  run folder (nothing when ``run_dir`` is None, as in nbval and interactive
  runs) and returns the dict, so a cell ending with it also shows them;
* the first code cell (imports) and the data-root cell are tagged
  ``nbval-ignore-output``: their output depends on the machine (matplotlib's
  font cache message, whether the demo corpus was generated just now).

Functions:

* :func:`run_notebook`: one papermill run into a run folder, with the kernel
  of the current Python environment.
* :func:`run_grid`: every combination of a grid of parameters (e.g. seeds x
  folds), one executed notebook each, plus ``summary.csv`` of their metrics.
* :func:`refresh_committed`: re-execute the committed notebooks in place in
  smoke mode and :func:`clean_notebook` them (``make notebooks-refresh``).

Smoke mode (:func:`smoke_default`): ``EMOLAB_SMOKE=1``/``0`` decides; without it,
``CI`` in the environment turns it on. nbval runs (``notebooks/conftest.py``)
and :func:`refresh_committed` both set ``EMOLAB_SMOKE=1``, so the committed
outputs are the smoke outputs that ``make test`` re-computes.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emolab.eval.notebook import (
    display_path,
    output_folder,
    read_metrics,
    record,
    repo_root,
    resolve_data_root,
    smoke_default,
)

__all__ = [
    "CURRENT_ENV_KERNEL",
    "check_parameters",
    "clean_notebook",
    "display_path",
    "grid_points",
    "list_notebooks",
    "notebook_parameters",
    "notebooks_dir",
    "output_folder",
    "parse_value",
    "read_metrics",
    "record",
    "refresh_committed",
    "repo_root",
    "resolve_data_root",
    "resolve_notebook",
    "run_grid",
    "run_notebook",
    "smoke_default",
]

SUMMARY_FILE = "summary.csv"
#: Kernel name that :func:`run_notebook` resolves to this Python (``sys.executable``).
CURRENT_ENV_KERNEL = "emolab-current-env"
_NOTEBOOK_RE = re.compile(r"^\d\d_.+\.ipynb$")
_VOLATILE_NB_METADATA = ("papermill", "widgets", "execution")
_VOLATILE_CELL_METADATA = ("execution", "papermill", "ExecuteTime", "collapsed", "scrolled")
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
_LANGUAGE_INFO_KEYS = ("codemirror_mode", "file_extension", "mimetype", "name", "nbconvert_exporter", "pygments_lexer")


# --------------------------------------------------------------------------- locations


def notebooks_dir() -> Path:
    """``$EMOLAB_NOTEBOOKS``, else the checkout's ``notebooks/``, else ``./notebooks``."""
    env = os.environ.get("EMOLAB_NOTEBOOKS")
    if env:
        return Path(env)
    root = repo_root()
    return root / "notebooks" if root is not None else Path.cwd() / "notebooks"


def list_notebooks(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) of ``directory``, in order."""
    d = Path(directory) if directory is not None else notebooks_dir()
    return sorted(p for p in d.glob("*.ipynb") if _NOTEBOOK_RE.match(p.name))


def resolve_notebook(name: str | os.PathLike[str]) -> Path:
    """A notebook from a path, a file name, its number (``"1"``, ``"01"``) or its name
    without number (``"pairing_inspection"``).

    Raises:
        FileNotFoundError: nothing matches (the message lists the notebooks), or several do.
    """
    p = Path(name)
    if p.suffix == ".ipynb" and p.is_file():
        return p
    text = str(name).removesuffix(".ipynb")
    known = list_notebooks()
    if text.isdigit():
        hits = [nb for nb in known if int(nb.name[:2]) == int(text)]
    else:
        hits = [nb for nb in known if nb.stem == text or nb.stem[3:] == text]
    if len(hits) != 1:
        listing = ", ".join(nb.stem for nb in known) or f"none in {notebooks_dir()}"
        what = "matches several notebooks" if hits else "is not a notebook"
        raise FileNotFoundError(f"{str(name)!r} {what}; known: {listing}")
    return hits[0]


# --------------------------------------------------------------------------- running


def _current_env_kernel_manager() -> type:
    """An nbclient kernel manager that starts kernels with this Python for :data:`CURRENT_ENV_KERNEL`."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets import default

    class _SpecManager(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str):  # type: ignore[override]
            if kernel_name == CURRENT_ENV_KERNEL:
                return self.kernel_spec_class(
                    resource_dir="",
                    # Log level ERROR: no "Kernel is running over TCP without encryption" per run
                    # (a local kernel on the loopback; its errors still reach the terminal).
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                          "--IPKernelApp.log_level=ERROR"],
                    display_name=f"Python ({sys.prefix})",
                    language="python",
                )
            return super().get_kernel_spec(kernel_name)

    class _KernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return _SpecManager(data_dir=self.data_dir)

    return _KernelManager


def parse_value(text: str) -> Any:
    """A CLI parameter value: a Python literal (``3``, ``0.5``, ``True``, ``None``, ``[1, 2]``,
    ``'x'``; also ``true``/``false``/``none``) or else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false", "none", "null"):
        return {"true": True, "false": False}.get(lowered)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_parameters(name_or_path: str | os.PathLike[str]) -> dict[str, str]:
    """The parameters of a notebook's ``parameters`` cell: name -> default as written."""
    import papermill as pm

    path = resolve_notebook(name_or_path)
    return {name: str(p.get("default", "")) for name, p in pm.inspect_notebook(str(path)).items()}


def check_parameters(name_or_path: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Raise if a name is not a parameter of the notebook.

    Raises:
        ValueError: an unknown name; the message lists the notebook's parameters.
    """
    known = notebook_parameters(name_or_path)
    unknown = sorted(set(names) - set(known))
    if unknown:
        listing = ", ".join(f"{k} (default {v})" for k, v in known.items())
        raise ValueError(
            f"{resolve_notebook(name_or_path).stem} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {listing}"
        )


def run_notebook(
    name_or_path: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    kernel_name: str = CURRENT_ENV_KERNEL,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    log_output: bool = False,
) -> Path:
    """Execute a notebook with papermill into a run folder.

    The run folder gets the executed notebook (same file name) and whatever the
    notebook writes there (``metrics.json`` through :func:`record`). The parameter
    ``run_dir`` is set to the run folder unless ``params`` gives it.

    Args:
        name_or_path: a notebook (see :func:`resolve_notebook`).
        params: parameters injected after the ``parameters`` cell.
        out_dir: the run folder; default ``runs/notebooks/<time>-<stem>``.
        kernel_name: a Jupyter kernel name; default: this Python environment.
        cwd: working folder of the kernel; default the current one (so relative
            paths in ``params`` mean what they mean to the caller).
        timeout: per-cell time limit in seconds (None: none).
        log_output: echo cell outputs to the log.

    Returns:
        The path of the executed notebook.

    Raises:
        ValueError: a name in ``params`` is not a parameter of the notebook (nothing runs).
        papermill.PapermillExecutionError: a cell failed (the executed notebook,
            with the traceback, is still written).
    """
    import papermill as pm

    nb_path = resolve_notebook(name_or_path)
    check_parameters(nb_path, params or {})
    if out_dir is None:
        out_dir = Path("runs") / "notebooks" / f"{time.strftime('%Y%m%d-%H%M%S')}-{nb_path.stem}"
    run_dir = Path(out_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"run_dir": str(run_dir), **dict(params or {})}
    out_path = run_dir / nb_path.name
    engine_kwargs: dict[str, Any] = {}
    if kernel_name == CURRENT_ENV_KERNEL:
        engine_kwargs["kernel_manager_class"] = _current_env_kernel_manager()
    pm.execute_notebook(
        str(nb_path),
        str(out_path),
        parameters=parameters,
        kernel_name=kernel_name,
        language="python",
        cwd=str(cwd if cwd is not None else Path.cwd()),
        progress_bar=False,
        log_output=log_output,
        execution_timeout=timeout,
        **engine_kwargs,
    )
    return out_path


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a parameter grid, first key slowest:
    ``{"seed": [0, 1], "fold": [0, 1]}`` -> 4 dicts."""
    for k, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"grid[{k!r}] must be a list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))]


def _point_name(point: Mapping[str, Any]) -> str:
    text = ",".join(f"{k}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted columns: ``{"split": {"train": 1}}`` -> ``{"split.train": 1}``."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _error_line(e: Exception) -> str:
    """One line about a failed run: the notebook's own exception for a failed cell."""
    if hasattr(e, "ename") and hasattr(e, "evalue"):  # papermill.PapermillExecutionError
        return f"{e.ename}: {e.evalue} (cell {getattr(e, 'exec_count', '?')})"
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def run_grid(
    names: Sequence[str | os.PathLike[str]],
    grid: Mapping[str, Sequence[Any]],
    params: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    stop_on_error: bool = False,
    **run_kwargs: Any,
):
    """Run every notebook at every point of ``grid`` and tabulate what they recorded.

    Run folders are ``<out_dir>/<notebook stem>/<k1=v1,k2=v2>/`` (``<out_dir>/<notebook stem>/``
    for an empty grid: one run per notebook); the table is also written to
    ``<out_dir>/summary.csv``.

    Args:
        names: notebooks (see :func:`resolve_notebook`).
        grid: parameter -> values; every combination is one run per notebook.
        params: parameters shared by all runs (grid values override them).
        out_dir: default ``runs/notebooks/<time>-grid``.
        stop_on_error: raise on the first failed run instead of recording it.
        **run_kwargs: passed to :func:`run_notebook` (``timeout``, ``cwd``, ...).

    Raises:
        ValueError: a name in ``params`` or ``grid`` is not a parameter of every notebook.

    Returns:
        A pandas DataFrame, one row per run: ``notebook``, the grid keys,
        ``status`` (``ok``/``failed``), the recorded metrics (nested dicts as
        dotted columns, e.g. ``actor_split.train``), ``seconds``, ``run_dir``
        and ``error``.
    """
    import pandas as pd

    out = Path(out_dir) if out_dir is not None else Path("runs") / "notebooks" / f"{time.strftime('%Y%m%d-%H%M%S')}-grid"
    out.mkdir(parents=True, exist_ok=True)
    notebooks = [resolve_notebook(n) for n in names]
    for nb in notebooks:  # before anything runs: an unknown name is a typo, not a failed run
        check_parameters(nb, [*(params or {}), *grid])
    rows = []
    for nb in notebooks:
        for point in grid_points(grid):
            run_dir = out / nb.stem / _point_name(point) if point else out / nb.stem
            row: dict[str, Any] = {"notebook": nb.stem, **point}
            start = time.perf_counter()
            try:
                run_notebook(nb, {**dict(params or {}), **point}, run_dir, **run_kwargs)
                row["status"], error = "ok", ""
            except Exception as e:  # a failed run is a row of the table
                if stop_on_error:
                    raise
                row["status"], error = "failed", _error_line(e)
            row.update({k: v for k, v in _flatten(read_metrics(run_dir)).items() if k not in row})
            row.update(seconds=round(time.perf_counter() - start, 1), run_dir=str(run_dir), error=error)
            rows.append(row)
    frame = pd.DataFrame(rows)
    tail = ["seconds", "run_dir", "error"]
    frame = frame[[c for c in frame.columns if c not in tail] + tail]
    frame.to_csv(out / SUMMARY_FILE, index=False)
    return frame


# --------------------------------------------------------------------------- committed outputs


def clean_notebook(nb: Any) -> Any:
    """Strip what varies between identical runs from an executed notebook (in place; returned).

    Removes papermill's injected-parameters cell, execution timings and
    papermill/ExecuteTime cell metadata, widget state (random model ids) and
    widget views from outputs (their ``text/plain`` stays), the Python version in
    ``language_info``; sets the standard ``python3`` kernelspec; renumbers
    execution counts 1, 2, ... over the executed code cells.
    """
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for key in _VOLATILE_NB_METADATA:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = dict(_KERNELSPEC)
    info = nb.metadata.get("language_info", {})
    nb.metadata["language_info"] = {k: info[k] for k in _LANGUAGE_INFO_KEYS if k in info} or {"name": "python"}
    count = 0
    for cell in nb.cells:
        meta = cell.setdefault("metadata", {})
        for key in _VOLATILE_CELL_METADATA:
            meta.pop(key, None)
        if meta.get("tags") == []:
            del meta["tags"]
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") is None and not cell.get("outputs"):
            continue
        count += 1
        cell.execution_count = count
        outputs = []
        for out in cell.outputs:
            if out.get("output_type") in ("display_data", "execute_result"):
                out.data.pop(_WIDGET_VIEW, None)
                if not out.data:
                    continue
                if out.output_type == "execute_result":
                    out.execution_count = count
            outputs.append(out)
        cell.outputs = outputs
    return nb


def _check_outputs(nb: Any, path: Path) -> None:
    """Refuse committed outputs with errors or stderr outside ``nbval-ignore-output`` cells."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "nbval-ignore-output" in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error" or (out.output_type == "stream" and out.name == "stderr"):
                text = out.get("text") or out.get("evalue", "")
                problems.append(f"cell {i}: {out.output_type} {out.get('name', '')}: {text.strip()[:200]}")
    if problems:
        raise ValueError(
            f"{path.name}: outputs that would make nbval flaky (fix them, or tag the cell "
            "nbval-ignore-output if its whole output is volatile):\n  " + "\n  ".join(problems)
        )


def _source_digests(folder: Path) -> dict[str, str]:
    """sha256 of every ``*.py`` file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.py"))}


def refresh_committed(
    names: Sequence[str | os.PathLike[str]] | None = None,
    *,
    timeout: float | None = 1800,
    check: bool = True,
    watch: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Re-execute committed notebooks in place (smoke mode, kernel cwd = ``notebooks/``, as nbval
    runs them) and :func:`clean_notebook` them: ``make notebooks-refresh``.

    A notebook whose run overlapped an edit of the code it runs is not written: outputs made half by
    the old code and half by the new (or by a temporary change, such as a mutation check in the same
    checkout) would be committed and then fail nbval everywhere else.

    Args:
        names: notebooks to refresh; all numbered notebooks when None.
        timeout: per-cell time limit in seconds.
        check: refuse (ValueError) outputs holding stderr text or errors outside
            ``nbval-ignore-output`` cells; the committed file is left unchanged then.
        watch: the source folder whose ``*.py`` files must not change while a notebook runs
            (ValueError naming them otherwise; the committed file is left unchanged); default: the
            emolab package.

    Returns:
        The refreshed notebook paths.
    """
    import nbformat

    paths = [resolve_notebook(n) for n in names] if names else list_notebooks()
    done = []
    watched = Path(watch) if watch is not None else Path(__file__).resolve().parents[1]
    saved = os.environ.get("EMOLAB_SMOKE")
    os.environ["EMOLAB_SMOKE"] = "1"
    try:
        for path in paths:
            before = _source_digests(watched)
            with tempfile.TemporaryDirectory(prefix="emolab-refresh-") as tmp:
                import papermill as pm

                executed = Path(tmp) / path.name
                pm.execute_notebook(
                    str(path),
                    str(executed),
                    parameters={},
                    kernel_name=CURRENT_ENV_KERNEL,
                    language="python",
                    cwd=str(path.parent),
                    progress_bar=False,
                    execution_timeout=timeout,
                    kernel_manager_class=_current_env_kernel_manager(),
                )
                nb = clean_notebook(nbformat.read(executed, as_version=4))
            after = _source_digests(watched)
            if after != before:
                changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
                raise ValueError(f"{path.name}: {len(changed)} source file(s) under {watched} changed while it ran "
                                 f"({', '.join(changed[:5])}); its outputs were not written: run the refresh again")
            if check:
                _check_outputs(nb, path)
            nbformat.write(nb, path)
            done.append(path)
    finally:
        if saved is None:
            os.environ.pop("EMOLAB_SMOKE", None)
        else:
            os.environ["EMOLAB_SMOKE"] = saved
    return done
