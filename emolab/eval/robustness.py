"""Robustness of trained models to test-time corruptions: noisy audio, degraded or occluded video, a missing modality.

Each model is evaluated on the test split of its own saved config (``max_items`` of its pairs, stratified) under every
:class:`Corruption` of :func:`default_corruptions` (15 conditions):

* ``clean``; ``noise`` at 20, 10, 5, 0 dB SNR; ``blur`` with kernel sides 5, 11, 21 (at 112 px); ``darkness``:
  pixels times 0.5, 0.25, 0.1; ``occlusion`` of the ``eyes`` or the ``mouth``; ``missing`` ``audio`` or ``video``.

Choices (also written into ``robustness.json``):

* Every condition is a featuriser :class:`~emolab.data.features.Condition` (:func:`condition_for`): the test
  set stays as it is and the one featuriser applies the corruption, as it applies training augmentations.
* **Noise** is the noise of notebook 05 (:func:`emolab.eval.analysis.noise_condition`): an excerpt of ``Noise/noise.wav``
  found as training finds it (:func:`~emolab.data.datasets.resolve_noise_path`), or Gaussian noise
  (``noise="gaussian"``), drawn from ``default_rng([seed, i, level])`` for test clip ``i`` and mixed into the
  waveform at exactly that SNR. Every model evaluated on the same split hears the same noise in the same clip.
* **Video corruptions** act on the frames in [0, 1] before ImageNet normalisation, as the training augmentations
  do (the same ``gaussian_blur`` and ``attenuate_brightness``). Blur kernels are given for 112-px frames and scaled
  to the model's frame size (rounded to an odd side): a 48-px model sees the same blur relative to the face.
* **Regions** (:data:`REGIONS`) are fractions ``(top, bottom, left, right)`` of the face-cropped square frame
  from its top-left corner. The crop is the face box plus 25 % of its size on each side, so the face spans about
  0.17-0.83: eyes with brows 0.30-0.55 high x 0.20-0.80 wide, mouth 0.60-0.82 x 0.28-0.72. Pixel bounds are
  ``round(fraction * size)``, end excluded. The patch is the ImageNet mean colour (grey; zeros once
  normalised) or black.
* **Missing audio** is the log-Mel of silence (-100 dB everywhere, what padding looks like in training) for
  log-Mel models, a zero waveform for WavLM; ``audio_length`` is kept (the clip lasts as long, silently).
  **Missing video** is zeros after normalisation: every pixel the mean colour; ``video_valid`` is kept.
* Only noise is random (seeded per clip): every corruption is deterministic.
* A model that does not read the corrupted modality (an audio-only model under blur) is still evaluated, with
  ``input_used=False``: its rows equal its clean row, a flat line in the plot (a built-in check).

torch is imported inside the functions, so that ``emolab --help`` stays instant.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor, nn

    from emolab.train.config import TrainConfig

__all__ = [
    "BLUR_KERNELS", "BRIGHTNESS_FACTORS", "FAMILIES", "NOISE_SNRS", "REGIONS", "Corruption", "InputError",
    "RobustnessResult", "add_arguments", "condition_for", "corrupt_frames", "default_corruptions", "evaluate",
    "load_runs", "occlusion_box", "run_from_args", "scaled_kernel", "silent_audio", "write_results",
]

FAMILIES: tuple[str, ...] = ("clean", "noise", "blur", "darkness", "occlusion", "missing")
NOISE_SNRS: tuple[float, ...] = (20.0, 10.0, 5.0, 0.0)  # dB, increasingly noisy
BLUR_KERNELS: tuple[int, ...] = (5, 11, 21)  # kernel side at 112 px (sigma 1.1, 2.0, 3.5)
BRIGHTNESS_FACTORS: tuple[float, ...] = (0.5, 0.25, 0.1)  # pixels * factor
#: Occluded regions as fractions of the face-cropped frame: (top, bottom, left, right).
REGIONS: dict[str, tuple[float, ...]] = {"eyes": (0.30, 0.55, 0.20, 0.80), "mouth": (0.60, 0.82, 0.28, 0.72)}
REFERENCE_SIZE = 112  # frame side the blur kernels are given for
Fill = Literal["grey", "black"]


class InputError(ValueError):
    """Bad input (a folder that is not a run, a missing corpus or noise file): a message, not a traceback."""


@dataclass(frozen=True)
class Corruption:
    """One test-time condition: a family and its value (SNR dB, kernel, factor, region, modality)."""

    family: str
    value: float | int | str | None = None
    severity: int = 0  # 0 clean, then 1, 2, ... within the family

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown corruption family {self.family!r}; known: {', '.join(FAMILIES)}")
        ok = {
            "clean": self.value is None,
            "noise": isinstance(self.value, (int, float)) and math.isfinite(self.value),
            "blur": isinstance(self.value, int) and self.value >= 1 and self.value % 2 == 1,
            "darkness": isinstance(self.value, (int, float)) and 0.0 <= self.value <= 1.0,
            "occlusion": self.value in REGIONS,
            "missing": self.value in ("audio", "video"),
        }[self.family]
        if not ok:
            raise ValueError(f"bad value {self.value!r} for corruption family {self.family!r}")

    @property
    def modality(self) -> str | None:
        """The input it changes: ``"audio"``, ``"video"`` or None (clean)."""
        if self.family == "missing":
            return str(self.value)
        return {"clean": None, "noise": "audio"}.get(self.family, "video")

    @property
    def level(self) -> str:
        """Display label: ``clean``, ``20 dB``, ``k=5``, ``x0.5``, ``eyes``, ``audio``."""
        fmt = {"clean": "clean", "noise": "{:g} dB", "blur": "k={}", "darkness": "x{:g}"}.get(self.family, "{}")
        return fmt.format(self.value)

    @property
    def key(self) -> str:
        """``clean`` or ``"<family> <level>"``, e.g. ``noise 0 dB`` (keys of :meth:`RobustnessResult.summary`)."""
        return "clean" if self.family == "clean" else f"{self.family} {self.level}"


def default_corruptions(
    snrs: Sequence[float] = NOISE_SNRS,
    blur_kernels: Sequence[int] = BLUR_KERNELS,
    brightness: Sequence[float] = BRIGHTNESS_FACTORS,
    regions: Sequence[str] = tuple(REGIONS),
    missing: Sequence[str] = ("audio", "video"),
) -> list[Corruption]:
    """Clean, then every level of every family in order of severity (15 conditions by default)."""
    out = [Corruption("clean")]
    for family, values in (("noise", snrs), ("blur", blur_kernels), ("darkness", brightness),
                           ("occlusion", regions), ("missing", missing)):
        out += [Corruption(family, v, i + 1) for i, v in enumerate(values)]
    return out


# --------------------------------------------------------------------------- corruptions


def scaled_kernel(kernel: int, size: int, reference: int = REFERENCE_SIZE) -> int:
    """A blur kernel side given at ``reference`` px, scaled to ``size`` px and rounded to an odd int >= 1."""
    k = max(1, int(round(kernel * size / reference)))
    return k if k % 2 == 1 else k + 1


def occlusion_box(region: str, size: int) -> tuple[int, int, int, int]:
    """Pixel bounds ``(y0, y1, x0, x1)`` (end excluded) of a :data:`REGIONS` entry in a ``size`` px frame."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; known: {', '.join(REGIONS)}")
    top, bottom, left, right = REGIONS[region]
    return round(top * size), round(bottom * size), round(left * size), round(right * size)


