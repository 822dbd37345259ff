"""What notebooks 03-05 compute: small training configs, load-or-train, gates over test-time SNRs, attention of chosen clips.

The notebooks stay thin (``notebooks/README.md``); the logic they need lives here
and is tested in ``tests/test_analysis.py``.

* :func:`notebook_config`: a small :class:`~emolab.train.TrainConfig` for a
  notebook run (any fusion), with a smoke setting that trains in seconds on a
  CPU (a subset of actors, 1-2 epochs, 2 frames of 48 px, no disk cache).
* :func:`cpu_determinism`: one CPU thread, so that a smoke run prints the same
  rounded numbers on any machine.
* :func:`train`: a training run whose printed paths hold nothing machine-specific.
* :func:`load_model`: a checkpoint (``best_{fusion}.pt``) and the config saved in it.
* :func:`load_or_train`: that, or a small run when no checkpoint is given.
* :func:`test_dataset`: the test split of a config as a dataset.
* :func:`collect_gates`: the gate ``g`` (audio weight) of every test clip at each
  SNR level, with labels and accuracy; the noise is a featuriser
  :class:`~emolab.data.features.Condition` (:func:`noise_condition`).
* :func:`collect_attention`: v2a/a2v attention of chosen test clips with their
  frames, log-Mel and the times in seconds of video frames and audio steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emolab.data.datasets import (
    DataConfig,
    RavdessAVDataset,
    RavdessMelDataset,
    RavdessWavLMDataset,
    resolve_noise_path,
)
from emolab.data.features import BatchFeaturizer, Condition
from emolab.data.loaders import make_loader
from emolab.data.noise import AudioNoise
from emolab.data.pairing import pair_corpus
from emolab.data.ravdess import class_names
from emolab.data.splits import SplitConfig, make_split
from emolab.models.fusion import forward_batch
from emolab.models.registry import ModelConfig
from emolab.utils.checkpoints import load_checkpoint
from emolab.train.config import OptimConfig, TrainConfig
from emolab.train.run import RunResult, build_run_model, run_training
from emolab.eval.attention import (  # re-exported: notebook 04 calls them here
    AttentionClip,
    attention_spread,
    collect_attention,
    display_frames,
)

__all__ = [
    "SNR_LEVELS",
    "SMOKE_SPLIT",
    "AttentionClip",
    "GateCollection",
    "attention_spread",
    "collect_attention",
    "display_frames",
    "collect_gates",
    "corpus_actors",
    "cpu_determinism",
    "load_model",
    "load_or_train",
    "noise_condition",
    "notebook_config",
    "smoke_actor_lists",
    "snr_label",
    "stratified_subset",
    "test_dataset",
    "train",
]

#: Test-time noise levels of notebook 05: clean (None), then 20, 10, 5 and 0 dB.
SNR_LEVELS: tuple[float | None, ...] = (None, 20.0, 10.0, 5.0, 0.0)
#: Smoke split (actor ids train / val / test): 240 / 60 / 60 pairs of the demo corpus.
SMOKE_SPLIT: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] = ((1, 2, 3, 4), (19,), (22,))


def smoke_actor_lists(actors: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The smoke split (train / val / test actor ids) for the actors a corpus holds.

    :data:`SMOKE_SPLIT` when all its actors are present (the demo corpus, full RAVDESS);
    otherwise up to 4 of the lowest actors train, the second-highest validates and the
    highest tests (3 actors: one each).

    Raises:
        ValueError: fewer than 3 actors (a speaker-independent split needs one per split).
    """
    present = sorted({int(a) for a in actors})
    if all(a in present for part in SMOKE_SPLIT for a in part):
        return SMOKE_SPLIT
    if len(present) < 3:
        raise ValueError(
            f"the corpus holds {len(present)} actor(s) {present}; a speaker-independent split needs at least 3 "
            "(one each for train, val and test)"
        )
    return tuple(present[: min(4, len(present) - 2)]), (present[-2],), (present[-1],)


def corpus_actors(data_root: str | os.PathLike[str]) -> list[int]:
    """The actor ids of the audio/video pairs under ``data_root`` (file names only, nothing opened)."""
    return sorted({p.actor for p in pair_corpus(data_root, check="none").pairs})


def snr_label(snr_db: float | None) -> str:
    """``"clean"`` for None, else ``"20 dB"`` (the keys :mod:`emolab.viz.gates` understands)."""
    return "clean" if snr_db is None else f"{snr_db:g} dB"


