"""Checkpoints of the seed project (commit ``dd6785f``): detect, convert, load.

The seed saved plain ``state_dict``s of its own modules. emolab's networks
compute the same functions under other names, so a seed file loads once its
keys are renamed (and, for xattn, two Linear layers folded into one):

=====================================  =========================================
seed                                   emolab
=====================================  =========================================
``classifier.*`` (unimodal)            ``head.*``
``encoder.proj.1`` (AudioCNN)          ``encoder.fc``
``encoder.conv1``/``bn1`` (ResNet)     ``encoder.stem.0``/``stem.1``
``encoder.layerN.0.{0,1}`` (N ≥ 2)     ``encoder.stages.{N-1}.0.{0,1}``
``encoder.layerN.b.{0,1,3,4}``         ``encoder.stages.{N-1}.b.{conv1,bn1,conv2,bn2}``
``wavlm.*``                            ``backbone.*``
``backbone.{0,1,4,5,6,7}`` (video)     ``backbone.{conv1,bn1,layer1,...,layer4}``
``fusion.*`` (concat)                  ``classifier.*``
``v_in_proj`` / ``audio_time_conv``    ``video_proj`` / ``audio_fallback_conv``
``a_in_proj ∘ audio_seq_proj``         ``audio_proj`` (one Linear, folded)
``v2a_attn``/``v_norm``, ``a2v_attn``  ``v2a.attn``/``v2a.norm``, ``a2v.attn``
/``a_norm``                            /``a2v.norm``
``xattn_mlp.{0,3}``                    ``classifier.{0,2}``
``xattn_gate.{0,3}``                   ``gate.{0,2}``
``xattn_classifier``                   ``classifier``
=====================================  =========================================

The seed's network also differs in behaviour, which :data:`SEED_MODEL_OPTIONS`
selects in :class:`~emolab.models.ModelConfig`: a Mel audio model gives xattn
one audio step, the clip embedding (``mel_sequence="clip"``); a WavLM audio
model gives concat/gated fusion ``head[0]`` of its mean hidden state, a
768-d vector, as its embedding (``wavlm_embedding="head"``); a2v attends to
the video after its v2a update (``xattn_attention="sequential"``); the heads
see ``[v, a]`` and the gate weights video (``xattn_fuse_order="va"``).

Example::

    from emolab.models import load_seed_checkpoint
    model = load_seed_checkpoint("seed_outputs/best_gated.pt")   # options read from the keys
    model = load_seed_checkpoint(sd, xattn_heads=8)              # what the keys cannot tell
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "EMOLAB_LAYOUT",
    "SEED_LAYOUT",
    "SEED_MODEL_OPTIONS",
    "SeedLayoutError",
    "convert_seed_state_dict",
    "is_seed_state_dict",
    "load_seed_checkpoint",
    "load_state_dict_any_layout",
    "seed_build_kwargs",
]

log = logging.getLogger(__name__)

SEED_LAYOUT = "the seed project's layout (dd6785f: classifier.*, encoder.proj.1, wavlm.*, backbone.0, fusion.*, ...)"
EMOLAB_LAYOUT = "emolab's layout (head.*, encoder.fc, backbone.conv1, classifier.*, ...)"

#: ModelConfig fields that make emolab's network compute the seed's function.
SEED_MODEL_OPTIONS: dict[str, Any] = {
    "mel_sequence": "clip",
    "wavlm_embedding": "head",
    "xattn_attention": "sequential",
    "xattn_fuse_order": "va",
    "xattn_head_dropout": 0.2,
    "gate_bias_init": -1.0,
    "pretrained_video": False,  # the weights come from the checkpoint
}

# Key fragments only the seed wrote (any of them marks a seed file).
_SEED_MARKERS = re.compile(
    r"(^|\.)(classifier\.|encoder\.proj\.1\.|encoder\.layer\d\.|encoder\.conv1\.|wavlm\.|backbone\.\d+\.|fusion\.\d|"
    r"v_in_proj\.|a_in_proj\.|audio_seq_proj\.|audio_time_conv\.|v2a_attn\.|a2v_attn\.|xattn_mlp\.|xattn_gate\.|"
    r"xattn_classifier\.)"
)


class SeedLayoutError(ValueError):
    """A state dict that fits neither the seed's layout nor emolab's for the model at hand."""


def _fmt(keys: list[str], limit: int = 12) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def is_seed_state_dict(sd: Mapping[str, Any]) -> bool:
    """Whether ``sd`` has keys only the seed project writes (``classifier.`` of a unimodal model, ``wavlm.``, ...).

    emolab's own fusion models have a top-level ``classifier.``; the seed's
    unimodal ``classifier.`` sits at the top of an audio/video model or under
    ``audio_model.``/``video_model.``, which is what is looked for.
    """
    for key in sd:
        if key.startswith(("audio_model.classifier.", "video_model.classifier.")):
            return True
        top = key.split(".", 1)[0]
        if top == "classifier" and not any(k.startswith(("audio_model.", "video_model.")) for k in sd):
            return True  # a unimodal seed model
        if top != "classifier" and _SEED_MARKERS.search(key):
            return True
    return False


# --------------------------------------------------------------------------- key renaming
def _rename_audio_mel(key: str) -> str:
    key = re.sub(r"^encoder\.proj\.1\.", "encoder.fc.", key)
    key = re.sub(r"^encoder\.conv1\.", "encoder.stem.0.", key)
    key = re.sub(r"^encoder\.bn1\.", "encoder.stem.1.", key)
    m = re.match(r"^encoder\.layer(\d)\.(\d+)\.(\d+)\.(.*)$", key)
    if m:
        stage, block, idx, rest = int(m[1]) - 1, int(m[2]), int(m[3]), m[4]
        if stage > 0 and block == 0:  # the stride-2 1x1 transition: Sequential(conv, bn)
            return f"encoder.stages.{stage}.0.{idx}.{rest}"
        name = {0: "conv1", 1: "bn1", 3: "conv2", 4: "bn2"}.get(idx, str(idx))
        return f"encoder.stages.{stage}.{block}.{name}.{rest}"
    return re.sub(r"^classifier\.", "head.", key)


def _rename_wavlm(key: str) -> str:
    key = re.sub(r"^wavlm\.", "backbone.", key)
    return re.sub(r"^classifier\.", "head.", key)


_VIDEO_STAGES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _rename_video(key: str) -> str:
    m = re.match(r"^backbone\.(\d+)\.(.*)$", key)
    if m and m[1] in _VIDEO_STAGES:
        return f"backbone.{_VIDEO_STAGES[m[1]]}.{m[2]}"
    return re.sub(r"^classifier\.", "head.", key)


def _unimodal_renamer(sd: Mapping[str, Any]) -> Callable[[str], str]:
    if any(k.startswith("wavlm.") for k in sd):
        return _rename_wavlm
    if any(k.startswith("encoder.") for k in sd):
        return _rename_audio_mel
    return _rename_video


_FUSION_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^fusion\.", "classifier."),
    (r"^v_in_proj\.", "video_proj."),
    (r"^audio_time_conv\.", "audio_fallback_conv."),
    (r"^v2a_attn\.", "v2a.attn."),
    (r"^v_norm\.", "v2a.norm."),
    (r"^a2v_attn\.", "a2v.attn."),
    (r"^a_norm\.", "a2v.norm."),
    (r"^xattn_mlp\.0\.", "classifier.0."),
    (r"^xattn_mlp\.3\.", "classifier.2."),
    (r"^xattn_gate\.0\.", "gate.0."),
    (r"^xattn_gate\.3\.", "gate.2."),
    (r"^xattn_classifier\.", "classifier."),
)


def _rename_fusion_key(key: str) -> str:
    for pattern, new in _FUSION_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, new, key)
    return key


def _split(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _convert_raw(sd: Mapping[str, Tensor], *, fold_audio_seq: bool = True) -> dict[str, Tensor]:
    """Rename a seed state dict's keys to emolab's (no checking against a model)."""
    if not any(k.startswith(("audio_model.", "video_model.")) for k in sd):
        rename = _unimodal_renamer(sd)
        return {rename(k): v for k, v in sd.items()}
    out: dict[str, Tensor] = {}
    for owner in ("audio_model", "video_model"):
        sub = _split(sd, owner + ".")
        rename = _unimodal_renamer(sub)
        out.update({f"{owner}.{rename(k)}": v for k, v in sub.items()})
    top = {k: v for k, v in sd.items() if not k.startswith(("audio_model.", "video_model."))}
    if "a_in_proj.weight" in top:
        w2, b2 = top.pop("a_in_proj.weight"), top.pop("a_in_proj.bias")
        if fold_audio_seq and "audio_seq_proj.weight" in top:
            # a_in_proj(audio_seq_proj(x)) = (W2 W1) x + (W2 b1 + b2): one Linear(H -> d_model)
            w1, b1 = top.pop("audio_seq_proj.weight"), top.pop("audio_seq_proj.bias")
            wide = torch.float64
            out["audio_proj.weight"] = (w2.to(wide) @ w1.to(wide)).to(w2.dtype)
            out["audio_proj.bias"] = (w2.to(wide) @ b1.to(wide) + b2.to(wide)).to(b2.dtype)
        else:  # the Conv1d fallback path: a_in_proj alone
            top.pop("audio_seq_proj.weight", None)
            top.pop("audio_seq_proj.bias", None)
            out["audio_proj.weight"], out["audio_proj.bias"] = w2, b2
    out.update({_rename_fusion_key(k): v for k, v in top.items()})
    return out


# --------------------------------------------------------------------------- options from keys
def _wavlm_config_from_keys(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Any]:
    """The ``WavLMConfig`` fields a seed WavLM state dict determines (hidden size, layers, heads, convs, ...)."""
    sub = _split(sd, prefix)
    conv = sorted(
        (int(m[1]), v) for k, v in sub.items() if (m := re.match(r"^feature_extractor\.conv_layers\.(\d+)\.conv\.weight$", k))
    )
    layers = {int(m[1]) for k in sub if (m := re.match(r"^encoder\.layers\.(\d+)\.", k))}
    hidden = sub["feature_projection.projection.weight"].shape[0]
    pos = sub.get("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    if pos is None:
        pos = sub.get("encoder.pos_conv_embed.conv.weight_v", sub.get("encoder.pos_conv_embed.conv.weight"))
    cfg: dict[str, Any] = {
        "hidden_size": int(hidden),
        "num_hidden_layers": len(layers),
        "intermediate_size": int(sub["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]),
        "conv_dim": [int(w.shape[0]) for _, w in conv],
        "conv_kernel": [int(w.shape[-1]) for _, w in conv],
        "conv_bias": any(k.endswith("conv.bias") and k.startswith("feature_extractor.") for k in sub),
        "feat_extract_norm": "layer" if "feature_extractor.conv_layers.1.layer_norm.weight" in sub else "group",
    }
    rel = sub.get("encoder.layers.0.attention.rel_attn_embed.weight")
    if rel is not None:
        cfg["num_buckets"], cfg["num_attention_heads"] = int(rel.shape[0]), int(rel.shape[1])
    if pos is not None:
        cfg["num_conv_pos_embeddings"] = int(pos.shape[-1])
        cfg["num_conv_pos_embedding_groups"] = int(hidden // pos.shape[1])
    if len(conv) == 7:  # wavlm-base's strides; other stacks keep WavLMConfig's default length check
        cfg["conv_stride"] = [5, 2, 2, 2, 2, 2, 2]
    return cfg


def seed_build_kwargs(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    """``build_model`` arguments for the network a seed state dict describes.

    Read from the keys and shapes: the fusion mode and xattn head, the audio
    encoder, ``num_classes``, ``xattn_d_model``, ``common_dim`` and, for WavLM,
    a ``wavlm_config`` (a random-init backbone the weights then overwrite).
    Not in the keys, so left at their defaults unless passed to
    :func:`load_seed_checkpoint`: ``xattn_heads`` (4), dropout rates.
    The seed's behaviour options (:data:`SEED_MODEL_OPTIONS`) are included.
    """
    fused = any(k.startswith(("audio_model.", "video_model.")) for k in sd)
    kw: dict[str, Any] = dict(SEED_MODEL_OPTIONS)
    audio_prefix = "audio_model." if fused else ""
    if fused:
        tops = {k.split(".", 1)[0] for k in sd}
        if tops & {"v2a_attn", "a2v_attn", "v_in_proj", "xattn_mlp", "xattn_gate", "xattn_classifier"}:
            kw["fusion"] = "xattn"
            kw["xattn_head"] = "gated" if tops & {"xattn_gate", "xattn_classifier"} else "concat"
            if "v_in_proj.weight" in sd:
                kw["xattn_d_model"] = int(sd["v_in_proj.weight"].shape[0])
            if "xattn_mlp.0.weight" in sd:
                kw["common_dim"] = int(sd["xattn_mlp.0.weight"].shape[0])
        elif tops & {"gate", "fusion", "audio_proj", "video_proj"}:
            kw["fusion"] = "concat" if "fusion" in tops else "gated"
            if "audio_proj.weight" in sd:
                kw["common_dim"] = int(sd["audio_proj.weight"].shape[0])
        else:
            kw["fusion"] = "late"
        head = sd.get("video_model.classifier.weight")
    else:
        kw["fusion"] = "video" if any(k.startswith("backbone.") for k in sd) else "audio"
        head = sd.get("classifier.weight", sd.get("classifier.3.weight"))
    if head is not None:
        kw["num_classes"] = int(head.shape[0])
    if kw["fusion"] != "video":
        if any(k.startswith(audio_prefix + "wavlm.") for k in sd):
            kw["use_wavlm"] = True
            kw["wavlm_config"] = _wavlm_config_from_keys(sd, audio_prefix + "wavlm.")
        elif any(k.startswith(audio_prefix + "encoder.conv1.") for k in sd):
            kw["use_resnet_audio"] = True
        time_conv = sd.get("audio_time_conv.weight")
        if time_conv is not None:
            kw["n_mels"] = int(time_conv.shape[1])
    return kw


# --------------------------------------------------------------------------- conversion and loading
def _describe_mismatch(model: nn.Module, sd: Mapping[str, Tensor], converted: Mapping[str, Tensor] | None) -> str:
    """Missing/unexpected keys of ``sd`` read in each layout (the more likely layout first)."""
    expected = set(model.state_dict())
    lines = [
        f"as {EMOLAB_LAYOUT}: missing keys {_fmt(sorted(expected - set(sd)))}; "
        f"unexpected keys {_fmt(sorted(set(sd) - expected))}"
    ]
    if converted is not None:
        seed = (
            f"as {SEED_LAYOUT}, after conversion: missing keys {_fmt(sorted(expected - set(converted)))}; "
            f"unexpected keys {_fmt(sorted(set(converted) - expected))}"
        )
        lines.insert(0 if is_seed_state_dict(sd) else 1, seed)
    return "; ".join(lines)


def convert_seed_state_dict(sd: Mapping[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Rename (and fold) a seed state dict into emolab's layout.

    Args:
        sd: the seed's ``state_dict`` (a whole model, or an audio/video model).
        model: the emolab model it is meant for; when given, the result is
            checked against ``model.state_dict()`` (keys and shapes), and the
            xattn audio projection is folded only if the model uses the
            ``encode_sequence`` path.

    Returns:
        A state dict that ``model.load_state_dict(..., strict=True)`` accepts.

    Raises:
        SeedLayoutError: the keys fit neither layout; the message names both
            layouts and the missing and unexpected keys of each.
    """
    fold = getattr(model, "uses_audio_sequence", True) if model is not None else True
    converted = _convert_raw(sd, fold_audio_seq=fold)
    if model is None:
        return converted
    expected = model.state_dict()
    if set(converted) != set(expected):
        raise SeedLayoutError(
            f"the state dict fits no layout of {type(model).__name__}: {_describe_mismatch(model, sd, converted)}"
        )
    bad = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in converted.items()
           if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise SeedLayoutError(
            f"{SEED_LAYOUT}: the keys convert but shapes differ from {type(model).__name__}'s "
            f"(other model options?): {_fmt(bad)}"
        )
    return converted


