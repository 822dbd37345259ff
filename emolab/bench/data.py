"""Data pipeline speed: files -> ready batch, on RAVDESS-like clips.

Measures clips/s from MP4 + WAV files to a ready batch of video
``(B, 8, 3, 112, 112)`` and log-Mel ``(B, 1, 64, 301)``, side by side:

* naive: what the seed project does, every epoch (:class:`NaiveDataset`):
  OpenCV reads every frame of the clip, 8 are sampled, face-cropped (detected
  on the first) and resized with ``INTER_LINEAR``;
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
from typing import TYPE_CHECKING, Any, Sequence

from emolab.bench.common import machine, map_processes, results_dir, speech_key
from emolab.data import pair_corpus
from emolab.utils.fileio import atomic_write_json

if TYPE_CHECKING:  # torch is imported inside the functions so that ``emolab --help`` stays instant
    from torch.utils.data import DataLoader


class NaiveDataset:
    """The seed project's loader: OpenCV decodes the whole clip every time (a map-style dataset).

    Its work per clip is the seed's (``load_video_frames`` of its design note,
    ``--use_face_crop`` being its default): ``cv2.VideoCapture`` reads every
    frame, 8 are sampled uniformly, the face is detected on the first sampled
    frame and its box crops all 8 (``face_crop``; emolab's Haar detector, the
    one emolab's cold pass runs, so the two differ only in decoding and
    resizing), each frame is resized with ``cv2.resize``'s default
    ``INTER_LINEAR`` and ImageNet-normalised; the WAV is read, resampled and
    turned into a log-Mel.
    """

    def __init__(self, pairs: Sequence[Any], num_frames: int = 8, size: int = 112, face_crop: bool = True):
        import torch

        from emolab.data.faces import make_face_detector
        from emolab.data.video import IMAGENET_MEAN, IMAGENET_STD

        self.pairs, self.num_frames, self.size = pairs, num_frames, size
        self.detector = make_face_detector("haar") if face_crop else None
        if self.detector is not None and not self.detector.available:
            self.detector = None
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import cv2
        import numpy as np
        import torch

        from emolab.data import load_audio, log_mel
        from emolab.data.faces import center_square_box, face_box_to_square
        from emolab.data.video import sample_indices

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
        rgb = [cv2.cvtColor(frames[j], cv2.COLOR_BGR2RGB) for j in idx]
        if self.detector is not None:  # the seed: detect on the first frame, reuse the box
            found = self.detector.detect(rgb[0])
            hw = rgb[0].shape[:2]
            x0, y0, x1, y1 = face_box_to_square(found, hw) if found is not None else center_square_box(hw)
            rgb = [f[y0:y1, x0:x1] for f in rgb]
        clip = np.stack([cv2.resize(np.ascontiguousarray(f), (self.size, self.size)) for f in rgb])
        video = (torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        wave = load_audio(rec.audio_path)
        return {"video": video, "audio": log_mel(wave), "label": rec.emotion - 1}


def _write_clip(out: Path, cfg: Any, j: int) -> None:
    from emolab.data.synthetic import write_recording

    actor, e, i, s, r = speech_key(j)
    write_recording(out, cfg, actor=actor, emotion=e, intensity=i, statement=s, repetition=r)


def make_clips(out: Path, n: int, size: tuple[int, int], seconds: float, fps: float, processes: int = 1) -> None:
    """Write ``n`` RAVDESS-like recordings (WAV + video-only MP4) with the demo generator.

    ``processes`` > 1 writes them from that many forked processes: a 1280x720 clip takes 1-2 s to encode, so a
    GPU machine's many cores make the 48 clips of ``gpu_session.sh`` in seconds instead of a minute. The files
    are the same either way (each recording depends only on its name).
    """
    from functools import partial

    from emolab.data.synthetic import DemoConfig

    cfg = DemoConfig(actors=[1], size=size, seconds=seconds, fps=fps, noise=False)
    map_processes(partial(_write_clip, Path(out), cfg), n, processes)


def time_epoch(loader: DataLoader, featurize: Any = None) -> tuple[float, int]:
    """Seconds and clips of one pass over ``loader`` to ready batches (featurised when given), checking the shapes."""
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        if featurize is not None:
            batch = featurize(batch)
        assert batch["video"].shape[1:] == (8, 3, 112, 112) and batch["audio"].shape[1:] == (1, 64, 301)
        n += batch["video"].shape[0]
    return time.perf_counter() - t0, n


def emolab_loader(pairs: Sequence[Any], cache_dir: Path, *, batch_size: int,
                  workers: int) -> tuple[Any, DataLoader, Any]:
    """The dataset, loader and featuriser of emolab's data path (the trainer's), with the seed's Haar detector as
    the naive path has: the comparison times the data path, not the detector (MTCNN, the default, costs more per
    clip: ``benchmarks/face_detectors.py``)."""
    from emolab.data import DataConfig, RavdessMelDataset, make_loader
    from emolab.data.features import BatchFeaturizer

    ds = RavdessMelDataset(pairs, config=DataConfig(cache_dir=str(cache_dir), face_detector="haar"))
    loader = make_loader(ds, batch_size, num_workers=workers, shuffle=True)
    return ds, loader, BatchFeaturizer.for_dataset(ds, channels_last=False)


def measure_data(pairs: Sequence[Any], cache_dir: Path, *, batch_size: int, workers: int,
                 warm_epochs: int) -> dict[str, Any]:
    """Naive, cold and warm clips/s over ``pairs``; leaves the warm cache in ``cache_dir``.

    emolab's figures use the trainer's path: workers read ``uint8`` frames and
    ``int16`` audio, the batch is featurised in this process (log-Mel,
    normalisation). Warm epochs serve the cached clips repeated to at least 256
    per epoch.
    """
    import numpy as np
    from torch.utils.data import DataLoader

    res: dict[str, Any] = {"clips": len(pairs)}
    naive = DataLoader(NaiveDataset(pairs), batch_size=batch_size, num_workers=workers)
    t, n = time_epoch(naive)
    res["naive_clips_per_s"] = n / t
    ds, loader, featurize = emolab_loader(pairs, cache_dir, batch_size=batch_size, workers=workers)
    t, n = time_epoch(loader, featurize)
    res["cold_clips_per_s"] = n / t
    del loader
    # Warm epochs of a few clips last tens of milliseconds, too short to time beside the fixed
    # cost of starting an epoch; they run over the cached clips repeated to >= 256 per epoch.
    served = [pairs[i % len(pairs)] for i in range(max(len(pairs), 256))]
    res["warm_epoch_clips"] = len(served)
    warm_ds, warm, feat = emolab_loader(served, cache_dir, batch_size=batch_size, workers=workers)
    time_epoch(warm, feat)  # worker start-up and their memory caches: not timed
    rates = []
    for epoch in range(1, max(1, warm_epochs) + 1):
        warm_ds.set_epoch(epoch)
        t, n = time_epoch(warm, feat)
        rates.append(n / t)
    res["warm_clips_per_s"] = float(np.median(rates))
    del warm
    res["cache_bytes"] = ds.cache.disk_bytes(None)
    res["cache_frame_bytes"] = ds.cache.disk_bytes("frames")
    res["cache_audio_bytes"] = ds.cache.disk_bytes("audio")
    res["cache_bytes_per_clip"] = res["cache_bytes"] / len(pairs)
    return res


def measure_growth(pairs: Sequence[Any], base: int, root: Path, *, batch_size: int, workers: int) -> list[dict[str, Any]]:
    """Cold and warm epoch time and cache size for 1x, 2x and 4x ``base`` clips (fresh cache each)."""
    rows = []
    for scale in (1, 2, 4):
        n = base * scale
        ds, loader, featurize = emolab_loader(pairs[:n], root / f"growth_{n}", batch_size=batch_size, workers=workers)
        cold, _ = time_epoch(loader, featurize)
        ds.set_epoch(1)
        warm, _ = time_epoch(loader, featurize)
        size = ds.cache.disk_bytes(None)
        rows.append({"scale": scale, "clips": n, "cold_s": cold, "warm_s": warm,
                     "cache_bytes": size, "cache_bytes_per_clip": size / n})
        del loader
    return rows


def run(args: argparse.Namespace) -> dict:
    import torch

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
    p.add_argument("--out", default=str(results_dir() / "data.json"))
    p.add_argument("--generate", default=None, metavar="DIR",
                   help="only write --clips clips (--size, --seconds, --fps) under DIR, for later --data runs")
    p.add_argument("--processes", type=int, default=1, help="processes writing the clips of --generate")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.warm_epochs = 8, 2
    if args.generate:
        w, h = (int(v) for v in args.size.split("x"))
        t0 = time.perf_counter()
        make_clips(Path(args.generate), args.clips, (w, h), args.seconds, args.fps, processes=args.processes)
        print(f"generated {args.clips} clips at {args.size} under {args.generate} in {time.perf_counter() - t0:.1f} s "
              f"({args.processes} processes)")
        return 0
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


def fetch_costs(pairs: Sequence[Any], cache_dir: Path, *, batch_size: int = 8, batches: int = 40, repeats: int = 3,
                modalities: Sequence[str] = ("audio",), split_clips: int = 1080) -> dict[str, Any]:
    """Milliseconds per batch of the two warm data paths alone (no model), in-process, alternating ``repeats`` times.

    ``resident``: :func:`~emolab.data.resident.make_resident_loader`; ``loader``:
    :func:`~emolab.data.loaders.make_loader` without workers (the trainer's
    choice for audio-only data). Each is timed fetching batches, then fetching
    and featurising them; the split is ``pairs`` repeated to ``split_clips``,
    augmented. What is left of a step after these is the model's.
    """
    import numpy as np
    import torch
    from torch.utils.data import RandomSampler

    from emolab.data import AudioNoise, DataConfig, RavdessMelDataset, make_loader, warm_cache
    from emolab.data.features import BatchFeaturizer
    from emolab.data.resident import ResidentClips, make_resident_loader

    served = [pairs[i % len(pairs)] for i in range(split_clips)]
    ds = RavdessMelDataset(served, config=DataConfig(cache_dir=str(cache_dir)), augment=True,
                           modalities=tuple(modalities), audio_noise=AudioNoise(None))
    warm_cache(ds, num_workers=0, progress=False)
    res = ResidentClips(ds)
    feat = BatchFeaturizer.for_dataset(res, channels_last=False)

    def sampler(of: Any) -> RandomSampler:
        return RandomSampler(of, num_samples=batches * batch_size, generator=torch.Generator().manual_seed(0))

    def per_batch(loader: Any, featurize: bool) -> float:
        t0, n = time.perf_counter(), 0
        for b in loader:
            if featurize:
                feat(b)
            n += 1
        return (time.perf_counter() - t0) / n * 1000

    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, loader in (("resident", make_resident_loader(res, batch_size, sampler=sampler(res), drop_last=True)),
                             ("loader", make_loader(ds, batch_size, sampler=sampler(ds), num_workers=0,
                                                    drop_last=True))):
            times.setdefault(f"{name}_fetch_ms", []).append(per_batch(loader, False))
            times.setdefault(f"{name}_fetch_featurize_ms", []).append(per_batch(loader, True))
    out: dict[str, Any] = {k: float(np.median(v)) for k, v in times.items()}
    out.update(batch_size=batch_size, batches=batches, repeats=repeats, modalities=list(modalities),
               all_ms={k: v for k, v in times.items()})
    return out