def cpu_determinism(threads: int = 1) -> None:
    """Run torch on ``threads`` CPU threads (intra- and inter-op where still settable).

    Smoke runs of the notebooks call this so that their rounded metrics do not
    depend on the core count of the machine (float sums are grouped by thread).
    """
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only settable before the first parallel work
        pass


def notebook_config(
    data_root: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    fusion: str = "gated",
    seed: int = 0,
    smoke: bool = False,
    epochs: int | None = None,
    **overrides: Any,
) -> TrainConfig:
    """A small training config for a notebook: AudioCNN + random-init ResNet18 on 2 frames of 48 px (an xattn
    model: the demo's xattn settings, 6 frames and the time encoding, so that its attention has something to show:
    :func:`emolab.train.demo.demo_xattn_config`).

    Full setting (``smoke=False``): the default actor split (train 1-18, val
    19-21, test 22-24 on 24 actors, scaled to the actors present otherwise), 5 epochs
    of Adam (lr 1e-3, cosine), as :func:`emolab.train.demo_config`. Smoke: actors
    :func:`smoke_actor_lists` of the corpus (:data:`SMOKE_SPLIT` on the demo corpus), 2 epochs,
    batches of 16, frame cache in memory only, no progress bars (the full setting shows tqdm bars); with
    :func:`cpu_determinism` it runs in seconds and prints the same numbers anywhere.

    Args:
        data_root: the corpus.
        output_dir: runs go to ``output_dir/runs/<fusion>-seed<seed>``.
        fusion: any registered fusion name (``audio``, ``video``, ``late``,
            ``concat``, ``gated``, ``xattn``, ``xattn_gated``, ...).
        seed: the run's seed.
        smoke: the small setting.
        epochs: overrides the setting's epochs.
        overrides: further top-level :class:`TrainConfig` fields.
    """
    from emolab.models.registry import resolve_model_name
    from emolab.train.demo import DEMO_XATTN_FRAMES, DEMO_XATTN_TIME_ENCODING

    xattn = resolve_model_name(fusion)[0] == "xattn"
    split = SplitConfig()
    if smoke and "split" not in overrides:
        train, val, test = smoke_actor_lists(corpus_actors(data_root))
        split = SplitConfig(mode="actor", train_actors=train, val_actors=val, test_actors=test)
    cfg = TrainConfig(
        data_root=str(data_root),
        model=ModelConfig(fusion=fusion, pretrained_video=False,
                          xattn_time_encoding=DEMO_XATTN_TIME_ENCODING if xattn else 0.0),
        data=DataConfig(num_frames=DEMO_XATTN_FRAMES if xattn else 2, frame_size=48, cache_dir="" if smoke else None),
        split=split,
        optim=OptimConfig(lr=1e-3, weight_decay=1e-4, use_cosine_annealing=True),
        epochs=epochs if epochs is not None else (2 if smoke else 5),
        batch_size=16 if smoke else 32,
        seed=int(seed),
        num_workers=0 if smoke else -1,
        output_dir=str(output_dir),
        run_name=f"{fusion}-seed{seed}",
        publish_best=False,
        device="cpu" if smoke else "auto",
        progress=not smoke,  # tqdm.auto bars in a notebook; none in smoke runs (their outputs are committed)
    )
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def load_model(checkpoint: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """A trained model in eval mode and the :class:`TrainConfig` it was trained with.

    Args:
        checkpoint: a ``best_{fusion}.pt`` (or ``last.pt``) written by the
            trainer: ``{"model": state_dict, "config": dict, ...}``. A checkpoint
            without ``"config"`` is read with the ``config.json`` next to it.

    Raises:
        FileNotFoundError: no such file, or no config in it nor beside it.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    state = load_checkpoint(path, map_location=device)
    config = state.get("config") if isinstance(state, dict) else None
    if config is None:
        beside = path.parent / "config.json"
        if not beside.is_file():
            raise FileNotFoundError(f"{path} holds no config and there is no {beside}")
        config = json.loads(beside.read_text())
    cfg = TrainConfig.from_dict(config)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained_video=False))
    model = build_run_model(cfg, warm_start=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


class _PathRewriter(io.TextIOBase):
    """A text stream that forwards lines to ``target`` with some substrings replaced."""

    def __init__(self, target: Any, replacements: Sequence[tuple[str, str]]):
        self.target = target
        self.replacements = [(old, new) for old, new in replacements if old]
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self.target.write(self._rewrite(line) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self.target.write(self._rewrite(self._buffer))
            self._buffer = ""
        self.target.flush()

    def _rewrite(self, line: str) -> str:
        for old, new in self.replacements:
            line = line.replace(old, new)
        return line


def train(cfg: TrainConfig) -> RunResult:
    """:func:`emolab.train.run_training` with its printed paths relative to the checkout.

    The trainer prints absolute paths (run folder, data root); here paths inside the
    checkout are printed relative to it (:func:`emolab.cli.notebooks.display_path`, e.g.
    ``outputs/notebooks/03/runs/gated-seed0-...``; a smoke run's temporary folder as
    ``<temporary folder>``), so that a notebook's output holds no path of the machine
    that ran it but still says where the run is.
    """
    from emolab.eval.notebook import display_output_dir, display_path

    out, root = Path(cfg.output_dir), Path(cfg.data_root)
    replacements = sorted(
        {
            (str(out.resolve()), display_output_dir(out)),
            (str(out), display_output_dir(out)),
            (str(root.resolve()), display_path(root)),
            (str(root), display_path(root)),
        },
        key=lambda r: -len(r[0]),
    )
    stream = _PathRewriter(sys.stdout, replacements)
    try:
        with contextlib.redirect_stdout(stream):
            return run_training(cfg)
    finally:
        stream.flush()


def load_or_train(
    checkpoint: str | os.PathLike[str] | None,
    cfg: TrainConfig,
) -> tuple[nn.Module, TrainConfig, RunResult | None]:
    """Load ``checkpoint`` (with its own config), or train ``cfg`` when it is None.

    A loaded model keeps the config saved with it (encoders, frames, split) but
    reads the corpus at ``cfg.data_root``: the checkpoint's own data root may be
    a folder of another machine.

    Returns:
        ``(model in eval mode on the CPU, its config, the RunResult or None when loaded)``.
    """
    if checkpoint is not None and str(checkpoint) != "":
        model, loaded = load_model(checkpoint)
        return model, dataclasses.replace(loaded, data_root=cfg.data_root), None
    result = train(cfg)
    model, _ = load_model(result.best_checkpoint)
    return model, cfg, result


# --------------------------------------------------------------------------- test data


def noise_condition(snr_db: float | None, seed: int = 0) -> Condition | None:
    """The featuriser condition of test-time noise at exactly ``snr_db`` (None: clean, no condition).

    The noise goes into the waveform before the log-Mel. The excerpt of test
    clip ``i`` is drawn from ``default_rng([seed, i, level])``
    (:meth:`~emolab.data.features.Condition.noise_draw`), so every level and
    clip is reproducible whatever the batch order, and every model evaluated on
    the same split hears the same noise in the same clip.
    """
    return None if snr_db is None else Condition(snr_db=float(snr_db), noise_seed=int(seed))


def stratified_subset(pairs: Sequence[Any], n: int) -> list[Any]:
    """``n`` of ``pairs`` spread evenly over actors and emotions, in their original order.

    Round robin: each round takes the next pair of every (emotion, actor) group, in an order
    that covers every emotion and actor early in the round, until ``n`` are taken. The first ``n`` pairs by name would be
    one actor's first few emotions (a macro-F1 over 5 of 8 classes). Deterministic.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault((p.emotion, p.actor), []).append(i)
    emotions = sorted({e for e, _ in groups})
    actors = sorted({a for _, a in groups})

    def order(key: tuple[int, int]) -> tuple[int, int]:
        # diagonals of the emotion x actor grid: a partial round still covers the emotions and actors evenly
        e, a = emotions.index(key[0]), actors.index(key[1])
        return ((e - a) % len(actors), e)

    keys = sorted(groups, key=order)
    taken: list[int] = []
    depth = 0
    while len(taken) < min(n, len(pairs)):
        for key in keys:
            if depth < len(groups[key]) and len(taken) < n:
                taken.append(groups[key][depth])
        depth += 1
    return [pairs[i] for i in sorted(taken)]


def test_dataset(cfg: TrainConfig, *, max_items: int | None = None) -> RavdessAVDataset:
    """The test split of ``cfg`` as a non-augmented dataset (``max_items`` of its pairs,
    stratified over actors and emotions by :func:`stratified_subset`).

    A :class:`RavdessMelDataset`, or a :class:`RavdessWavLMDataset` for a WavLM config.

    Raises:
        ValueError: an empty test split.
    """
    pairs = pair_corpus(cfg.data_root, vocal_channel=cfg.vocal_channel, check="size").pairs
    recs = list(dict(make_split(pairs, cfg.split, seed=cfg.seed).items())["test"])
    if max_items is not None:
        recs = stratified_subset(recs, max_items)
    if not recs:
        raise ValueError(f"the test split of {cfg.data_root} is empty")
    dataset_cls = RavdessWavLMDataset if cfg.model.use_wavlm else RavdessMelDataset
    return dataset_cls(recs, augment=False, config=cfg.data, data_root=cfg.data_root, seed=cfg.seed,
                       num_classes=cfg.num_classes, n_mels=cfg.model.n_mels)


@dataclass
class GateCollection:
    """Gates of the test clips per SNR level (keys: :func:`snr_label`, clean first).

    Attributes:
        gates: level -> `(N,)` gate values ``g`` (1 = audio only, 0 = video only).
        labels: level -> `(N,)` true classes.
        preds: level -> `(N,)` predicted classes.
        class_names: names in label order.
        noise_source: ``"file"`` (``Noise/noise.wav``) or ``"gaussian"``.
    """

    gates: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    preds: dict[str, np.ndarray]
    class_names: list[str]
    noise_source: str

    @property
    def accuracy(self) -> dict[str, float]:
        """Test accuracy per level."""
        return {k: float(np.mean(self.preds[k] == self.labels[k])) for k in self.gates}

    @property
    def mean_gate(self) -> dict[str, float]:
        """Mean gate per level."""
        return {k: float(np.mean(v)) for k, v in self.gates.items()}

    def table(self, decimals: int = 2) -> str:
        """A text table: level, clips, mean and std of the gate, accuracy."""
        lines = [f"{'level':>7} {'clips':>5} {'mean g':>7} {'std g':>6} {'acc':>5}"]
        acc = self.accuracy
        for k, g in self.gates.items():
            lines.append(f"{k:>7} {g.size:>5} {g.mean():>7.{decimals}f} {g.std():>6.{decimals}f} {acc[k]:>5.{decimals}f}")
        return "\n".join(lines)


@torch.no_grad()
def collect_gates(
    model: nn.Module,
    cfg: TrainConfig,
    snrs: Sequence[float | None] = SNR_LEVELS,
    *,
    max_items: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> GateCollection:
    """Run ``model`` over the test split at every test-time SNR and keep its gate.

    Args:
        model: a model with a gate (``gated``, ``xattn`` with ``xattn_head="gated"``).
        cfg: its config (test split, data settings, noise file).
        snrs: levels in dB, None for clean.
        max_items: only this many test pairs (stratified over actors and emotions).
        batch_size: inference batch size.
        seed: seed of the noise excerpts.

    Raises:
        ValueError: the model returns no gate.
    """
    model.eval()
    device = next(model.parameters()).device
    base = test_dataset(cfg, max_items=max_items)
    noise = AudioNoise(resolve_noise_path(cfg.data_root, cfg.data.noise_path), sample_rate=cfg.data.sample_rate,
                       resampler=cfg.data.resampler)
    featurize = BatchFeaturizer.for_dataset(base, channels_last=False, audio_noise=noise)
    out: dict[str, dict[str, np.ndarray]] = {"gates": {}, "labels": {}, "preds": {}}
    for snr in snrs:
        level = featurize.with_condition(noise_condition(snr, seed))
        gates, labels, preds = [], [], []
        for batch in make_loader(base, batch_size, num_workers=0, seed=seed):
            if batch is None:
                continue
            batch = level(batch, device)
            o = forward_batch(model, batch, return_gate=True)
            if o.gate is None:
                raise ValueError(f"{type(model).__name__} returns no gate: use fusion 'gated' or 'xattn_gated'")
            gates.append(o.gate.reshape(-1).float().cpu().numpy())
            labels.append(batch["label"].cpu().numpy())
            preds.append(o.logits.argmax(-1).cpu().numpy())
        key = snr_label(snr)
        out["gates"][key] = np.concatenate(gates)
        out["labels"][key] = np.concatenate(labels)
        out["preds"][key] = np.concatenate(preds)
    return GateCollection(**out, class_names=list(class_names(cfg.num_classes)), noise_source=noise.source)