def load_state_dict_any_layout(module: nn.Module, sd: Mapping[str, Tensor], source: str = "state dict") -> str:
    """Load ``sd`` into ``module`` strictly, converting it first if it is in the seed's layout.

    Returns:
        ``"emolab"`` or ``"seed"``: the layout found (a seed conversion is logged).

    Raises:
        SeedLayoutError: ``sd`` fits neither layout (keys or shapes); the
            message names ``source``, both layouts and the missing/unexpected keys.
    """
    expected = set(module.state_dict())
    if set(sd) == expected:
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as err:
            raise SeedLayoutError(f"{source} ({EMOLAB_LAYOUT}) does not fit {type(module).__name__}: {err}") from None
        return "emolab"
    fold = getattr(module, "uses_audio_sequence", True)
    converted = _convert_raw(sd, fold_audio_seq=fold)
    if set(converted) != expected:
        raise SeedLayoutError(
            f"{source} fits neither layout for {type(module).__name__}: {_describe_mismatch(module, sd, converted)}"
        )
    converted = convert_seed_state_dict(sd, module)
    module.load_state_dict(converted, strict=True)
    log.info("%s: converted from %s to emolab's (%d entries)", source, SEED_LAYOUT, len(converted))
    return "seed"


def _read(path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict[str, Tensor], str]:
    from emolab.utils.checkpoints import load_checkpoint, state_dict_from_checkpoint

    if isinstance(path_or_state_dict, Mapping):
        return state_dict_from_checkpoint(path_or_state_dict, "state dict"), "state dict"
    path = os.fspath(path_or_state_dict)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"seed checkpoint not found: {path}")
    return state_dict_from_checkpoint(load_checkpoint(path), path), path


