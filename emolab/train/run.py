"""One training run end to end: corpus → split → datasets → model → trainer → run folder.

:func:`run_training` is the library entry point (the CLI and notebooks call
it); :func:`resume_training` continues an interrupted run from its folder.

Run folder ``OUTPUT_DIR/runs/{fusion}-seed{seed}-{YYYYmmdd-HHMMSS}``::

    config.json          the resolved TrainConfig (never rewritten by --resume)
    provenance.json      the split's exact pairs (list and SHA-256), corpus root, emolab and
                         torch versions, torch threads, config: what --resume checks
    history.jsonl        one record per epoch
    best_{fusion}.pt     {"model", "val_f1", "epoch", "config"} (also copied to OUTPUT_DIR/)
    last.pt              model, optimizer, scheduler, epoch, stage, best metric,
                         callback state, RNG states: what --resume needs
    test_metrics.json    the best checkpoint on the test split
    curves.png           learning curves (loss, accuracy, macro-F1, learning rates per epoch)
    confusion.png        the test split's confusion matrix
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from emolab.data.datasets import RavdessMelDataset, RavdessWavLMDataset
from emolab.data.loaders import loads_in_process, make_loader, warm_cache
from emolab.data.pairing import pair_corpus
from emolab.data.resident import make_resident_loader
from emolab.data.ravdess import PairRecord
from emolab.data.splits import Split, make_split
from emolab.utils.checkpoints import load_checkpoint
from emolab.utils.fileio import atomic_write_json, remove_stale_tmp
from emolab.models.registry import build_model_from_config, count_parameters
from emolab.train.callbacks import Callback, default_callbacks
from emolab.train.checkpoint import load_warm_start, seed_everything
from emolab.train.config import RESUMABLE_FIELDS, TrainConfig
from emolab.train.distributed import DistContext, init_distributed
from emolab.train.feature_cache import WavLMFeatureCache
from emolab.train.provenance import FILE as PROVENANCE_FILE, compare, provenance, read_provenance, write_provenance
from emolab.train.checkpoint import RunPaths
from emolab.train.trainer import EmotionTrainer
from emolab.utils.settings import config_diff, get_path, replace_path

__all__ = [
    "DataBundle",
    "RunResult",
    "SetupError",
    "build_run_model",
    "prepare_data",
    "resume_training",
    "run_training",
    "shuffle_labels",
]


class SetupError(RuntimeError):
    """A run cannot start (no data, weights unavailable offline, bad warm start): a message, not a traceback."""


@dataclass
class DataBundle:
    """The split, its datasets and loaders, and what the cold decode pass found."""

    split: Split
    datasets: dict[str, Any]
    loaders: dict[str, DataLoader]
    lines: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """What a finished run produced."""

    config: TrainConfig
    run_dir: Path
    history: list[dict[str, Any]]
    test_metrics: dict[str, Any]

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / f"best_{self.config.model.fusion}.pt"


def shuffle_labels(pairs: Sequence[PairRecord], seed: int) -> list[PairRecord]:
    """Give every pair the emotion (and intensity) of another pair, by a seeded permutation.

    Content and labels no longer agree, so a model cannot beat chance on the
    test split unless labels leak through names, order or the split.
    """
    perm = np.random.default_rng(seed).permutation(len(pairs))
    return [
        dataclasses.replace(p, emotion=pairs[j].emotion, intensity=pairs[j].intensity)
        for p, j in zip(pairs, perm.tolist())
    ]


def _say(ctx: DistContext, message: str) -> None:
    if ctx.is_main:
        print(message, flush=True)


def prepare_data(cfg: TrainConfig, ctx: DistContext | None = None) -> DataBundle:
    """Pair, split, build the three datasets (one shared cache), decode every clip once, make loaders.

    The datasets are raw (``uint8`` frames, ``int16`` audio and augmentation
    parameters; :class:`~emolab.data.features.BatchFeaturizer` finishes them on
    the training device) and read only the modalities the model uses. Pairs
    whose files fail to decode are left out (and listed). Each loader samples
    through a ``DistributedSampler`` (a world of one without torchrun), so the
    training order is a function of ``(seed, epoch)``.

    Raises:
        SetupError: no pairs under ``data_root``.
    """
    ctx = ctx or DistContext()
    lines: list[str] = []
    try:
        pairing = pair_corpus(cfg.data_root, vocal_channel=cfg.vocal_channel, check="size")
    except (FileNotFoundError, NotADirectoryError) as err:
        raise SetupError(f"data_root: {err}") from None
    if not pairing.pairs:
        raise SetupError(
            f"no RAVDESS pairs under '{cfg.data_root}': expected Actor_NN/ folders with video-only "
            "02-*.mp4 and audio-only 03-*.wav files (try `emolab demo-data --out data/demo`)"
        )
    rep = pairing.report
    lines.append(
        f"corpus {cfg.data_root}: {rep.pairs} pairs"
        + (f"; {rep.problems} files not used (see `emolab inspect --data_root {cfg.data_root}`)" if rep.problems else "")
    )
    pairs = pairing.pairs
    if cfg.shuffle_labels_seed is not None:
        pairs = shuffle_labels(pairs, cfg.shuffle_labels_seed)
        lines.append(f"labels SHUFFLED across pairs (seed {cfg.shuffle_labels_seed}): a sanity check, expect chance")
    try:
        split = make_split(pairs, cfg.split, seed=cfg.seed)
    except ValueError as err:
        raise SetupError(f"split: {err}") from None
    lines.append(split.description)
    lines.extend(f"note: {n}" for n in split.notes)

    dataset_cls = RavdessWavLMDataset if cfg.model.use_wavlm else RavdessMelDataset
    cache = cfg.data.make_cache()
    modalities = cfg.model.spec.inputs  # the registry's metadata: what the model reads

    def make(name: str, recs: list[PairRecord]) -> Any:
        return dataset_cls(
            recs,
            augment=cfg.augment and name == "train",
            config=cfg.data,
            cache=cache,
            data_root=cfg.data_root,
            seed=cfg.seed,
            modalities=modalities,
            num_classes=cfg.num_classes,
            n_mels=cfg.model.n_mels,
        )

    datasets: dict[str, Any] = {}
    for name, recs in split.items():
        ds = make(name, recs)
        report = None
        for turn in (0, 1):  # rank 0 decodes (with a progress bar), then the others read the cache
            if (ctx.rank == 0) == (turn == 0):
                report = warm_cache(ds, num_workers=cfg.num_workers, progress=cfg.progress and ctx.is_main)
            ctx.barrier()
        assert report is not None
        faces = ", ".join(f"{k} {v}" for k, v in sorted(report.faces.items()))
        crop = f"; face crop: {faces or '-'}" if "video" in modalities else ""
        lines.append(f"{name}: {len(recs)} pairs, decoded in {report.seconds:.1f} s{crop}")
        if report.incomplete:
            lines.append(f"{name}: {len(report.incomplete)} videos decode only in part; kept, sampled from "
                         "the frames that decode:")
            lines.extend(f"  {p.path}: {p.reason}" for p in report.incomplete)
        if report.failed:
            bad = {p.path for p in report.failed}
            lines.append(f"{name}: {len(bad)} files failed to decode; their pairs are left out:")
            lines.extend(f"  {p.path}: {p.reason}" for p in report.failed)
            ds = make(name, [r for r in recs if str(r.video_path) not in bad and str(r.audio_path) not in bad])
        if len(ds) == 0:
            _say(ctx, "\n".join(lines))  # what was found so far, with each file's reason
            raise SetupError(f"the {name} split has no usable pairs"
                             + (" (every file failed to decode: see the lines above)" if report.failed else ""))
        datasets[name] = ds

    loaders = {}
    resident = cfg.data_path == "resident" and not cfg.model.use_wavlm  # WavLM: the feature cache swaps loaders
    for name, ds in datasets.items():
        sampler = DistributedSampler(
            ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=name == "train", seed=cfg.seed, drop_last=False
        )
        if resident:
            loaders[name] = make_resident_loader(ds, cfg.batch_size, device=ctx.device, sampler=sampler, seed=cfg.seed)
            continue
        loaders[name] = make_loader(
            ds,
            cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            data_root=cfg.data_root,
            pin_memory=ctx.device.type == "cuda",
            seed=cfg.seed,
        )
    if resident:
        held = [ld.dataset for ld in loaders.values()]
        where = "pinned host memory" if any(r.pinned for r in held) else str(held[0].device)
        lines.append(f"data path: resident on {where}, {sum(r.nbytes for r in held) / 2**20:.0f} MiB, "
                     "batches drawn by index, no loader workers")
        return DataBundle(split, datasets, loaders, lines)
    workers = sorted({loader.num_workers for loader in loaders.values()})
    lines.append(f"loader workers: {', '.join(map(str, workers))}"
                 + (" (in-process: audio-only log-Mel data reads the cache faster than a worker hands it over)"
                    if workers == [0] and cfg.num_workers == -1 and any(loads_in_process(d) for d in datasets.values())
                    else ""))
    return DataBundle(split, datasets, loaders, lines)


def build_run_model(cfg: TrainConfig, *, warm_start: bool = True) -> nn.Module:
    """Build the model and (``warm_start``) load the warm-start checkpoints.

    ``audio_ckpt``/``video_ckpt`` go into ``model.audio_model``/``model.video_model``
    of a fusion model, or into the unimodal model itself.

    Raises:
        SetupError: weights unavailable (e.g. ImageNet offline: the message
            names ``--no_pretrained_video``), or a warm start does not fit.
    """
    try:
        model = build_model_from_config(cfg.model)
    except RuntimeError as err:
        raise SetupError(str(err)) from None
    targets = {"audio": cfg.audio_ckpt, "video": cfg.video_ckpt}
    for role, path in targets.items():
        if not path or not warm_start:
            continue
        module = getattr(model, f"{role}_model", model)
        try:
            load_warm_start(module, path, role=f"{role}_model")
        except (FileNotFoundError, ValueError) as err:
            raise SetupError(str(err)) from None
    return model


def _new_run_dir(cfg: TrainConfig) -> Path:
    runs = Path(cfg.output_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    base = cfg.run_name or f"{cfg.model.fusion}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1000):
        path = runs / (base if k == 0 else f"{base}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise SetupError(f"cannot create a run folder under {runs}")


def _check_fits(model: nn.Module, state: Mapping[str, Any], run_dir: Path) -> None:
    """``last.pt``'s model weights fit ``model`` (names and shapes), or a :class:`SetupError` saying how not."""
    sd = state.get("model") if isinstance(state, Mapping) else None
    if not isinstance(sd, Mapping) or not isinstance(state.get("epoch"), int):
        raise SetupError(f"--resume {run_dir}: last.pt is not an emolab resume checkpoint (no model weights and epoch)")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    shapes = [k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(getattr(sd[k], "shape", ()))]
    if missing or unexpected or shapes:
        what = "; ".join(t for t in (
            f"{len(missing)} weights missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(shapes)} of another shape (e.g. {sorted(shapes)[0]})" if shapes else "") if t)
        raise SetupError(f"--resume {run_dir}: last.pt holds another model than config.json describes ({what})")


