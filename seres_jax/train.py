"""Training with optax on any JAX backend: train state, sharded jitted steps, the loop, checkpoints.

* **State.** ``TrainState`` holds params, BatchNorm statistics, optimizer state and the step.
* **Steps.** ``train_step`` / ``eval_step`` are jitted once per mesh with the state donated, so
  parameters are updated in place; metrics stay on the device as sums and the host fetches
  them every ``log_every`` steps, never inside the step loop.
* **Data parallelism.** ``make_mesh`` puts every device of every process on one ``"data"``
  axis; batches are sharded along it and the state is replicated. Under ``jit`` XLA then
  computes BatchNorm's mean and variance over the *global* batch (it inserts the
  cross-device reductions), which is what PyTorch's ``SyncBatchNorm`` does: the trajectory
  does not depend on the number of devices. Multi-host: call ``initialize_distributed()``
  first on every host (see the README for a TPU pod slice); each process then feeds its own
  slice of every global batch.
* **Mixed precision.** ``TrainConfig.precision="bf16"`` runs the model in bfloat16 with
  float32 parameters, statistics and optimizer state; the loss is computed in float32.
* **Checkpoints.** orbax, every ``checkpoint_every`` steps and at the end, the last ``keep``
  kept; orbax writes to a temporary directory and renames it, so a checkpoint is either
  complete or absent. A resumed run restores the state and replays the data order from the
  same (seed, epoch), so it continues the very same trajectory.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import compiler
from .data import Dataset, iterate_batches, prefetch_to_device, random_crop_flip
from .optim import (
    OPTIMIZER_NAMES,
    SCHEDULE_NAMES,
    cross_entropy,
    decay_kernels_only,
    make_optimizer,
    make_schedule,
)

PRECISIONS = {"fp32": None, "bf16": jnp.bfloat16}
DATA_AXIS = "data"


class TrainingError(ValueError):
    """A training configuration that cannot run (reported before anything is written)."""


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; ``apply_fn`` and ``tx`` are static."""

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


