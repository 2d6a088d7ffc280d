"""Training with optax on any JAX backend: train state, sharded jitted steps, the loop, checkpoints.

* **State.** ``TrainState.create(apply_fn, variables, tx)`` holds params, BatchNorm
  statistics, optimizer state and the step.
* **Steps.** ``compile_steps(mesh)`` jits ``train_step`` / ``eval_step`` once per mesh with the
  state donated, so parameters are updated in place (use only the state a step returns). The
  label smoothing is an argument of the train step, not a constant compiled into it. The train
  step returns the batch's mean ``loss`` and the sums ``loss_sum``, ``correct``, ``count``;
  ``fit`` keeps them on the device and fetches them every ``log_every`` steps and before each
  checkpoint, never inside the step loop otherwise.
* **Data parallelism.** ``make_mesh`` puts every device of every process on one ``"data"``
  axis; batches are sharded along it and the state is replicated. Under ``jit`` XLA then
  computes BatchNorm's mean and variance over the *global* batch (it inserts the
  cross-device reductions), which is what PyTorch's ``SyncBatchNorm`` does: the trajectory
  does not depend on the number of devices. Multi-host: call ``initialize_distributed()``
  first on every host (see the README for a TPU pod slice); each process then reads its own
  share of the records and feeds its part of every global batch (``seres_jax.data.pipeline``).
* **Data.** ``fit`` reads ``Splits`` through grain: an endless stream of batches, an epoch
  being ``len(train) // batch_size`` steps. Each checkpoint holds the grain iterator's
  position, so a resumed run sees the samples and augmentation draws an uninterrupted one
  sees. ``StepOptions`` carry the label smoothing and timm's mixup/cutmix (drawn on the
  device in the step, from the seed and the step).
* **Mixed precision.** ``TrainConfig.precision="bf16"`` runs the model in bfloat16 with
  float32 parameters, statistics and optimizer state; the loss is computed in float32.
* **Configuration.** ``TrainConfig`` is the whole run: model, dataset, recipe, precision,
  seed, logging and checkpointing. ``seres_jax.optim.build`` turns its recipe into the
  optimizer and schedule, ``seres_jax.data.DATASETS`` gives the dataset-derived defaults
  (``run_arch``: input channels and classes; augmentation), and ``TrainConfig.steps`` is the
  one place the run's length in steps is computed.
* **Work directory.** ``config.json`` (the run described: the ``TrainConfig``, the resolved
  architecture, the versions of seres, jax, flax and optax, the device count, the overrides
  of resumes; written before the first step), ``checkpoints/`` and ``metrics.jsonl`` (one
  line per epoch, rewritten atomically), and the command line's ``curves.png``
  (``RUN_FILES``). A directory holding them is a previous run: ``fit`` refuses it unless
  told to resume it or to overwrite it, which deletes those files, and nothing else, first.
  A resume whose config differs from ``config.json`` outside ``RESUMABLE_CHANGES`` is
  refused, every difference listed, unless ``override=True`` (recorded in the file).
* **Checkpoints.** orbax, every ``checkpoint_every`` steps and at the end, the last ``keep``
  kept; orbax writes to a temporary directory and renames it, so a checkpoint is either
  complete or absent. Each holds the state and the running epoch's metric sums. A resumed
  run restores the newest readable checkpoint (an unreadable newer one is reported and
  removed; one of another model is refused, naming the shapes that differ), drops the
  metrics lines written after it and replays the data order from the same (seed, epoch): it
  continues the very same trajectory, and each epoch's line covers the whole epoch.
* **Divergence.** A non-finite loss (seen in the fetched metrics), or non-finite weights
  before a checkpoint or an evaluation, stops the run with ``DivergenceError`` naming the
  first such step: nothing non-finite is saved or logged, so the finite checkpoints stay.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import compiler, optim
from .atomic import STAGING_MARK
from .data import Dataset, Splits, eval_dataset, stream_seed, to_devices, train_dataset
from .data.catalog import DATASETS, DataOptions, splits_from_arrays
from .data.images import INTERPOLATIONS
from .formats import atomic_path
from .losses import cross_entropy
from .mixup import MixupConfig, draw_mix, mix_images
from .optim import OPTIMIZER_NAMES, SCHEDULE_NAMES

PRECISIONS = {"fp32": None, "bf16": jnp.bfloat16}
DATA_AXIS = "data"
CHECKPOINT_DIR, METRICS_FILE, CURVES_FILE = "checkpoints", "metrics.jsonl", "curves.png"
CONFIG_FILE = "config.json"
# What a run writes in its workdir.
RUN_FILES = (CHECKPOINT_DIR, METRICS_FILE, CURVES_FILE, CONFIG_FILE)
# The fields a resumed run may change without `override`: how long it runs, how often it logs
# and saves, where the data lives and how many processes read it. Everything else (epochs too:
# they shape the schedule) is the recipe.
RESUMABLE_CHANGES = frozenset(
    {"max_steps", "log_every", "checkpoint_every", "keep", "data_dir", "workers"}
)

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "CURVES_FILE",
    "METRICS_FILE",
    "PRECISIONS",
    "RESUMABLE_CHANGES",
    "RUN_FILES",
    "CompiledSteps",
    "DivergenceError",
    "RunSteps",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingError",
    "compile_steps",
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
    "train_step",
]


class TrainingError(ValueError):
    """A training configuration that cannot run (reported before anything is written)."""


class DivergenceError(TrainingError):
    """The loss or the weights became non-finite at ``step``; the run stopped there."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; ``apply_fn`` and ``tx`` are static.

    A pytree: ``jax.device_put(state, steps.replicated)`` places it for ``compile_steps``'
    functions, and orbax saves and restores it.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Callable[..., Any] = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(
        cls, apply_fn: Callable[..., Any], variables: Any, tx: optax.GradientTransformation
    ) -> TrainState:
        """Step 0 of training ``variables`` (``params``, and ``batch_stats`` if the model has
        BatchNorm) with ``tx`` (e.g. ``TrainConfig.make_tx``); ``apply_fn`` is the model's
        ``apply``."""
        params = variables["params"]
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            apply_fn=apply_fn,
            tx=tx,
        )

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