def _check_output(folder: Path, model: nn.Module) -> None:
    """Before decoding: ``folder`` can be written and has room for the checkpoints (estimated from the model).

    Room: the best checkpoint twice (run folder and published copy) and ``last.pt``
    (weights and two Adam moments), plus a temporary ``last.pt`` while it is
    replaced: 8 times the weights, plus 1 MB of JSON.
    """
    probe = folder / f".probe.{os.getpid()}.tmp"
    remove_stale_tmp(folder)  # left by a process killed while writing (e.g. the published best checkpoint)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
    except OSError as err:
        raise SetupError(f"output folder {folder} cannot be written: {err.strerror or err}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    need = 8 * weights + (1 << 20)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise SetupError(
            f"output folder {folder} has {free / 2**20:.1f} MB free; this model's checkpoints need about "
            f"{need / 2**20:.1f} MB (free some space or pick another --output_dir)"
        )


def _write_failed(err: OSError, run_dir: Path) -> SetupError:
    folder = Path(err.filename).parent if err.filename else run_dir
    return SetupError(
        f"cannot write to {folder}: {err.strerror or err}; the previous checkpoints are intact"
        + (f" (continue with --resume {run_dir})" if (run_dir / "last.pt").is_file() else "")
    )


def _execute(
    cfg: TrainConfig,
    *,
    callbacks: Sequence[Callback],
    run_dir: Path | None,
    resume: dict[str, Any] | None,
    recorded: dict[str, Any] | None = None,
) -> RunResult:
    ctx = init_distributed(cfg.device)
    try:
        seed_everything(cfg.seed + ctx.rank)
        notes: list[str] = []
        if recorded is not None and recorded.get("torch_threads") and torch.get_num_threads() != recorded["torch_threads"]:
            notes.append(f"torch threads: {recorded['torch_threads']}, as the run recorded "
                         f"(this process had {torch.get_num_threads()})")
            torch.set_num_threads(int(recorded["torch_threads"]))
        model = build_run_model(cfg, warm_start=resume is None)  # a resume loads last.pt instead
        if resume is not None:
            _check_fits(model, resume, Path(run_dir))
        if ctx.is_main:
            _check_output(Path(run_dir) if run_dir is not None else Path(cfg.output_dir), model)
        data = prepare_data(cfg, ctx)
        record = provenance(cfg, data.datasets)
        if resume is not None and recorded is None:
            notes.append(f"{PROVENANCE_FILE} missing (a run made before emolab recorded it): the corpus is not checked")
        elif resume is not None:
            refusals, more = compare(recorded, record)
            if refusals:
                raise SetupError(f"--resume {run_dir}: " + "; ".join(refusals)
                                 + ". Start a new run for this corpus (or resume with the run's own)")
            notes.extend(more)
        data.lines.extend(f"note: {n}" for n in notes)
        if run_dir is None:
            run_dir = ctx.broadcast_object(_new_run_dir(cfg) if ctx.is_main else None)
        paths = RunPaths(Path(run_dir), Path(cfg.output_dir), cfg.model.fusion)
        if ctx.is_main and resume is None:  # a resumed run keeps its config.json and record
            try:
                atomic_write_json(cfg.to_dict(), paths.config)
                write_provenance(record, paths.run_dir)
            except OSError as err:
                raise _write_failed(err, paths.run_dir) from None
        # the WavLM feature cache first: it swaps the stage's loaders before anything reports on the stage
        trainer = EmotionTrainer(
            model, cfg, data.loaders, paths, dist=ctx,
            callbacks=[WavLMFeatureCache.from_config(cfg), *default_callbacks(cfg), *callbacks],
        )
        amp = f"mixed precision {str(trainer.amp_dtype).replace('torch.', '')}" if trainer.amp_dtype else "fp32"
        header = [
            f"run {paths.run_dir}" + (f" (resumed after epoch {resume['epoch']})" if resume else ""),
            f"device {ctx.device}" + (f" x {ctx.world_size} processes (DDP)" if ctx.distributed else "")
            + f", {amp}" + (", torch.compile" if cfg.compile else ""),
            f"model {cfg.model.fusion}: {count_parameters(model):,} parameters",
            *data.lines,
        ]
        for line in header:
            _say(ctx, line)
        try:
            metrics = trainer.fit(resume)
        except KeyboardInterrupt:
            _say(ctx, f"interrupted after epoch {trainer.epoch}; continue with --resume {paths.run_dir}")
            raise
        except OSError as err:  # disk full, folder gone or read-only: one line, last.pt stays loadable
            raise _write_failed(err, paths.run_dir) from None
        return RunResult(cfg, paths.run_dir, trainer.history, metrics)
    finally:
        ctx.close()


