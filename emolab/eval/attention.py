"""What notebook 04 and ``emolab predict --attention`` look at: a cross-attention model's attention on chosen clips,
with the frames, log-Mel and the times of every video frame and audio step (:func:`collect_attention`).

The model sees small frames (48 px in the demo config), too coarse to read a face in a figure, so each clip
also carries its frames *for display* (:func:`display_frames`): the same sampled frames and the same face crop,
resized from the source to the crop's own resolution instead of the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dataclasses

import numpy as np
import torch
from torch import nn

from emolab.data.datasets import RavdessMelDataset
from emolab.data.features import BatchFeaturizer
from emolab.data.loaders import collate_skip_failed
from emolab.data.ravdess import class_names
from emolab.data.video import VideoInfo, probe_video
from emolab.models.fusion import forward_batch
from emolab.viz.attention import audio_step_times, video_frame_times

__all__ = [
    "AttentionClip",
    "DISPLAY_MAX_SIZE",
    "attention_spread",
    "collect_attention",
    "display_frames",
    "model_hop",
    "native_size",
]

#: Upper bound (pixels) of the side of display frames chosen from the source (a 1080p face crop is ~600 px).
DISPLAY_MAX_SIZE = 256


@dataclass
class AttentionClip:
    """One clip's cross-attention with what it attended to (inputs of :func:`emolab.viz.attention_over_media`).

    Attributes:
        stem: the pair's RAVDESS name (without modality).
        label, pred: true and predicted class names.
        frames: uint8 `(T, S, S, 3)` sampled frames as the model saw them (``S = frame_size``).
        mel: `(1, n_mels, F)` log-Mel (dB).
        attn_v2a: `(heads, T, Ta)` video-queries-audio weights.
        attn_a2v: `(heads, Ta, T)` audio-queries-video weights.
        video_mask, audio_mask: `(T,)` / `(Ta,)` bool validity.
        video_times: `(T,)` frame times in seconds.
        audio_times: `(Ta,)` audio step centres in seconds.
        display: uint8 `(T, D, D, 3)`: the same frames at display resolution (:func:`display_frames`).
    """

    stem: str
    label: str
    pred: str
    frames: np.ndarray
    mel: np.ndarray
    attn_v2a: np.ndarray
    attn_a2v: np.ndarray
    video_mask: np.ndarray
    audio_mask: np.ndarray
    video_times: np.ndarray
    audio_times: np.ndarray
    display: np.ndarray

    @property
    def heads(self) -> int:
        return int(self.attn_v2a.shape[0])

    def spread(self, direction: str = "a2v") -> float:
        """:func:`attention_spread` of ``"a2v"`` or ``"v2a"`` (1 = uniform, 0 = each query on one key)."""
        if direction == "a2v":
            return attention_spread(self.attn_a2v, self.audio_mask, self.video_mask)
        if direction == "v2a":
            return attention_spread(self.attn_v2a, self.video_mask, self.audio_mask)
        raise ValueError(f"direction must be 'a2v' or 'v2a', got {direction!r}")


def attention_spread(
    weights: np.ndarray, query_mask: np.ndarray | None = None, key_mask: np.ndarray | None = None
) -> float:
    """How uniform attention is: the entropy of each valid query's weights over the valid keys (renormalised),
    divided by ``log(valid keys)``, averaged over queries and heads.

    1.0 is uniform attention (a head that has not learned where to look, or keys it cannot tell apart,
    such as two near-identical frames), 0.0 one key per query. Per head, not of the head mean: heads that
    attend to different keys average to a flat map although none of them is flat.

    Args:
        weights: `(heads, Tq, Tk)` or `(Tq, Tk)` attention weights.
        query_mask, key_mask: `(Tq,)` / `(Tk,)` bool, True for valid positions (None: all valid).

    Raises:
        ValueError: fewer than 2 valid keys (nothing to spread over) or no valid query.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w[None] if w.ndim == 2 else w
    if w.ndim != 3:
        raise ValueError(f"weights must have shape (heads, Tq, Tk) or (Tq, Tk), got {np.shape(weights)}")
    q = np.ones(w.shape[1], bool) if query_mask is None else np.asarray(query_mask, bool)
    k = np.ones(w.shape[2], bool) if key_mask is None else np.asarray(key_mask, bool)
    w = w[:, q][:, :, k]
    if w.shape[2] < 2 or w.shape[1] < 1:
        raise ValueError(f"attention spread needs >= 2 valid keys and a valid query, got {w.shape[2]} and {w.shape[1]}")
    p = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)
    return float(entropy.mean() / np.log(w.shape[2]))