def condition_for(corruption: Corruption, size: int, *, fill: Fill = "grey", seed: int = 0) -> Any:
    """The featuriser :class:`~emolab.data.features.Condition` of ``corruption`` on ``size`` px frames
    (None for ``clean``). ``fill``: the occlusion colour, ``"grey"`` (ImageNet mean, 0 once normalised) or
    ``"black"``; ``seed``: base seed of the noise excerpts."""
    from emolab.data.features import Condition
    from emolab.data.video import IMAGENET_MEAN

    c = corruption
    if c.family == "occlusion" and fill not in ("grey", "black"):
        raise ValueError(f"fill must be 'grey' or 'black', got {fill!r}")
    if c.family == "clean":
        return None
    if c.family == "noise":
        return Condition(snr_db=float(c.value), noise_seed=int(seed))
    if c.family == "blur":
        return Condition(blur_kernel=scaled_kernel(int(c.value), size))
    if c.family == "darkness":
        return Condition(brightness=1.0 - float(c.value))
    if c.family == "occlusion":
        return Condition(occlusion=occlusion_box(str(c.value), size),
                         fill=IMAGENET_MEAN if fill == "grey" else (0.0, 0.0, 0.0))
    return Condition(drop=str(c.value))


def corrupt_frames(video: Tensor, corruption: Corruption, *, fill: Fill = "grey") -> Tensor:
    """Apply ``corruption`` to float frames `(T, 3, S, S)` in [0, 1], then ImageNet-normalise them: what the
    featuriser gives under :func:`condition_for` (a preview of one clip). Families that do not touch video
    only normalise."""
    import torch

    from emolab.data.video import normalize

    cond = condition_for(corruption, video.shape[-1], fill=fill)
    if cond is None or corruption.modality != "video":
        return normalize(video)
    out = normalize(cond.apply_video(video))
    return torch.zeros_like(out) if cond.drop == "video" else out


