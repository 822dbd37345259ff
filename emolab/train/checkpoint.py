"""Checkpoints of a run: the run folder's files, warm starts, seeding and RNG state. The file I/O
(``atomic_save``, ``load_checkpoint``...) is :mod:`emolab.utils.checkpoints`'s; import it from there.

Every file is written to a temporary name in the same folder and renamed
over the target (``os.replace``), so a crash never leaves a half-written
checkpoint or JSON file. Checkpoints hold only tensors and plain containers,
so they load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emolab.utils.checkpoints import WarmStartError, load_checkpoint, state_dict_from_checkpoint

__all__ = [
    "RunPaths",
    "capture_rng_state",
    "load_warm_start",
    "restore_rng_state",
    "seed_everything",
]

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------ run folder
@dataclass(frozen=True)
class RunPaths:
    """The files of a run folder.

    Attributes:
        run_dir: ``OUTPUT_DIR/runs/<name>``.
        output_dir: ``OUTPUT_DIR`` (where the best checkpoint is published).
        fusion: the ``--fusion`` name as given (``best_{fusion}.pt``).
    """

    run_dir: Path
    output_dir: Path
    fusion: str

    @property
    def config(self) -> Path:
        return self.run_dir / "config.json"

    @property
    def history(self) -> Path:
        return self.run_dir / "history.jsonl"

    @property
    def best(self) -> Path:
        return self.run_dir / f"best_{self.fusion}.pt"

    @property
    def published_best(self) -> Path:
        return self.output_dir / f"best_{self.fusion}.pt"

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def test_metrics(self) -> Path:
        return self.run_dir / "test_metrics.json"



# ------------------------------------------------------------------ warm start
def load_warm_start(module: nn.Module, path: PathLike, role: str = "model") -> dict[str, Any]:
    """Load a checkpoint into ``module`` strictly (e.g. ``best_audio.pt`` into ``model.audio_model``).

    A file in the seed project's layout (its ``best_audio.pt``/``best_video.pt``)
    is detected, converted (:mod:`emolab.models.seed`) and loaded; the
    conversion is logged and printed.

    Args:
        module: where the weights go.
        path: ``{"model": state_dict, ...}`` (as emolab or the seed saves) or a raw state dict.
        role: the name used in messages (``"audio_model"``, ``"video_model"``).

    Returns:
        The checkpoint's extra keys (``val_f1``, ``epoch``, ``config`` ...), if any.

    Raises:
        FileNotFoundError: no such file.
        WarmStartError: keys or shapes do not match; the message names the
            file, both layouts (emolab's, the seed's) and the missing and
            unexpected keys of each.
    """
    from emolab.models.seed import SeedLayoutError, load_state_dict_any_layout

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"warm-start checkpoint for {role} not found: {path}")
    obj = load_checkpoint(path)
    sd = state_dict_from_checkpoint(obj, str(path))
    try:
        layout = load_state_dict_any_layout(module, sd, f"{path} ({role})")
    except SeedLayoutError as err:
        raise WarmStartError(
            f"{path} does not fit {role} ({type(module).__name__}): {err}. The audio/video model options "
            "(--use_wavlm / --use_resnet_audio, --num_classes) must be those the checkpoint was trained with"
        ) from None
    if layout == "seed":
        print(f"warm start {role}: {path} is a seed-project checkpoint; keys converted to emolab's layout", flush=True)
    return {k: v for k, v in obj.items() if k != "model"} if isinstance(obj, Mapping) and "model" in obj else {}


# ------------------------------------------------------------------ randomness
def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); optionally ask for deterministic kernels.

    Called by the entry point of a run (never at import).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def capture_rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy and Python RNG states as tensors and plain values (``weights_only``-safe)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