def _frames_per_step(model: nn.Module, mel_frames: int, steps: int) -> int:
    audio = getattr(model, "audio_model", None)
    s = getattr(audio, "time_downsampling", None)
    if s is None:
        for m in audio.modules() if audio is not None else ():
            s = getattr(m, "time_downsampling", None)
            if s is not None:
                break
    return int(s) if s else max(1, mel_frames // steps)


def native_size(box: tuple[int, int, int, int] | None, info: VideoInfo) -> int:
    """Side in source pixels of what a clip's frames show: the square face crop ``box``, or (no crop) the
    shorter side of the video."""
    if box is not None:
        return max(1, int(box[2]) - int(box[0]))
    return max(1, min(int(info.width), int(info.height)))


def display_frames(
    dataset: RavdessMelDataset, index: int, size: int | None = None, *, info: VideoInfo | None = None
) -> np.ndarray:
    """The frames the model saw for ``dataset`` clip ``index`` (same sampled frames, same face crop), resized
    from the source to ``size`` pixels instead of the model's ``frame_size``.

    ``size=None`` takes the crop's own resolution in the source (:func:`native_size`), between the model's
    frame size and :data:`DISPLAY_MAX_SIZE`: upscaling a small crop would only blur it, and a 600 px crop
    of a 1080p video is more than a figure shows. The frames go through the dataset's frame cache with
    their own key (the model's settings with the display size), so a second look decodes nothing.

    Returns:
        uint8 `(T, D, D, 3)`, ``D`` the size chosen (the cached model frames when ``D`` is the model's size).
    """
    clip = dataset.frames(index)
    s = dataset.frame_settings
    if size is None:
        info = info or probe_video(dataset.pairs[index].video_path)
        size = int(np.clip(native_size(clip.box, info), s.size, max(s.size, DISPLAY_MAX_SIZE)))
    if size < 8:
        raise ValueError(f"display size must be >= 8 pixels, got {size}")
    if size == s.size:
        return clip.frames
    return dataset.frames(index, dataclasses.replace(s, size=int(size))).frames


@torch.no_grad()
def collect_attention(
    model: nn.Module, dataset: RavdessMelDataset, indices: Sequence[int], *, display_size: int | None = None
) -> list[AttentionClip]:
    """Cross-attention (v2a and a2v, every head) of ``dataset[i]`` for each index, with frames and times.

    Each clip carries the frames twice: as the model saw them (``frames``) and for figures (``display``,
    :func:`display_frames` at ``display_size``; None: the crop's resolution in the source).

    Raises:
        ValueError: an index outside the dataset; the model returns no attention (not an ``xattn`` model).
    """
    bad = [int(i) for i in indices if not 0 <= int(i) < len(dataset)]
    if bad:
        raise ValueError(f"clip indices {bad} are outside the test split ({len(dataset)} clips: 0-{len(dataset) - 1})")
    model.eval()
    device = next(model.parameters()).device
    names = list(class_names(dataset.num_classes))
    items = [dataset[int(i)] for i in indices]
    batch = collate_skip_failed([it for it in items if it is not None])
    if batch is None:
        raise ValueError("none of the chosen clips could be decoded")
    batch = BatchFeaturizer.for_dataset(dataset, channels_last=False)(batch, device)
    o = forward_batch(model, batch, return_attn=True)
    if o.attn_v2a is None or o.attn_a2v is None:
        raise ValueError(f"{type(model).__name__} returns no attention: use fusion 'xattn'")
    clips = []
    c = dataset.config
    for b, item in enumerate(it for it in items if it is not None):
        index = int(item["meta"]["index"])
        rec = dataset.pairs[index]
        v2a = o.attn_v2a[b].float().cpu().numpy()
        ta = v2a.shape[-1]
        mel = batch["audio"][b].cpu().numpy()
        info = probe_video(rec.video_path)
        clips.append(
            AttentionClip(
                stem=rec.stem,
                label=names[int(item["label"])],
                pred=names[int(o.logits[b].argmax())],
                frames=dataset.frames(index).frames,
                mel=mel,
                attn_v2a=v2a,
                attn_a2v=o.attn_a2v[b].float().cpu().numpy(),
                video_mask=o.video_mask[b].cpu().numpy() if o.video_mask is not None else np.ones(v2a.shape[1], bool),
                audio_mask=o.audio_mask[b].cpu().numpy() if o.audio_mask is not None else np.ones(ta, bool),
                video_times=video_frame_times(info.frames_reported or max(1, round(info.duration_s * info.fps)), info.fps, c.num_frames),
                audio_times=audio_step_times(
                    ta, _frames_per_step(model, mel.shape[-1], ta), model_hop(model), c.sample_rate
                ),
                display=display_frames(dataset, index, display_size, info=info),
            )
        )
    return clips


def model_hop(model: nn.Module, default: int = 160) -> int:
    """The STFT hop (samples) of the model's Mel input (``ModelConfig.hop_length``)."""
    return int(getattr(model, "hop_length", default) or default)

