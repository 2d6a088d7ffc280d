"""Training with optax on any JAX backend: train state, sharded jitted steps, the loop, checkpoints.

Every public name is importable from here. The modules, each importing only those above it:

* ``errors``: ``TrainingError``, ``DivergenceError``.
* ``config``: ``TrainConfig`` (the whole run), ``RunSteps``, ``run_arch``, ``PRECISIONS``,
  ``RESUMABLE_CHANGES``; mixed precision.
* ``state``: ``TrainState`` (with the model EMA), ``init_variables``.
* ``steps``: ``train_step``, ``eval_step``, ``StepOptions``, ``make_mesh``, ``compile_steps``
  (``CompiledSteps``); data parallelism.
* ``workdir``: the work directory's files (``RUN_FILES``), when a run may use it, and
  ``config.json`` (``find_run_config``).
* ``metrics``: ``metrics.jsonl`` (``read_metrics``).
* ``checkpoints``: orbax checkpoints of the state, the epoch's sums and the data position.
* ``loop``: ``fit`` (``TrainResult``), ``evaluate``, ``evaluate_variables``,
  ``initialize_distributed``, ``set_learning_rate`` (timm's plateau scheduler); the data
  stream, divergence.
"""

from __future__ import annotations

from .config import PRECISIONS, RESUMABLE_CHANGES, RunSteps, TrainConfig, run_arch
from .errors import DivergenceError, TrainingError
from .loop import (
    EVAL_ACTIVATION_BOUND,
    TrainResult,
    default_eval_batch_size,
    evaluate,
    evaluate_variables,
    fit,
    initialize_distributed,
    set_learning_rate,
)
from .metrics import read_metrics
from .state import TrainState, init_variables
from .steps import (
    DATA_AXIS,
    CompiledSteps,
    StepOptions,
    compile_steps,
    eval_step,
    make_mesh,
    train_step,
)
from .workdir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CURVES_FILE,
    METRICS_FILE,
    RUN_FILES,
    find_run_config,
)

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "CURVES_FILE",
    "DATA_AXIS",
    "EVAL_ACTIVATION_BOUND",
    "METRICS_FILE",
    "PRECISIONS",
    "RESUMABLE_CHANGES",
    "RUN_FILES",
    "CompiledSteps",
    "DivergenceError",
    "RunSteps",
    "StepOptions",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingError",
    "compile_steps",
    "default_eval_batch_size",
    "eval_step",
    "evaluate",
    "evaluate_variables",
    "find_run_config",
    "fit",
    "init_variables",
    "initialize_distributed",
    "make_mesh",
    "read_metrics",
    "run_arch",
    "set_learning_rate",
    "train_step",
]
