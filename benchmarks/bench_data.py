"""Data pipeline speed: files -> ready batch, on RAVDESS-like clips.

Measures clips/s from MP4 + WAV files to a ready batch of video
``(B, 8, 3, 112, 112)`` and log-Mel ``(B, 1, 64, 301)``, side by side:

* naive: what the seed project does, every epoch: OpenCV reads every frame of
  the clip, 8 are sampled and resized;
* emolab cold: the first epoch, which decodes each clip once (PyAV) and fills
  the frame cache (face crop included);
* emolab warm: later epochs, served from the cache.

Audio (WAV read, resampling, log-Mel) is the same in all three. The clips are
generated at RAVDESS's resolution (1280x720, 30 fps, 3.5 s, H.264) unless
``--data`` points at a corpus (e.g. real RAVDESS).

    python benchmarks/bench_data.py             # 24 clips, 2 workers
    python benchmarks/bench_data.py --quick     # 8 clips
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from emolab.data import (
    DataConfig,
    RavdessMelDataset,
    load_audio,
    log_mel,
    make_loader,
    pair_corpus,
)
from emolab.data.demo import DemoConfig, write_recording
from emolab.data.video import IMAGENET_MEAN, IMAGENET_STD, sample_indices

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """CPU model, cores, GPU and library versions of this run."""
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


class NaiveDataset(Dataset):
    """The seed project's loader: OpenCV decodes the whole clip every time."""

    def __init__(self, pairs, num_frames: int = 8, size: int = 112):
        self.pairs, self.num_frames, self.size = pairs, num_frames, size
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        import cv2

        rec = self.pairs[i]
        cap = cv2.VideoCapture(str(rec.video_path))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        idx = sample_indices(len(frames), self.num_frames)
        clip = np.stack([cv2.resize(cv2.cvtColor(frames[j], cv2.COLOR_BGR2RGB), (self.size, self.size)) for j in idx])
        video = (torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        wave = load_audio(rec.audio_path)
        return {"video": video, "audio": log_mel(wave), "label": rec.emotion - 1}


def _epoch(loader) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        assert batch["video"].shape[1:] == (8, 3, 112, 112) and batch["audio"].shape[1:] == (1, 64, 301)
        n += batch["video"].shape[0]
    return time.perf_counter() - t0, n


def make_clips(out: Path, n: int, size: tuple[int, int], seconds: float, fps: float) -> None:
    """Write ``n`` RAVDESS-like recordings (WAV + video-only MP4) with the demo generator."""
    cfg = DemoConfig(actors=[1], size=size, seconds=seconds, fps=fps, noise=False)
    per_actor = [(e, i, s, r) for e in range(1, 9) for i in ((1,) if e == 1 else (1, 2)) for s in (1, 2) for r in (1, 2)]
    for j in range(n):
        e, i, s, r = per_actor[j % 60]
        write_recording(out, cfg, actor=1 + j // 60, emotion=e, intensity=i, statement=s, repetition=r)


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

    naive = DataLoader(NaiveDataset(pairs), batch_size=args.batch_size, num_workers=args.workers)
    t, n = _epoch(naive)
    res["naive_clips_per_s"] = n / t

    cfg = DataConfig(cache_dir=str(Path(tmp.name) / "cache"))
    ds = RavdessMelDataset(pairs, config=cfg)
    loader = make_loader(ds, args.batch_size, num_workers=args.workers, shuffle=True)
    t, n = _epoch(loader)
    res["cold_clips_per_s"] = n / t
    warm = []
    for epoch in range(1, args.warm_epochs + 1):
        ds.set_epoch(epoch)
        t, n = _epoch(loader)
        warm.append(n / t)
    res["warm_clips_per_s"] = float(np.median(warm))
    res["cache_bytes"] = ds.cache.disk_bytes()
    res["cache_bytes_per_clip"] = res["cache_bytes"] / len(pairs)
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
          f"(8x3x112x112 = {8 * 3 * 112 * 112 / 1024:.0f} KiB of frames)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
