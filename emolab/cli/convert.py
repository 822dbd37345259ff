"""``emolab convert-checkpoint``: a seed-project checkpoint as an emolab run folder.

The run folder holds what ``emolab train`` writes for a finished run's best
model (``config.json`` and ``best_{fusion}.pt`` = ``{"model", "val_f1",
"epoch", "config"}``), so every command and notebook that takes a run folder
or a checkpoint (``emolab robustness --run``, notebooks 04–06 ``run_dir`` /
``checkpoint``, :func:`emolab.eval.analysis.load_model`) works on it. The network
and the seed's behaviour options are read from the checkpoint's keys
(:func:`emolab.models.seed_build_kwargs`); flags override what the keys cannot
tell (``--xattn_heads``) or pick a corpus (``--data_root``).

Example::

    emolab convert-checkpoint seed_outputs/best_xattn.pt --out outputs/runs/seed-xattn --data_root data/ravdess
    emolab robustness --run outputs/runs/seed-xattn
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from emolab.models.fields import model_setting

__all__ = ["CONVERT_FIELDS", "ConvertError", "add_arguments", "convert_seed_checkpoint", "run_from_args"]

#: ModelConfig fields offered as flags (each overrides what the checkpoint's keys say); their type, choices and
#: help are the fields' own (:mod:`emolab.models.fields`, torch-free so that ``emolab --help`` stays light).
CONVERT_FIELDS = ("fusion", "num_classes", "use_resnet_audio", "use_wavlm", "audio_backbone", "xattn_heads",
                  "xattn_head", "xattn_d_model")
#: What the flag means here, where that differs from the field's help.
CONVERT_NOTES = {
    "fusion": "model name; needed only for a checkpoint in emolab's layout",
    "audio_backbone": "build the speech backbone from this folder/name (default: a WavLM of the keys' shape)",
    "xattn_heads": "attention heads (the keys cannot tell; default 4)",
}


class ConvertError(ValueError):
    """A checkpoint that cannot be converted, or an output folder that is in the way: a message, no traceback."""


def convert_seed_checkpoint(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    data_root: str | None = None,
    overwrite: bool = False,
    **build_model_kwargs: Any,
) -> Path:
    """Write a seed checkpoint as an emolab run folder ``out`` and return its ``best_{fusion}.pt``.

    Args:
        source: the seed's ``.pt`` (a state dict or ``{"model": state_dict}``);
            a checkpoint in emolab's layout is accepted too (pass ``fusion``).
        out: the run folder to create (must not hold a run unless ``overwrite``).
        data_root: the corpus recorded in ``config.json`` (default ``TrainConfig``'s).
        overwrite: replace ``config.json`` / ``best_*.pt`` already in ``out``.
        **build_model_kwargs: :class:`~emolab.models.ModelConfig` fields that
            override those read from the keys.

    Raises:
        ConvertError: no such file, a file in neither layout (the message names
            both and the missing/unexpected keys), or ``out`` already a run.
    """
    import dataclasses

    from emolab.models.registry import ModelConfig, build_model_from_config
    from emolab.models.seed import (
        SeedLayoutError,
        is_seed_state_dict,
        load_state_dict_any_layout,
        seed_build_kwargs,
    )
    from emolab.train.config import TrainConfig
    from emolab.utils.checkpoints import WarmStartError, atomic_save, load_checkpoint, state_dict_from_checkpoint
    from emolab.utils.fileio import atomic_write_json

    src, run_dir = Path(source), Path(out)
    if not src.is_file():
        raise ConvertError(f"{src}: no such checkpoint file")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConvertError(f"--out {run_dir}: exists and is not a folder")
    old = [p for p in (run_dir / "config.json", *run_dir.glob("best_*.pt")) if p.is_file()]
    if old and not overwrite:
        raise ConvertError(f"--out {run_dir}: already holds a run ({', '.join(p.name for p in old)}); "
                           "pick a new folder or pass --overwrite")
    try:
        sd = state_dict_from_checkpoint(load_checkpoint(src), str(src))
    except (WarmStartError, RuntimeError, OSError) as err:
        raise ConvertError(f"{src}: cannot read a state dict: {err}") from None
    kwargs: dict[str, Any] = seed_build_kwargs(sd) if is_seed_state_dict(sd) else {"pretrained_video": False}
    kwargs.update(build_model_kwargs)
    if "audio_backbone" in build_model_kwargs and "wavlm_config" not in build_model_kwargs:
        kwargs.pop("wavlm_config", None)
    if "fusion" not in kwargs:
        raise ConvertError(f"{src}: not a seed-project checkpoint; for one in emolab's layout pass --fusion")
    try:
        model_cfg = ModelConfig(**kwargs)
        model = build_model_from_config(model_cfg)
        load_state_dict_any_layout(model, sd, str(src))
    except (SeedLayoutError, ValueError, TypeError) as err:
        raise ConvertError(str(err)) from None
    base = TrainConfig()
    data = base.data
    if "face_crop" in {f.name for f in dataclasses.fields(data)}:
        data = dataclasses.replace(data, face_crop="all")  # the seed crops faces in every split
    cfg = dataclasses.replace(
        base,
        model=model_cfg,
        data=data,
        data_root=data_root if data_root is not None else base.data_root,
        output_dir=str(run_dir.parent.parent) if run_dir.parent.name == "runs" else str(run_dir.parent),
        run_name=run_dir.name,
        publish_best=False,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    config = cfg.to_dict()
    atomic_write_json(config, run_dir / "config.json")
    best = run_dir / f"best_{model_cfg.fusion}.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save(
        {"model": state, "val_f1": math.nan, "epoch": 0, "config": config, "converted_from": str(src)}, best
    )
    return best


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``emolab convert-checkpoint``."""
    p.add_argument("checkpoint", metavar="SEED.pt", help="the seed project's checkpoint (e.g. outputs/best_gated.pt)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write (config.json, best_*.pt)")
    p.add_argument("--data_root", default=None, help="corpus recorded in config.json (what robustness evaluates on)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in RUN_DIR")
    g = p.add_argument_group("model flags (default: read from the checkpoint's keys)")
    for name in CONVERT_FIELDS:  # type, choices and help from the field's declaration (emolab.models.fields)
        default, meta = model_setting(name)
        help_text = CONVERT_NOTES.get(name, meta.help)
        if isinstance(default, bool):
            g.add_argument(f"--{name}", action="store_true", default=None, help=help_text)
        else:
            g.add_argument(f"--{name}", *(f"--{n}" for n in meta.former), dest=name, type=type(default),
                           default=None, help=help_text,
                           choices=None if callable(meta.choices) else meta.choices)


def run_from_args(args: argparse.Namespace) -> int:
    """Convert, print where the run folder is and how to use it."""
    overrides = {n: getattr(args, n) for n in CONVERT_FIELDS if getattr(args, n) is not None}
    best = convert_seed_checkpoint(
        args.checkpoint, args.out, data_root=args.data_root, overwrite=args.overwrite, **overrides
    )
    print(f"wrote {best} and {best.parent / 'config.json'} (from {args.checkpoint})")
    print(f"use it with e.g. `emolab robustness --run {best.parent}`")
    return 0
