"""Audio-visual fusion: the two-branch base :class:`FusionModel` and its four families.

======  ========================  ===============================================  =========
mode    class                     added modules                                     params
======  ========================  ===============================================  =========
late    LateFusion                none                                              0
concat  ConcatFusion              audio_proj, video_proj → 256; classifier MLP     297,736
gated   GatedFusion               as concat + gate MLP, ModalityDropout            297,993
xattn   CrossAttentionFusion      video_proj, audio_proj, audio_fallback_conv,     307,336 /
                                  v2a, a2v (CrossAttentionBlock), concat/gated     273,545
                                  head
======  ========================  ===============================================  =========

(SPEC §3.4; counts with 8 classes, 128-d audio embedding.) ``FusionModel(audio,
video, mode=...)`` builds the family of ``mode``; ``state_dict`` keys are those
of the single class the families were split from, so saved runs and seed
checkpoints load unchanged. :func:`forward_batch` and :class:`FusionOutput`
live in :mod:`emolab.models.core` and are re-exported here.
"""

from emolab.models.core import FusionOutput, forward_batch
from emolab.models.fusion.base import (
    FUSION_MODES,
    FUSION_OPTIONS,
    XATTN_ATTENTION,
    XATTN_FUSE_ORDERS,
    XATTN_HEADS,
    FusionModel,
    fusion_class,
)
from emolab.models.fusion.heads import ConcatFusion, EmbeddingFusion, GatedFusion, LateFusion
from emolab.models.fusion.xattn import CrossAttentionFusion

__all__ = [
    "FUSION_MODES",
    "FUSION_OPTIONS",
    "XATTN_ATTENTION",
    "XATTN_FUSE_ORDERS",
    "XATTN_HEADS",
    "ConcatFusion",
    "CrossAttentionFusion",
    "EmbeddingFusion",
    "FusionModel",
    "FusionOutput",
    "GatedFusion",
    "LateFusion",
    "forward_batch",
    "fusion_class",
]
