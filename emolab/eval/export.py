"""``emolab export``: a trained run as an ONNX model (fp32, optionally INT8) with a JSON sidecar, verified.

The exported folder (default ``<run>/export-onnx/``)::

    model.onnx          fp32, dynamic batch axis
    model.int8.onnx     with --int8: onnxruntime dynamic quantization of model.onnx
    emolab_export.json  the sidecar (:data:`SIDECAR`): preprocessing settings (the run's data config), class
                        names, input and output names with shapes and dtypes, the run's config, the emolab and
                        torch versions, and what the verification measured

Inputs are the tensors the model's ``forward`` takes, as emolab's featuriser (the datasets of
:func:`emolab.eval.analysis.test_dataset`) builds them, by the model's ``input_modality``:

=================  ==============================  ========  ==================================================
name               shape                           dtype     what
=================  ==============================  ========  ==================================================
``video``          ``(B, T, 3, S, S)``             float32   ImageNet-normalised face-cropped frames
``video_valid``    ``(B, T)``                      bool      False for repeated frames of short clips
``audio``          ``(B, 1, n_mels, F)``           float32   log-Mel (dB); ``(B, 1, N)`` wave, speech encoders
``audio_length``   ``(B,)``                        int64     valid 16 kHz samples before padding
=================  ==============================  ========  ==================================================

Outputs: ``logits`` ``(B, C)`` (for ``late`` fusion the log of the averaged probabilities, as
:class:`~emolab.models.fusion.FusionOutput` defines them), ``probs`` ``(B, C)``, and ``gate`` ``(B, 1)`` (the
audio weight) for gated models (``gated``, ``xattn_gated``).

The export uses PyTorch's ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, which needs
``onnxscript``; opset :data:`OPSET`). The TorchScript-based one (``dynamo=False``) cannot export the log-Mel CNN: its
adaptive pooling takes the traced time length as output size, which that exporter refuses.
Every ``--fusion`` model exports, with each research option (learned poolings, prior bias, time encoding; the
CLIP loss is training-only) and each speech encoder family, Whisper's in-torch log-Mel front end included
(tests/test_export_options.py). Every export is verified: onnxruntime and PyTorch run the run's test split (or its
first ``max_items`` clips) and the largest absolute logit difference must stay below :data:`FP32_TOLERANCE`. ``--int8`` quantizes the weights of
``MatMul``/``Gemm``/``Conv`` (activations quantized per batch at run time) and reports the test accuracy and
macro-F1 of both models and their change. :class:`~emolab.eval.onnx_runtime.OnnxModel` runs the folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor, nn

    from emolab.models.registry import ModelConfig
    from emolab.train.config import TrainConfig

__all__ = [
    "FP32_TOLERANCE", "INPUTS", "OPSET", "SIDECAR", "ExportError", "ExportResult", "add_arguments", "export_module",
    "export_onnx", "has_gate", "input_names", "output_names", "quantize_int8", "run_from_args", "write_onnx",
]

SIDECAR = "emolab_export.json"
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 18
FP32_TOLERANCE = 1e-3  # max |logit_onnx - logit_torch| accepted for the fp32 model
FORMAT_VERSION = 1
#: Model inputs per ``input_modality``, in the ONNX model's order.
INPUTS: dict[str, tuple[str, ...]] = {
    "audio": ("audio", "audio_length"),
    "video": ("video", "video_valid"),
    "audiovisual": ("video", "audio", "audio_length", "video_valid"),
}


class ExportError(RuntimeError):
    """An export that cannot be made or does not verify: a message, not a traceback."""


def input_names(model: nn.Module) -> tuple[str, ...]:
    """The ONNX input names of ``model``, by its ``input_modality`` (:data:`INPUTS`)."""
    modality = getattr(model, "input_modality", None)
    if modality not in INPUTS:
        raise ExportError(f"{type(model).__name__} has no input_modality ('audio', 'video' or 'audiovisual')")
    return INPUTS[modality]


def has_gate(model_cfg: ModelConfig) -> bool:
    """Whether the model of ``model_cfg`` computes a modality gate: the registry's metadata
    (:attr:`~emolab.models.registry.ModelConfig.has_gate`: ``gated``, or xattn with the gated head)."""
    return model_cfg.has_gate


def output_names(model_cfg: ModelConfig) -> tuple[str, ...]:
    """``("logits", "probs")``, plus ``"gate"`` for the models of gated configs."""
    return ("logits", "probs", "gate") if has_gate(model_cfg) else ("logits", "probs")


def export_module(model: nn.Module, *, gate: bool) -> nn.Module:
    """The module that is exported: the model's input tensors (named as in :data:`INPUTS`) in, ``(logits, probs)``
    or, with ``gate`` (:func:`has_gate`), ``(logits, probs, gate)`` out, in eval mode. Explicit signatures, so
    ``torch.export`` names its inputs."""
    from torch import nn

    from emolab.models.fusion import forward_batch

    class _Base(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def run(self, **inputs: Tensor) -> tuple[Tensor, ...]:
            out = forward_batch(self.model, inputs, return_gate=gate)
            return (out.logits, out.probs, out.gate) if gate else (out.logits, out.probs)

    class AudioExport(_Base):
        def forward(self, audio: Tensor, audio_length: Tensor) -> tuple[Tensor, ...]:
            return self.run(audio=audio, audio_length=audio_length)

    class VideoExport(_Base):
        def forward(self, video: Tensor, video_valid: Tensor) -> tuple[Tensor, ...]:
            return self.run(video=video, video_valid=video_valid)

    class AudioVisualExport(_Base):
        def forward(self, video: Tensor, audio: Tensor, audio_length: Tensor,
                    video_valid: Tensor) -> tuple[Tensor, ...]:
            return self.run(video=video, audio=audio, audio_length=audio_length, video_valid=video_valid)

    cls = {"audio": AudioExport, "video": VideoExport, "audiovisual": AudioVisualExport}[model.input_modality]
    return cls().eval()


# --------------------------------------------------------------------------- test batches


def _test_batches(cfg: TrainConfig, max_items: int | None, batch_size: int) -> Iterator[dict[str, Any]]:
    """Batches of the run's test split as the model gets them (emolab's featuriser, no augmentation)."""
    from emolab.eval.analysis import test_dataset
    from emolab.data.features import BatchFeaturizer
    from emolab.data.loaders import make_loader

    try:
        dataset = test_dataset(cfg, max_items=max_items)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        raise ExportError(f"test split of {cfg.data_root}: {e} (another corpus: --data_root)") from None
    featurize = BatchFeaturizer.for_dataset(dataset, channels_last=False)
    for batch in make_loader(dataset, batch_size, num_workers=0, pin_memory=False):
        if batch is not None:
            yield featurize(batch)


def _feeds(batch: dict[str, Any], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Numpy arrays for onnxruntime (``audio_length`` int64, ``video_valid`` bool, tensors float32)."""
    import numpy as np

    dtypes = {"audio_length": np.int64, "video_valid": np.bool_}
    return {n: batch[n].detach().cpu().numpy().astype(dtypes.get(n, np.float32)) for n in names}