def silent_audio(audio: Tensor, kind: str, *, sample_rate: int = 16000, n_mels: int = 64) -> Tensor:
    """A missing audio track shaped like ``audio``: for a log-Mel `(1, n_mels, F)` (``kind="mel"``) the log-Mel
    of a zero waveform (-100 dB everywhere), for a waveform `(1, N)` (``kind="wave"``) zeros."""
    import torch

    from emolab.data.audio import HOP_LENGTH, log_mel

    if kind == "wave":
        return torch.zeros_like(audio)
    silence = log_mel(torch.zeros(1, (audio.shape[-1] - 1) * HOP_LENGTH), sample_rate=sample_rate, n_mels=n_mels)
    assert silence.shape == audio.shape, (silence.shape, audio.shape)
    return silence


# --------------------------------------------------------------------------- evaluation


@dataclass
class RobustnessResult:
    """What :func:`evaluate` measured.

    Attributes:
        table: one row per (model, corruption, level): ``model, fusion, corruption, level, modality,
            severity, input_used, n, accuracy, uar, macro_f1, weighted_f1, nll, mean_gate`` (NaN without a
            gate; accuracy is WAR, see :func:`~emolab.train.metrics.summary_metrics`).
        clips: one row per (model, condition, clip): ``model, corruption, level, index, stem, label,
            pred, nll, gate``.
        meta: seed, noise, fill, regions, the corruptions and per-model details.
    """

    table: pd.DataFrame
    clips: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def pivot(self, metric: str = "accuracy", decimals: int | None = 2) -> pd.DataFrame:
        """``metric`` with one row per condition (in evaluation order) and one column per model."""
        t = self.table.assign(condition=self.table["corruption"] + " " + self.table["level"])
        t.loc[t["corruption"] == "clean", "condition"] = "clean"
        out = t.pivot(index="condition", columns="model", values=metric)
        out = out.loc[list(dict.fromkeys(t["condition"])), list(dict.fromkeys(t["model"]))]
        out.columns.name = None
        return out.round(decimals) if decimals is not None else out

    def summary(self, model: str | None = None, decimals: int = 4) -> dict[str, dict[str, float]]:
        """Per-condition ``accuracy``, ``macro_f1`` (and ``mean_gate`` for a gated model) of one model
        (default: the first), keyed like :attr:`Corruption.key`: JSON-able, for ``record(...)``."""
        name = model if model is not None else str(self.table["model"].iloc[0])
        out = {}
        for metric in ("accuracy", "macro_f1", "mean_gate"):
            col = self.pivot(metric, None)[name]
            if not col.isna().all():
                out[metric] = {k: round(float(v), decimals) for k, v in col.items()}
        return out

    def to_json(self) -> dict[str, Any]:
        """Meta and rows (NaN as null)."""
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in self.table.to_dict("records")]
        return {**self.meta, "rows": rows}


def _noise_for(cfg: TrainConfig, noise: str) -> Any:
    from emolab.data.noise import AudioNoise
    from emolab.data.datasets import resolve_noise_path

    if noise == "gaussian":
        return AudioNoise(None, sample_rate=cfg.data.sample_rate)
    if noise != "file":
        raise InputError(f"noise must be 'file' or 'gaussian', got {noise!r}")
    path = resolve_noise_path(cfg.data_root, cfg.data.noise_path)
    if path is None or not path.is_file():
        looked = cfg.data.noise_path or f"{Path(cfg.data_root) / 'Noise' / 'noise.wav'} and data/Noise/noise.wav"
        raise InputError(f"no noise file (looked for {looked}); use Gaussian noise instead (--noise gaussian)")
    return AudioNoise(path, sample_rate=cfg.data.sample_rate, resampler=cfg.data.resampler)


