"""The ``emolab`` command line: ``demo``, ``demo-data``, ``inspect``.

Heavy imports happen inside the commands so that ``emolab --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from emolab.data.synthetic.config import DEFAULT_DEMO_DIR



class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def _add_demo_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actors", type=int, default=24, help="number of actors, 1-24 (default 24)")
    p.add_argument("--size", default=None, help="frame size WxH (default: small; 1280x720 for RAVDESS-like clips)")
    p.add_argument("--seconds", type=float, default=None, help="clip length in seconds")
    p.add_argument("--fps", type=float, default=None, help="video frame rate")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--song", action="store_true", help="also generate song files (vocal channel 02)")
    p.add_argument("--no_noise", action="store_true", help="do not write Noise/noise.wav")
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 4; 0 = in-process)")


def _demo_config(args: argparse.Namespace):
    from emolab.data.synthetic import DemoConfig, parse_size

    kwargs = {"actors": args.actors, "seed": args.seed, "song": args.song, "noise": not args.no_noise}
    if args.size is not None:
        kwargs["size"] = parse_size(args.size)
    if args.seconds is not None:
        kwargs["seconds"] = args.seconds
    if args.fps is not None:
        kwargs["fps"] = args.fps
    return DemoConfig(**kwargs)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from emolab.data.synthetic import generate_demo_corpus

    try:
        config = _demo_config(args)
    except ValueError as e:
        raise CLIError(str(e)) from None
    summary = generate_demo_corpus(Path(args.out), config, workers=args.workers, progress=True)
    print(summary.describe() if hasattr(summary, "describe") else summary)
    return 0


def _print_inspection(data_root: Path, vocal_channel: int, as_json: bool, check: str) -> dict:
    from emolab.data.inspect import format_inspection, inspect_corpus

    try:
        info = inspect_corpus(data_root, vocal_channel=vocal_channel, check=check, progress=not as_json)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise CLIError(str(e)) from None
    if as_json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_inspection(info))
    if info["pairs"] == 0:
        raise CLIError(
            f"no RAVDESS pairs found under '{data_root}' ({info['media_files']} media files): expected "
            "Actor_NN/ folders holding video-only files like 02-01-05-01-02-01-12.mp4 and "
            "audio-only files like 03-01-05-01-02-01-12.wav (the Zenodo archives "
            "Video_Speech_Actor_NN.zip and Audio_Speech_Actors_01-24.zip, extracted in any nesting)"
        )
    return info


def cmd_inspect(args: argparse.Namespace) -> int:
    _print_inspection(Path(args.data_root), args.vocal_channel, args.json, args.check)
    return 0


#: Notebooks that `emolab demo` runs on a model it trained (fusion of the checkpoint), not in smoke mode.
DEMO_CHECKPOINT_NOTEBOOKS = {"04_": "xattn", "05_": "gated", "06_": "gated"}


def demo_notebook_runs(
    notebooks: Sequence[Path], data_root: Path, checkpoints: dict[str, Path]
) -> list[tuple[list[str], dict[str, Any]]]:
    """The notebook passes of ``emolab demo``: (notebooks, parameters) per pass, in order.

    Notebooks of :data:`DEMO_CHECKPOINT_NOTEBOOKS` whose model was trained read its
    checkpoint with their full settings (one pass per model); the others run in smoke mode.
    """
    common: dict[str, Any] = {"data_root": str(data_root)}
    smoke: list[str] = []
    by_model: dict[str, list[str]] = {}
    for nb in notebooks:
        fusion = next((f for prefix, f in DEMO_CHECKPOINT_NOTEBOOKS.items() if nb.name.startswith(prefix)), None)
        if fusion is not None and fusion in checkpoints:
            by_model.setdefault(fusion, []).append(str(nb))
        else:
            smoke.append(str(nb))
    runs = [(smoke, {**common, "SMOKE": True})] if smoke else []
    for fusion, names in by_model.items():
        runs.append((names, {**common, "SMOKE": False, "checkpoint": str(checkpoints[fusion])}))
    return runs


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: corpus (real or generated) -> inspection -> training -> notebooks."""
    from emolab.data.synthetic import ensure_demo_corpus

    data_root = Path(args.data_root) if args.data_root else ensure_demo_corpus(Path(args.demo_dir))
    print()
    _print_inspection(data_root, args.vocal_channel, False, "header")
    if args.skip_training:
        return 0
    from emolab.train import demo_run

    print("\n== training a gated audio-visual model (AudioCNN + ResNet18, actor split) ==")
    metrics = demo_run(data_root, Path(args.output_dir))
    print(
        f"test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} "
        f"(chance 0.125); run folder {metrics['run_dir']}"
    )
    if args.skip_notebooks:
        return 0
    from emolab.train.demo import DEMO_XATTN_EPOCHS, DEMO_XATTN_FRAMES, demo_xattn_run

    print(f"\n== training a small cross-attention model for notebook 04 "
          f"(xattn, {DEMO_XATTN_FRAMES} frames, {DEMO_XATTN_EPOCHS} epochs, same split) ==")
    xattn = demo_xattn_run(data_root, Path(args.output_dir))
    print(f"test accuracy {xattn['accuracy']:.3f}, macro-F1 {xattn['macro_f1']:.3f}; run folder {xattn['run_dir']}")
    checkpoints = {"gated": Path(metrics["run_dir"]) / "best_gated.pt", "xattn": Path(xattn["run_dir"]) / "best_xattn.pt"}
    import pandas as pd

    from emolab.cli import notebooks as nbs

    print("\n== running the notebooks headless (01-03 smoke settings; 04-06 on the models just trained) ==")
    out = Path(args.output_dir) / "notebooks"
    parts = [nbs.run_grid(names, {}, params, out) for names, params in
             demo_notebook_runs(nbs.list_notebooks(), data_root, checkpoints)]
    summary = pd.concat(parts, ignore_index=True)
    summary.to_csv(out / nbs.SUMMARY_FILE, index=False)  # every pass in one table
    for row in summary.to_dict("records"):
        print(f"{row['notebook']}: {row['status']} in {row['seconds']} s -> {row['run_dir']}")
        if row["error"]:
            print(f"    {row['error']}")
    print(f"summary: {out / nbs.SUMMARY_FILE}")
    return 0 if (summary["status"] == "ok").all() else 1


