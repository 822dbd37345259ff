"""Training configuration: one ``TrainConfig`` holding the model, data, split and optimisation configs.

``TrainConfig`` is what the CLI builds from its flags (``emolab.train.cli``),
what a notebook builds by hand, and what a run folder stores as
``config.json`` (and inside every checkpoint). ``to_dict``/``from_dict`` make
the round trip through JSON exact.

Every field of these configs (and of ``ModelConfig``, ``DataConfig``,
``SplitConfig``) is declared with :func:`emolab.utils.settings.setting`: its
help, flag, the seed's aliases and whether ``--resume`` may change it live on
the field, and the CLI, :data:`RESUMABLE_FIELDS` and :data:`NEUTRAL_FIELDS`
are read from there. A new field needs ``setting(default, help=...)``.

Example::

    from emolab.models import ModelConfig
    from emolab.train import OptimConfig, TrainConfig, run_training

    cfg = TrainConfig(
        data_root="data/demo",
        model=ModelConfig(fusion="gated", pretrained_video=False),
        optim=OptimConfig(lr=3e-4, use_cosine_annealing=True),
        epochs=10,
    )
    result = run_training(cfg)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PretrainedConfig

from emolab.data.datasets import LEGACY_DATA_DEFAULTS, DataConfig
from emolab.data.splits import SplitConfig
from emolab.models.fields import LEGACY_MODEL_DEFAULTS, LEGACY_MODEL_RENAMES
from emolab.models.registry import ModelConfig
from emolab.models.video import video_blocks
from emolab.utils.settings import Alias, neutral_fields, resumable_fields, setting

__all__ = ["LEGACY_COPIES", "NEUTRAL_FIELDS", "OptimConfig", "RESUMABLE_FIELDS", "TrainConfig", "upgrade_config_dict"]


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _int_at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass
class OptimConfig:
    """Losses, optimisers, stages and schedules (SPEC §4); field names are the CLI flags.

    Attributes:
        lr: Adam learning rate of the trained head (fusion head, WavLM head, or
            the whole model for unimodal Mel/video models and one-stage fusion).
        weight_decay: Adam ``weight_decay`` (L2), every group.
        label_smoothing: ``CrossEntropyLoss(label_smoothing=...)``; not used by
            ``late``, which trains with ``NLLLoss`` on log-probabilities.
        wavlm_stage: ``--fusion audio --use_wavlm`` only: 1 trains the head
            (backbone frozen), 2 unfreezes the last ``wavlm_unfreeze_layers``
            transformer layers at ``backbone_lr`` and the head at ``lr``.
        backbone_lr: WavLM backbone LR in ``wavlm_stage`` 2.
        wavlm_unfreeze_layers: layers unfrozen in ``wavlm_stage`` 2 (the seed
            project hard-coded 2).
        two_stage_training: fusion models only: stage 1 (``stage1_epochs``)
            freezes ``audio_model`` and ``video_model`` and trains the fusion
            head; stage 2 unfreezes per the ``fusion_unfreeze_*`` fields with
            layered LRs (head ``lr``, audio ``audio_backbone_lr``, video
            ``video_backbone_lr``).
        stage1_epochs: epochs of stage 1 (the rest of ``epochs`` is stage 2).
        audio_backbone_lr, video_backbone_lr: stage-2 LRs of the encoders.
        fusion_unfreeze_wavlm_layers: stage 2, WavLM audio: last N layers
            unfrozen (the WavLM head is always trainable).
        fusion_unfreeze_video_blocks: stage 2: last N blocks of the video
            backbone unfrozen (ResNets 0-5, efficientnet_b0 0-9, vit_b_16
            0-13; see ``VideoNet.unfreeze_last_blocks``).
        fusion_unfreeze_audio: stage 2, Mel audio models: unfreeze the whole
            audio model (``--no_fusion_unfreeze_audio`` keeps it frozen).
        use_cosine_annealing: cosine LR decay over each stage, ``T_max`` = the
            epochs of the current stage, down to ``eta_min`` (see
            :func:`emolab.train.optim.cosine_lr`).
        cosine_stage2_only: with two-stage training, constant LR in stage 1 and
            cosine in stage 2.
        eta_min: the cosine floor (1e-5 as in the seed).
        frozen_bn_eval: BatchNorm layers whose parameters are frozen (the
            encoders of stage 1, the frozen ResNet stages of stage 2) run in eval
            mode while the rest trains: they normalise with their running
            statistics and do not update them, so a frozen encoder gives the same
            features in training and evaluation. ``False``: they normalise with
            batch statistics and update the running ones (PyTorch's plain
            ``model.train()``).
    """

    lr: float = setting(1e-3, help="LR of the head / the whole model")  # the seed's defaults (SPEC §4)
    weight_decay: float = setting(1e-4, help="Adam weight decay (L2), every group")
    label_smoothing: float = setting(0.0, help="not used by late fusion (NLL)")
    wavlm_stage: int = setting(1, choices=(1, 2),
                               help="audio+WavLM: 1 head only, 2 also the last --wavlm_unfreeze_layers layers")
    backbone_lr: float = setting(3e-5, help="WavLM backbone LR in stage 2")
    wavlm_unfreeze_layers: int = setting(2, help="layers unfrozen by --wavlm_stage 2")
    two_stage_training: bool = setting(
        False, help="fusion: stage 1 trains the fusion head, stage 2 also unfrozen encoders")
    stage1_epochs: int = setting(5, help="epochs of stage 1 (the rest of --epochs is stage 2)")
    audio_backbone_lr: float = setting(1e-5, help="stage 2 audio LR")
    video_backbone_lr: float = setting(1e-5, help="stage 2 video LR")
    fusion_unfreeze_wavlm_layers: int = setting(2, help="stage 2, WavLM audio: last N layers unfrozen")
    fusion_unfreeze_video_blocks: int = setting(
        1, help="last N blocks of the video backbone (ResNets 0-5, efficientnet_b0 0-9, vit_b_16 0-13)")
    fusion_unfreeze_audio: bool = setting(
        True, flag="fusion_unfreeze_audio", help="stage 2: unfreeze the Mel audio model",
        aliases=[Alias("no_fusion_unfreeze_audio", False, "stage 2: keep the Mel audio model frozen")])
    use_cosine_annealing: bool = setting(False, help="cosine LR over each stage, down to --eta_min")
    cosine_stage2_only: bool = setting(False, help="two-stage: cosine in stage 2 only")
    eta_min: float = setting(1e-5, help="the cosine schedule's floor (the seed's 1e-5)")
    frozen_bn_eval: bool = setting(
        True, help="frozen BatchNorm layers use batch statistics and update their running ones "
                   "(default: frozen ones run in eval mode)")

    def __post_init__(self) -> None:
        for name in ("lr", "backbone_lr", "audio_backbone_lr", "video_backbone_lr"):
            _positive(name, getattr(self, name))
        if not isinstance(self.weight_decay, (int, float)) or not 0.0 <= self.weight_decay < 1.0:
            raise ValueError(f"weight_decay must be in [0, 1), got {self.weight_decay!r}")
        if not isinstance(self.label_smoothing, (int, float)) or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.wavlm_stage not in (1, 2):
            raise ValueError(f"wavlm_stage must be 1 (head only) or 2 (unfreeze last layers), got {self.wavlm_stage!r}")
        _int_at_least("wavlm_unfreeze_layers", self.wavlm_unfreeze_layers, 1)
        _int_at_least("stage1_epochs", self.stage1_epochs, 1)
        _int_at_least("fusion_unfreeze_wavlm_layers", self.fusion_unfreeze_wavlm_layers, 0)
        _int_at_least("fusion_unfreeze_video_blocks", self.fusion_unfreeze_video_blocks, 0)  # upper bound: TrainConfig
        if not isinstance(self.eta_min, (int, float)) or not 0.0 <= self.eta_min:
            raise ValueError(f"eta_min must be >= 0, got {self.eta_min!r}")
        if self.cosine_stage2_only and not (self.use_cosine_annealing and self.two_stage_training):
            raise ValueError("cosine_stage2_only needs use_cosine_annealing and two_stage_training")


def _jsonable(value: Any) -> Any:
    if isinstance(value, PretrainedConfig):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _shallow_dict(config: Any) -> dict[str, Any]:
    """Fields of a config dataclass as JSON-ready values (a transformers config becomes its dict)."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _default_model() -> ModelConfig:
    return ModelConfig(pretrained_video=True)  # ImageNet video weights by default, as in the seed