def run_training(cfg: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train ``cfg`` in a new run folder and evaluate the best checkpoint on the test split.

    Seeds everything with ``cfg.seed`` (plus the rank under torchrun) first.
    ``callbacks`` run after the default ones (the WavLM feature cache, early
    stopping, history, progress, W&B, checkpoints).

    Raises:
        SetupError: the run cannot start (see :func:`prepare_data`, :func:`build_run_model`).
    """
    return _execute(cfg, callbacks=callbacks, run_dir=None, resume=None)


def resume_training(
    run_dir: str | os.PathLike[str],
    *,
    overrides: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue an interrupted run from ``run_dir/last.pt`` with its saved ``config.json``.

    Args:
        run_dir: the run folder.
        overrides: new values by dotted field, of :data:`~emolab.train.config.RESUMABLE_FIELDS` only
            (declared ``resumable`` on the field: they change no result).

    Raises:
        SetupError: not a run folder, no ``last.pt`` yet, or an override of a
            field that would change the results (named, with the run's value and the new one).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise SetupError(f"--resume {run_dir}: not a run folder (no config.json)")
    remove_stale_tmp(run_dir)  # a kill during a write leaves its temporary file
    if not (run_dir / "last.pt").is_file():
        epochs = _history_epochs(run_dir)
        if epochs:
            raise SetupError(
                f"--resume {run_dir}: no last.pt, although history.jsonl records {epochs} epoch(s) "
                "(the process was killed while writing it?); the best checkpoint is kept, but the run "
                "cannot continue: start it again"
            )
        raise SetupError(f"--resume {run_dir}: no last.pt (the run did not finish its first epoch); start it again")
    try:
        cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    except (ValueError, TypeError) as err:
        raise SetupError(f"--resume {run_dir}: config.json cannot be read ({err})") from None
    try:
        recorded = read_provenance(run_dir)
    except ValueError as err:
        raise SetupError(f"--resume {run_dir}: {PROVENANCE_FILE} cannot be read ({err})") from None
    if recorded is not None:
        # the record read as config.json is (TrainConfig.from_dict: the old layout's copies, renamed fields and
        # fields added since, at the values the run had), so that only a real edit differs
        try:
            record = TrainConfig.from_dict(recorded.get("config", {})).to_dict()
        except (ValueError, TypeError) as err:
            raise SetupError(f"--resume {run_dir}: {PROVENANCE_FILE}'s config cannot be read ({err})") from None
        now = cfg.to_dict()
        may_move = (*RESUMABLE_FIELDS, "output_dir")  # output_dir: the folder a resumed run is in
        changed = [c for c in config_diff(record, {k: now.get(k) for k in record})
                   if not any(c.path == f or c.path.startswith(f + ".") for f in may_move)]
        if changed:
            raise SetupError(f"--resume {run_dir}: config.json differs from the run's record in "
                             + "; ".join(str(c) for c in changed))
    bad = sorted(set(overrides or {}) - set(RESUMABLE_FIELDS))
    if bad:
        raise SetupError(
            "--resume continues the run with its saved config; cannot change "
            + ", ".join(f"{k} ({_old_value(cfg, k)} -> {overrides[k]!r})" for k in bad)  # type: ignore[index]
            + f" (allowed: {', '.join(RESUMABLE_FIELDS)})"
        )
    for path, value in (overrides or {}).items():
        cfg = replace_path(cfg, path, value)
    try:
        state = load_checkpoint(run_dir / "last.pt")
    except ValueError as err:  # CheckpointError: truncated, not a checkpoint, ...
        raise SetupError(f"--resume {run_dir}: {err}") from None
    cfg.output_dir = str(run_dir.parent.parent)
    return _execute(cfg, callbacks=callbacks, run_dir=run_dir, resume=state, recorded=recorded)


def _old_value(cfg: TrainConfig, path: str) -> str:
    try:
        return repr(get_path(cfg, path))
    except AttributeError:
        return "not a TrainConfig field"


def _history_epochs(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0
