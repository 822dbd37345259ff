"""``emolab predict``: a trained run on any clips, RAVDESS-named or not.

Inputs (:func:`gather_clips`):

* a video file (any container PyAV reads: a RAVDESS modality-01 MP4, a phone recording): its own audio track;
* a video and ``--audio WAV``: that WAV as its audio (the way emolab pairs RAVDESS: modality-02 video with the
  modality-03 WAV);
* an audio file (WAV, FLAC, OGG): audio only (for audio models);
* a folder: every video and audio file under it, sorted. A video takes as its audio a WAV beside it with the
  same stem, or for a RAVDESS modality-02 video its modality-03 partner anywhere in the folder, else its own
  track; an audio file that is nobody's partner is a clip of its own.

A model reads only its modalities: a video-only model never opens the audio, an audio model never the video.
Each clip is checked first (:func:`check_clip`); one that has no audio track or no video, is too short
(:data:`MIN_AUDIO_SECONDS`, :data:`MIN_VIDEO_FRAMES`) or does not decode is reported by name in one line and
the others go on. Probabilities come from :func:`emolab.eval.inference.infer`, the path ``emolab evaluate``
takes, with the run's preprocessing.

``RUN_OR_CKPT`` may also be a folder written by ``emolab export`` (it holds ``emolab_export.json``): the same
preprocessing from the sidecar's config, the model run by onnxruntime (:class:`~emolab.eval.onnx_runtime.OnnxModel`;
``--int8``: its ``model.int8.onnx``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MIN_AUDIO_SECONDS", "MIN_VIDEO_FRAMES", "VIDEO_SUFFIXES", "Clip", "PredictError", "PredictResult",
    "add_arguments", "gather_clips", "load_model_or_export", "predict", "run_from_args",
]

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"})
MIN_AUDIO_SECONDS = 0.1  # shorter audio is "too short": it would be almost all padding
MIN_VIDEO_FRAMES = 2  # distinct decoded frames; one frame is a still image


class PredictError(ValueError):
    """Bad arguments (no such run, an input that does not exist): one line, exit code 2."""


@dataclass
class Clip:
    """One input: a name (the path as given or found), its video and its audio file (either may be None)."""

    name: str
    video: Path | None
    audio: Path | None
    error: str | None = None


def _audio_suffixes() -> frozenset[str]:
    from emolab.eval.inference import SOUNDFILE_SUFFIXES

    return SOUNDFILE_SUFFIXES


def _folder_clips(folder: Path) -> list[Clip]:
    from emolab.data.ravdess import RavdessNameError, parse_name

    audio_sfx = _audio_suffixes()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in VIDEO_SUFFIXES | audio_sfx)
    audio = [p for p in files if p.suffix.lower() in audio_sfx]
    by_key: dict[tuple, Path] = {}
    for p in audio:
        try:
            n = parse_name(p)
        except RavdessNameError:
            continue
        if n.modality == 3:
            by_key.setdefault(n.key, p)
    used: set[Path] = set()
    clips = []
    for p in files:
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        partner = next((a for a in audio if a.parent == p.parent and a.stem == p.stem), None)
        if partner is None:
            try:
                n = parse_name(p)
                partner = by_key.get(n.key) if n.modality == 2 else None
            except RavdessNameError:
                pass
        if partner is not None:
            used.add(partner)
        clips.append(Clip(str(p), p, partner or p))
    clips += [Clip(str(p), None, p) for p in audio if p not in used]
    return sorted(clips, key=lambda c: c.name)


def gather_clips(inputs: Sequence[str | os.PathLike[str]], audio: str | os.PathLike[str] | None = None) -> list[Clip]:
    """The clips of the command's inputs (see the module docstring).

    Raises:
        PredictError: an input that does not exist, ``--audio`` with anything but one video file, an empty folder.
    """
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise PredictError(f"{p}: no such file or folder")
    if audio is not None:
        if len(paths) != 1 or not paths[0].is_file():
            raise PredictError("--audio pairs one WAV with one video file: pass exactly one video")
        if not Path(audio).is_file():
            raise PredictError(f"--audio {audio}: no such file")
        return [Clip(str(paths[0]), paths[0], Path(audio))]
    clips: list[Clip] = []
    for p in paths:
        if p.is_dir():
            found = _folder_clips(p)
            if not found:
                raise PredictError(f"{p}: no video or audio files in this folder "
                                   f"({', '.join(sorted(VIDEO_SUFFIXES | _audio_suffixes()))})")
            clips += found
        elif p.suffix.lower() in _audio_suffixes():
            clips.append(Clip(str(p), None, p))
        else:  # any container: its video and its own audio track
            clips.append(Clip(str(p), p, p))
    return clips


def check_clip(clip: Clip, modalities: Sequence[str]) -> str | None:
    """Why ``clip`` cannot be given to a model reading ``modalities`` (no video, no audio track, no video
    stream, not a media file), or None. Decoding problems show up later, when the clip is loaded."""
    import av

    if "video" in modalities and clip.video is None:
        return f"{clip.audio}: no video (an audio file; this model also reads video)"
    needs_track = "audio" in modalities and clip.audio is not None and clip.audio.suffix.lower() not in _audio_suffixes()
    if not ("video" in modalities or needs_track):
        return None
    path = clip.video if "video" in modalities else clip.audio
    assert path is not None
    if path.stat().st_size == 0:
        return f"{path}: file is empty (0 bytes)"
    try:
        with av.open(str(path)) as c:
            has_video, has_audio = bool(c.streams.video), bool(c.streams.audio)
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        return f"{path}: not a readable media file ({e})"
    if "video" in modalities and not has_video:
        return f"{path}: no video stream"
    if needs_track and clip.audio == path and not has_audio:
        return f"{path}: no audio track (pass the recording's audio with --audio WAV, or use a video-only model)"
    return None


@dataclass
class PredictResult:
    """Per-clip predictions of one run.

    Attributes:
        table: one row per clip in input order: ``clip, video, audio, pred, prob_<class>... , gate, error``
            (``pred`` and the probabilities empty/NaN for a failed clip, ``gate`` NaN without a gate).
        class_names: the run's classes, in label order.
        run: the run's name; ``fusion`` its model.
    """

    table: pd.DataFrame
    class_names: list[str]
    run: str
    fusion: str
    attention: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> pd.DataFrame:
        return self.table[self.table["error"] != ""]


def _record(video: Path | None, audio: Path | None) -> Any:
    """A pair record of any two files; emotion, actor and the rest are placeholders (unlabelled clips)."""
    from emolab.data.ravdess import PairRecord

    assert video is not None and audio is not None
    return PairRecord(video, audio, emotion=1, intensity=1, statement=1, repetition=1, actor=1)


def load_model_or_export(run: str | os.PathLike[str], *, device: str = "cpu",
                         int8: bool = False) -> tuple[str, Any, Any, bool]:
    """``(name, model, config, is_onnx)`` of a run folder or checkpoint (a PyTorch model) or of a folder of
    ``emolab export`` (an :class:`~emolab.eval.onnx_runtime.OnnxModel`, fp32 or with ``int8`` its INT8 file).

    Raises:
        PredictError: ``int8`` for a PyTorch run, an export without the INT8 model, a folder that is neither.
        emolab.eval.robustness.InputError: a run folder or checkpoint that does not load.
    """
    from emolab.eval.inference import load_run
    from emolab.eval.onnx_runtime import OnnxModel, has_cuda_provider, is_export_dir

    p = Path(run)
    if p.is_dir() and is_export_dir(p):
        providers = ["CPUExecutionProvider"]
        if device == "cuda":  # onnxruntime, not torch, runs an export: it needs its own CUDA build
            if not has_cuda_provider():
                raise PredictError(f"--device cuda: {p} is an ONNX export and this onnxruntime has no CUDA execution "
                                   f"provider (install onnxruntime-gpu), or run it with --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            model = OnnxModel(p, int8=int8, providers=providers)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise PredictError(str(e).strip("'")) from None
        src = model.meta.get("source")
        name = f"{Path(src).name if src else p.name} ({'ONNX INT8' if int8 else 'ONNX'})"
        return name, model, model.config, True
    if p.is_dir() and not (p / "config.json").is_file():
        raise PredictError(f"{p}: neither a run folder of `emolab train` (config.json + best_*.pt) nor an export "
                           f"folder of `emolab export` (emolab_export.json)")
    if int8:
        raise PredictError(f"--int8 needs an export folder of `emolab export --int8`; {p} is a PyTorch run")
    name, model, cfg = load_run(run, device=device)
    return name, model, cfg, False


def predict(
    run: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    audio: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    attention_dir: str | os.PathLike[str] | None = None,
    int8: bool = False,
) -> PredictResult:
    """Predict every clip of ``inputs`` with the run (folder or checkpoint) or export folder ``run``
    (``int8``: the export's INT8 model).

    Raises:
        PredictError: see :func:`gather_clips` and :func:`load_model_or_export`; ``attention_dir`` with an export.
        emolab.eval.robustness.InputError: ``run`` is not a run folder or checkpoint.
    """
    import numpy as np
    import pandas as pd

    from emolab.data.audio import AudioReadError
    from emolab.data.ravdess import class_names
    from emolab.data.video import VideoReadError
    from emolab.eval.inference import ClipDataset, eval_config, infer

    clips = gather_clips(inputs, audio)
    name, model, cfg, is_onnx = load_model_or_export(run, device=device, int8=int8)
    if is_onnx and attention_dir is not None:
        raise PredictError("--attention needs a PyTorch run (run folder or checkpoint), not an ONNX export")
    modalities = cfg.model.spec.inputs
    names = list(class_names(cfg.num_classes))
    for c in clips:
        c.error = check_clip(c, modalities)
    good = [c for c in clips if c.error is None]
    # unused modalities point at the other file (never opened: the dataset reads only `modalities`)
    records = [_record(c.video or c.audio, c.audio if "audio" in modalities and c.audio else c.video) for c in good]
    kind = "wave" if cfg.model.use_wavlm else "mel"
    ds = ClipDataset(records, audio=kind, config=eval_config(cfg, memory_cache=True),
                     modalities=modalities, data_root=cfg.data_root, num_classes=cfg.num_classes,
                     n_mels=cfg.model.n_mels)
    min_samples = math.ceil(MIN_AUDIO_SECONDS * cfg.data.sample_rate)
    min_frames = min(MIN_VIDEO_FRAMES, cfg.data.num_frames)  # a 1-frame model samples one frame of any clip
    loadable = []
    for i, c in enumerate(good):  # decode once (memory cache), so that every problem is named here
        try:
            if "video" in modalities:
                valid = int(np.sum(ds.frames(i).valid))
                if valid < min_frames:
                    raise VideoReadError(f"{c.video}: too short: {valid} frame decodes, at least {min_frames} are needed")
            if "audio" in modalities:
                length = ds.audio_clip(i).length
                if length < min_samples:
                    raise AudioReadError(f"{c.audio}: too short: {length / cfg.data.sample_rate:.3f} s of audio, "
                                         f"at least {MIN_AUDIO_SECONDS:g} s are needed")
            loadable.append(i)
        except (VideoReadError, AudioReadError, OSError) as e:
            c.error = str(e)
    ds.pairs = [ds.pairs[i] for i in loadable]
    good = [good[i] for i in loadable]
    res = infer(model, ds, device="cpu" if is_onnx else device, batch_size=batch_size) if good else None
    rows = {}
    if res is not None:
        for j, i in enumerate(res.index.tolist()):
            rows[id(good[i])] = (res.probs[j], res.gate[j])
    table = []
    for c in clips:
        row: dict[str, Any] = {"clip": c.name, "video": str(c.video or "") if "video" in modalities else "",
                               "audio": str(c.audio or "") if "audio" in modalities else ""}
        if c.error is None and id(c) not in rows:  # loaded above, failed in the loader: logged by the dataset
            c.error = next((p.reason for p in ds.failures), "failed to load")
        probs, gate = rows.get(id(c), (np.full(len(names), np.nan), np.nan))
        row["pred"] = names[int(np.argmax(probs))] if c.error is None else ""
        row.update({f"prob_{n}": float(p) for n, p in zip(names, probs)})
        row["gate"] = float(gate)
        row["error"] = c.error or ""
        table.append(row)
    result = PredictResult(pd.DataFrame(table), names, name, cfg.model.fusion)
    if attention_dir is not None and good:
        result.attention = _save_attention(model, cfg, ds, good, Path(attention_dir))
    return result


def _save_attention(model: Any, cfg: Any, raw_ds: Any, clips: list[Clip], out: Path) -> list[Path]:
    """The attention figure (:func:`emolab.viz.attention_over_media`) of each clip, for log-Mel xattn models."""
    from emolab.eval.attention import collect_attention
    from emolab.utils.fileio import atomic_write
    from emolab.viz import attention_over_media

    if not cfg.model.fusion.startswith("xattn") or cfg.model.use_wavlm:
        print(f"note: --attention: only log-Mel xattn models have attention figures ({cfg.model.fusion} "
              f"{'with WavLM' if cfg.model.use_wavlm else ''} has none); nothing written", file=sys.stderr)
        return []
    written = []
    for i, c in enumerate(clips):
        (a,) = collect_attention(model, raw_ds, [i])
        fig = attention_over_media(a.display, a.mel, a.attn_v2a, a.video_times, a.audio_times, attn_a2v=a.attn_a2v,
                                   audio_mask=a.audio_mask, video_mask=a.video_mask,
                                   title=f"{Path(c.name).name}: predicted {a.pred}")
        stem = Path(c.name).stem.replace(" ", "_")
        path = out / f"attention-{i:03d}-{stem}.png"
        written.append(atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")))
    return written


def format_table(result: PredictResult) -> str:
    """The printed table: clip, prediction, every class probability, the gate when the model has one."""
    t = result.table
    cols = ["clip", "pred"] + [f"prob_{n}" for n in result.class_names] + (["gate"] if t["gate"].notna().any() else [])
    shown = t[t["error"] == ""][cols].rename(columns=lambda c: c.removeprefix("prob_"))
    shown["clip"] = shown["clip"].map(lambda s: s if len(s) <= 40 else "..." + s[-37:])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(shown) else "(no clip predicted)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``emolab predict``."""
    p.add_argument("run", metavar="RUN_OR_CKPT",
                   help="run folder of `emolab train` (best_*.pt + config.json), a checkpoint, "
                        "or an export folder of `emolab export` (run with onnxruntime)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files (with their own audio track), audio files, or folders of clips")
    p.add_argument("--audio", default=None, metavar="WAV", help="the audio of the (single) video INPUT")
    p.add_argument("--out", default="predictions.csv", help="CSV of per-clip predictions (default predictions.csv)")
    p.add_argument("--attention", default=None, metavar="DIR", help="save the attention figure of each clip (xattn)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--batch_size", type=int, default=16, help="inference batch size (default 16)")
    p.add_argument("--int8", action="store_true", help="with an export folder: its INT8 model (model.int8.onnx)")


def run_from_args(args: argparse.Namespace) -> int:
    """Predict, print the table and each failure, write the CSV. Exit code 1 when any clip failed."""
    import torch

    from emolab.eval.onnx_runtime import default_device
    from emolab.utils.fileio import atomic_write

    if args.device == "cuda" and not torch.cuda.is_available():
        raise PredictError("--device cuda: CUDA is not available")
    device = args.device or default_device(args.run)
    result = predict(args.run, args.inputs, audio=args.audio, device=device, batch_size=args.batch_size,
                     attention_dir=args.attention, int8=args.int8)
    print(f"run {result.run} ({result.fusion})")
    print(format_table(result))
    for r in result.failed.itertuples():
        print(f"failed: {r.error if r.error.startswith(str(r.clip)) else f'{r.clip}: {r.error}'}", file=sys.stderr)
    path = atomic_write(args.out, lambda tmp: result.table.to_csv(tmp, index=False))
    print(f"wrote {path}")
    for p in result.attention:
        print(f"wrote {p}")
    n_failed, n = len(result.failed), len(result.table)
    if n_failed:
        print(f"{n_failed} of {n} clip{'s' * (n != 1)} failed (listed above); the others are predicted", file=sys.stderr)
        return 1
    return 0
