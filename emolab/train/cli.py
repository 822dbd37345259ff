"""``python -m emolab.train`` / ``emolab train``: flags (the seed project's names) → ``TrainConfig`` → run.

Every flag of the seed's ``src/train.py`` keeps its name, meaning and default
(``tests/test_seed_flags.py``; the one exception is ``--split_mode``, ``actor``
here, said on every run that leaves it out), so its recommended commands run
with only the entry point changed::

    python -m emolab.train --data_root data --num_classes 8 --fusion gated --use_wavlm \\
        --use_cosine_annealing --weight_decay 1e-4 --early_stopping_patience 8

Multi-GPU: ``torchrun --nproc_per_node 4 -m emolab.train ...`` (DDP; batch size per GPU).
Resume: ``python -m emolab.train --resume outputs/runs/gated-seed42-20260210-101500``.
Invalid values are argparse errors (exit code 2) with the config's message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from emolab.data.datasets import DataConfig
from emolab.data.faces import FACE_DETECTORS
from emolab.data.splits import PROTOCOLS, SplitConfig, parse_actor_list
from emolab.models.registry import ModelConfig, available_models
from emolab.models.video import VIDEO_BACKBONES
from emolab.utils.fileio import error_line, take_debug_flag, tolerant_stdio
from emolab.train.config import OptimConfig, TrainConfig
from emolab.train.run import SetupError, resume_training, run_training

__all__ = ["build_parser", "config_from_args", "main"]

#: flag dest → TrainConfig field that ``--resume`` may change.
_RESUME_FLAGS = {
    "data_root": "data_root",
    "device": "device",
    "num_workers": "num_workers",
    "progress": "progress",
    "wandb": "wandb",
    "wandb_project": "wandb_project",
    "tensorboard": "tensorboard",
    "compile": "compile",
}


#: Said when --split_mode is not given: the one seed default emolab changes on purpose.
SPLIT_DEFAULT_NOTE = (
    "note: --split_mode defaults to 'actor' (speaker-independent: train 1-18, val 19-21, test 22-24); "
    "the seed project defaulted to 'stratified', which puts every actor in train and test "
    "(add --split_mode stratified to reproduce it)"
)


def _actors(text: str) -> tuple[int, ...]:
    try:
        ids = parse_actor_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not ids:
        raise argparse.ArgumentTypeError(f"empty actor list {text!r}")
    return ids


def build_parser(prog: str = "python -m emolab.train") -> argparse.ArgumentParser:
    """The training argument parser (defaults from the config dataclasses)."""
    d = TrainConfig()
    m, dc, s, o = d.model, d.data, d.split, d.optim
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train an emotion recognition model on RAVDESS (SPEC §4); flags follow the seed project.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data_root", default=d.data_root, help="RAVDESS root (any nesting of Actor_NN/ folders)")
    g.add_argument("--num_classes", type=int, choices=(8, 4), default=m.num_classes, help="8 emotions or 4 groups")
    g.add_argument("--vocal_channel", type=int, choices=(1, 2), default=d.vocal_channel, help="1 speech, 2 song")
    g.add_argument("--frames", type=int, default=dc.num_frames, help="video frames sampled per clip")
    g.add_argument("--frame_size", type=int, default=dc.frame_size, help="frame side in pixels")
    g.add_argument("--face_crop", choices=("all", "train", "none"), default=dc.face_crop,
                   help="crop faces in every split (all, the seed's behaviour), only in the augmented "
                        "training split (train), or never (none)")
    g.add_argument("--use_face_crop", dest="face_crop", action="store_const", const="all", default=argparse.SUPPRESS,
                   help="the seed's flag: same as --face_crop all")
    g.add_argument("--no_face_crop", dest="face_crop", action="store_const", const="none", default=argparse.SUPPRESS,
                   help="the seed's flag: same as --face_crop none")
    g.add_argument("--resize", choices=("area", "linear"), default=dc.resize,
                   help="frame interpolation: area (cv2.INTER_AREA) or linear (cv2.INTER_LINEAR, the seed's)")
    g.add_argument("--face_detector", choices=FACE_DETECTORS, default=dc.face_detector,
                   help="face crop detector: haar (OpenCV's cascade) or mtcnn (facenet-pytorch; README 'Tensors')")
    g.add_argument("--resampler", choices=("torchaudio", "soxr"), default=dc.resampler,
                   help="48 -> 16 kHz resampling: torchaudio, or soxr (the seed's, librosa's soxr_hq)")
    g.add_argument("--clip_seconds", type=float, default=dc.clip_seconds, help="audio length after pad/truncate")
    g.add_argument("--audio_n_mels", type=int, default=dc.n_mels, help="Mel bins of the log-Mel features")
    g.add_argument("--cache_dir", default=dc.cache_dir,
                   help="frame cache folder (default $EMOLAB_CACHE_DIR or ~/.cache/emolab; '' = memory only)")
    g.add_argument("--no_augment", dest="augment", action="store_false", help="no training augmentation")
    g.add_argument("--no_feature_cache", dest="feature_cache", action="store_false",
                   help="run a frozen WavLM backbone every step instead of caching its (eval-mode) outputs")
    g.add_argument("--feature_cache_variants", type=int, default=d.feature_cache_variants, metavar="K",
                   help="fixed noisy variants per training clip in the WavLM feature cache (0: clean only)")
    g.add_argument("--num_workers", type=int, default=d.num_workers, help="DataLoader workers, -1 automatic")
    g.add_argument("--shuffle_labels_seed", type=int, default=None,
                   help="sanity check: shuffle emotion labels across pairs with this seed (expect chance)")

    g = p.add_argument_group("split")
    g.add_argument("--split_mode", choices=("actor", "stratified", "kfold"), default=s.mode,
                   help="actor: speaker-independent (default); stratified: leaks speakers (the seed's "
                        "default, the one deliberate change of a seed default)")
    g.add_argument("--train_actors", type=_actors, default=None,
                   help="actor split, e.g. 1-18 (default: 1-18, scaled down on a corpus with fewer actors)")
    g.add_argument("--val_actors", type=_actors, default=None, help="e.g. 19,20,21 (default: 19-21)")
    g.add_argument("--test_actors", type=_actors, default=None, help="e.g. 22-24 (default: 22-24)")
    g.add_argument("--train_ratio", type=float, default=s.train_ratio, help="stratified split")
    g.add_argument("--val_ratio", type=float, default=s.val_ratio, help="stratified split (test = the rest)")
    g.add_argument("--protocol", choices=tuple(PROTOCOLS), default=s.protocol, help="kfold protocol")
    g.add_argument("--fold", type=int, default=s.fold, help="kfold fold index (0-based)")

    g = p.add_argument_group("model")
    g.add_argument("--fusion", choices=available_models(), default=m.fusion, help="model")
    g.add_argument("--use_resnet_audio", action="store_true", help="AudioResNet18 instead of AudioCNN")
    g.add_argument("--use_wavlm", action="store_true", help="WavLM on waveforms as the audio model")
    g.add_argument("--wavlm_name_or_path", default=m.wavlm_name_or_path, help="Hub name or local WavLM folder")
    g.add_argument("--no_pretrained_video", dest="pretrained_video", action="store_false",
                   help="random-init video backbone (default: ImageNet weights)")
    g.add_argument("--video_backbone", choices=VIDEO_BACKBONES, default=m.video_backbone,
                   help="torchvision per-frame video backbone (README 'Models'; vit_b_16 runs at 112x112)")
    g.add_argument("--xattn_head", choices=("concat", "gated"), default=m.xattn_head)
    g.add_argument("--xattn_d_model", type=int, default=m.xattn_d_model)
    g.add_argument("--xattn_heads", type=int, default=m.xattn_heads)
    g.add_argument("--xattn_attn_dropout", type=float, default=m.xattn_attn_dropout)
    g.add_argument("--xattn_stochastic_depth", type=float, default=m.xattn_stochastic_depth)
    _add_model_fidelity_flags(p, m)

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch_size", type=int, default=d.batch_size, help="per process")
    g.add_argument("--lr", type=float, default=o.lr, help="LR of the head / the whole model")
    g.add_argument("--weight_decay", type=float, default=o.weight_decay)
    g.add_argument("--label_smoothing", type=float, default=o.label_smoothing, help="not used by late fusion (NLL)")
    g.add_argument("--wavlm_stage", type=int, choices=(1, 2), default=o.wavlm_stage,
                   help="audio+WavLM: 1 head only, 2 also the last --wavlm_unfreeze_layers layers")
    g.add_argument("--backbone_lr", type=float, default=o.backbone_lr, help="WavLM backbone LR in stage 2")
    g.add_argument("--wavlm_unfreeze_layers", type=int, default=o.wavlm_unfreeze_layers,
                   help="layers unfrozen by --wavlm_stage 2")
    g.add_argument("--two_stage_training", action="store_true",
                   help="fusion: stage 1 trains the fusion head, stage 2 also unfrozen encoders")
    g.add_argument("--stage1_epochs", type=int, default=o.stage1_epochs)
    g.add_argument("--audio_backbone_lr", type=float, default=o.audio_backbone_lr, help="stage 2 audio LR")
    g.add_argument("--video_backbone_lr", type=float, default=o.video_backbone_lr, help="stage 2 video LR")
    g.add_argument("--fusion_unfreeze_wavlm_layers", type=int, default=o.fusion_unfreeze_wavlm_layers)
    g.add_argument("--fusion_unfreeze_video_blocks", type=int, default=o.fusion_unfreeze_video_blocks,
                   help="last N blocks of the video backbone (ResNets 0-5, efficientnet_b0 0-9, vit_b_16 0-13)")
    g.add_argument("--fusion_unfreeze_audio", dest="fusion_unfreeze_audio", action="store_true",
                   default=o.fusion_unfreeze_audio, help="stage 2: unfreeze the Mel audio model")
    g.add_argument("--no_fusion_unfreeze_audio", dest="fusion_unfreeze_audio", action="store_false",
                   help="stage 2: keep the Mel audio model frozen")
    g.add_argument("--use_cosine_annealing", action="store_true", help="cosine LR over each stage, eta_min 1e-5")
    g.add_argument("--cosine_stage2_only", action="store_true", help="two-stage: cosine in stage 2 only")
    g.add_argument("--no_frozen_bn_eval", dest="frozen_bn_eval", action="store_false", default=o.frozen_bn_eval,
                   help="frozen BatchNorm layers use batch statistics and update their running ones "
                        "(default: frozen ones run in eval mode)")
    g.add_argument("--early_stopping_patience", type=int, default=d.early_stopping_patience, help="0 disables")
    g.add_argument("--audio_ckpt", default=None, help="warm start for the audio model (e.g. outputs/best_audio.pt)")
    g.add_argument("--video_ckpt", default=None, help="warm start for the video model (e.g. outputs/best_video.pt)")
    g.add_argument("--seed", type=int, default=d.seed)

    g = p.add_argument_group("run")
    g.add_argument("--output_dir", default=d.output_dir, help="runs go to OUTPUT_DIR/runs/")
    g.add_argument("--run_name", default=None, help="run folder name (default {fusion}-seed{seed}-{time})")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--no_amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--wandb", action="store_true", help="log to Weights & Biases (if installed)")
    g.add_argument("--wandb_project", default=d.wandb_project)
    g.add_argument("--tensorboard", action="store_true", help="TensorBoard event files beside history.jsonl")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted run")
    return p


def _gate_bias(text: str) -> float | None:
    if text.strip().lower() in ("none", "default"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


#: ModelConfig fields of the seed's xattn/gate behaviour (issue #12), set by the flags of the same name.
MODEL_FIDELITY_FIELDS = (
    "xattn_attention", "mel_sequence", "xattn_fuse_order", "xattn_head_dropout", "gate_bias_init", "wavlm_embedding"
)


def _add_model_fidelity_flags(p: argparse.ArgumentParser, m: ModelConfig) -> None:
    """Flags selecting the seed's xattn/gate behaviour (``load_seed_checkpoint`` sets the seed's values)."""
    g = p.add_argument_group("model: the seed's xattn and gate (README 'Seed checkpoints')")
    g.add_argument("--xattn_attention", choices=("sequential", "parallel"), default=m.xattn_attention,
                   help="sequential: a2v attends to the video after its v2a update (the seed); parallel: both "
                        "attend to the inputs")
    g.add_argument("--mel_sequence", choices=("time", "clip"), default=m.mel_sequence,
                   help="xattn audio steps of a Mel model: one per time step, or clip (the seed: one step, "
                        "the clip embedding)")
    g.add_argument("--xattn_fuse_order", choices=("av", "va"), default=m.xattn_fuse_order,
                   help="xattn heads: av = [audio, video], gate weights audio; va = [video, audio], gate weights "
                        "video (the seed)")
    g.add_argument("--xattn_head_dropout", type=float, default=m.xattn_head_dropout,
                   help="dropout after the ReLU of the xattn heads (the seed's 0.2)")
    g.add_argument("--gate_bias_init", type=_gate_bias, default=m.gate_bias_init, metavar="B",
                   help="initial bias of the gate's last Linear, gated and xattn gated (the seed's -1; "
                        "'none': PyTorch's default init)")
    g.add_argument("--wavlm_embedding", choices=("hidden", "head"), default=m.wavlm_embedding,
                   help="WavLM clip embedding for concat/gated: mean hidden state, or head = the head's first "
                        "Linear of it (the seed)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Map parsed flags onto :class:`TrainConfig` (raises ``ValueError`` on inconsistent values)."""
    model = ModelConfig(
        fusion=args.fusion,
        num_classes=args.num_classes,
        use_wavlm=args.use_wavlm,
        use_resnet_audio=args.use_resnet_audio,
        n_mels=args.audio_n_mels,
        wavlm_name_or_path=args.wavlm_name_or_path,
        pretrained_video=args.pretrained_video,
        video_backbone=args.video_backbone,
        xattn_head=args.xattn_head,
        xattn_d_model=args.xattn_d_model,
        xattn_heads=args.xattn_heads,
        xattn_attn_dropout=args.xattn_attn_dropout,
        xattn_stochastic_depth=args.xattn_stochastic_depth,
        **{name: getattr(args, name) for name in MODEL_FIDELITY_FIELDS},
    )
    data = DataConfig(
        num_classes=args.num_classes,
        num_frames=args.frames,
        frame_size=args.frame_size,
        face_crop=args.face_crop,
        resize=args.resize,
        face_detector=args.face_detector,
        resampler=args.resampler,
        n_mels=args.audio_n_mels,
        clip_seconds=args.clip_seconds,
        cache_dir=args.cache_dir,
    )
    split = SplitConfig(
        mode=args.split_mode,
        train_actors=args.train_actors,
        val_actors=args.val_actors,
        test_actors=args.test_actors,
        train_ratio=args.train_ratio,
        val_ratio=args.val_ratio,
        protocol=args.protocol,
        fold=args.fold,
        seed=args.seed,
    )
    optim = OptimConfig(
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        wavlm_stage=args.wavlm_stage,
        backbone_lr=args.backbone_lr,
        wavlm_unfreeze_layers=args.wavlm_unfreeze_layers,
        two_stage_training=args.two_stage_training,
        stage1_epochs=args.stage1_epochs,
        audio_backbone_lr=args.audio_backbone_lr,
        video_backbone_lr=args.video_backbone_lr,
        fusion_unfreeze_wavlm_layers=args.fusion_unfreeze_wavlm_layers,
        fusion_unfreeze_video_blocks=args.fusion_unfreeze_video_blocks,
        fusion_unfreeze_audio=args.fusion_unfreeze_audio,
        use_cosine_annealing=args.use_cosine_annealing,
        cosine_stage2_only=args.cosine_stage2_only,
        frozen_bn_eval=args.frozen_bn_eval,
    )
    return TrainConfig(
        data_root=args.data_root,
        model=model,
        data=data,
        split=split,
        optim=optim,
        epochs=args.epochs,
        batch_size=args.batch_size,
        early_stopping_patience=args.early_stopping_patience,
        seed=args.seed,
        num_workers=args.num_workers,
        vocal_channel=args.vocal_channel,
        augment=args.augment,
        feature_cache=args.feature_cache,
        feature_cache_variants=args.feature_cache_variants,
        audio_ckpt=args.audio_ckpt,
        video_ckpt=args.video_ckpt,
        shuffle_labels_seed=args.shuffle_labels_seed,
        output_dir=args.output_dir,
        run_name=args.run_name,
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        wandb=args.wandb,
        wandb_project=args.wandb_project,
        tensorboard=args.tensorboard,
        progress=args.progress,
    )


