"""What notebook 04 and ``emolab predict --attention`` look at: a cross-attention model's attention on chosen clips,
with the frames, log-Mel and the times of every video frame and audio step (:func:`collect_attention`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from emolab.data.datasets import RavdessMelDataset
from emolab.data.features import BatchFeaturizer
from emolab.data.loaders import collate_skip_failed
from emolab.data.ravdess import class_names
from emolab.data.video import probe_video
from emolab.models.fusion import forward_batch
from emolab.viz.attention import audio_step_times, video_frame_times

__all__ = ["AttentionClip", "collect_attention", "model_hop"]


@dataclass
class AttentionClip:
    """One clip's cross-attention with what it attended to (inputs of :func:`emolab.viz.attention_over_media`).

    Attributes:
        stem: the pair's RAVDESS name (without modality).
        label, pred: true and predicted class names.
        frames: uint8 `(T, S, S, 3)` sampled frames.
        mel: `(1, n_mels, F)` log-Mel (dB).
        attn_v2a: `(heads, T, Ta)` video-queries-audio weights.
        attn_a2v: `(heads, Ta, T)` audio-queries-video weights.
        video_mask, audio_mask: `(T,)` / `(Ta,)` bool validity.
        video_times: `(T,)` frame times in seconds.
        audio_times: `(Ta,)` audio step centres in seconds.
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

    @property
    def heads(self) -> int:
        return int(self.attn_v2a.shape[0])


def _frames_per_step(model: nn.Module, mel_frames: int, steps: int) -> int:
    audio = getattr(model, "audio_model", None)
    s = getattr(audio, "time_downsampling", None)
    if s is None:
        for m in audio.modules() if audio is not None else ():
            s = getattr(m, "time_downsampling", None)
            if s is not None:
                break
    return int(s) if s else max(1, mel_frames // steps)


@torch.no_grad()
def collect_attention(model: nn.Module, dataset: RavdessMelDataset, indices: Sequence[int]) -> list[AttentionClip]:
    """Cross-attention (v2a and a2v, every head) of ``dataset[i]`` for each index, with frames and times.

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
            )
        )
    return clips


def model_hop(model: nn.Module, default: int = 160) -> int:
    """The STFT hop (samples) of the model's Mel input (``ModelConfig.hop_length``)."""
    return int(getattr(model, "hop_length", default) or default)

