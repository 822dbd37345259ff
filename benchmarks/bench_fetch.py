"""Milliseconds per batch of the resident and loader data paths alone (no model): ``emolab.bench.data.fetch_costs``.

    python benchmarks/bench_fetch.py                       # audio, batch 8, 320x180 clips
    python benchmarks/bench_fetch.py --modalities audio,video --batch_size 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from emolab.bench.common import machine, results_dir
from emolab.bench.data import fetch_costs, make_clips
from emolab.data import pair_corpus
from emolab.utils.fileio import atomic_write_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modalities", default="audio")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="10 batches, 2 repeats")
    p.add_argument("--out", default=str(results_dir() / "fetch.json"))
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="emolab-bench-") as tmp:
        make_clips(Path(tmp) / "clips", 8, (320, 180), 3.5, 30.0)
        res = fetch_costs(pair_corpus(Path(tmp) / "clips").pairs, Path(tmp) / "cache", batch_size=args.batch_size,
                          modalities=args.modalities.split(","), **({"batches": 10, "repeats": 2} if args.quick else {}))
    res["machine"] = machine()
    res["threads"] = torch.get_num_threads()
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))
    atomic_write_json(res, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