# --------------------------------------------------------------------------- steps


def _metrics(logits: jax.Array, labels: jax.Array, weights: jax.Array, loss: jax.Array) -> dict:
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {
        "loss_sum": loss,
        "correct": jnp.sum(correct * weights),
        "count": jnp.sum(weights),
    }


def _smoothed_cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: jax.typing.ArrayLike
) -> jax.Array:
    # `cross_entropy` checks its smoothing on the host, so it cannot take a traced one; it is
    # affine in the smoothing, so mixing its two ends gives the same loss for any traced value
    # (and, at 0, exactly the unsmoothed loss and gradient).
    plain = cross_entropy(logits, labels)
    smoothing = jnp.asarray(label_smoothing)
    return (1 - smoothing) * plain + smoothing * cross_entropy(logits, labels, 1.0)


@flax.struct.dataclass
class StepOptions:
    """The train step's recipe knobs, passed as traced scalars: changing them does not
    recompile. ``mixup`` / ``cutmix`` are the Beta alphas of timm's ``Mixup`` (0 turns each off),
    applied with probability ``mix_prob``, cutmix chosen with ``switch_prob`` when both are on;
    the draws come from ``seed`` and the step, so a resumed run draws the same."""

    label_smoothing: jax.typing.ArrayLike = 0.0
    mixup: jax.typing.ArrayLike = 0.0
    cutmix: jax.typing.ArrayLike = 0.0
    mix_prob: jax.typing.ArrayLike = 1.0
    switch_prob: jax.typing.ArrayLike = 0.5
    seed: jax.typing.ArrayLike = 0

    @classmethod
    def from_config(cls, config: TrainConfig) -> StepOptions:
        """The options of ``config``'s recipe, as float32/uint32 scalars."""
        return cls(
            label_smoothing=np.float32(config.label_smoothing),
            mixup=np.float32(config.mixup),
            cutmix=np.float32(config.cutmix),
            mix_prob=np.float32(config.mix_prob),
            switch_prob=np.float32(0.5),
            seed=np.uint32(stream_seed(config.seed)),
        )


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    options: StepOptions | jax.typing.ArrayLike = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch; BatchNorm in train mode (batch statistics).

    ``options`` is a ``StepOptions`` (label smoothing, mixup/cutmix), or just the label
    smoothing. Returns the new state and the batch's metrics: ``loss``, the mean
    cross-entropy the step minimised; ``loss_sum``, that mean times the batch size;
    ``correct`` (against the unmixed labels) and ``count``.
    """
    if not isinstance(options, StepOptions):
        options = StepOptions(label_smoothing=options)
    # The step's randomness (mixup's draws, dropout's masks) from the seed and the step alone.
    key = jax.random.fold_in(jax.random.key(jnp.asarray(options.seed, jnp.uint32)), state.step)
    mix_key, dropout_key = jax.random.split(key)
    lam = jnp.ones((), jnp.float32)
    if images.shape[0] % 2 == 0:  # timm mixes even batches only (`TrainConfig` checks)
        mixing = MixupConfig(options.mixup, options.cutmix, options.mix_prob, options.switch_prob)
        draw = draw_mix(mix_key, images.shape[1], images.shape[2], mixing)
        images, lam = mix_images(images, draw), draw.lam

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        # timm's mixed soft target, lam * y + (1 - lam) * flip(y) (each smoothed), through the
        # cross-entropy's linearity in the target: at lam = 1 exactly the unmixed loss.
        smoothing = options.label_smoothing
        loss = lam * _smoothed_cross_entropy(logits, labels, smoothing) + (
            1 - lam
        ) * _smoothed_cross_entropy(logits, labels[::-1], smoothing)
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
    weights = jnp.ones(labels.shape, jnp.float32)
    return new_state, {"loss": loss, **_metrics(logits, labels, weights, loss * labels.shape[0])}


def eval_step(
    state: TrainState, images: jax.Array, labels: jax.Array, weights: jax.Array
) -> dict[str, jax.Array]:
    """Sums of loss, correct top-1 and top-5 predictions over the examples with weight 1
    (padding has 0)."""
    logits = state.apply_fn(state.variables, images, train=False)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    _, top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))
    correct5 = jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * weights)
    return {**_metrics(logits, labels, weights, jnp.sum(nll * weights)), "correct5": correct5}


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


@dataclass(frozen=True)
class CompiledSteps:
    """The steps jitted for one mesh, and the shardings they expect.

    * ``train(state, images, labels, options) -> (state, metrics)``: ``train_step``
      (``options``: a ``StepOptions``, or the label smoothing alone).
      The state is donated: its buffers hold the result, so use only the state it returns.
    * ``eval(state, images, labels, weights) -> metrics``: ``eval_step``.

    The state goes in ``replicated`` (``jax.device_put(state, steps.replicated)``); images,
    labels and weights of a global batch in ``batch`` (sharded on ``"data"``: e.g.
    ``seres_jax.data.to_devices(dataset, steps.batch)``, each process giving its share);
    ``options`` are scalars (a Python float will do for the label smoothing).
    """

    train: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    eval: Callable[..., dict[str, jax.Array]]
    replicated: NamedSharding
    batch: NamedSharding


@functools.cache
def compile_steps(mesh: Mesh) -> CompiledSteps:
    """Jit the steps for ``mesh`` (once: the result is cached per mesh), compiled with
    ``seres_jax.compiler``'s options for the mesh's platform."""
    replicated = NamedSharding(mesh, PartitionSpec())
    batch = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    platform = mesh.devices.flat[0].platform
    train = compiler.jit(
        train_step,
        platform=platform,
        in_shardings=(replicated, batch, batch, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    evaluate = compiler.jit(
        eval_step,
        platform=platform,
        in_shardings=(replicated, batch, batch, batch),
        out_shardings=replicated,
    )
    return CompiledSteps(train, evaluate, replicated, batch)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RunSteps:
    """How long a run is, in optimizer steps: ``per_epoch``, ``total`` (the schedule's span,
    all epochs) and ``last`` (where it stops: ``total`` or ``max_steps``)."""

    per_epoch: int
    total: int
    last: int


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: the model, the data, the recipe, the precision and the seed, and
    how the run logs and saves. Defaults follow the usual SGD ResNet recipe on small images.

    ``model`` is a ``seres_jax.registry`` architecture string; its input channels and classes
    default to the dataset's (``run_arch``). ``None``: ``fit`` was handed a model without a
    name, and a checkpoint of the run converts only with an explicit architecture.
    ``dataset`` names a ``seres_jax.data.DATASETS`` entry (or the ``Dataset`` given to ``fit``);
    ``augment=None`` follows the dataset's default.
    """

    model: str | None = None
    dataset: str | None = None  # None: the name of the Dataset handed to ``fit``
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_all: bool = False  # True: decay biases and BatchNorm parameters too (torch default)
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    mixup: float = 0.0  # timm's Mixup alphas; 0: off
    cutmix: float = 0.0
    mix_prob: float = 1.0
    augment: bool | None = None
    color_jitter: float = 0.0
    # Image datasets' preprocessing; None: the model's pretrained data config (timm's).
    image_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    skip_bad_images: bool = False
    workers: int = 0  # grain worker processes (0: threads of the training process)
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 0  # steps; 0: only at the end
    keep: int = 3
    max_steps: int | None = None  # stop early (the schedule still spans all epochs)

    def validate(self, num_devices: int) -> None:
        """Raise ``TrainingError`` naming every bad field at once; ``num_devices`` must divide
        the batch size."""

        def finite_at_least_0(value: float) -> bool:
            return math.isfinite(value) and value >= 0

        checks = [
            (self.optimizer in OPTIMIZER_NAMES,
             f"optimizer must be one of {', '.join(OPTIMIZER_NAMES)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULE_NAMES,
             f"schedule must be one of {', '.join(SCHEDULE_NAMES)}, got {self.schedule!r}"),
            (self.precision in PRECISIONS,
             f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (math.isfinite(self.lr) and self.lr > 0,
             f"lr must be a finite number > 0, got {self.lr}"),
            (finite_at_least_0(self.momentum),
             f"momentum must be a finite number >= 0, got {self.momentum}"),
            (finite_at_least_0(self.weight_decay),
             f"weight_decay must be a finite number >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (finite_at_least_0(self.mixup),
             f"mixup must be a finite number >= 0, got {self.mixup}"),
            (finite_at_least_0(self.cutmix),
             f"cutmix must be a finite number >= 0, got {self.cutmix}"),
            (0 <= self.mix_prob <= 1, f"mix_prob must be in [0, 1], got {self.mix_prob}"),
            (self.batch_size % 2 == 0 or not (self.mixup or self.cutmix),
             f"mixup and cutmix need an even batch size, got {self.batch_size}"),
            (finite_at_least_0(self.color_jitter),
             f"color_jitter must be a finite number >= 0, got {self.color_jitter}"),
            (self.image_size is None or self.image_size >= 1,
             f"image_size must be >= 1, got {self.image_size}"),
            (self.crop_pct is None or 0 < self.crop_pct <= 1,
             f"crop_pct must be in (0, 1], got {self.crop_pct}"),
            (self.interpolation is None or self.interpolation in INTERPOLATIONS,
             f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
             f"got {self.interpolation!r}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (finite_at_least_0(self.warmup_epochs),
             f"warmup_epochs must be a finite number >= 0, got {self.warmup_epochs}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.checkpoint_every >= 0,
             f"checkpoint_every must be >= 0, got {self.checkpoint_every}"),
            (self.keep >= 1, f"keep must be >= 1, got {self.keep}"),
            (0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}"),
            (self.max_steps is None or self.max_steps >= 1,
             f"max_steps must be >= 1, got {self.max_steps}"),
            (self.batch_size < 1 or self.batch_size % num_devices == 0,
             f"batch size {self.batch_size} is not divisible by the {num_devices} devices"),
        ]  # fmt: skip
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise TrainingError("; ".join(problems))

    @property
    def augments(self) -> bool:
        """Whether the run augments: ``augment``, or else its dataset's default."""
        if self.augment is not None:
            return self.augment
        spec = DATASETS.get(self.dataset or "")
        return spec is not None and spec.augment

    def data_options(self) -> DataOptions:
        """What the run asks of its dataset: augmentation, and for image datasets the model's
        pretrained data config (``seres_jax.registry.data_config``) with the run's
        ``image_size``, ``crop_pct`` and ``interpolation`` in its place."""
        from .registry import data_config

        return DataOptions(
            augment=self.augments,
            data_config=data_config(self.model).for_eval(
                self.image_size, self.crop_pct, self.interpolation
            ),
            color_jitter=self.color_jitter,
            skip_bad_images=self.skip_bad_images,
            synthetic_size=self.image_size,
        )

    def steps(self, num_train: int) -> RunSteps:
        """The run's length in steps over ``num_train`` training images (the one place it is
        computed: ``fit`` and the command line's progress bar both use it)."""
        per_epoch = num_train // max(self.batch_size, 1)
        total = self.epochs * per_epoch
        return RunSteps(per_epoch, total, min(total, self.max_steps or total))

    def make_schedule(self, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
        """The learning-rate schedule over ``total_steps`` (``seres_jax.optim`` builds it)."""
        return optim.recipe_schedule(self, total_steps, steps_per_epoch)

    def make_tx(self, schedule: optax.Schedule, total_steps: int) -> optax.GradientTransformation:
        """The optimizer driven by ``schedule`` (``seres_jax.optim`` builds it; with the
        one-cycle schedule its momentum or β1 cycles too, as in torch's ``OneCycleLR``)."""
        return optim.recipe_optimizer(self, schedule, total_steps)


def run_arch(config: TrainConfig, channels: int, num_classes: int) -> str:
    """``config.model`` with the input ``channels`` and ``num_classes`` of the data filled in,
    e.g. ``"seresnet_tiny:in_ch=1,num_classes=10"``: the architecture the run trains. A model
    that names other channels, or another number of classes than the data has, is a
    ``TrainingError``."""
    from .registry import MODELS, format_arch, parse_arch

    if config.model is None:
        raise TrainingError("the run names no model (TrainConfig.model is None)")
    name, overrides = parse_arch(config.model)
    channels_arg = MODELS[name].in_channels_arg
    if overrides.get(channels_arg, channels) != channels:
        raise TrainingError(f"--model has {channels_arg}={overrides[channels_arg]}, but "
                            f"{config.dataset} images have {channels} channels")  # fmt: skip
    if overrides.get("num_classes", num_classes) != num_classes:
        raise TrainingError(f"--model has num_classes={overrides['num_classes']}, but "
                            f"{config.dataset} has {num_classes} classes")  # fmt: skip
    full = {channels_arg: channels, "num_classes": num_classes, **overrides}
    return format_arch(name, full)


@dataclass
class TrainResult:
    """The final state (on the devices), the per-epoch history and wall times."""

    state: TrainState
    history: list[dict[str, Any]]
    train_seconds: float


# --------------------------------------------------------------------------- loop


def initialize_distributed() -> bool:
    """``jax.distributed.initialize()`` when a multi-process launch is detected.

    Detected from the variables the usual launchers set: ``JAX_COORDINATOR_ADDRESS`` with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (a plain launch: JAX itself reads only the
    address, so all three are passed explicitly), Slurm, or a multi-host Cloud TPU
    (``TPU_WORKER_HOSTNAMES`` naming more than one host), where JAX finds the rest itself.
    Returns whether it initialised; a launch it cannot make sense of is a ``TrainingError``.
    """
    env = os.environ
    multi_tpu = len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
    cluster = "SLURM_JOB_ID" in env or multi_tpu
    if "JAX_COORDINATOR_ADDRESS" not in env and not cluster:
        return False
    kwargs: dict[str, Any] = {}
    given = {k: env[k] for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k in env}
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
        if len(given) < 2 and not cluster:
            raise TrainingError(
                "JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                "must be set too (JAX finds them itself only under Slurm or on a Cloud TPU)"
            )
    if len(given) == 2:
        try:
            count, index = int(given["JAX_NUM_PROCESSES"]), int(given["JAX_PROCESS_ID"])
        except ValueError:
            raise TrainingError(
                f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got {given}"
            ) from None
        if not 0 <= index < count:
            raise TrainingError(
                f"need 0 <= JAX_PROCESS_ID < JAX_NUM_PROCESSES, got {index} and {count}"
            )
        kwargs.update(num_processes=count, process_id=index)
    jax.distributed.initialize(**kwargs)
    return True


def init_variables(model: nn.Module, image_shape: tuple[int, ...], seed: int) -> Any:
    """Initialise ``model`` for NHWC images of ``image_shape`` on the host devices.

    Uses the ``rbg`` PRNG for initialisation only: the model draws one random tensor per
    parameter, and XLA's CPU compile time for that many threefry calls is several seconds.
    """
    key = jax.random.key(seed, impl="rbg")
    return jax.jit(model.init)(key, jnp.zeros((1, *image_shape), jnp.float32))


def evaluate(
    steps: CompiledSteps,
    state: TrainState,
    splits: Splits,
    batch_size: int,
    *,
    split: str = "val",
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy over a whole split (eval mode, running statistics), the
    image count and the images/s; ``on_batch(batch_size)`` is called after each batch."""
    totals: list[dict[str, jax.Array]] = []
    batches = to_devices(
        eval_dataset(splits, batch_size, split), steps.batch, workers=workers,
        mean=splits.mean, std=splits.std,
    )  # fmt: skip
    start = time.perf_counter()
    iterator = iter(batches)
    try:
        for x, y, w in iterator:
            totals.append(steps.eval(state, x, y, w))
            if on_batch is not None:  # the batch's size: fetching its weights would stall
                on_batch(batch_size)
    finally:
        iterator.close()
    summed = jax.device_get(jax.tree.map(lambda *a: sum(a), *totals))
    seconds = time.perf_counter() - start
    count = float(summed["count"])
    return {
        "loss": float(summed["loss_sum"]) / count,
        "acc": float(summed["correct"]) / count,
        "acc5": float(summed["correct5"]) / count,
        "count": count,
        "images_per_s": count / seconds,
    }


def evaluate_variables(
    model: nn.Module,
    variables: Any,
    splits: Splits,
    batch_size: int,
    mesh: Mesh | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """``evaluate`` for weights outside a training state (e.g. a converted checkpoint);
    ``kwargs`` go to ``evaluate``."""
    steps = compile_steps(mesh or make_mesh())
    if batch_size % steps.batch.mesh.size:
        raise TrainingError(
            f"batch size {batch_size} is not divisible by the {steps.batch.mesh.size} devices"
        )
    state = TrainState.create(model.apply, variables, optax.identity())
    return evaluate(steps, jax.device_put(state, steps.replicated), splits, batch_size, **kwargs)


def _is_run_file(path: Path) -> bool:
    # Also the staging directories of atomic writes a kill interrupted (not a user's
    # `.metrics.jsonl.bak`).
    return any(path.name == n or path.name.startswith(f".{n}{STAGING_MARK}") for n in RUN_FILES)


def _check_workdir(workdir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a work directory the run cannot use as asked; reads only."""
    if workdir.exists() and not workdir.is_dir():
        raise TrainingError(f"work directory {workdir} is not a directory")
    if resume and overwrite:
        raise TrainingError("resume and overwrite exclude each other")
    # An empty checkpoints/ (a run stopped before its first checkpoint) holds nothing to lose.
    used = [n for n in RUN_FILES if (workdir / n).is_file() or any((workdir / n).glob("*"))]
    if used and not (resume or overwrite):
        raise TrainingError(
            f"work directory {workdir} already holds a run ({', '.join(used)}): continue it "
            "with --resume or start again with --overwrite"
        )


def _clear_run(workdir: Path) -> None:
    """Delete what a previous run wrote in ``workdir``, and nothing else."""
    if jax.process_index() == 0 and workdir.is_dir():
        for path in filter(_is_run_file, workdir.iterdir()):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    _sync("seres: previous run cleared")  # no process may see the directory half cleared


def _sync(name: str) -> None:
    """Wait for every process (after process 0 changed the shared work directory)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The epoch records of ``workdir/metrics.jsonl``, one per epoch of the whole run (resumed
    or not) in order; ``[]`` when there is no such file."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not (isinstance(record, dict) and {"epoch", "step"} <= record.keys()):
            raise TrainingError(f"{path}, line {number}: not an epoch record of seres")
        records.append(record)
    return records


def _write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` whole: a kill leaves the old file or the new one."""
    if jax.process_index() == 0:
        with atomic_path(path, force=True) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


_CONFIG_BYTES = 1 << 20  # a config.json is a few hundred bytes: refuse a hostile giant


def _versions() -> dict[str, str]:
    from importlib import metadata

    def version(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {name: version(name) for name in ("seres", "jax", "jaxlib", "flax", "optax")}


def _read_run_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8") if path.stat().st_size <= _CONFIG_BYTES else ""
        record = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    # What it says feeds commands (eval, convert): each field must be one a run could have.
    try:
        stored = record["config"]
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        TrainConfig(**{k: v for k, v in stored.items() if k in fields}).validate(1)
        if not isinstance(record.get("arch"), str | None):
            raise TypeError
    except (TypeError, KeyError, AttributeError, TrainingError):
        raise TrainingError(f"{path}: not a run description of seres") from None
    return record


def find_run_config(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The ``config.json`` of the run that ``path`` belongs to (a work directory, its
    ``checkpoints/`` or a step directory in it) and its contents; ``None`` if there is none.

    The contents: ``config`` (the ``TrainConfig`` as a dict), ``arch`` (``run_arch``, or
    ``None``), ``versions``, ``device_count``, and ``overrides`` (each ``{"step", "changes":
    {field: [old, new]}}`` a resume with ``override=True`` made).
    """
    path = Path(path)
    candidates = [path]
    if path.name == CHECKPOINT_DIR:
        candidates.append(path.parent)
    elif path.parent.name == CHECKPOINT_DIR:
        candidates.append(path.parent.parent)
    for workdir in candidates:
        if path.is_dir() and (workdir / CONFIG_FILE).is_file():
            return workdir / CONFIG_FILE, _read_run_config(workdir / CONFIG_FILE)
    return None


def _recipe_changes(stored: dict[str, Any], config: TrainConfig) -> dict[str, list[Any]]:
    """``{field: [stored, new]}`` for each field outside ``RESUMABLE_CHANGES`` that differs
    (a field the stored file lacks, written by another seres, is not compared)."""
    new = json.loads(json.dumps(dataclasses.asdict(config)))
    return {
        name: [stored[name], value]
        for name, value in new.items()
        if name not in RESUMABLE_CHANGES and name in stored and stored[name] != value
    }


def _check_resumable(workdir: Path, config: TrainConfig, override: bool) -> dict[str, list[Any]]:
    """The recipe changes a resume of ``workdir`` makes; a ``TrainingError`` listing each of
    them unless ``override``. Reads only."""
    path = workdir / CONFIG_FILE
    if not path.is_file():
        if any((workdir / CHECKPOINT_DIR).glob("*")):
            logger.warning(
                "%s has no %s (a run of an earlier seres): resuming without checking that the "
                "model, dataset and recipe are the same", workdir, CONFIG_FILE,
            )  # fmt: skip
        return {}
    changes = _recipe_changes(_read_run_config(path)["config"], config)
    if changes and not override:
        listed = "; ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in changes.items())
        raise TrainingError(
            f"--resume: {path} differs from this command: {listed} (pass --override to resume "
            "with these changes)"
        )
    return changes


def _write_run_config(
    workdir: Path, config: TrainConfig, arch: str | None, changes: dict[str, list[Any]], step: int
) -> None:
    """Describe the run in ``config.json``: this config, the software, the devices, and the
    overrides of earlier resumes plus this one's ``changes`` (taking effect at ``step``)."""
    path = workdir / CONFIG_FILE
    overrides = _read_run_config(path).get("overrides", []) if path.is_file() else []
    if changes:
        overrides = [*overrides, {"step": step, "changes": changes}]
    record = {
        "config": dataclasses.asdict(config),
        "arch": arch,
        "versions": _versions(),
        "device_count": jax.device_count(),
        "overrides": overrides,
    }
    if jax.process_index() == 0:
        with atomic_path(path, force=True) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- checkpoints


def _reason(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"params/fc/kernel": shape, ...}`` of a state or of orbax's metadata of one."""

    def name(key: Any) -> str:
        return str(next(getattr(key, a) for a in ("key", "name", "idx") if hasattr(key, a)))

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(map(name, path)): tuple(leaf.shape) for path, leaf in flat}


_SHOWN_DIFFERENCES = 6


def _check_fits(saved: Any, expected: Any, where: str) -> None:
    """Raise ``TrainingError`` naming each path whose shape differs between a checkpoint's
    metadata and the state to restore: the weights', or else the optimizer state's."""
    have, want = _shapes(saved), _shapes(expected)
    weights = {p for p in have.keys() | want.keys() if p.startswith(("params/", "batch_stats/"))}
    others = (have.keys() | want.keys()) - weights
    params_first = sorted(weights, key=lambda p: (p.startswith("batch_stats/"), p))
    for group, what in (
        (params_first, "does not fit the model"),
        (sorted(others), "holds another optimizer's state"),
    ):
        problems = [
            f"{p}: not saved" if p not in have
            else f"{p}: saved, not expected" if p not in want
            else f"{p}: {have[p]} saved, {want[p]} expected"
            for p in group
            if have.get(p) != want.get(p)
        ]  # fmt: skip
        if problems:
            shown = "; ".join(problems[:_SHOWN_DIFFERENCES])
            more = len(problems) - _SHOWN_DIFFERENCES
            rest = f" (and {more} more)" if more > 0 else ""
            raise TrainingError(f"{where} {what}: {shown}{rest}")


class _Checkpoints:
    """orbax CheckpointManager of the state and the running epoch's metric sums; synchronous,
    so donation is safe."""

    def __init__(self, directory: Path, keep: int) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = directory
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        # "default" holds the state, where `seres convert` (seres_jax.formats) looks for it.
        handlers = {
            "default": ocp.StandardCheckpointHandler(),
            "epoch": ocp.JsonCheckpointHandler(),
            "data": grain.PyGrainCheckpointHandler(),  # one file per process
        }
        self.manager = ocp.CheckpointManager(
            directory.absolute(), item_handlers=handlers, options=options
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, epoch_totals: np.ndarray, data: Any, data_from: int) -> None:
        """The state, the epoch's sums and ``data``, the grain iterator's position in the
        stream of batches from step ``data_from`` on."""
        args = self._ocp.args
        sums = {"totals": [float(t) for t in epoch_totals], "data_from": data_from}
        self.manager.save(
            int(jax.device_get(state.step)),
            args=args.Composite(
                default=args.StandardSave(state),
                epoch=args.JsonSave(sums),
                data=grain.PyGrainCheckpointSave(data),
            ),
        )

    def restore_data(self, step: int, iterator: Any) -> bool:
        """Move ``iterator`` to where checkpoint ``step``'s data iterator was; ``False`` if
        the checkpoint holds none (an earlier seres) or one it cannot take (another
        worker count)."""
        if not (self.directory / str(step) / "data").is_dir():
            return False
        try:
            self.manager.restore(
                step, args=self._ocp.args.Composite(data=grain.PyGrainCheckpointRestore(iterator))
            )
        except Exception as err:  # grain raises several kinds for a state of another shape
            logger.warning("cannot restore the data iterator of checkpoint step %s (%s): "
                           "reading on from that step's position", step, _reason(err))  # fmt: skip
            return False
        return True

    def restore(self, template: TrainState) -> tuple[TrainState, np.ndarray | None, int] | None:
        """The newest readable checkpoint's state, epoch sums (``None`` in a checkpoint of an
        earlier seres, which saved the state alone) and the step its data iterator started
        from; ``None`` if there is none.

        Unreadable newer checkpoints are set aside, with a warning: the run goes on from an
        older one and writes those steps again. One of another model is a ``TrainingError``,
        and so is a directory of unreadable checkpoints only.
        """
        args = self._ocp.args
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, template)
        unreadable: list[tuple[int, str]] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            # orbax and tensorstore raise many kinds of errors for damaged files.
            try:
                metadata = self.manager.item_metadata(step)["default"]
            except Exception as err:
                unreadable.append((step, _reason(err)))
                continue
            if metadata is not None:  # None without `_METADATA`, which restoring can do without
                _check_fits(metadata.tree, abstract, f"checkpoint step {step} in {self.directory}")
            items = {"default": args.StandardRestore(abstract)}
            has_sums = (self.directory / str(step) / "epoch").is_dir()
            if has_sums:
                items["epoch"] = args.JsonRestore()
            try:
                restored = self.manager.restore(step, args=args.Composite(**items))
                epoch = restored["epoch"] if has_sums else {}
                totals = np.array(epoch["totals"], np.float64).reshape(3) if has_sums else None
                data_from = int(epoch.get("data_from", 0))
            except Exception as err:
                unreadable.append((step, _reason(err)))
                continue
            if unreadable:
                self._set_aside(unreadable, resumed_from=step)
            return restored["default"], totals, data_from
        if unreadable:
            step, reason = unreadable[0]
            raise TrainingError(
                f"no readable checkpoint in {self.directory} (step {step}: {reason}); "
                "start again with --overwrite"
            )
        return None

    def _set_aside(self, unreadable: list[tuple[int, str]], resumed_from: int) -> None:
        """Rename unreadable checkpoints to ``<step>.unreadable``, which orbax ignores: the
        resumed run writes those steps again, and nothing is deleted."""
        if jax.process_index() == 0:
            moved = []
            for step, _ in unreadable:
                aside = self.directory / f"{step}.unreadable"
                for n in itertools.count(2):
                    if not aside.exists():
                        break
                    aside = self.directory / f"{step}.unreadable.{n}"
                (self.directory / str(step)).rename(aside)
                moved.append(aside.name)
            logger.warning(
                "checkpoint step %s in %s is unreadable (%s); resuming from step %s (set aside "
                "as %s)",
                ", ".join(str(s) for s, _ in unreadable), self.directory, unreadable[0][1],
                resumed_from, ", ".join(moved),
            )  # fmt: skip
        _sync("seres: unreadable checkpoints set aside")
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# --------------------------------------------------------------------------- loop


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


_TOTALS = ("loss_sum", "correct", "count")


class _Tally:
    """The train step's metrics on their way from the device: fetched in one transfer per
    window, checked for a non-finite loss, and summed into the logging window and the epoch."""

    def __init__(self, epoch_totals: np.ndarray) -> None:
        self.pending: list[dict[str, jax.Array]] = []
        self.epoch = epoch_totals  # loss_sum, correct, count of the running epoch
        self.new_window()

    def new_window(self) -> None:
        self.window = np.zeros(3)
        self.window_start = time.perf_counter()

    def drain(self, step: int) -> int | None:
        """Fetch the pending steps, the last of which is ``step``: the first step whose loss
        is not finite (then nothing is summed), or ``None``."""
        host = jax.device_get(self.pending)
        self.pending = []
        first = step - len(host) + 1
        for offset, metrics in enumerate(host):
            if not np.isfinite(metrics["loss_sum"]):
                return first + offset
        totals = np.array([sum(float(m[k]) for m in host) for k in _TOTALS])
        self.window += totals
        self.epoch += totals
        return None


def _diverged(what: str, step: int, checkpoints: _Checkpoints | None) -> DivergenceError:
    kept = ""
    if checkpoints is not None:
        latest = checkpoints.latest()
        kept = (
            f"; the last finite checkpoint, step {latest}, is kept in {checkpoints.directory}"
            if latest is not None
            else "; no checkpoint was written"
        )
    return DivergenceError(f"training diverged: {what}{kept} (try a lower lr)", step)


def fit(
    model: nn.Module,
    dataset: Dataset | Splits,
    config: TrainConfig,
    *,
    variables: Any = None,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    override: bool = False,
    mesh: Mesh | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``config``; returns the final state and history.

    ``dataset`` is ``Splits`` (``seres_jax.data.load_dataset``) or an in-memory ``Dataset``
    (augmented with pad-crop-flip if ``config.augments``); it is read through grain
    (``seres_jax.data.pipeline``) with ``config.workers`` worker processes.
    ``variables`` (default: a fresh seeded init) are the starting weights, e.g. converted from
    PyTorch. With ``workdir``, checkpoints go to ``workdir/checkpoints`` and one JSON line per
    epoch to ``workdir/metrics.jsonl``. A ``workdir`` holding a previous run is refused unless
    ``resume=True`` (continue from its newest readable checkpoint, or from scratch if it has
    none, and redo the metrics lines written after that checkpoint) or ``overwrite=True``
    (delete the previous run's ``RUN_FILES``, and nothing else, and start afresh). The run is
    described in ``workdir/config.json`` before its first step (see ``find_run_config``); a
    resume whose ``config`` differs from it outside ``RESUMABLE_CHANGES`` is refused, listing
    every difference, unless ``override=True``, which records the changes there.
    ``on_log`` receives a record every ``log_every`` steps and at each epoch's end; warnings
    (an unreadable checkpoint skipped, a resume from scratch) go to this module's logger.
    Everything is validated before anything is written. A non-finite loss or non-finite
    weights raise ``DivergenceError`` (see the module docstring).
    """
    mesh = mesh or make_mesh()
    config.validate(mesh.size)
    if config.dataset not in (None, dataset.name):
        raise TrainingError(f"the config names dataset {config.dataset!r}, not {dataset.name!r}")
    # Resolved, so that config.json says what ran.
    config = dataclasses.replace(config, dataset=dataset.name)
    config = dataclasses.replace(config, augment=config.augments)
    splits = (
        dataset if isinstance(dataset, Splits) else splits_from_arrays(dataset, config.augments)
    )
    channels, classes = splits.image_shape[-1], splits.num_classes
    arch = run_arch(config, channels, classes) if config.model is not None else None
    if len(splits.train) < config.batch_size:
        raise TrainingError(
            f"batch size {config.batch_size} exceeds the {len(splits.train)} training images"
        )
    if resume and workdir is None:
        raise TrainingError("resume needs a workdir holding the checkpoints")
    if workdir is not None:
        workdir = Path(workdir)
        _check_workdir(workdir, resume=resume, overwrite=overwrite)
    changes = _check_resumable(workdir, config, override) if workdir and resume else {}
    # metrics.jsonl, earlier runs included
    records = read_metrics(workdir) if resume and workdir is not None else []
    run = config.steps(len(splits.train))
    steps_per_epoch, last_step = run.per_epoch, run.last

    model = model.clone(dtype=PRECISIONS[config.precision])
    if variables is None:
        variables = init_variables(model, splits.image_shape, config.seed)
    else:
        # The state is donated to every step: never hand the caller's buffers to it.
        variables = jax.tree.map(lambda a: jnp.array(a, copy=True), variables)
    tx, schedule = optim.build(config, run.total, run.per_epoch)
    steps = compile_steps(mesh)
    state = jax.device_put(TrainState.create(model.apply, variables, tx), steps.replicated)
    options = jax.device_put(StepOptions.from_config(config), steps.replicated)
    batches = train_dataset(splits, config.batch_size, config.seed)

    def read_from(position: int) -> Any:
        return iter(to_devices(batches[position:], steps.batch, workers=config.workers,
                               mean=splits.mean, std=splits.std))  # fmt: skip

    checkpoints = None
    tally = _Tally(np.zeros(3))
    if workdir is not None:
        if overwrite:
            _clear_run(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoints = _Checkpoints(workdir / CHECKPOINT_DIR, config.keep)
    history: list[dict[str, Any]] = []
    start_time = time.perf_counter()
    data_from = 0  # where the iterator's stream starts: its state counts from there
    iterator = read_from(data_from)
    try:
        if checkpoints is not None and resume:
            restored = checkpoints.restore(state)
            if restored is None:
                logger.warning("no checkpoint in %s: starting from scratch", checkpoints.directory)
            else:
                state = jax.device_put(restored[0], steps.replicated)
                tally.epoch = np.zeros(3) if restored[1] is None else restored[1]
            resumed_at = int(jax.device_get(state.step))
            if restored is not None:
                iterator.close()
                data_from = restored[2]
                iterator = read_from(data_from)
                if not checkpoints.restore_data(resumed_at, iterator):
                    # The stream is random access: the same batches from the step on.
                    iterator.close()
                    data_from = resumed_at
                    iterator = read_from(data_from)
            if restored is not None and restored[1] is None and resumed_at % steps_per_epoch:
                logger.warning(
                    "checkpoint step %d in %s holds no epoch sums (written by an earlier "
                    "seres): epoch %d's line covers its steps after step %d only",
                    resumed_at, checkpoints.directory, resumed_at // steps_per_epoch + 1,
                    resumed_at,
                )  # fmt: skip
            if workdir is not None and any(r["step"] > resumed_at for r in records):
                records = [r for r in records if r["step"] <= resumed_at]
                _write_metrics(workdir / METRICS_FILE, records)
        step = int(jax.device_get(state.step))
        if workdir is not None:
            _write_run_config(workdir, config, arch, changes, step)
        tally.new_window()
        while step < last_step:
            x, y = next(iterator)
            state, metrics = steps.train(state, x, y, options)
            step += 1
            tally.pending.append(metrics)
            epoch = (step - 1) // steps_per_epoch
            epoch_end = step % steps_per_epoch == 0 or step == last_step
            log = (step - epoch * steps_per_epoch) % config.log_every == 0 or epoch_end
            save = checkpoints is not None and (
                step == last_step
                or (config.checkpoint_every > 0 and step % config.checkpoint_every == 0)
            )
            if not (log or save):
                continue
            # Fetched before every checkpoint too, so a diverged state is never saved.
            bad = tally.drain(step)
            if bad is not None:
                raise _diverged(f"non-finite loss at step {bad}", bad, checkpoints)
            if log:
                if on_log:
                    record = _rates(tally.window, time.perf_counter() - tally.window_start)
                    record.update(epoch=epoch, step=step, lr=float(schedule(step - 1)))
                    on_log({"kind": "progress", **record})
                tally.new_window()
            if not (save or epoch_end):
                continue
            if not bool(_all_finite((state.params, state.batch_stats, state.opt_state))):
                raise _diverged(f"non-finite weights after step {step}", step, checkpoints)
            if epoch_end:
                record = _epoch_record(steps, state, splits, config, epoch, step, tally)
                if not math.isfinite(record["val_loss"]):
                    raise _diverged(
                        f"non-finite validation loss after step {step}", step, checkpoints
                    )
                record["elapsed_s"] = time.perf_counter() - start_time
                history.append(record)
                if workdir is not None:
                    records = [r for r in records if r["epoch"] != epoch] + [record]
                    _write_metrics(workdir / METRICS_FILE, records)
                if step % steps_per_epoch == 0:
                    tally.epoch = np.zeros(3)
                if on_log:
                    on_log(record)
                tally.new_window()
            if save and checkpoints is not None:
                checkpoints.save(state, tally.epoch, iterator, data_from)
    finally:
        iterator.close()
        if checkpoints:
            checkpoints.close()
    return TrainResult(state, history, time.perf_counter() - start_time)


def _epoch_record(
    steps: CompiledSteps,
    state: TrainState,
    splits: Splits,
    config: TrainConfig,
    epoch: int,
    step: int,
    tally: _Tally,
) -> dict[str, Any]:
    train = _rates(tally.epoch, 0.0)
    val = evaluate(steps, state, splits, config.batch_size)
    return {
        "kind": "epoch",
        "epoch": epoch,
        "step": step,
        "train_loss": train["loss"],
        "train_acc": train["acc"],
        "val_loss": val["loss"],
        "val_acc": val["acc"],
        "val_acc5": val["acc5"],
    }


def _rates(totals: np.ndarray, seconds: float) -> dict[str, float]:
    loss_sum, correct, count = (float(t) for t in totals)
    if not count:
        return {"loss": float("nan"), "acc": float("nan"), "images_per_s": 0.0}
    return {
        "loss": loss_sum / count,
        "acc": correct / count,
        "images_per_s": count / seconds if seconds > 0 else 0.0,
    }