# --------------------------------------------------------------------------- export, quantize, verify


def write_onnx(model: nn.Module, example: dict[str, Any], path: str | Path, *, model_cfg: ModelConfig) -> Path:
    """Export ``model`` to ``path`` (no verification: :func:`export_onnx` does that) and check the file.

    Args:
        model: a model of :func:`emolab.models.build_model` in eval mode.
        model_cfg: the config it was built from (whether it outputs a gate: the registry's metadata).
        example: example inputs by name (:data:`INPUTS`), batch size 2 or more (the batch axis is dynamic; a batch
            of 1 would be specialised), e.g. ``video (2, T, 3, S, S)``, ``audio (2, 1, n_mels, F)``,
            ``audio_length (2,)`` int64, ``video_valid (2, T)`` bool.
        path: the ``.onnx`` file, written atomically.

    Raises:
        ExportError: ``torch.onnx.export`` failed (its first line; the whole error chained).
    """
    import contextlib
    import io
    import logging
    import warnings

    import onnx
    import torch

    from emolab.utils.fileio import atomic_write

    names, outs = input_names(model), output_names(model_cfg)
    batch = torch.export.Dim("batch", min=1)
    # onnxscript's "Skipping constant folding ..." notes, onnx_ir's "Attribute type is ambiguous ..." (speech
    # encoders' empty attributes, which default to the right type): notes about the exporter, not the model
    quiet = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                export_module(model, gate="gate" in outs), tuple(example[n] for n in names), input_names=list(names),
                output_names=list(outs), dynamic_shapes=tuple({0: batch} for _ in names), opset_version=OPSET,
                dynamo=True, external_data=False, verbose=False,
            )
    except Exception as e:  # torch.export's errors are long: the first line, the rest chained
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        what = f"{type(model).__name__} ({getattr(model, 'mode', model.input_modality)})"
        raise ExportError(f"torch.onnx.export failed for {what}: {first}") from e
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    atomic_write(path, lambda tmp: onnx.save_model(program.model_proto, tmp))
    onnx.checker.check_model(str(path))
    return Path(path)


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """onnxruntime dynamic quantization (INT8 weights of MatMul/Gemm/Conv, activations per batch) of ``src``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from emolab.utils.fileio import atomic_write

    dst = Path(dst)
    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        atomic_write(dst, lambda tmp: quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8,
                                                       op_types_to_quantize=["MatMul", "Gemm", "Conv"]))
    finally:
        pre.unlink(missing_ok=True)
    return dst


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        out_dir: the export folder.
        files: the files written (models and sidecar).
        n_clips: test clips the verification ran.
        max_abs_diff: max ``|logits_onnx - logits_torch|`` of the fp32 model over those clips.
        max_abs_diff_probs: the same for ``probs``.
        accuracy: ``{"torch", "onnx", "int8"}`` test accuracies (``int8`` with ``--int8``).
        macro_f1: the same for macro-F1.
        int8_max_abs_diff: max logit difference of the INT8 model from PyTorch (with ``--int8``).
        agreement_int8: share of clips where INT8 and PyTorch predict the same class.
    """

    out_dir: Path
    files: list[Path]
    n_clips: int
    max_abs_diff: float
    max_abs_diff_probs: float
    accuracy: dict[str, float] = field(default_factory=dict)
    macro_f1: dict[str, float] = field(default_factory=dict)
    int8_max_abs_diff: float | None = None
    agreement_int8: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The verification block of the sidecar."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("out_dir", "files")}
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _sidecar(model: nn.Module, cfg: TrainConfig, example: dict[str, Any], int8: bool) -> dict[str, Any]:
    import torch

    import emolab
    from emolab.data.ravdess import class_names

    names = input_names(model)
    dtypes = {"audio_length": "int64", "video_valid": "bool"}
    inputs = [{"name": n, "shape": ["batch", *example[n].shape[1:]], "dtype": dtypes.get(n, "float32")}
              for n in names]
    C = cfg.model.num_classes
    outputs = [{"name": n, "shape": ["batch", 1 if n == "gate" else C], "dtype": "float32"}
               for n in output_names(cfg.model)]
    audio_kind = cfg.model.audio_kind  # the registry's metadata: None when the model reads no audio
    return {
        "format": "emolab-onnx", "format_version": FORMAT_VERSION,
        "emolab_version": emolab.__version__, "torch_version": torch.__version__, "opset": OPSET,
        "model_file": MODEL_FILE, "int8_model_file": INT8_FILE if int8 else None,
        "fusion": cfg.model.fusion, "input_modality": model.input_modality, "audio_kind": audio_kind,
        "class_names": list(class_names(C)),
        "inputs": inputs, "outputs": outputs,
        # the Mel bins and label set are the model's fields; the sidecar keeps them beside the data settings
        "preprocessing": {**dataclasses.asdict(cfg.data), "num_classes": C, "n_mels": cfg.model.n_mels},
        "config": cfg.to_dict(),
    }


