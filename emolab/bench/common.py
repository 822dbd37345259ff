"""What every benchmark records: where its results go and which machine measured them."""

from __future__ import annotations

import gc
import os
import platform
import re
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported inside the functions so that ``emolab --help`` stays instant
    import torch

__all__ = ["PeakMemory", "SPEECH_PER_ACTOR", "machine", "map_processes", "results_dir", "speech_key"]


#: RAVDESS's 60 speech recordings of an actor as ``(emotion, intensity, statement, repetition)``, in name order
#: (neutral has no strong intensity).
SPEECH_PER_ACTOR = [(e, i, s, r) for e in range(1, 9) for i in ((1,) if e == 1 else (1, 2)) for s in (1, 2)
                    for r in (1, 2)]


def speech_key(j: int) -> tuple[int, int, int, int, int]:
    """The ``j``-th speech recording of actors 1, 2, ... (60 each): ``(actor, emotion, intensity, statement,
    repetition)``; the benchmarks name their generated clips by it."""
    return (1 + j // len(SPEECH_PER_ACTOR), *SPEECH_PER_ACTOR[j % len(SPEECH_PER_ACTOR)])


def map_processes(fn: Callable[[int], Any], n: int, processes: int, chunksize: int = 1) -> list[Any]:
    """``[fn(0), ..., fn(n - 1)]``, from ``processes`` forked processes when more than one (the benchmarks'
    clip writers: each result depends only on its index, so the files are the same either way)."""
    if processes <= 1 or n <= 1:
        return [fn(j) for j in range(n)]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(min(processes, n)) as pool:
        return pool.map(fn, range(n), chunksize=chunksize)


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


def _rss_kib() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB, from ``/proc/self/status``."""
    text = Path("/proc/self/status").read_text()
    return (int(re.search(r"VmRSS:\s+(\d+)", text).group(1)), int(re.search(r"VmHWM:\s+(\d+)", text).group(1)))


class PeakMemory:
    """Peak RSS (and CUDA memory) over a block; the RSS peak is reset at entry where Linux allows it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset = False
        self.start_kib = self.peak_kib = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            self.reset = True
        except OSError:
            self.reset = False
        try:
            self.start_kib = _rss_kib()[0]
        except (OSError, AttributeError):
            self.start_kib = 0
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.peak_kib = _rss_kib()[1] if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except (OSError, AttributeError):
            self.peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rss_peak_mb": self.peak_kib / 1024,
            "rss_delta_mb": max(0, self.peak_kib - self.start_kib) / 1024,
            "rss_peak_reset": self.reset,  # False: the peak is the process maximum so far
        }
        if self.device.type == "cuda":
            import torch

            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out