#: ``TrainConfig.data_path`` values: the device-resident warm path or DataLoader workers.
DATA_PATHS = ("resident", "loader")


@dataclass
class TrainConfig:
    """Everything one training run needs; saved as ``config.json`` in the run folder.

    Attributes:
        data_root: the RAVDESS root (any nesting of ``Actor_NN/`` folders).
        model: the model (``fusion`` name, encoders, xattn settings); the video
            backbone is ImageNet-pretrained by default (``--no_pretrained_video``).
        data: how pairs become tensors (classes, frames, frame size, face crop,
            Mel bins, frame cache).
        split: actor (default), stratified or k-fold split.
        optim: losses, optimiser groups, stages, schedules.
        epochs: total epochs (both stages together with two-stage training).
        batch_size: per process (per GPU with DDP).
        early_stopping_patience: stop a stage after this many epochs without a
            better validation macro-F1 (0 disables early stopping).
        seed: seeds model init, dropout and SpecAugment (``seed + rank``), the
            data order, the augmentations and the stratified split; part of the
            run folder's name.
        num_workers: DataLoader workers; -1 is automatic (SPEC §4).
        data_path: ``"resident"`` (default): once decoded, each split lives as
            uint8/int16 tensors on the training device (pinned host memory when
            it does not fit, :func:`~emolab.data.resident.resident_device`) and
            batches are drawn by index there, without workers; the same batches
            as ``"loader"`` (DataLoader workers reading the frame cache), and
            faster (``benchmarks/README.md``). WavLM models always use the
            loader path (their frozen stages are served by the feature cache).
        vocal_channel: 1 speech, 2 song.
        augment: training-split augmentations (video and audio noise).
        feature_cache: in stages where the WavLM backbone is entirely frozen,
            compute its outputs once (eval mode, float16, on disk under
            ``<cache_dir>/wavlm``) and train on them instead of running it every
            step (:mod:`emolab.train.feature_cache`). Not bit-identical to
            running it: the cached features have no backbone dropout/LayerDrop/
            time masking; ``--no_feature_cache`` turns it off.
        feature_cache_variants: fixed noisy variants per training clip kept by
            the feature cache so that noise augmentation survives (``0``: cached
            stages train on clean audio); at most 64.
        audio_ckpt, video_ckpt: warm-start checkpoints loaded into
            ``audio_model`` / ``video_model`` (or into the unimodal model)
            after it is built; ``{"model": state_dict}`` or a raw state dict.
        shuffle_labels_seed: sanity check against label leakage: before
            splitting, every pair gets the emotion of another pair (a seeded
            permutation), so labels no longer follow content and test accuracy
            must stay near chance. ``None`` (default) leaves labels alone.
        output_dir: runs go to ``output_dir/runs/<run_name>``; the best
            checkpoint is also copied to ``output_dir/best_{fusion}.pt``.
        run_name: folder name; ``None``: ``{fusion}-seed{seed}-{YYYYmmdd-HHMMSS}``.
        publish_best: copy the best checkpoint to ``output_dir/best_{fusion}.pt``
            (what the seed's warm-start commands read).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a
            grad scaler); always off on CPU.
        compile: wrap the model with ``torch.compile``.
        wandb: log to Weights & Biases when the package is installed.
        wandb_project: W&B project name.
        tensorboard: TensorBoard event files in the run folder (:mod:`emolab.train.tensorboard`).
        progress: tqdm progress bars.
        log_every: steps between progress-bar loss updates (the only host syncs
            inside an epoch).
    """

    data_root: str = setting("data", group="data", resumable=True,  # resumable: provenance checks the pairs
                             help="RAVDESS root (any nesting of Actor_NN/ folders)")
    model: ModelConfig = field(default_factory=_default_model)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = setting(20, group="optimisation", help="total epochs (both stages together)")
    batch_size: int = setting(16, group="optimisation", help="per process")
    early_stopping_patience: int = setting(10, group="optimisation", help="0 disables")
    seed: int = setting(42, group="optimisation", help="model init, dropout, data order, augmentation, split")
    num_workers: int = setting(-1, group="data", resumable=True, help="DataLoader workers, -1 automatic")
    data_path: str = setting(
        "resident", group="data", resumable=True, choices=DATA_PATHS,
        help="resident: decoded splits as tensors on the training device, batches by index, no workers "
             "(emolab.data.resident); loader: DataLoader workers read the frame cache every step")
    vocal_channel: int = setting(1, group="data", choices=(1, 2), help="1 speech, 2 song")
    augment: bool = setting(True, group="data", help="no training augmentation")
    feature_cache: bool = setting(
        True, group="data", help="run a frozen WavLM backbone every step instead of caching its (eval-mode) outputs")
    feature_cache_variants: int = setting(
        0, group="data", metavar="K",
        help="fixed noisy variants per training clip in the WavLM feature cache (0: clean only)")
    audio_ckpt: str | None = setting(
        None, group="optimisation", help="warm start for the audio model (e.g. outputs/best_audio.pt)")
    video_ckpt: str | None = setting(
        None, group="optimisation", help="warm start for the video model (e.g. outputs/best_video.pt)")
    shuffle_labels_seed: int | None = setting(
        None, group="data", help="sanity check: shuffle emotion labels across pairs with this seed (expect chance)")
    output_dir: str = setting("outputs", neutral=True, help="runs go to OUTPUT_DIR/runs/")
    run_name: str | None = setting(None, neutral=True, help="run folder name (default {fusion}-seed{seed}-{time})")
    publish_best: bool = setting(True, neutral=True,
                                 help="do not copy the best checkpoint to OUTPUT_DIR/best_{fusion}.pt")
    device: str = setting("auto", resumable=True, help="auto, cpu, cuda, cuda:1 ...")
    amp: bool = setting(True, help="no mixed precision on CUDA")
    compile: bool = setting(False, resumable=True, help="torch.compile the model")
    wandb: bool = setting(False, resumable=True, help="log to Weights & Biases (if installed)")
    wandb_project: str = setting("emolab", resumable=True, help="Weights & Biases project")
    tensorboard: bool = setting(False, resumable=True, help="TensorBoard event files beside history.jsonl")
    progress: bool = setting(True, resumable=True, help="no progress bars")
    log_every: int = setting(10, resumable=True, help="steps between progress-bar loss updates")

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelConfig), ("data", DataConfig), ("split", SplitConfig), ("optim", OptimConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"TrainConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        _int_at_least("epochs", self.epochs, 1)
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("early_stopping_patience", self.early_stopping_patience, 0)
        _int_at_least("log_every", self.log_every, 1)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.data_path not in DATA_PATHS:
            raise ValueError(f"data_path must be one of {', '.join(DATA_PATHS)}, got {self.data_path!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < -1:
            raise ValueError(f"num_workers must be >= 0, or -1 for automatic, got {self.num_workers!r}")
        if not isinstance(self.feature_cache, bool):
            raise ValueError(f"feature_cache must be True or False, got {self.feature_cache!r}")
        _int_at_least("feature_cache_variants", self.feature_cache_variants, 0)
        if self.feature_cache_variants > 64:
            raise ValueError(f"feature_cache_variants must be at most 64, got {self.feature_cache_variants}")
        if self.vocal_channel not in (1, 2):
            raise ValueError(f"vocal_channel must be 1 (speech) or 2 (song), got {self.vocal_channel!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or e.g. 'cuda:1', got {self.device!r}") from None
        if self.run_name is not None and (not self.run_name or "/" in self.run_name or self.run_name in (".", "..")):
            raise ValueError(f"run_name must be a plain folder name, got {self.run_name!r}")
        self._check_optimisation_path()

    def _check_optimisation_path(self) -> None:
        fusion, o = self.canonical_fusion, self.optim
        if o.wavlm_stage == 2 and not (fusion == "audio" and self.model.use_wavlm):
            raise ValueError(
                "wavlm_stage 2 applies to --fusion audio --use_wavlm; fusion models unfreeze WavLM layers "
                "with --two_stage_training --fusion_unfreeze_wavlm_layers N"
            )
        if o.two_stage_training:
            if not self.model.spec.fusion_head:  # the registry's metadata (late adds no parameters)
                raise ValueError(
                    f"two_stage_training needs a fusion model with a fusion head (concat, gated, xattn), "
                    f"got fusion {self.model.fusion!r}"
                    + (" (late fusion has no trainable fusion parameters)" if fusion == "late" else "")
                )
            if o.stage1_epochs >= self.epochs:
                raise ValueError(
                    f"stage1_epochs ({o.stage1_epochs}) must be smaller than epochs ({self.epochs}) "
                    "so that stage 2 gets at least one epoch"
                )
        n_blocks = len(video_blocks(self.model.video_backbone))
        if o.fusion_unfreeze_video_blocks > n_blocks:
            raise ValueError(
                f"fusion_unfreeze_video_blocks must be 0-{n_blocks} for video_backbone "
                f"{self.model.video_backbone!r} (blocks from the end, {n_blocks} = everything), "
                f"got {o.fusion_unfreeze_video_blocks!r}"
            )
        if self.video_ckpt and "video" not in self.model.spec.inputs:
            raise ValueError("video_ckpt needs a model with a video branch (--fusion video or a fusion model)")
        if self.audio_ckpt and "audio" not in self.model.spec.inputs:
            raise ValueError("audio_ckpt needs a model with an audio branch (--fusion audio or a fusion model)")

    # ------------------------------------------------------------------ helpers
    @property
    def canonical_fusion(self) -> str:
        """The registered model name ``model.fusion`` resolves to (``xattn_gated`` → ``xattn``)."""
        return self.model.canonical_fusion

    @property
    def num_classes(self) -> int:
        """The label set, ``model.num_classes`` (its one place: the datasets are given it)."""
        return self.model.num_classes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested per sub-config)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = _shallow_dict(value) if dataclasses.is_dataclass(value) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``.

        A dict of the old layout, which held some settings twice (:data:`LEGACY_COPIES`),
        loads too (:func:`upgrade_config_dict`).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {sorted(unknown)}")
        kwargs = upgrade_config_dict(d)
        for name, sub in (("model", ModelConfig), ("data", DataConfig), ("split", SplitConfig), ("optim", OptimConfig)):
            if name in kwargs and isinstance(kwargs[name], dict):
                if sub is ModelConfig:  # fields saved under an earlier name
                    kwargs[name] = {LEGACY_MODEL_RENAMES.get(k, k): v for k, v in kwargs[name].items()}
                sub_known = {f.name for f in dataclasses.fields(sub)}
                bad = set(kwargs[name]) - sub_known
                if bad:
                    raise ValueError(f"TrainConfig.{name}: unknown keys {sorted(bad)}")
                if sub is ModelConfig:  # a config saved before a field existed keeps the behaviour it had
                    kwargs[name] = {**LEGACY_MODEL_DEFAULTS, **kwargs[name]}
                if sub is DataConfig:  # likewise: saved before MTCNN became the default, it cropped with Haar
                    kwargs[name] = {**LEGACY_DATA_DEFAULTS, **kwargs[name]}
                kwargs[name] = sub(**kwargs[name])
        return cls(**kwargs)


#: The second copies that ``config.json`` held before each setting was stored once, and the field that kept each.
LEGACY_COPIES: dict[str, str] = {"data.num_classes": "model.num_classes", "data.n_mels": "model.n_mels",
                                 "split.seed": "seed"}


def upgrade_config_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """A ``TrainConfig`` dict (``config.json``, a checkpoint's ``"config"``, a provenance record) in today's layout.

    Run folders written before each setting was stored once hold the fields of
    :data:`LEGACY_COPIES` twice: the second copy is dropped once it is checked
    against the kept one (``split.seed`` is only compared for a stratified split,
    the one split it seeded). A dict already in today's layout is returned as a copy.

    Raises:
        ValueError: the two copies differ (the run cannot be described by one value).
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in d.items()}
    for old, new in LEGACY_COPIES.items():
        section_name, _, name = old.partition(".")
        section = out.get(section_name)
        if not isinstance(section, dict) or name not in section:
            continue
        value = section.pop(name)
        head, _, rest = new.rpartition(".")
        holder = out.setdefault(head, {}) if head else out
        if not isinstance(holder, dict):
            continue
        if rest not in holder:
            holder[rest] = value
        elif holder[rest] != value and not (old == "split.seed" and section.get("mode", "actor") != "stratified"):
            raise ValueError(f"{old} ({value!r}) and {new} ({holder[rest]!r}) differ; a config of the old layout "
                             f"loads only where they agree ({new} now holds the one value)")
    return out


#: What ``--resume`` may change (from the fields' metadata): paths, device, workers, logging, none of the results.
RESUMABLE_FIELDS: tuple[str, ...] = resumable_fields(TrainConfig())
#: Dotted fields that change no result (the resumable ones among them): a sweep may differ in them between reruns.
NEUTRAL_FIELDS: tuple[str, ...] = neutral_fields(TrainConfig())