def _explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Dests of the flags that appear in ``argv`` (``allow_abbrev=False`` makes this exact)."""
    given = {tok.split("=", 1)[0] for tok in argv if tok.startswith("--")}
    return {a.dest for a in parser._actions if given & set(a.option_strings)}


def main(argv: Sequence[str] | None = None, prog: str = "python -m emolab.train") -> int:
    """Parse flags, train (or resume), print the test metrics; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    tolerant_stdio()
    debug = take_debug_flag(argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.resume:
            explicit = _explicit_dests(parser, argv) - {"resume"}
            fixed = sorted(explicit - set(_RESUME_FLAGS))
            if fixed:
                parser.error(
                    "--resume continues a run with its saved config.json; these flags cannot change: "
                    + ", ".join(f"--{d}" for d in fixed)
                )
            overrides: dict[str, Any] = {_RESUME_FLAGS[k]: getattr(args, k) for k in explicit}
            resume_training(args.resume, overrides=overrides)
        else:
            try:
                cfg = config_from_args(args)
            except ValueError as err:
                parser.error(str(err))
            if "split_mode" not in _explicit_dests(parser, argv):
                print(SPLIT_DEFAULT_NOTE, file=sys.stderr)
            run_training(cfg)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # SetupError, a full disk, a bad file: one line (--debug: the traceback)
        return error_line(prog, err, debug)
    return 0
