"""What the rest of emolab knows about a registered model without building it: :class:`ModelSpec`.

Plain Python (no torch): :mod:`emolab.models.registry` attaches one to every ``--fusion`` name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GATES", "INPUTS", "ModelSpec"]

INPUTS: tuple[tuple[str, ...], ...] = (("audio",), ("video",), ("audio", "video"))
GATES: tuple[str, ...] = ("never", "always", "gated_head")


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of emolab needs to know about a registered model without building it.

    Attributes:
        inputs: the batch tensors its ``forward`` reads: ``("audio",)``,
            ``("video",)`` or ``("audio", "video")`` (datasets load only these).
        fusion_head: it has trainable fusion parameters of its own besides the
            two branches (two-stage training freezes the branches under them).
        gate: whether it computes a modality gate (an extra output of the
            ONNX export, the gate histograms): ``"never"``, ``"always"``
            (``gated``), or ``"gated_head"``: with ``xattn_head="gated"`` (``xattn``).
    """

    inputs: tuple[str, ...] = ("audio", "video")
    fusion_head: bool = False
    gate: str = "never"

    def __post_init__(self) -> None:
        if tuple(self.inputs) not in INPUTS:
            raise ValueError(f"ModelSpec: inputs must be one of {INPUTS}, got {self.inputs!r}")
        if self.gate not in GATES:
            raise ValueError(f"ModelSpec: gate must be one of {GATES}, got {self.gate!r}")

    def has_gate(self, xattn_head: str) -> bool:
        """Whether the model computes a modality gate with this ``xattn_head`` (ignored unless ``"gated_head"``)."""
        return self.gate == "always" or (self.gate == "gated_head" and xattn_head == "gated")

    def audio_kind(self, use_wavlm: bool) -> str | None:
        """The audio input the model takes: ``"wave"`` (WavLM), ``"mel"``, or ``None`` when it reads no audio."""
        if "audio" not in self.inputs:
            return None
        return "wave" if use_wavlm else "mel"