def _parse_grid(items: Sequence[str]) -> dict[str, list]:
    from emolab.cli.notebooks import parse_value

    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise CLIError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        grid[key.strip()] = [parse_value(v) for v in values.split(",")]
    return grid


def cmd_notebooks(args: argparse.Namespace) -> int:
    """``emolab notebooks list|run|refresh``: headless notebook runs (see :mod:`emolab.cli.notebooks`)."""
    import time

    from emolab.cli import notebooks as nbs

    if args.action == "list":
        for path in nbs.list_notebooks():
            print(path.stem)
        return 0
    try:
        names = [str(nbs.resolve_notebook(n)) for n in args.names] or [str(p) for p in nbs.list_notebooks()]
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    if not names:
        raise CLIError(f"no notebooks in {nbs.notebooks_dir()}")
    if args.action == "refresh":
        for path in nbs.refresh_committed(names):
            print(f"refreshed {nbs.display_path(path)}")
        return 0
    params = {k: nbs.parse_value(v) for k, v in (args.param or [])}
    grid = _parse_grid(args.grid or [])
    try:
        for name in names:
            nbs.check_parameters(name, [*params, *grid])
    except ValueError as e:  # an unknown -p/--grid name: a usage error (exit 2), nothing runs
        raise CLIError(str(e)) from None
    out = Path(args.out) if args.out else Path("runs") / "notebooks" / time.strftime("%Y%m%d-%H%M%S")
    summary = nbs.run_grid(names, grid, params, out, timeout=args.timeout)
    for row in summary.to_dict("records"):
        point = ", ".join(f"{k}={row[k]}" for k in grid)
        where = f" [{point}]" if point else ""
        print(f"{row['notebook']}{where}: {row['status']} in {row['seconds']} s -> {row['run_dir']}")
        if row["error"]:
            print(f"    {row['error']}")
    print(f"summary: {out / nbs.SUMMARY_FILE}")
    return 0 if (summary["status"] == "ok").all() else 1


def cmd_train(args: argparse.Namespace) -> int:
    """``emolab train ...`` is ``python -m emolab.train ...`` (its flags are parsed there)."""
    from emolab.train.cli import main as train_main

    return train_main(args.train_args, prog="emolab train")


def _delegate(module: str, *errors: str) -> Callable[[argparse.Namespace], int]:
    """A command that runs ``module.run_from_args`` (imported when called; its exit code when it returns an
    int, else 0) and turns the named exceptions (``"module:Name"``) into a :class:`CLIError`: one line, exit 2."""

    def command(args: argparse.Namespace) -> int:
        run_from_args = importlib.import_module(module).run_from_args
        caught = tuple(getattr(importlib.import_module(m), name) for m, name in (e.split(":") for e in errors))
        try:
            code = run_from_args(args)
        except caught as e:
            raise CLIError(str(e)) from None
        return code if isinstance(code, int) else 0

    command.__doc__ = f"``emolab``'s command of :mod:`{module}`."
    return command


