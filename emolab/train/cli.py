"""``python -m emolab.train`` / ``emolab train``: flags (the seed project's names) → ``TrainConfig`` → run.

Every flag of the seed's ``src/train.py`` keeps its name, meaning and default
(``tests/test_seed_flags.py``; the one exception is ``--split_mode``, ``actor``
here, said on every run that leaves it out), so its recommended commands run
with only the entry point changed::

    python -m emolab.train --data_root data --num_classes 8 --fusion gated --use_wavlm \\
        --use_cosine_annealing --weight_decay 1e-4 --early_stopping_patience 8

Multi-GPU: ``torchrun --nproc_per_node 4 -m emolab.train ...`` (DDP; batch size per GPU).
Resume: ``python -m emolab.train --resume outputs/runs/gated-seed42-20260210-101500``.
Invalid values are argparse errors (exit code 2) with the config's message.

The flags are not written here: each is declared once, on its config field
(:func:`emolab.utils.settings.setting`: help, flag name, the seed's aliases,
choices, whether ``--resume`` may change it), and :func:`build_parser` reads
them. A field without a flag says why in its metadata (``no_flag``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emolab.utils.fileio import error_line, take_debug_flag, tolerant_stdio
from emolab.models.fields import SEED_FIDELITY_GROUP
from emolab.train.config import TrainConfig
from emolab.train.run import SetupError, resume_training, run_training
from emolab.utils.settings import ConfigFlag, config_argv, config_flags, config_from_values, format_value, get_path

__all__ = ["SECTIONS", "build_parser", "config_argv_of", "config_from_args", "explicit_dests", "main", "train_flags"]

#: ``--help`` sections, in order; a flag's is its field's ``group``, else the one of the config holding it.
SECTIONS = ("data", "split", "model", SEED_FIDELITY_GROUP, "optimisation", "run")
_SECTION_OF_CONFIG = {"data": "data", "split": "split", "model": "model", "optim": "optimisation"}

#: Said when --split_mode is not given: the one seed default emolab changes on purpose.
SPLIT_DEFAULT_NOTE = (
    "note: --split_mode defaults to 'actor' (speaker-independent: train 1-18, val 19-21, test 22-24); "
    "the seed project defaulted to 'stratified', which puts every actor in train and test "
    "(add --split_mode stratified to reproduce it)"
)


def train_flags() -> tuple[list[ConfigFlag], dict[str, str]]:
    """The flags of :class:`TrainConfig` (defaults: ``TrainConfig()``), and ``{field: why no flag}`` of the rest."""
    return config_flags(TrainConfig())


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A field's own parser, its ``ValueError`` shown by argparse as the message (not "invalid value")."""
    if parse in (int, float, str):
        return parse

    @functools.wraps(parse)
    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return wrapped


def _add_flag(group: Any, flag: ConfigFlag) -> None:
    s = flag.setting
    if flag.switch:
        group.add_argument(f"--{flag.name}", dest=flag.dest, action="store_true" if flag.const else "store_false",
                           default=flag.default, help=s.help)
    else:
        choices = s.choices() if callable(s.choices) else s.choices
        group.add_argument(f"--{flag.name}", *(f"--{n}" for n in s.former), dest=flag.dest,
                           type=_argparse_type(flag.parse), choices=choices,
                           default=flag.default, metavar=s.metavar, help=s.help)
    for alias in s.aliases:  # SUPPRESS: an alias left out does not reset the value another flag set
        group.add_argument(f"--{alias.flag}", dest=flag.dest, action="store_const", const=alias.value,
                           default=argparse.SUPPRESS,
                           help=alias.help or f"the seed's flag: same as --{flag.name} {format_value(alias.value)}")


def build_parser(prog: str = "python -m emolab.train") -> argparse.ArgumentParser:
    """The training argument parser, built from the config fields' metadata (defaults: ``TrainConfig()``)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train an emotion recognition model on RAVDESS (SPEC §4); flags follow the seed project.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    groups = {name: p.add_argument_group(name) for name in SECTIONS}
    flags, _ = train_flags()
    for flag in flags:
        top, dot, _ = flag.paths[0].partition(".")
        section = flag.setting.group or (_SECTION_OF_CONFIG[top] if dot else "run")
        _add_flag(groups[section], flag)
    groups["run"].add_argument("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted run")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Map parsed flags onto :class:`TrainConfig` (raises ``ValueError`` on inconsistent values)."""
    flags, _ = train_flags()
    return config_from_values(TrainConfig(), {path: getattr(args, f.dest) for f in flags for path in f.paths})


def config_argv_of(cfg: TrainConfig) -> list[str]:
    """The flags that give ``cfg`` (those of values other than the defaults); ``ValueError`` if none can."""
    return config_argv(cfg, TrainConfig())


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Dests of the flags that appear in ``argv`` (``allow_abbrev=False`` makes this exact)."""
    given = {tok.split("=", 1)[0] for tok in argv if tok.startswith("--")}
    return {a.dest for a in parser._actions if given & set(a.option_strings)}


def _resume_refusal(run_dir: str, fixed: list[ConfigFlag], args: argparse.Namespace, allowed: list[str]) -> str:
    """The error for ``--resume`` with flags it may not change: each flag, the run's value and the one given."""
    try:
        saved: dict[str, Any] | None = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        saved = None  # resume_training says what is wrong with the folder; here only the flags matter

    def what(flag: ConfigFlag) -> str:
        given = getattr(args, flag.dest)
        if saved is None:
            return f"--{flag.name} (given {given!r})"
        return f"--{flag.name} (the run's {get_path(saved, flag.paths[0])!r}, given {given!r})"

    return ("--resume continues a run with its saved config.json; these flags cannot change: "
            + ", ".join(what(f) for f in fixed) + f" (it may change {', '.join(allowed)})")


def main(argv: Sequence[str] | None = None, prog: str = "python -m emolab.train") -> int:
    """Parse flags, train (or resume), print the test metrics; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    tolerant_stdio()
    debug = take_debug_flag(argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.resume:
            flags = {f.dest: f for f in train_flags()[0]}
            explicit = sorted(explicit_dests(parser, argv) - {"resume"})
            fixed = [flags[d] for d in explicit if not flags[d].resumable]
            if fixed:
                allowed = [f"--{f.name}" for f in flags.values() if f.resumable]
                parser.error(_resume_refusal(args.resume, fixed, args, allowed))
            overrides = {path: getattr(args, d) for d in explicit for path in flags[d].paths}
            resume_training(args.resume, overrides=overrides)
        else:
            try:
                cfg = config_from_args(args)
            except ValueError as err:
                parser.error(str(err))
            if "split_mode" not in explicit_dests(parser, argv):
                print(SPLIT_DEFAULT_NOTE, file=sys.stderr)
            run_training(cfg)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # SetupError, a full disk, a bad file: one line (--debug: the traceback)
        return error_line(prog, err, debug)
    return 0
