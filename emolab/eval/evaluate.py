"""``emolab evaluate``: a trained run's metrics on any RAVDESS-layout corpus (its own, or another: cross-corpus).

The run is a run folder of ``emolab train``, one of its checkpoints, or a folder of ``emolab export`` (the model run
by onnxruntime, ``--int8`` its INT8 file: what a deployment would score).

The corpus is paired as training pairs it (modality-02 video with the modality-03 WAV), split with the run's
own split settings (default: its test split), ``--split val|all``, or another protocol fold
(``--protocol six_fold --fold 2``). Clips go through the run's preprocessing and the shared inference path
(:func:`emolab.eval.inference.infer`, also behind ``emolab predict``).

Written into the output folder (default ``<run>/evaluate/<corpus>-<split>``), atomically:

* ``metrics.json``: accuracy (= WAR), UAR, macro-F1, weighted F1, NLL, per-class report, confusion matrix
  (:func:`emolab.train.metrics.classification_metrics`), plus what was evaluated;
* ``metrics.csv``: one ``all`` row and one row per class (precision, recall, F1, support);
* ``predictions.csv``: one row per clip with its label, prediction, every class probability and the gate;
* ``confusion.png``: :func:`emolab.viz.confusion_matrix_plot`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EvalResult", "EvaluateError", "add_arguments", "evaluate_run", "run_from_args", "write_evaluation"]

SPLITS = ("test", "val", "train", "all")


class EvaluateError(ValueError):
    """Bad input (no corpus, an empty split, a bad fold): one line, exit code 2."""


@dataclass
class EvalResult:
    """What :func:`evaluate_run` measured.

    Attributes:
        metrics: :func:`~emolab.train.metrics.classification_metrics` plus ``run``, ``fusion``,
            ``checkpoint``, ``data_root``, ``split``, ``split_description``, ``skipped`` (failed clips).
        predictions: one row per clip: ``stem, actor, emotion, label, pred, correct, prob_<class>..., gate,
            nll, video_path, audio_path``.
    """

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    class_names: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        m = self.metrics
        return (f"{m['run']} on {m['data_root']} ({m['split']}, {m['num_samples']} clips): accuracy (WAR) "
                f"{m['accuracy']:.3f}, UAR {m['uar']:.3f}, macro-F1 {m['macro_f1']:.3f}, "
                f"weighted F1 {m['weighted_f1']:.3f}")


def _pairs(cfg: Any, split: str, protocol: str | None, fold: int | None) -> tuple[list, str]:
    from emolab.data.pairing import pair_corpus
    from emolab.data.splits import SplitConfig, fold_actors, make_split

    try:
        pairing = pair_corpus(cfg.data_root, vocal_channel=cfg.vocal_channel, check="size")
    except (FileNotFoundError, NotADirectoryError) as e:
        raise EvaluateError(f"data_root: {e}") from None
    if not pairing.pairs:
        raise EvaluateError(f"no RAVDESS pairs under '{cfg.data_root}' (Actor_NN/ folders with 02-*.mp4 and 03-*.wav)")
    if split == "all":
        return pairing.pairs, f"all {len(pairing.pairs)} pairs of the corpus"
    try:
        c = cfg.split
        if protocol is not None or fold is not None:
            c = SplitConfig(mode="kfold", protocol=protocol or "six_fold", fold=fold or 0)
        lists = None
        if c.mode == "kfold":
            lists = fold_actors(c.protocol, c.fold)
        elif c.mode == "actor" and c.test_actors is not None:
            lists = (c.train_actors, c.val_actors, c.test_actors)
        if lists is not None:  # only the asked split's actors must be present (another corpus may lack the rest)
            actors = set(lists[("train", "val", "test").index(split)])
            return [p for p in pairing.pairs if p.actor in actors], f"{split} actors {sorted(actors)}"
        s = make_split(pairing.pairs, c, seed=cfg.seed)
    except ValueError as e:
        raise EvaluateError(f"split: {e} (--split all evaluates every pair of a corpus)") from None
    return getattr(s, split), s.description


def evaluate_run(
    run: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    split: str = "test",
    protocol: str | None = None,
    fold: int | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    int8: bool = False,
) -> EvalResult:
    """Evaluate a run folder (or checkpoint) on a split of a corpus.

    Args:
        run: run folder of ``emolab train``, its ``best_*.pt``, or a folder of ``emolab export``.
        data_root: the corpus (default: the run's own).
        split: ``test`` (default), ``val``, ``train`` or ``all`` (every pair: another corpus).
        protocol, fold: a k-fold protocol's fold instead of the run's own split settings.
        int8: with an export folder, its INT8 model.

    Raises:
        EvaluateError: no pairs, an empty split, a bad protocol or fold.
        emolab.eval.robustness.InputError: ``run`` is not a run folder or checkpoint.
    """
    import pandas as pd

    from emolab.data.datasets import RavdessMelDataset, RavdessWavLMDataset
    from emolab.data.ravdess import class_names
    from emolab.eval.inference import infer, load_run
    from emolab.eval.onnx_runtime import is_export_dir
    from emolab.eval.predict import PredictError, load_model_or_export
    from emolab.train.metrics import Predictions, classification_metrics

    if split not in SPLITS:
        raise EvaluateError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if is_export_dir(run) or int8:
        try:
            name, model, cfg, _ = load_model_or_export(run, device=device, int8=int8)
        except PredictError as e:
            raise EvaluateError(str(e)) from None
        if data_root is not None:
            cfg = dataclasses.replace(cfg, data_root=str(data_root))
        ckpt, device = model.path, "cpu"  # featurised on the CPU, run by onnxruntime (on its providers)
    else:
        name, model, cfg = load_run(run, data_root=data_root, device=device)
        ckpt = Path(run) if Path(run).is_file() else next(Path(run).glob("best_*.pt"))
    pairs, description = _pairs(cfg, split, protocol, fold)
    if not pairs:
        raise EvaluateError(f"the {split} split of {cfg.data_root} is empty ({description})")
    dataset_cls = RavdessWavLMDataset if cfg.model.use_wavlm else RavdessMelDataset
    ds = dataset_cls(pairs, augment=False, config=cfg.data, data_root=cfg.data_root,
                     modalities=cfg.model.spec.inputs, num_classes=cfg.num_classes, n_mels=cfg.model.n_mels)
    res = infer(model, ds, device=device, batch_size=batch_size)
    names = list(class_names(cfg.num_classes))
    metrics = classification_metrics(Predictions(res.index, res.label, res.pred, res.nll), names)
    metrics.update(run=name, fusion=cfg.model.fusion, checkpoint=str(ckpt), data_root=str(cfg.data_root),
                   split=split if protocol is None and fold is None else f"{protocol or 'six_fold'} fold {fold or 0} {split}",
                   split_description=description,
                   skipped=[{"path": p.path, "reason": p.reason} for p in ds.failures])
    recs = [pairs[i] for i in res.index]
    table = pd.DataFrame({
        "stem": [r.stem for r in recs], "actor": [r.actor for r in recs], "emotion": [r.emotion for r in recs],
        "label": [names[i] for i in res.label], "pred": [names[i] for i in res.pred],
        "correct": res.label == res.pred,
        **{f"prob_{n}": res.probs[:, k] for k, n in enumerate(names)},
        "gate": res.gate, "nll": res.nll,
        "video_path": [str(r.video_path) for r in recs], "audio_path": [str(r.audio_path) for r in recs],
    })
    if len(table) == 0:
        raise EvaluateError(f"no clip of the {split} split could be decoded: "
                            + "; ".join(f"{p.path}: {p.reason}" for p in ds.failures[:3]))
    return EvalResult(metrics, table, names)


def write_evaluation(result: EvalResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """``metrics.json``, ``metrics.csv``, ``predictions.csv`` and ``confusion.png`` in ``out_dir``, atomically."""
    import pandas as pd

    from emolab.utils.fileio import atomic_write, atomic_write_json
    from emolab.viz import confusion_matrix_plot

    m = result.metrics
    out = Path(out_dir)
    keys = ("accuracy", "war", "uar", "macro_f1", "weighted_f1", "loss", "num_samples")
    rows = [{"scope": "all", **{k: m[k] for k in keys}}]
    rows += [{"scope": n, "precision": r["precision"], "recall": r["recall"], "f1": r["f1-score"],
              "support": int(r["support"])} for n, r in m["per_class"].items()]
    table = pd.DataFrame(rows).astype({"num_samples": "Int64", "support": "Int64"})
    fig = confusion_matrix_plot(m["confusion_matrix"], result.class_names,
                                title=f"{m['run']}: {m['split']}, UAR {m['uar']:.3f}")
    return [
        atomic_write_json(m, out / "metrics.json"),
        atomic_write(out / "metrics.csv", lambda tmp: table.to_csv(tmp, index=False)),
        atomic_write(out / "predictions.csv", lambda tmp: result.predictions.to_csv(tmp, index=False)),
        atomic_write(out / "confusion.png", lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")),
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``emolab evaluate``."""
    p.add_argument("run", metavar="RUN_OR_CKPT", help="run folder of `emolab train` (best_*.pt + config.json), a "
                   "checkpoint, or a folder of `emolab export` (run by onnxruntime)")
    p.add_argument("--data_root", default=None, help="RAVDESS-layout corpus to evaluate on (default: the run's own)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="split of the run's split settings (default test), or all pairs of the corpus")
    p.add_argument("--protocol", default=None, help="k-fold protocol (six_fold, luna5) instead of the run's split")
    p.add_argument("--fold", type=int, default=None, help="fold of --protocol (default 0)")
    p.add_argument("--out", default=None, help="output folder (default <run>/evaluate/<corpus>-<split>)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--batch_size", type=int, default=16, help="inference batch size (default 16)")
    p.add_argument("--int8", action="store_true", help="with an export folder: its INT8 model (model.int8.onnx)")


def run_from_args(args: argparse.Namespace) -> int:
    """Evaluate, print the metrics, write the four files."""
    import torch

    from emolab.eval.onnx_runtime import default_device

    if args.device == "cuda" and not torch.cuda.is_available():
        raise EvaluateError("--device cuda: CUDA is not available")
    device = args.device or default_device(args.run)
    result = evaluate_run(args.run, data_root=args.data_root, split=args.split, protocol=args.protocol,
                          fold=args.fold, device=device, batch_size=args.batch_size, int8=args.int8)
    run = Path(args.run)
    m = result.metrics
    tag = f"{Path(m['data_root']).resolve().name}-{m['split'].replace(' ', '-')}"
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "evaluate" / tag
    print(result.summary_line())
    for s in m["skipped"]:
        print(f"skipped (does not decode): {s['path']}: {s['reason']}", file=sys.stderr)
    for path in write_evaluation(result, out):
        print(f"wrote {path}")
    return 0