def export_onnx(
    model: nn.Module,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    int8: bool = False,
    max_items: int | None = None,
    batch_size: int = 16,
    tolerance: float = FP32_TOLERANCE,
    source: str | None = None,
) -> ExportResult:
    """Export ``model`` (trained with ``cfg``) to ``out_dir`` and verify it on the test split of ``cfg``.

    Args:
        model: a model of :func:`emolab.models.build_model` (moved to the CPU, eval mode).
        cfg: its training config (preprocessing, labels, the test split used for verification).
        out_dir: the export folder (created).
        int8: also write ``model.int8.onnx`` and report its accuracy change.
        max_items: verify on the first test clips only (default: the whole test split).
        batch_size: verification batch size (the export's batch axis is dynamic).
        tolerance: the largest accepted fp32 logit difference.
        source: the run folder or checkpoint, recorded in the sidecar.

    Raises:
        ExportError: the test split cannot be read, or the fp32 model differs from PyTorch by ``tolerance`` or more
            (the files stay for inspection).
    """
    import numpy as np
    import torch

    from emolab.utils.fileio import atomic_write_json
    from emolab.train.metrics import Predictions, epoch_metrics

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    names = input_names(model)
    batches = list(_test_batches(cfg, max_items, batch_size))
    if not batches:
        raise ExportError(f"no test clip of {cfg.data_root} could be read to verify the export")
    example = {n: batches[0][n][:2] for n in names}  # two clips: a batch axis that is not 1
    files = [out / MODEL_FILE]
    write_onnx(model, example, files[0], model_cfg=cfg.model)
    if int8:
        files.append(quantize_int8(files[0], out / INT8_FILE))
    else:
        (out / INT8_FILE).unlink(missing_ok=True)  # an earlier --int8 export's: no longer this model's
    sessions = {"onnx": _session(files[0])} | ({"int8": _session(files[1])} if int8 else {})

    logits: dict[str, list[np.ndarray]] = {k: [] for k in ("torch", "onnx", "int8")}
    probs: dict[str, list[np.ndarray]] = {"torch": [], "onnx": []}
    labels: list[np.ndarray] = []
    from emolab.models.fusion import forward_batch

    with torch.no_grad():
        for batch in batches:
            o = forward_batch(model, batch)
            logits["torch"].append(o.logits.float().numpy())
            probs["torch"].append(o.probs.float().numpy())
            labels.append(batch["label"].numpy())
            feeds = _feeds(batch, names)
            for k, sess in sessions.items():
                res = sess.run(None, feeds)
                logits[k].append(res[0])
                if k == "onnx":
                    probs[k].append(res[1])
    y = np.concatenate(labels)
    L = {k: np.concatenate(v) for k, v in logits.items() if v}
    P = {k: np.concatenate(v) for k, v in probs.items()}
    diff = float(np.abs(L["onnx"] - L["torch"]).max())
    acc, f1 = {}, {}
    for k, lg in L.items():
        m = epoch_metrics(Predictions(np.arange(len(y)), y, lg.argmax(1), np.zeros(len(y))), cfg.num_classes)
        acc[k], f1[k] = float(m["acc"]), float(m["f1"])
    result = ExportResult(out, files, len(y), diff, float(np.abs(P["onnx"] - P["torch"]).max()), acc, f1)
    if int8:
        result.int8_max_abs_diff = float(np.abs(L["int8"] - L["torch"]).max())
        result.agreement_int8 = float(np.mean(L["int8"].argmax(1) == L["torch"].argmax(1)))
    side = _sidecar(model, cfg, example, int8) | {"source": source, "verification": result.to_json(),
                                                  "tolerance": tolerance}
    files.append(atomic_write_json(side, out / SIDECAR))
    if not diff < tolerance:
        raise ExportError(f"{files[0]}: ONNX logits differ from PyTorch by {diff:.3g} (max abs over {len(y)} test "
                          f"clips), not below {tolerance:g}")
    return result


