"""WavLM feature-cache benchmark: one stage-1 epoch with and without :mod:`emolab.train.feature_cache`.

The cached epoch is what a run gets: the trainer with the
:class:`~emolab.train.feature_cache.WavLMFeatureCache` callback, serving loaders
over :class:`~emolab.data.feature_cache.CachedFeaturesDataset` (loader rebuild
included in the fill time).

``emolab bench`` runs :func:`measure_wavlm_cache` (``--wavlm small|base|none``);
it can be called on its own::

    from emolab.bench.wavlm import measure_wavlm_cache
    measure_wavlm_cache(16, wavlm="base", batch_size=8, epochs=3, num_threads=1)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from emolab.bench.common import map_processes, speech_key
from emolab.data.feature_cache import FeatureStore

if TYPE_CHECKING:
    from transformers import WavLMConfig

__all__ = ["measure_wavlm_cache"]


def _small_config() -> WavLMConfig:
    from transformers import WavLMConfig

    # a quarter of wavlm-base's width, 4 of its 12 layers, the same conv front end (Ta = 149 for 3 s)
    return WavLMConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768)


def _write_wav(root: Path, cfg: Any, j: int) -> Any:
    """Clip ``j`` of :func:`_bench_clips` (synthetic speech named as RAVDESS's j-th recording) and its pair."""
    import soundfile as sf

    from emolab.data.ravdess import PairRecord
    from emolab.data.synthetic import synthesize_recording

    actor, e, i, s, r = speech_key(j)
    clip = synthesize_recording(cfg, actor=actor, emotion=e, intensity=i, statement=s, repetition=r, video=False)
    stem = f"01-{e:02d}-{i:02d}-{s:02d}-{r:02d}-{actor:02d}"
    wav = root / f"Actor_{actor:02d}" / f"03-{stem}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, clip.audio, cfg.sample_rate, subtype="PCM_16")
    return PairRecord(wav.with_name(f"02-{stem}.mp4"), wav, e, i, s, r, actor)


def _bench_clips(root: Path, n: int, seconds: float, processes: int = 1) -> list[Any]:
    """``n`` RAVDESS-named WAVs (synthetic speech of the demo generator) and a noise file; audio-only pairs.

    ``processes`` > 1 synthesises them in forked processes (1080 clips, RAVDESS's training split, take
    about 40 s on one core); the files are the same either way (each depends only on its name)."""
    from functools import partial

    import soundfile as sf

    from emolab.data.synthetic import DemoConfig, synthesize_noise

    cfg = DemoConfig(actors=1, seconds=seconds, seed=0)
    pairs = map_processes(partial(_write_wav, root, cfg), n, processes, chunksize=max(1, n // (4 * processes)))
    (root / "Noise").mkdir(parents=True, exist_ok=True)
    sf.write(root / "Noise" / "noise.wav", synthesize_noise(8.0, cfg.sample_rate, 0), cfg.sample_rate, subtype="PCM_16")
    return pairs


def measure_wavlm_cache(
    n_clips: int = 16,
    *,
    wavlm: str | WavLMConfig | dict[str, Any] = "small",
    batch_size: int = 8,
    device: str = "cpu",
    variants: int = 0,
    epochs: int = 1,
    num_workers: int = 0,
    seconds: float = 3.0,
    num_threads: int | None = None,
    workdir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Time a WavLM stage-1 epoch (frozen backbone, head trains) over ``n_clips`` clips, without and with the cache.

    The clips are synthetic 3 s speech WAVs (the demo generator), augmented
    with noise like a training split; their audio is decoded into the frame
    cache first, so the timings compare the model side only. Steps: the plain
    epoch (backbone forward every step), the one-off fill, the cached epoch
    (median over ``epochs`` each), and a second stage start over a warm cache
    (fingerprint + entry checks, no forward).

    Args:
        n_clips: training clips.
        wavlm: ``"small"`` (a 4-layer, 192-wide random WavLM: fast), ``"base"``
            (a random ``WavLMConfig()``: wavlm-base's architecture and cost,
            no download), a ``WavLMConfig``/dict, or a Hub name / local folder of
            pretrained weights, loaded only if available offline.
        batch_size, device, num_workers: as in training.
        variants: noisy variants per clip to fill (the fill time grows with ``1 + variants``).
        epochs: timed epochs per mode (the median is reported).
        seconds: clip length of the generated audio.
        num_threads: ``torch.set_num_threads`` during the measurement (restored
            after); ``None`` keeps the current setting. On a small shared CPU
            one thread can be much faster than oversubscribed ones.
        workdir: where clips and the cache go (default: a temporary folder, removed).
        log: progress messages (e.g. ``print``).
        processes: processes synthesising the clips (not timed).

    Returns:
        ``{"clips", "batch_size", "device", "wavlm", "backbone_params", "variants",
        "threads", "epoch_s_plain", "fill_s", "epoch_s_cached", "speedup", "warm_start_s",
        "break_even_epochs", "cache_bytes", "entries_computed"}``; ``speedup`` is
        plain / cached epoch time, ``break_even_epochs`` the epochs after which
        fill + cached epochs cost less than plain ones.
    """
    import tempfile

    from transformers import WavLMConfig, WavLMModel

    from emolab.data.datasets import DataConfig, RavdessWavLMDataset
    from emolab.data.loaders import make_loader, warm_cache
    from emolab.models.registry import ModelConfig, build_model, count_parameters
    from emolab.train.config import TrainConfig
    from emolab.train.feature_cache import WavLMFeatureCache
    from emolab.train.checkpoint import RunPaths
    from emolab.train.trainer import EmotionTrainer

    say = log or (lambda _msg: None)
    tmp = tempfile.TemporaryDirectory(prefix="emolab-wavlm-cache-") if workdir is None else None
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    work = Path(tmp.name if tmp is not None else workdir)  # type: ignore[arg-type]
    try:
        if isinstance(wavlm, str) and wavlm in ("small", "base"):
            config: Any = _small_config() if wavlm == "small" else WavLMConfig()
            name = f"{wavlm} (random init)"
        elif isinstance(wavlm, (WavLMConfig, dict)):
            config, name = wavlm, "given config (random init)"
        else:
            try:
                pretrained = WavLMModel.from_pretrained(str(wavlm), local_files_only=True)
            except OSError as err:
                raise RuntimeError(f"measure_wavlm_cache: {wavlm!r} is not available offline ({err})") from None
            config, name = None, str(wavlm)
        torch.manual_seed(0)
        model_cfg = ModelConfig(fusion="audio", use_wavlm=True, wavlm_config=config)
        model = build_model("audio", use_wavlm=True, wavlm_config=config if config is not None else pretrained.config)
        if config is None:
            model.backbone.load_state_dict(pretrained.state_dict())
        say(f"generating {n_clips} clips of {seconds:g} s")
        pairs = _bench_clips(work / "data", n_clips, seconds, processes)
        data_cfg = DataConfig(cache_dir=str(work / "cache"), face_crop="none", clip_seconds=seconds)
        ds = RavdessWavLMDataset(pairs, augment=True, config=data_cfg, data_root=work / "data", seed=0,
                                 modalities=("audio",))
        warm_cache(ds, num_workers=0, progress=False)
        loaders = {"train": make_loader(ds, batch_size, shuffle=True, num_workers=num_workers, seed=0)}
        paths = RunPaths(work / "run", work, "audio")

        def trainer(cache: bool) -> tuple[EmotionTrainer, WavLMFeatureCache]:
            cfg = TrainConfig(data_root=str(work / "data"), model=model_cfg, data=data_cfg, epochs=epochs,
                              batch_size=batch_size, device=device, progress=False, num_workers=num_workers,
                              feature_cache=cache, feature_cache_variants=variants)
            feature_cache = WavLMFeatureCache.from_config(cfg)  # the callback run_training adds
            t = EmotionTrainer(model, cfg, loaders, paths, callbacks=[feature_cache])
            t.log = say  # type: ignore[method-assign]  # the fill summary goes to ``log``
            return t, feature_cache

        def sync() -> None:
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()

        def timed_epochs(t: EmotionTrainer) -> float:
            times = []
            for e in range(epochs):
                sync()
                t0 = time.perf_counter()
                t.train_epoch(e)
                sync()
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

        plain, _ = trainer(False)
        plain._begin_stage(plain.stages[0])
        say("timing the plain epoch (backbone forward every step)")
        epoch_plain = timed_epochs(plain)

        cached, cache = trainer(True)
        say("filling the feature cache")
        sync()
        t0 = time.perf_counter()
        cached._begin_stage(cached.stages[0])
        sync()
        fill_s = time.perf_counter() - t0
        computed = cache.last_fill.computed if cache.last_fill else 0
        say("timing the cached epoch")
        epoch_cached = timed_epochs(cached)
        cache.release(cached)
        again, warm = trainer(True)  # a new run over the warm cache: fingerprint + entry checks, no forward
        t0 = time.perf_counter()
        again._begin_stage(again.stages[0])
        warm_s = time.perf_counter() - t0
        assert warm.last_fill is not None and warm.last_fill.computed == 0
        warm.release(again)
        gain = epoch_plain - epoch_cached
        return {
            "clips": n_clips,
            "batch_size": batch_size,
            "device": str(cached.device),
            "wavlm": name,
            "backbone_params": count_parameters(model.backbone),
            "variants": variants,
            "threads": torch.get_num_threads(),
            "epoch_s_plain": epoch_plain,
            "fill_s": fill_s,
            "epoch_s_cached": epoch_cached,
            "speedup": epoch_plain / epoch_cached if epoch_cached > 0 else float("inf"),
            "warm_start_s": warm_s,
            "break_even_epochs": fill_s / gain if gain > 0 else float("inf"),
            "cache_bytes": FeatureStore(work / "cache").disk_bytes(),
            "entries_computed": computed,
        }
    finally:
        torch.set_num_threads(threads)
        if tmp is not None:
            tmp.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``benchmarks/bench_wavlm.py``: the feature-cache figure alone (``emolab bench`` runs it beside the others),
    so that a GPU session can time it at RAVDESS's size (1080 training clips) without re-running every mode."""
    import argparse
    import os

    from emolab.bench.common import machine, results_dir
    from emolab.utils.fileio import atomic_write_json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--clips", type=int, default=1080, help="training clips (default 1080, RAVDESS's training split)")
    p.add_argument("--wavlm", choices=("base", "small"), default="base",
                   help="a random wavlm-base-sized backbone (default) or a small 4-layer one")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per mode (median)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="processes synthesising the clips")
    p.add_argument("--out", default=str(results_dir() / "wavlm.json"))
    args = p.parse_args(argv)
    if args.clips < 1 or args.epochs < 1:
        p.error("--clips and --epochs must be >= 1")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    res = measure_wavlm_cache(args.clips, wavlm=args.wavlm, batch_size=args.batch_size, device=device,
                              epochs=args.epochs, num_threads=args.threads, processes=args.processes, log=print)
    out = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "out"},
           "wavlm_cache": res, "elapsed_s": time.perf_counter() - t0}
    print(f"WavLM stage-1 epoch, {res['wavlm']}, {res['clips']} clips, batch {res['batch_size']} on {res['device']}: "
          f"{res['epoch_s_plain']:.2f} s with the backbone every step, {res['epoch_s_cached']:.3f} s from the feature "
          f"cache ({res['speedup']:.1f}x) after a {res['fill_s']:.2f} s fill; break-even after "
          f"{res['break_even_epochs']:.2f} epochs; {res['cache_bytes'] / 2**20:.1f} MiB")
    atomic_write_json(out, Path(args.out))
    print(f"wrote {args.out}")
    return 0
