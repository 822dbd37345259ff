"""emolab.train: ``EmotionTrainer``, its config, callbacks and the run entry points (SPEC §4).

From Python::

    from emolab.train import TrainConfig, run_training
    result = run_training(TrainConfig(data_root="data/demo"))
    result.test_metrics["macro_f1"], result.run_dir

From the shell: ``python -m emolab.train --help`` (also ``emolab train``, and
``torchrun --nproc_per_node N -m emolab.train`` for DDP).
"""

from emolab.train.callbacks import (
    Callback,
    Checkpointer,
    EarlyStopping,
    HistoryLogger,
    ProgressPrinter,
    WandbLogger,
    default_callbacks,
    format_epoch,
)
from emolab.train.checkpoint import capture_rng_state, load_warm_start, restore_rng_state, seed_everything
from emolab.train.config import OptimConfig, TrainConfig
from emolab.train.demo import demo_config, demo_run
from emolab.train.distributed import DistContext, init_distributed, resolve_device
from emolab.train.metrics import Predictions, classification_metrics, epoch_metrics
from emolab.train.optim import Stage, configure_stage, cosine_lr, make_loss, make_optimizer, make_scheduler, plan_stages
from emolab.train.run import (
    DataBundle,
    RunResult,
    SetupError,
    build_run_model,
    prepare_data,
    resume_training,
    run_training,
    shuffle_labels,
)
from emolab.train.checkpoint import RunPaths
from emolab.train.trainer import EmotionTrainer

__all__ = [
    "Callback",
    "Checkpointer",
    "DataBundle",
    "DistContext",
    "EarlyStopping",
    "EmotionTrainer",
    "HistoryLogger",
    "OptimConfig",
    "Predictions",
    "ProgressPrinter",
    "RunPaths",
    "RunResult",
    "SetupError",
    "Stage",
    "TrainConfig",
    "WandbLogger",
    "build_run_model",
    "capture_rng_state",
    "classification_metrics",
    "configure_stage",
    "cosine_lr",
    "default_callbacks",
    "demo_config",
    "demo_run",
    "epoch_metrics",
    "format_epoch",
    "init_distributed",
    "load_warm_start",
    "make_loss",
    "make_optimizer",
    "make_scheduler",
    "plan_stages",
    "prepare_data",
    "resolve_device",
    "restore_rng_state",
    "resume_training",
    "run_training",
    "seed_everything",
    "shuffle_labels",
]