# --------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``emolab export``."""
    p.add_argument("run", metavar="RUN_OR_CKPT", help="run folder of `emolab train` (best_*.pt + config.json) "
                   "or a checkpoint")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    p.add_argument("--int8", action="store_true",
                   help="also write model.int8.onnx (dynamic quantization) and report its test accuracy change")
    p.add_argument("--out", default=None, help="output folder (default: <run>/export-onnx)")
    p.add_argument("--data_root", default=None, help="corpus whose test split verifies the export "
                   "(default: the run's saved data_root)")
    p.add_argument("--max_items", type=int, default=None, help="verify on the first N test clips only")
    p.add_argument("--batch_size", type=int, default=16, help="verification batch size (default 16)")


def run_from_args(args: argparse.Namespace) -> int:
    """Load the run, export, verify, print the comparison. Bad input raises an :class:`ExportError`."""
    from emolab.eval.inference import load_run
    from emolab.eval.robustness import InputError

    for package in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise ExportError(f"emolab export needs {package} (pinned in pyproject.toml: pip install -e .)") from None
    if args.max_items is not None and args.max_items < 1:
        raise ExportError(f"--max_items must be positive, got {args.max_items}")
    src = Path(args.run)
    try:
        name, model, cfg = load_run(src, data_root=args.data_root, device="cpu")
    except InputError as e:
        raise ExportError(str(e).replace("--run ", "", 1)) from None
    out = Path(args.out) if args.out else (src if src.is_dir() else src.parent) / "export-onnx"
    t0 = time.perf_counter()
    r = export_onnx(model, cfg, out, int8=args.int8, max_items=args.max_items, batch_size=args.batch_size,
                    source=str(src))
    print(f"{name}: {cfg.model.fusion} exported to {r.files[0]} ({r.files[0].stat().st_size / 2**20:.1f} MiB)")
    print(f"verified on {r.n_clips} test clips with onnxruntime: max |logit difference| {r.max_abs_diff:.2e} "
          f"(fp32, must be < {FP32_TOLERANCE:g}); probabilities {r.max_abs_diff_probs:.2e}")
    print(f"test accuracy: PyTorch {r.accuracy['torch']:.4f}, ONNX fp32 {r.accuracy['onnx']:.4f}; "
          f"macro-F1 {r.macro_f1['torch']:.4f} / {r.macro_f1['onnx']:.4f}")
    if args.int8:
        print(f"INT8 {r.files[1]} ({r.files[1].stat().st_size / 2**20:.1f} MiB): test accuracy "
              f"{r.accuracy['int8']:.4f} ({r.accuracy['int8'] - r.accuracy['onnx']:+.4f} vs fp32), macro-F1 "
              f"{r.macro_f1['int8']:.4f} ({r.macro_f1['int8'] - r.macro_f1['onnx']:+.4f}); same class as PyTorch "
              f"on {r.agreement_int8:.1%} of clips; max |logit difference| {r.int8_max_abs_diff:.3g}")
    for f in r.files:
        print(f"wrote {f}")
    print(f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0
