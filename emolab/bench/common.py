"""What every benchmark records: where its results go and which machine measured them."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine", "results_dir"]


def results_dir() -> Path:
    """``benchmarks/results`` of the source tree (committed), else ``benchmarks/results`` under the working folder."""
    repo = Path(__file__).resolve().parents[2] / "benchmarks"
    return (repo if repo.is_dir() else Path("benchmarks")) / "results"


def machine() -> dict[str, Any]:
    """CPU model, cores, GPU and library versions of this run."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