_SETUP = ("emolab.experiments.cv:SweepError", "emolab.train.run:SetupError")
#: data, training, memory and growth figures
cmd_bench = _delegate("emolab.bench.train", "builtins:ValueError")
#: trained runs under test-time corruptions
cmd_robustness = _delegate("emolab.eval.robustness", "emolab.eval.robustness:InputError")
#: fetch, verify and extract the Zenodo archives
cmd_download_ravdess = _delegate("emolab.data.download", "builtins:ValueError", "emolab.data.download:DownloadError")
#: every fold x seed of a k-fold protocol, resumable, summarised
cmd_cv = _delegate("emolab.experiments.cv", *_SETUP)
#: Optuna over cross-validated runs
cmd_search = _delegate("emolab.experiments.search", *_SETUP)
#: what the cache folder holds; pruning it
cmd_cache = _delegate("emolab.cli.cache", "emolab.cli.cache:CacheError")
#: a seed-project checkpoint as an emolab run folder
cmd_convert_checkpoint = _delegate("emolab.cli.convert", "emolab.cli.convert:ConvertError")
#: a trained run on any clips; a trained run's metrics on any RAVDESS-layout corpus
cmd_predict = _delegate("emolab.eval.predict", "emolab.eval.predict:PredictError", "emolab.eval.robustness:InputError")
cmd_evaluate = _delegate("emolab.eval.evaluate", "emolab.eval.evaluate:EvaluateError", "emolab.eval.robustness:InputError")


