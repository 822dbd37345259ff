"""Checkpoint files: atomic ``torch.save``, ``weights_only`` loads with errors in a user's words, and the
state dict inside a checkpoint (emolab's ``{"model": ...}`` or a bare one, DDP/compile prefixes stripped).

The bottom of the stack: models read seed checkpoints through it (:mod:`emolab.models.seed`), the trainer
writes and resumes runs through it (:mod:`emolab.train.checkpoint`).
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emolab.utils.fileio import atomic_write

__all__ = [
    "CheckpointError",
    "WarmStartError",
    "atomic_copy",
    "atomic_save",
    "load_checkpoint",
    "state_dict_from_checkpoint",
]

PathLike = str | os.PathLike[str]


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file (fsynced) and ``os.replace``.

    The checkpoint is serialised in memory and written with Python's file API,
    so a full disk raises ``OSError`` (``No space left on device``) rather than
    torch's ``basic_ios::clear: iostream error``; the previous file stays as it was.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())

    return atomic_write(path, write)


def atomic_copy(src: PathLike, dst: PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


class CheckpointError(ValueError):
    """A file that cannot be loaded as a checkpoint; the message names it and says what it is."""


def _what_is(path: Path, err: BaseException) -> str:
    """Why ``path`` did not load, in a user's words (not torch's hint to retry with ``weights_only=False``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
        size = path.stat().st_size
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "is empty (0 bytes)"
    try:
        if b"\0" not in head:
            head.decode("utf-8")
            return "is a text file, not a PyTorch checkpoint"
    except UnicodeDecodeError:
        pass
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err).lower():
        return ("holds Python objects besides tensors, which could run code when loaded; emolab loads "
                "checkpoints with weights_only=True and did not load it")
    if head.startswith(b"PK"):
        return f"is a damaged or truncated checkpoint ({size:,} bytes)"
    return "is not a PyTorch checkpoint"


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, map_location=..., weights_only=True)``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is empty, truncated, text, or a pickle of more
            than tensors (never unpickled); the message names the file.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError, ... for bad files
        raise CheckpointError(f"{path} {_what_is(Path(path), err)}") from None


class WarmStartError(ValueError):
    """A warm-start checkpoint does not fit the model it is loaded into."""


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def state_dict_from_checkpoint(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model state dict inside ``obj``: ``obj["model"]`` if present, else ``obj`` itself.

    DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes shared by
    every key are stripped.
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WarmStartError(
            f"{source}: expected {{'model': state_dict}} or a state dict of tensors, got {type(obj).__name__}"
        )
    sd = dict(obj)
    for prefix in _WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd
