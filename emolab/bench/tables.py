"""Markdown tables of issue 18's figures from the results JSON files, for ``benchmarks/README.md``.

The GPU figures come back from one call of ``benchmarks/gpu_session.sh`` on a lent
machine; a session has minutes for them, so nothing should be transcribed by
hand. :func:`render` reads the files one set of runs writes (``gpu``: the
session script's names; ``cpu``: the committed CPU runs of the README's section
"Issue 18 on a quiet CPU") and prints the tables in that section's shape:
end to end against the trainer's step at batch 8 and 32, cold decode against
the seed's loader, ``--compile``, ``--jobs N`` and the WavLM feature cache.
A file that is missing leaves its table out (and says so).

    python benchmarks/gpu_tables.py                       # benchmarks/results, the GPU set
    python benchmarks/gpu_tables.py --set cpu             # the committed CPU set
    python benchmarks/gpu_tables.py --dir /tmp/g/results  # straight from the session's archive
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from emolab.bench.common import results_dir

__all__ = ["SETS", "render", "train_table", "decode_table", "compile_table", "jobs_table", "wavlm_table", "main"]

#: The file of each figure, per set of runs (``data`` may be several: one row each; ``*`` is a glob).
SETS: dict[str, dict[str, Any]] = {
    "gpu": {"b8": "bench_gpu.json", "b32": "bench_gpu_b32.json", "compile": "bench_gpu_compile.json",
            "jobs": "jobs_gpu.json", "wavlm": "wavlm_gpu.json", "data": ["data_gpu_*cores.json"]},
    "cpu": {"b8": "bench.json", "b32": "bench_b32.json", "compile": "bench_compile.json",
            "jobs": "jobs.json", "wavlm": None, "data": ["data.json", "data_1worker.json"]},
}
#: End to end / compute targets of issue 18 on a GPU and on the CPU (a ratio at or above is bold).
TARGET = {"gpu": 0.95, "cpu": 0.9}
DECODE_TARGET = 1.5


def _f(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def _secs(v: float) -> str:
    """Seconds as the CPU tables write them: 0.15, 6.3, 164."""
    return f"{v:.2f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _wall(s: float) -> str:
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec} s" if m else f"{sec} s"


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def machine_line(res: dict[str, Any]) -> str:
    m = res["machine"]
    return f"{m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}, torch {m['torch']}"


def train_table(res: dict[str, Any], name: str, target: float) -> str:
    """End to end against the trainer's step, one row per mode (the JSON of one ``emolab bench`` run)."""
    train = res["train"]
    cuda = any("cuda_max_allocated_mb" in r for r in train.values())
    first = next(iter(train.values()))
    head = (f"| batch {res['config']['batch_size']} (`{name}`, {_wall(res['elapsed_s'])}; "
            f"{first.get('amp_dtype', 'float32')}) | compute | resident | ratio | loader | ratio | workers | epoch s "
            f"| RSS peak MB |" + (" CUDA MB |" if cuda else ""))
    lines = [head, "|---" + "|---:" * (9 if cuda else 8) + "|"]
    for mode, r in train.items():
        cells = [mode, _f(r["compute_samples_per_s"]), _f(r["end_to_end_samples_per_s"]),
                 _bold(_f(r["ratio"]), r["ratio"] >= target), _f(r["loader_samples_per_s"]), _f(r["loader_ratio"]),
                 str(r["loader_workers"]), _secs(r["epoch_s"]), _f(r["rss_peak_mb"], 0)]
        if cuda:
            cells.append(_f(r.get("cuda_max_allocated_mb", float("nan")), 0))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decode_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Cold decode against the seed's loader: one row per ``bench_data.py`` or ``emolab bench`` result."""
    lines = ["| run | clips | workers | cores | naive | emolab cold | × naive |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, res in runs:
        d = res["data"] if "data" in res and isinstance(res["data"], dict) else res
        workers = res["config"]["workers"] if "config" in res else res["workers"]
        x = d["cold_clips_per_s"] / d["naive_clips_per_s"]
        lines.append(f"| `{name}` | {d['clips']} | {workers} | {res['machine']['cores']} | "
                     f"{_f(d['naive_clips_per_s'])} | {_f(d['cold_clips_per_s'])} | "
                     f"{_bold(_f(x), x >= DECODE_TARGET)} |")
    return "\n".join(lines)


def compile_table(res: dict[str, Any]) -> str:
    """``--compile``: compile seconds, eager and compiled samples/s, speed-up and graphs, per mode."""
    lines = ["| mode | compile s | eager samples/s | compiled | speed-up | graphs |", "|---|---:|---:|---:|---:|---:|"]
    for mode, r in res["train"].items():
        lines.append(f"| {mode} | {_f(r['compile_s'], 1)} | {_f(r['eager_compute_samples_per_s'])} | "
                     f"{_f(r['compute_samples_per_s'])} | {_f(r['compile_speedup'])} | {r['compiled_graphs']} |")
    return "\n".join(lines)


def jobs_table(res: dict[str, Any]) -> str:
    """Runs per hour of the same ``emolab cv`` sweep for each ``--jobs N``."""
    lines = ["| `--jobs` | runs | wall s | runs/hour | × `--jobs 1` |", "|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['jobs']} | {r['runs']} | {_f(r['wall_s'], 1)} | {_f(r['runs_per_hour'], 0)} | "
                     f"{_f(r['speedup'])} |")
    c = res["config"]
    lines.append(f"\n(`{c['fusion']}`, {len(c['folds'])} folds × {len(c['seeds'])} seeds, {c['epochs']} epoch(s), "
                 f"`--threads {c['threads']}`; best `--jobs {res['best_jobs']}`; warm-up run "
                 f"{_f(res['warmup_run_s'], 1)} s" + ("; PARTIAL: stopped before its last `--jobs`" if
                                                      res.get("partial") else "") + ")")
    return "\n".join(lines)


def wavlm_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A WavLM stage-1 epoch with the backbone every step vs from the feature cache, and the fill."""
    lines = ["| run | backbone | clips | batch | device | plain epoch s | fill s | cached epoch s | speed-up "
             "| break-even epochs | cache MiB |", "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, w in runs:
        lines.append(f"| `{name}` | {w['wavlm']} | {w['clips']} | {w['batch_size']} | {w['device']} | "
                     f"{_f(w['epoch_s_plain'])} | {_f(w['fill_s'])} | {_f(w['epoch_s_cached'], 3)} | "
                     f"{_f(w['speedup'], 1)} | {_f(w['break_even_epochs'])} | {_f(w['cache_bytes'] / 2**20, 1)} |")
    return "\n".join(lines)


def _load(folder: Path, pattern: str | None) -> list[tuple[str, dict[str, Any]]]:
    if not pattern:
        return []
    paths = sorted(folder.glob(pattern)) if "*" in pattern else [folder / pattern]
    out = []
    for p in paths:
        if p.is_file():
            try:
                out.append((p.name, json.loads(p.read_text())))
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}: not valid JSON ({err})") from None
    return out


def render(folder: str | Path, which: str = "gpu") -> str:
    """The markdown of every table whose file is in ``folder`` (a note for each missing one)."""
    if which not in SETS:
        raise ValueError(f"set must be one of {sorted(SETS)}, got {which!r}")
    folder, names = Path(folder), SETS[which]
    found = {k: _load(folder, v) for k, v in names.items() if k != "data"}
    data = [run for pattern in names["data"] for run in _load(folder, pattern)]
    out: list[str] = []
    missing = [names[k] for k, v in found.items() if not v and names[k]] + ([] if data else names["data"])
    any_run = next((runs[0][1] for runs in [*found.values(), data] if runs), None)
    if any_run is None:
        raise FileNotFoundError(f"{folder}: none of the {which} results files ({', '.join(missing)})")
    out.append(f"Machine: {machine_line(any_run)}.")
    benches = [run for k in ("b8", "b32") for run in found[k]]
    if benches:
        target = TARGET["gpu" if benches[0][1]["machine"]["gpu"] else "cpu"]  # the issue's, for the machine measured
        out += ["", f"**End to end against the trainer's own step** (samples/s; target ≥ {target}, bold when met):"]
        out += ["\n" + train_table(res, name, target) for name, res in benches]
    decode = data + [(name, res) for k in ("b8", "b32", "compile") for name, res in found[k]]
    if decode:
        out += ["", f"**Cold decode against the seed's loader** (clips/s; target ≥ {DECODE_TARGET}×):", "",
                decode_table(decode)]
    for name, res in found["compile"]:
        out += ["", f"**`--compile`** (`{name}`; compile s = the first steps' time beyond the steady step's):", "",
                compile_table(res)]
    for name, res in found["jobs"]:
        out += ["", f"**Several runs at once** (`{name}`):", "", jobs_table(res)]
    wavlm = [(name, res["wavlm_cache"]) for name, res in found["wavlm"] + benches if res.get("wavlm_cache")]
    if wavlm:
        out += ["", "**WavLM feature cache** (one stage-1 epoch; break-even = epochs after which fill + cached "
                    "epochs cost less than plain ones):", "", wavlm_table(wavlm)]
    if missing:
        out += ["", f"(Not found in {folder}: {', '.join(missing)}.)"]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=str(results_dir()), help="folder of the results JSON files")
    p.add_argument("--set", dest="which", choices=sorted(SETS), default="gpu",
                   help="which runs' file names: gpu (gpu_session.sh's, default) or cpu (the committed CPU runs)")
    args = p.parse_args(argv)
    try:
        print(render(args.dir, args.which), end="")
    except (FileNotFoundError, ValueError) as err:
        p.exit(1, f"gpu_tables: {err}\n")
    return 0