def train_step(
    state: TrainState, images: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch; BatchNorm in train mode (batch statistics)."""

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        loss = cross_entropy(logits, labels, label_smoothing)
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
    return new_state, _metrics(logits, labels, weights, loss * labels.shape[0])


def eval_step(
    state: TrainState, images: jax.Array, labels: jax.Array, weights: jax.Array
) -> dict[str, jax.Array]:
    """Sums of loss and correct predictions over the examples with weight 1 (padding has 0)."""
    logits = state.apply_fn(state.variables, images, train=False)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    return _metrics(logits, labels, weights, jnp.sum(nll * weights))


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


@dataclass(frozen=True)
class CompiledSteps:
    """``train``/``eval`` jitted for one mesh, and the shardings they expect."""

    train: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    eval: Callable[..., dict[str, jax.Array]]
    replicated: NamedSharding
    batch: NamedSharding


def compile_steps(mesh: Mesh, label_smoothing: float = 0.0) -> CompiledSteps:
    """Jit the steps for ``mesh``: batch sharded on ``"data"``, state replicated and donated,
    compiled with ``seres_jax.compiler``'s options for the mesh's platform."""
    replicated = NamedSharding(mesh, PartitionSpec())
    batch = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    platform = mesh.devices.flat[0].platform
    train = compiler.jit(
        functools.partial(train_step, label_smoothing=label_smoothing),
        platform=platform,
        in_shardings=(replicated, batch, batch),
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
class TrainConfig:
    """A training recipe. Defaults follow the usual SGD ResNet recipe on small images."""

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
    augment: bool = False
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 0  # steps; 0: only at the end
    keep: int = 3
    max_steps: int | None = None  # stop early (the schedule still spans all epochs)

    def validate(self, num_devices: int) -> None:
        problems = []
        if self.optimizer not in OPTIMIZER_NAMES:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZER_NAMES)}")
        if self.schedule not in SCHEDULE_NAMES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULE_NAMES)}")
        if not (self.lr > 0 and 0 <= self.label_smoothing < 1 and self.weight_decay >= 0):
            problems.append("need lr > 0, 0 <= label_smoothing < 1 and weight_decay >= 0")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.log_every < 1 or self.keep < 1:
            problems.append("epochs, batch_size, log_every and keep must be positive")
        if self.batch_size % num_devices:
            problems.append(
                f"batch size {self.batch_size} is not divisible by the {num_devices} devices"
            )
        if problems:
            raise TrainingError("; ".join(problems))

    def make_schedule(self, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
        """The learning-rate schedule over ``total_steps`` optimizer steps."""
        kwargs: dict[str, Any] = {
            "cosine": {
                "base_lr": self.lr,
                "total_steps": total_steps,
                "warmup_steps": min(int(self.warmup_epochs * steps_per_epoch), total_steps - 1),
            },
            "onecycle": {"max_lr": self.lr, "total_steps": total_steps},
            "step": {"base_lr": self.lr, "step_size": max(total_steps // 3, 1)},
            "constant": {"lr": self.lr},
        }.get(self.schedule, {})
        return make_schedule(self.schedule, **kwargs)

    def make_tx(self, schedule: optax.Schedule) -> optax.GradientTransformation:
        """The optimizer, driven by ``schedule``."""
        mask = None if self.decay_all else decay_kernels_only
        kwargs: dict[str, Any] = {"weight_decay": self.weight_decay, "weight_decay_mask": mask}
        if self.optimizer == "sgd":
            kwargs.update(momentum=self.momentum, nesterov=self.nesterov and self.momentum > 0)
        return make_optimizer(self.optimizer, schedule, **kwargs)


@dataclass
class TrainResult:
    """The final state (on the devices), the per-epoch history and wall times."""

    state: TrainState
    history: list[dict[str, Any]]
    train_seconds: float


# --------------------------------------------------------------------------- loop


def initialize_distributed() -> bool:
    """``jax.distributed.initialize()`` when a multi-process launch is detected.

    Detected from the variables the usual launchers set: ``JAX_COORDINATOR_ADDRESS`` (with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``), Slurm, or a multi-host Cloud TPU
    (``TPU_WORKER_HOSTNAMES`` naming more than one host). Returns whether it initialised.
    """
    env = os.environ
    multi_tpu = len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
    if "JAX_COORDINATOR_ADDRESS" in env or "SLURM_JOB_ID" in env or multi_tpu:
        jax.distributed.initialize()
        return True
    return False


def init_variables(model: nn.Module, image_shape: tuple[int, ...], seed: int) -> Any:
    """Initialise ``model`` for NHWC images of ``image_shape`` on the host devices.

    Uses the ``rbg`` PRNG for initialisation only: the model draws one random tensor per
    parameter, and XLA's CPU compile time for that many threefry calls is several seconds.
    """
    key = jax.random.key(seed, impl="rbg")
    return jax.jit(model.init)(key, jnp.zeros((1, *image_shape), jnp.float32))


def _local_slice(batch: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """This process's share of a global batch (all of it on a single host)."""
    count, index = jax.process_count(), jax.process_index()
    return tuple(np.array_split(a, count)[index] for a in batch)


def _eval_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The whole split in order; the last batch is padded to full size with weight 0."""
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        weights = np.ones(len(x), np.float32)
        pad = batch_size - len(x)
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(pad, y.dtype)])
            weights = np.concatenate([weights, np.zeros(pad, np.float32)])
        yield x, y, weights


def evaluate(
    steps: CompiledSteps, state: TrainState, images: np.ndarray, labels: np.ndarray, batch: int
) -> dict[str, float]:
    """Loss and accuracy over a whole split (eval mode, running statistics)."""
    totals: list[dict[str, jax.Array]] = []
    batches = (_local_slice(b) for b in _eval_batches(images, labels, batch))
    for x, y, w in prefetch_to_device(batches, sharding=steps.batch):
        totals.append(steps.eval(state, x, y, w))
    summed = jax.device_get(jax.tree.map(lambda *a: sum(a), *totals))
    count = float(summed["count"])
    return {"loss": float(summed["loss_sum"]) / count, "acc": float(summed["correct"]) / count}


class _Checkpoints:
    """orbax CheckpointManager of the state pytree; synchronous, so donation is safe."""

    def __init__(self, directory: Path, keep: int) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(directory.absolute(), options=options)

    def save(self, state: TrainState) -> None:
        step = int(jax.device_get(state.step))
        if step not in self.manager.all_steps():
            self.manager.save(step, args=self._ocp.args.StandardSave(state))

    def restore(self, template: TrainState) -> TrainState | None:
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, template)
        return self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def fit(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    variables: Any = None,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    mesh: Mesh | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``config``; returns the final state and history.

    ``variables`` (default: a fresh seeded init) are the starting weights, e.g. converted from
    PyTorch. With ``workdir``, checkpoints go to ``workdir/checkpoints`` and one JSON line per
    epoch to ``workdir/metrics.jsonl``; ``resume=True`` continues from the latest checkpoint
    there. ``on_log`` receives a record every ``log_every`` steps and at each epoch's end.
    Everything is validated before anything is written.
    """
    mesh = mesh or make_mesh()
    config.validate(mesh.size)
    if dataset.train_images.shape[0] < config.batch_size:
        raise TrainingError(
            f"batch size {config.batch_size} exceeds the {dataset.train_images.shape[0]} "
            "training images"
        )
    if resume and workdir is None:
        raise TrainingError("resume needs a workdir holding the checkpoints")
    steps_per_epoch = dataset.train_images.shape[0] // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    last_step = min(total_steps, config.max_steps or total_steps)

    model = model.clone(dtype=PRECISIONS[config.precision])
    if variables is None:
        variables = init_variables(model, dataset.image_shape, config.seed)
    else:
        # The state is donated to every step: never hand the caller's buffers to it.
        variables = jax.tree.map(lambda a: jnp.array(a, copy=True), variables)
    schedule = config.make_schedule(total_steps, steps_per_epoch)
    tx = config.make_tx(schedule)
    steps = compile_steps(mesh, config.label_smoothing)
    state = jax.device_put(TrainState.create(model.apply, variables, tx), steps.replicated)

    checkpoints = metrics_file = None
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoints = _Checkpoints(workdir / "checkpoints", config.keep)
        metrics_file = workdir / "metrics.jsonl"
        if resume:
            restored = checkpoints.restore(state)
            if restored is not None:
                state = jax.device_put(restored, steps.replicated)

    history: list[dict[str, Any]] = []
    step = int(jax.device_get(state.step))
    augment = random_crop_flip if config.augment else None
    start_time = time.perf_counter()
    try:
        while step < last_step:
            epoch, skip = divmod(step, steps_per_epoch)
            batches = iterate_batches(
                dataset.train_images, dataset.train_labels, config.batch_size,
                shuffle=True, seed=config.seed, epoch=epoch, augment=augment,
            )  # fmt: skip
            # Replaying the epoch's first `skip` batches keeps the augmentation draws aligned.
            for _ in range(skip):
                next(batches)
            pending: list[dict[str, jax.Array]] = []
            epoch_totals = np.zeros(3)  # host sums of loss, correct, count
            window_start = time.perf_counter()
            remaining = min(steps_per_epoch - skip, last_step - step)
            local = (_local_slice(b) for b in batches)
            for x, y in prefetch_to_device(
                (b for _, b in zip(range(remaining), local, strict=False)), sharding=steps.batch
            ):
                state, metrics = steps.train(state, x, y)
                step += 1
                pending.append(metrics)
                if checkpoints and config.checkpoint_every and step % config.checkpoint_every == 0:
                    checkpoints.save(state)
                if len(pending) == config.log_every or step == last_step:
                    window = _fetch_totals(pending)
                    epoch_totals += window
                    record = _rates(window, time.perf_counter() - window_start)
                    record.update(epoch=epoch, step=step, lr=float(schedule(step - 1)))
                    pending = []
                    window_start = time.perf_counter()
                    if on_log:
                        on_log({"kind": "progress", **record})
            epoch_totals += _fetch_totals(pending)
            if step % steps_per_epoch == 0 or step == last_step:
                train_summary = _rates(epoch_totals, 0.0)
                val = evaluate(
                    steps, state, dataset.test_images, dataset.test_labels, config.batch_size
                )
                record = {
                    "kind": "epoch",
                    "epoch": epoch,
                    "step": step,
                    "train_loss": train_summary["loss"],
                    "train_acc": train_summary["acc"],
                    "val_loss": val["loss"],
                    "val_acc": val["acc"],
                    "elapsed_s": time.perf_counter() - start_time,
                }
                history.append(record)
                if metrics_file is not None and jax.process_index() == 0:
                    with metrics_file.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                if on_log:
                    on_log(record)
        if checkpoints:
            checkpoints.save(state)
    finally:
        if checkpoints:
            checkpoints.close()
    return TrainResult(state, history, time.perf_counter() - start_time)


def _fetch_totals(metrics: list[dict[str, jax.Array]]) -> np.ndarray:
    """Sum a window of per-step metrics on the host, fetched in one transfer."""
    host = jax.device_get(metrics)
    return np.array([sum(float(m[k]) for m in host) for k in ("loss_sum", "correct", "count")])


def _rates(totals: np.ndarray, seconds: float) -> dict[str, float]:
    loss_sum, correct, count = (float(t) for t in totals)
    if not count:
        return {"loss": float("nan"), "acc": float("nan"), "images_per_s": 0.0}
    return {
        "loss": loss_sum / count,
        "acc": correct / count,
        "images_per_s": count / seconds if seconds > 0 else 0.0,
    }