def load_seed_checkpoint(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any], **build_model_kwargs: Any
) -> nn.Module:
    """An emolab model computing what a seed checkpoint computes.

    The network (fusion mode, audio encoder, classes, widths, WavLM shape) is
    read from the checkpoint's keys (:func:`seed_build_kwargs`), the seed's
    behaviour options (:data:`SEED_MODEL_OPTIONS`) are set, and
    ``build_model_kwargs`` override either (e.g. ``xattn_heads=8``, which the
    keys cannot tell, or ``wavlm_name_or_path``). A checkpoint already in
    emolab's layout loads as it is into the model those arguments describe.

    Args:
        path_or_state_dict: a ``.pt`` file (a state dict or ``{"model": ...}``)
            or a state dict.
        **build_model_kwargs: :func:`~emolab.models.build_model` arguments.

    Returns:
        The model in eval mode (the seed's outputs need it: dropout, BatchNorm).

    Raises:
        FileNotFoundError: no such file.
        SeedLayoutError: (a ``ValueError``) the keys fit neither the seed's
            layout nor emolab's; the message names both and the missing and
            unexpected keys.
    """
    from emolab.models.registry import build_model

    sd, source = _read(path_or_state_dict)
    kwargs = seed_build_kwargs(sd) if is_seed_state_dict(sd) else {"pretrained_video": False}
    kwargs.update(build_model_kwargs)
    named = "audio_backbone" in build_model_kwargs or "wavlm_name_or_path" in build_model_kwargs
    if named and "wavlm_config" not in build_model_kwargs:
        kwargs.pop("wavlm_config", None)
    fusion = kwargs.pop("fusion", None)
    if fusion is None:
        raise SeedLayoutError(
            f"{source}: not in {SEED_LAYOUT}, so the model cannot be read from its keys; pass fusion=... "
            "(and the other build_model arguments) to load it in emolab's layout"
        )
    model = build_model(fusion, **kwargs)
    load_state_dict_any_layout(model, sd, source)
    return model.eval()
