"""The ``emolab`` command line: ``demo``, ``demo-data``, ``inspect``.

Heavy imports happen inside the commands so that ``emolab --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_DEMO_DIR = Path("data/demo")


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
    from emolab.data.demo import DemoConfig, parse_size

    kwargs = {"actors": args.actors, "seed": args.seed, "song": args.song, "noise": not args.no_noise}
    if args.size is not None:
        kwargs["size"] = parse_size(args.size)
    if args.seconds is not None:
        kwargs["seconds"] = args.seconds
    if args.fps is not None:
        kwargs["fps"] = args.fps
    return DemoConfig(**kwargs)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from emolab.data.demo import generate_demo_corpus

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


def ensure_demo_corpus(out: Path = DEFAULT_DEMO_DIR, *, progress: bool = True) -> Path:
    """Generate the default demo corpus at ``out`` unless it is already there."""
    from emolab.data.demo import DemoConfig, generate_demo_corpus, is_generated

    config = DemoConfig()
    if is_generated(out, config):
        print(f"demo corpus: using {out} (already generated)")
        return out
    print(f"demo corpus: generating into {out}")
    summary = generate_demo_corpus(out, config, progress=progress)
    print(summary.describe() if hasattr(summary, "describe") else summary)
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: corpus (real or generated) -> inspection."""
    data_root = Path(args.data_root) if args.data_root else ensure_demo_corpus(Path(args.demo_dir))
    print()
    _print_inspection(data_root, args.vocal_channel, False, "header")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from emolab import __version__

    parser = argparse.ArgumentParser(
        prog="emolab",
        description="Audio-visual emotion recognition on RAVDESS: data, models, training, notebooks.",
    )
    parser.add_argument("--version", action="version", version=f"emolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="run the kit end to end (on the generated demo corpus unless --data_root)")
    p.add_argument("--data_root", default=None, help="a RAVDESS download; default: generate the demo corpus")
    p.add_argument("--demo_dir", default=str(DEFAULT_DEMO_DIR), help="where the demo corpus goes (default data/demo)")
    p.add_argument("--vocal_channel", type=int, choices=(1, 2), default=1)
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
        choices=("none", "size", "header"),
        default="header",
        help="how to check files: header (open every file, default), size (empty files only), none",
    )
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"emolab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
