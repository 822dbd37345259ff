"""Data pipeline speed: files -> ready batch, on RAVDESS-like clips.

Measures clips/s from MP4 + WAV files to a ready batch of video
``(B, 8, 3, 112, 112)`` and log-Mel ``(B, 1, 64, 301)``, side by side:

* naive: what the seed project does, every epoch: OpenCV reads every frame of
  the clip, 8 are sampled and resized;
* emolab cold: the first epoch, which decodes each clip once (PyAV) and fills
  the cache (face crop included; the audio read and resampled once, int16);
* emolab warm: later epochs, served from the cache: workers ship uint8 frames
  and int16 audio, the batch is featurised in the main process (log-Mel,
  normalisation), as the trainer does.

The naive pipeline reads the WAV, resamples and computes the log-Mel every epoch. The clips are
generated at RAVDESS's resolution (1280x720, 30 fps, 3.5 s, H.264) unless
``--data`` points at a corpus (e.g. real RAVDESS).

    python benchmarks/bench_data.py             # 24 clips, 2 workers
    python benchmarks/bench_data.py --quick     # 8 clips
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from emolab.bench import NaiveDataset, machine, make_clips, measure_data, time_epoch  # noqa: F401  (re-exported)
from emolab.data import pair_corpus
from emolab.fileio import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tmp = tempfile.TemporaryDirectory(prefix="emolab-bench-")
    data = Path(args.data) if args.data else Path(tmp.name) / "clips"
    if not args.data:
        w, h = (int(v) for v in args.size.split("x"))
        t0 = time.perf_counter()
        make_clips(data, args.clips, (w, h), args.seconds, args.fps)
        print(f"generated {args.clips} clips at {args.size}, {args.seconds} s, {args.fps} fps "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    pairs = pair_corpus(data).pairs[: args.clips]
    if not pairs:
        raise SystemExit(f"no pairs under {data}")
    res: dict = {"machine": machine(), "clips": len(pairs), "workers": args.workers,
                 "batch_size": args.batch_size, "clip": {"size": args.size, "seconds": args.seconds, "fps": args.fps}}
    res.update(measure_data(pairs, Path(tmp.name) / "cache", batch_size=args.batch_size,
                            workers=args.workers, warm_epochs=args.warm_epochs))
    tmp.cleanup()
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--seconds", type=float, default=3.5)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--warm_epochs", type=int, default=3)
    p.add_argument("--data", default=None, help="use this corpus instead of generating clips")
    p.add_argument("--quick", action="store_true", help="8 clips, 2 warm epochs")
    p.add_argument("--out", default=str(RESULTS / "data.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.warm_epochs = 8, 2
    res = run(args)
    rows = [
        ("naive (OpenCV, decode every epoch)", res["naive_clips_per_s"]),
        ("emolab cold (first epoch, fills cache)", res["cold_clips_per_s"]),
        ("emolab warm (cached)", res["warm_clips_per_s"]),
    ]
    m = res["machine"]
    print(f"\n{res['clips']} clips {res['clip']['size']} {res['clip']['seconds']} s @ {res['clip']['fps']} fps, "
          f"batch {res['batch_size']}, {res['workers']} workers | {m['cpu']}, {m['cores']} cores, "
          f"GPU {m['gpu'] or 'none'}, torch {m['torch']}")
    print(f"{'pipeline':<42}{'clips/s':>10}{'x naive':>10}")
    for name, v in rows:
        print(f"{name:<42}{v:>10.2f}{v / res['naive_clips_per_s']:>10.1f}")
    print(f"cache: {res['cache_bytes_per_clip'] / 1024:.0f} KiB per clip "
          f"(8x3x112x112 = {8 * 3 * 112 * 112 / 1024:.0f} KiB of frames, 3 s of int16 audio = 94 KiB)")
    out = Path(args.out)
    atomic_write_json(res, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