def _predict(model: nn.Module, dataset: Any, featurize: Any, batch_size: int, device: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    from emolab.data.loaders import make_loader
    from emolab.models.fusion import forward_batch

    parts: dict[str, list] = {"index": [], "label": [], "pred": [], "nll": [], "gate": []}
    with torch.no_grad():
        for batch in make_loader(dataset, batch_size, num_workers=0, pin_memory=False):
            if batch is None:
                continue
            batch = featurize(batch, device)
            o = forward_batch(model, batch, return_gate=True)
            y = batch["label"]
            parts["index"].append(batch["meta"]["index"].cpu().numpy())
            parts["label"].append(y.cpu().numpy())
            parts["pred"].append(o.logits.argmax(-1).cpu().numpy())
            parts["nll"].append(-o.log_probs.gather(1, y.view(-1, 1))[:, 0].float().cpu().numpy())
            g = o.gate.reshape(-1).float().cpu().numpy() if o.gate is not None else np.full(len(y), np.nan)
            parts["gate"].append(g)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def _fingerprint(stems: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(stems).encode()).hexdigest()[:12]


def evaluate(
    models: Mapping[str, tuple[nn.Module, TrainConfig]],
    corruptions: Sequence[Corruption] | None = None,
    *,
    noise: Literal["file", "gaussian"] = "file",
    fill: Fill = "grey",
    max_items: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    device: str | None = None,
) -> RobustnessResult:
    """Evaluate models on their test split under every corruption.

    Args:
        models: name -> (model, its config), e.g. :func:`load_runs` or ``{"gated": (model, cfg)}``.
        corruptions: default :func:`default_corruptions`.
        noise: ``"file"`` (``Noise/noise.wav`` under the config's data root, or ``data/Noise/noise.wav``;
            :class:`InputError` when there is none) or ``"gaussian"``.
        fill: occlusion patch colour, ``"grey"`` (ImageNet mean) or ``"black"``.
        max_items: only this many test pairs of each split, spread over actors and emotions.
        batch_size: inference batch size.
        seed: seed of the noise excerpts.
        device: ``"cpu"`` or ``"cuda"`` (default: CUDA when available).

    Raises:
        InputError: no noise file, a missing corpus, an empty test split.
    """
    import numpy as np
    import pandas as pd
    import torch

    from emolab.eval.analysis import test_dataset
    from emolab.data.features import BatchFeaturizer
    from emolab.train.metrics import Predictions, epoch_metrics, summary_metrics

    corruptions = list(corruptions) if corruptions is not None else default_corruptions()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows, clips, details = [], [], {}
    for name, (model, cfg) in models.items():
        model = model.to(dev).eval()
        try:
            base = test_dataset(cfg, max_items=max_items)
        except (FileNotFoundError, NotADirectoryError, ValueError) as e:
            raise InputError(f"model {name!r}: {e} (another corpus: data_root=..., --data_root)") from None
        audio_noise = _noise_for(cfg, noise)
        stems = [p.stem for p in base.pairs]
        inputs = set(cfg.model.spec.inputs)  # the registry's metadata: what the model reads
        details[name] = {"fusion": cfg.model.fusion, "test_clips": len(stems), "test_fingerprint": _fingerprint(stems),
                         "noise_source": audio_noise.source, "frame_size": cfg.data.frame_size}
        featurize = BatchFeaturizer.for_dataset(base, channels_last=False, audio_noise=audio_noise)
        for c in corruptions:
            cond = condition_for(c, cfg.data.frame_size, fill=fill, seed=seed)
            r = _predict(model, base, featurize.with_condition(cond), batch_size, dev)
            m = epoch_metrics(Predictions(r["index"], r["label"], r["pred"], r["nll"]), cfg.num_classes)
            s = summary_metrics(r["label"], r["pred"], cfg.num_classes)
            gate = float(np.mean(r["gate"])) if len(r["gate"]) and not np.isnan(r["gate"]).any() else math.nan
            rows.append({"model": name, "fusion": cfg.model.fusion, "corruption": c.family, "level": c.level,
                         "modality": c.modality or "-", "severity": c.severity,
                         "input_used": c.modality is None or c.modality in inputs, "n": len(r["index"]),
                         "accuracy": m["acc"], "uar": s["uar"], "macro_f1": m["f1"],
                         "weighted_f1": s["weighted_f1"], "nll": m["loss"], "mean_gate": gate})
            clips.append(pd.DataFrame({"model": name, "corruption": c.family, "level": c.level, "index": r["index"],
                                       "stem": [stems[i] for i in r["index"]], "label": r["label"],
                                       "pred": r["pred"], "nll": r["nll"], "gate": r["gate"]}))
    if len({d["test_fingerprint"] for d in details.values()}) > 1:
        print("note: the models' test clips differ (other splits or corpora): compare them with care", file=sys.stderr)
    meta = {
        "seed": seed, "noise": noise, "occlusion_fill": fill, "max_items": max_items,
        "regions": {k: dict(zip(("top", "bottom", "left", "right"), v)) for k, v in REGIONS.items()},
        "blur_reference_size": REFERENCE_SIZE,
        "missing_audio": "log-Mel of silence (-100 dB) / zero waveform", "missing_video": "zeros after normalisation",
        "corruptions": [{"family": c.family, "level": c.level, "value": c.value, "modality": c.modality}
                        for c in corruptions],
        "models": details,
    }
    return RobustnessResult(pd.DataFrame(rows), pd.concat(clips, ignore_index=True), meta)


# --------------------------------------------------------------------------- runs, files, CLI


def _checkpoint_of(path: Path) -> Path:
    """The best checkpoint of a run folder (or the file itself); :class:`InputError` naming the path."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"--run {path}: no such file or folder")
    if not (path / "config.json").is_file():
        raise InputError(f"--run {path}: not a run folder of `emolab train` (no config.json in {path})")
    found = sorted(path.glob("best_*.pt"))
    if not found:
        raise InputError(f"--run {path}: no checkpoint (best_*.pt) in {path}; has the run finished an epoch?")
    if len(found) > 1:
        raise InputError(f"--run {path}: several checkpoints ({', '.join(p.name for p in found)}); pass one of them")
    return found[0]


def load_runs(
    runs: str | Path | Sequence[str | Path],
    *,
    data_root: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, tuple[nn.Module, TrainConfig]]:
    """Trained models from run folders (``best_*.pt`` and ``config.json``) or checkpoint files, on ``device``.

    Returns name (the run folder's name, or the checkpoint's stem) -> (model in eval mode, its config), the
    config reading the corpus at ``data_root`` when given (default: each run's saved ``data_root``).

    Raises:
        InputError: a path that is not a run folder or checkpoint, a checkpoint without a config.
    """
    import dataclasses

    from emolab.eval.analysis import load_model

    paths = [runs] if isinstance(runs, (str, Path)) else list(runs)
    out: dict[str, tuple[Any, Any]] = {}
    for p in map(Path, paths):
        ckpt = _checkpoint_of(p)
        try:
            model, cfg = load_model(ckpt, device=device)
        except (FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
            raise InputError(f"--run {p}: cannot load {ckpt}: {e}") from None
        if data_root is not None:
            cfg = dataclasses.replace(cfg, data_root=str(data_root))
        name = p.name if p.is_dir() else p.stem
        k = 2
        while name in out:
            name, k = f"{p.name if p.is_dir() else p.stem}#{k}", k + 1
        out[name] = (model, cfg)
    return out


def write_results(result: RobustnessResult, out_dir: str | Path) -> list[Path]:
    """Write ``robustness.csv``, ``robustness.json`` and ``robustness.png`` into ``out_dir``, atomically."""
    from emolab.utils.fileio import atomic_write, atomic_write_json
    from emolab.viz.robustness import robustness_curves

    out = Path(out_dir)
    fig = robustness_curves(result.table)
    return [
        atomic_write(out / "robustness.csv", lambda tmp: result.table.to_csv(tmp, index=False)),
        atomic_write_json(result.to_json(), out / "robustness.json"),
        atomic_write(out / "robustness.png", lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")),
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``emolab robustness``."""
    p.add_argument("--run", action="append", required=True, metavar="RUN_DIR",
                   help="run folder of `emolab train` (best_*.pt + config.json) or a checkpoint; repeat for more")
    p.add_argument("--out", default=None, help="output folder (default: <first run>/robustness)")
    p.add_argument("--noise", choices=("file", "gaussian"), default="file",
                   help="audio noise: Noise/noise.wav under the corpus, as in training (default), or Gaussian")
    p.add_argument("--max_items", type=int, default=None, help="only N test clips of each run, spread over actors and emotions")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--batch_size", type=int, default=16, help="inference batch size (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise excerpts (default 0)")
    p.add_argument("--data_root", default=None, help="corpus to read (default: each run's saved data_root)")
    p.add_argument("--occlusion_fill", choices=("grey", "black"), default="grey",
                   help="occlusion patch colour: grey (ImageNet mean, default) or black")


def run_from_args(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write the three files. Bad input raises :class:`InputError`."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: CUDA is not available")
    if args.max_items is not None and args.max_items < 1:
        raise InputError(f"--max_items must be positive, got {args.max_items}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = load_runs(args.run, data_root=args.data_root, device=device)
    result = evaluate(models, noise=args.noise, fill=args.occlusion_fill, max_items=args.max_items,
                      batch_size=args.batch_size, seed=args.seed, device=device)
    first = Path(args.run[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "robustness"
    cols = ["model", "corruption", "level", "n", "accuracy", "uar", "macro_f1", "mean_gate"]
    print(result.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    for path in write_results(result, out):
        print(f"wrote {path}")
    return 0