def build_parser() -> argparse.ArgumentParser:
    from emolab import __version__

    parser = argparse.ArgumentParser(
        prog="emolab",
        description="Audio-visual emotion recognition on RAVDESS: data, models, training, notebooks.",
    )
    parser.add_argument("--version", action="version", version=f"emolab {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (any command; also anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="run the kit end to end (on the generated demo corpus unless --data_root)")
    p.add_argument("--data_root", default=None, help="a RAVDESS download; default: generate the demo corpus")
    p.add_argument("--demo_dir", default=str(DEFAULT_DEMO_DIR), help="where the demo corpus goes (default data/demo)")
    p.add_argument("--vocal_channel", type=int, choices=(1, 2), default=1)
    p.add_argument("--output_dir", default="outputs/demo", help="run folders of the demo (default outputs/demo)")
    p.add_argument("--skip_training", action="store_true", help="stop after the inspection")
    p.add_argument("--skip_notebooks", action="store_true", help="do not run the notebooks")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("demo-data", help="generate a RAVDESS-format demo corpus (real MP4 and WAV files)")
    p.add_argument("--out", required=True, help="output folder")
    _add_demo_data_args(p)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("inspect", help="pairs, unpaired and malformed files, split composition")
    p.add_argument("--data_root", required=True, help="folder holding the RAVDESS files (any nesting)")
    p.add_argument("--vocal_channel", type=int, choices=(1, 2), default=1, help="1 speech (default), 2 song")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument(
        "--check",
        choices=("none", "size", "header", "decode"),
        default="header",
        help="how to check files: header (open every file, default), decode (also decode every video, in "
        "parallel: videos that decode only in part are listed with both frame counts), size (empty files only), none",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "train", add_help=False, help="train a model (all flags of python -m emolab.train; see emolab train --help)"
    )
    p.set_defaults(func=cmd_train, train_args=[])

    p = sub.add_parser(
        "bench", help="benchmark: data pipeline, training samples/s per fusion mode, memory, cost growth"
    )
    from emolab.bench.train import add_arguments as _add_bench_arguments  # light: no torch at import

    _add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "robustness", help="evaluate trained runs under audio noise, video blur/darkness/occlusion, a missing modality"
    )
    from emolab.eval.robustness import add_arguments as _add_robustness_arguments  # light: torch inside functions

    _add_robustness_arguments(p)
    p.set_defaults(func=cmd_robustness)

    from emolab.eval import evaluate as _evaluate, predict as _predict  # light: torch inside functions

    p = sub.add_parser("predict", help="a trained run on any clips (video with its audio track, video + WAV, folders)")
    _predict.add_arguments(p)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("evaluate", help="a trained run's WAR, UAR, macro-F1 on any RAVDESS-layout corpus and split")
    _evaluate.add_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    # issue #15: export a run to ONNX; the table of runs under a folder
    from emolab.eval import export as _export  # light: torch and onnx inside functions
    from emolab.eval import runs as _runs  # light: pandas inside functions

    p = sub.add_parser("export", help="export a trained run to ONNX (+ INT8), verified with onnxruntime")
    _export.add_arguments(p)
    p.set_defaults(func=_delegate("emolab.eval.export", "emolab.eval.export:ExportError"))
    p = sub.add_parser("runs", help="table of every run under a folder (train and cv runs), sortable, with a plot")
    _runs.add_arguments(p)
    p.set_defaults(func=_delegate("emolab.eval.runs", "emolab.eval.runs:RunsError"))

    p = sub.add_parser(
        "download-ravdess", help="download the RAVDESS archives from Zenodo (or a mirror), verify and extract them"
    )
    from emolab.data.download import add_arguments as _add_download_arguments  # light: standard library only

    _add_download_arguments(p)
    p.set_defaults(func=cmd_download_ravdess)

    from emolab.experiments import cv as _cv, search as _search  # light: no torch at import

    p = sub.add_parser(
        "cv", allow_abbrev=False, help="k-fold cross-validation: every fold x seed of six_fold/luna5, mean ± std",
        description="Train every fold x seed of a protocol into a resumable sweep folder; other flags are "
        "emolab train flags (e.g. --data_root, --epochs, --batch_size).",
    )
    _cv.add_arguments(p)
    p.set_defaults(func=cmd_cv, train_args=[])

    p = sub.add_parser(
        "search", allow_abbrev=False, help="Optuna hyperparameter search over cross-validated runs",
        description="Optuna search (mean best validation macro-F1 over folds x seeds); other flags are "
        "emolab train flags.",
    )
    _search.add_arguments(p)
    p.set_defaults(func=cmd_search, train_args=[])

    from emolab.cli import cache as _cachetool

    p = sub.add_parser("cache", help="what the cache folder holds (info), or remove unused entries (prune)",
                       description="Frames, audio and WavLM features of the cache folder: counts, sizes, last use; "
                       "prune removes entries (they are recomputed when needed).")
    _cachetool.add_arguments(p)
    p.set_defaults(func=cmd_cache)

    from emolab.cli import convert as _convert  # light: torch inside functions

    p = sub.add_parser("convert-checkpoint", help="a seed-project checkpoint as an emolab run folder (config.json, "
                       "best_*.pt) for robustness, the notebooks and the other commands that take a run")
    _convert.add_arguments(p)
    p.set_defaults(func=cmd_convert_checkpoint)

    p = sub.add_parser("notebooks", help="run the notebooks headless (papermill), grids, refresh committed outputs")
    nsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    nsub.add_parser("list", help="list the numbered notebooks").set_defaults(func=cmd_notebooks)
    q = nsub.add_parser(
        "run",
        help="execute notebooks into run folders, with a summary.csv of their recorded metrics",
        description="Execute notebooks with papermill (kernel of this environment), one run folder each "
        "(<out>/<notebook>/ or <out>/<notebook>/<k=v,...>/ with --grid), and write <out>/summary.csv.",
    )
    q.add_argument("names", nargs="*", metavar="NAME", help="notebooks: 01, 1, 01_pairing_inspection, a path (default: all)")
    q.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="notebook parameter (Python literal or string), e.g. -p seed 1 -p data_root data/ravdess")
    q.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                   help="run every combination of these values, e.g. --grid seed=0,1,2 --grid fold=0,1")
    q.add_argument("--out", default=None, help="output folder (default runs/notebooks/<time>)")
    q.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds")
    q.set_defaults(func=cmd_notebooks)
    q = nsub.add_parser("refresh", help="re-execute the committed notebooks in place (smoke mode) and clean them")
    q.add_argument("names", nargs="*", metavar="NAME", help="notebooks (default: all)")
    q.set_defaults(func=cmd_notebooks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from emolab.utils.fileio import error_line, take_debug_flag, tolerant_stdio

    tolerant_stdio()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = take_debug_flag(argv)  # anywhere on the line: errors show their traceback
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) in (cmd_train, cmd_cv, cmd_search):
        args.train_args = extra  # flags the command does not know belong to the train CLI
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, never a traceback (unless --debug)
        return error_line(f"emolab {args.command}", e, debug)


if __name__ == "__main__":
    raise SystemExit(main())
