"""The seed project's reference models (``shared/seed-reference/models.json``), rebuilt as its README says.

``shared/`` lies beside the repository root (``../shared`` of the checkout,
also in CI, which copies it next to the clone).
"""

from __future__ import annotations

import json
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

SEED_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "seed-reference"
MODELS_JSON = SEED_REFERENCE / "models.json"
MISSING_REASON = f"seed reference data not found at {MODELS_JSON} (shared/ is expected beside the repository)"


@lru_cache(maxsize=1)
def models_json() -> dict[str, Any]:
    """The parsed ``models.json`` (``cases``, ``salt``, ``small_wavlm_config``)."""
    return json.loads(MODELS_JSON.read_text())


def case_names() -> list[str]:
    """Every case of ``models.json`` (empty when the file is absent)."""
    return list(models_json()["cases"]) if MODELS_JSON.is_file() else []


def seed_state_dict(keys: list[list[Any]], salt: str = "") -> dict[str, torch.Tensor]:
    """The seed-format state dict made from a key list by the README's rule.

    Each entry ``[name, shape, dtype]`` gets its own generator seeded with
    ``crc32(salt + name)``: integers zero, ``running_var`` ``U(0.75, 1.25)``,
    ``running_mean`` ``N(0, 0.1²)``, everything else ``N(0, 0.05²)``.
    """
    sd: dict[str, torch.Tensor] = {}
    for name, shape, dtype in keys:
        g = torch.Generator().manual_seed(zlib.crc32((salt + name).encode()))
        dt = getattr(torch, dtype)
        if not dt.is_floating_point:
            sd[name] = torch.zeros(shape, dtype=dt)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) * 0.5 + 0.75
        elif name.endswith("running_mean"):
            sd[name] = torch.randn(shape, generator=g) * 0.1
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.05
    return sd


def case_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The seed-format state dict of case ``name``."""
    data = models_json()
    return seed_state_dict(data["cases"][name]["keys"], data.get("salt", ""))


@lru_cache(maxsize=1)
def seed_inputs() -> dict[str, torch.Tensor]:
    """The README's fixed inputs: ``video (2, 8, 3, 112, 112)``, ``mel (2, 1, 64, 301)``, ``wave (2, 1, 16000)``."""
    g = torch.Generator().manual_seed(zlib.crc32(b"inputs"))
    video = torch.randn(2, 8, 3, 112, 112, generator=g)
    mel = torch.randn(2, 1, 64, 301, generator=g) * 10 - 30
    wave = torch.randn(2, 1, 16000, generator=g) * 0.1
    return {"video": video, "mel": mel, "wave": wave}


@torch.no_grad()
def seed_case_output(model: torch.nn.Module, name: str) -> torch.Tensor:
    """``model``'s output for case ``name`` on the fixed inputs, as the seed reports it (logits, or probs for late)."""
    case = models_json()["cases"][name]
    spec = case["emolab_build_model"]
    x = seed_inputs()
    audio = x["wave"] if spec.get("use_wavlm") else x["mel"]
    model.eval()
    if spec["fusion"] == "audio":
        out = model(audio)
    elif spec["fusion"] == "video":
        out = model(x["video"])
    else:
        out = model(x["video"], audio)
    return out.probs if case["output"] == "probs" else out.logits


def expected_output(name: str) -> torch.Tensor:
    """The seed's own output for case ``name``, shape ``(2, 8)``."""
    return torch.tensor(models_json()["cases"][name]["values"])
