"""Run a folder written by ``emolab export`` with onnxruntime: :class:`OnnxModel`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import numpy as np

    from emolab.models.fusion import FusionOutput
    from emolab.train.config import TrainConfig

__all__ = ["OnnxModel", "is_export_dir"]

_DTYPES = {"float32": "float32", "int64": "int64", "bool": "bool"}


def has_cuda_provider() -> bool:
    """Whether onnxruntime here can run an export on CUDA (``onnxruntime-gpu``); torch's CUDA does not matter."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def default_device(run: str | Path) -> str:
    """The device ``predict``/``evaluate`` run ``run`` on without ``--device``: CUDA when torch sees it, except an
    export folder whose onnxruntime has no CUDA provider (onnxruntime, not torch, runs an export)."""
    import torch

    if not torch.cuda.is_available() or (is_export_dir(run) and not has_cuda_provider()):
        return "cpu"
    return "cuda"


def is_export_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``emolab export`` (it holds ``emolab_export.json``)."""
    from emolab.eval.export import SIDECAR

    return (Path(path) / SIDECAR).is_file()


class OnnxModel:
    """An exported emolab model, run by onnxruntime on the tensors the PyTorch model takes.

    ``emolab predict``/``evaluate`` can use it in place of a PyTorch model: it has ``input_modality`` and the
    run's ``config`` (build the datasets or featuriser from ``config.data`` exactly as for the run), and
    :meth:`forward_batch` mirrors :func:`emolab.models.fusion.forward_batch`.

    Example::

        m = OnnxModel("outputs/runs/gated-seed0-.../export-onnx")          # or int8=True
        out = m(video=video, audio=mel, audio_length=n, video_valid=valid)  # a FusionOutput
        out.probs  # (B, C); out.gate (B, 1) for gated models

    Args:
        folder: the export folder (``emolab_export.json`` + ``model.onnx`` [+ ``model.int8.onnx``]).
        int8: run the INT8 model instead of fp32 (the folder must hold it: ``emolab export --int8``).
        providers: onnxruntime execution providers (default: the CPU).
        threads: intra-op threads (default: onnxruntime's).

    Attributes:
        meta: the sidecar (preprocessing, ``class_names``, ``inputs``/``outputs`` with shapes, versions,
            ``verification``).
        input_names: ONNX inputs in order, a subset of ``video`` ``(B, T, 3, S, S)`` float32, ``audio``
            ``(B, 1, n_mels, F)`` float32 (``(B, 1, N)`` for WavLM), ``audio_length`` ``(B,)`` int64,
            ``video_valid`` ``(B, T)`` bool.
        output_names: ``logits``, ``probs`` ``(B, C)`` [and ``gate`` ``(B, 1)``].
        class_names: class names in label order.
        input_modality: ``"audio"``, ``"video"`` or ``"audiovisual"``.

    Raises:
        FileNotFoundError: no sidecar or model file, naming it.
        ValueError: a sidecar of another format.
    """

    def __init__(self, folder: str | Path, *, int8: bool = False, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        from emolab.eval.export import INT8_FILE, MODEL_FILE, SIDECAR

        self.folder = Path(folder)
        side = self.folder / SIDECAR
        if not side.is_file():
            raise FileNotFoundError(f"{side} not found: {self.folder} is not a folder written by `emolab export`")
        self.meta: dict[str, Any] = json.loads(side.read_text())
        if self.meta.get("format") != "emolab-onnx":
            raise ValueError(f"{side}: not an emolab ONNX export (format {self.meta.get('format')!r})")
        name = self.meta.get("int8_model_file") if int8 else self.meta.get("model_file", MODEL_FILE)
        self.path = self.folder / (name or INT8_FILE)
        if not name or not self.path.is_file():
            hint = " (export with --int8)" if int8 else ""
            raise FileNotFoundError(f"{self.path} not found{hint}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers or ["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.class_names: list[str] = list(self.meta["class_names"])
        self.input_modality: str = self.meta["input_modality"]
        self._dtypes = {i["name"]: _DTYPES[i["dtype"]] for i in self.meta["inputs"]}

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, fusion={self.meta.get('fusion')!r}, inputs={self.input_names})"

    @property
    def config(self) -> TrainConfig:
        """The run's :class:`~emolab.train.config.TrainConfig` (preprocessing in ``config.data``)."""
        from emolab.train.config import TrainConfig

        return TrainConfig.from_dict(self.meta["config"])

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Numpy in, numpy out: ``{name: array}`` of every output. Extra keys of ``inputs`` are ignored.

        Raises:
            KeyError: a missing input, naming the inputs the model takes.
        """
        import numpy as np

        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise KeyError(f"{self.path}: missing input(s) {missing}; the model takes {self.input_names}")
        feeds = {}
        for n in self.input_names:
            v = inputs[n]
            v = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            feeds[n] = v.astype(self._dtypes.get(n, "float32"), copy=False)
        return dict(zip(self.output_names, self.session.run(None, feeds)))

    def __call__(self, **inputs: Any) -> FusionOutput:
        """Tensors (or arrays) by input name -> a :class:`~emolab.models.fusion.FusionOutput` of CPU tensors
        (``logits``, ``log_probs``, ``probs`` ``(B, C)``; ``gate`` ``(B, 1)`` for gated models)."""
        import torch

        from emolab.models.fusion import FusionOutput

        out = {k: torch.from_numpy(v) for k, v in self.run(inputs).items()}
        res = FusionOutput.from_logits(out["logits"], gate=out.get("gate"))
        res.probs = out["probs"]  # the model's own (for ``late``: the averaged probabilities)
        return res

    def forward_batch(self, batch: Mapping[str, Any]) -> FusionOutput:
        """Like :func:`emolab.models.fusion.forward_batch`: a dataset batch (its other keys ignored)."""
        return self(**{n: batch[n] for n in self.input_names if n in batch})
