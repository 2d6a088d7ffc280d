"""The training loop, ``fit`` (its ``TrainResult``), evaluation over a split (``evaluate``,
``evaluate_variables``) and ``initialize_distributed`` for multi-process launches.

* **Data.** ``fit`` reads ``Splits`` through grain: an endless stream of batches, an epoch
  being ``len(train) // batch_size`` steps. Each checkpoint holds the grain iterator's
  position, so a resumed run sees the samples and augmentation draws an uninterrupted one
  sees. ``StepOptions`` carry the label smoothing and timm's mixup/cutmix (drawn on the
  device in the step, from the seed and the step).
* **Divergence.** A non-finite loss (seen in the fetched metrics), or non-finite weights
  before a checkpoint or an evaluation, stops the run with ``DivergenceError`` naming the
  first such step: nothing non-finite is saved or logged, so the finite checkpoints stay.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from ..data import (
    Dataset,
    Splits,
    device_normalizer,
    eval_batch_sizes,
    eval_dataset,
    to_devices,
    train_dataset,
)
from ..data.catalog import splits_from_arrays
from .checkpoints import _Checkpoints
from .config import EVAL_METRICS, PRECISIONS, TrainConfig, run_arch
from .errors import DivergenceError, TrainingError
from .metrics import _write_metrics, read_metrics
from .state import TrainState, init_variables
from .steps import CompiledSteps, StepOptions, compile_steps, make_mesh
from .tensorboard import TensorBoardLog, require_tensorboard
from .workdir import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    TENSORBOARD_DIR,
    _check_resumable,
    _check_workdir,
    _clear_run,
    _write_run_config,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The final state (on the devices), the per-epoch history and wall times."""

    state: TrainState
    history: list[dict[str, Any]]
    train_seconds: float


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
    image ``count``, ``compile_s`` and the steady ``images_per_s``.

    The last partial batch runs at its own size, padded only to a multiple of the device
    count (``eval_dataset``'s ``last_batch_multiple``): one more compiled shape, which the
    persistent compilation cache keeps like the first. Every shape is compiled before the
    first image is read: ``compile_s`` is that time (short when this process, or the
    persistent cache, has the executables already), and ``images_per_s`` counts the pass
    after it, reading and decoding included. ``on_batch(rows)`` is called after each batch
    with its row count (padding included)."""
    devices = steps.batch.mesh.size
    source = {"val": splits.val, "train": splits.train}[split]
    if not len(source):
        raise TrainingError(f"the {split} split of {splits.name} is empty")
    sizes = eval_batch_sizes(len(source), batch_size, devices)
    start = time.perf_counter()
    jitted: Any = steps.eval  # compile_steps' jax.jit: it lowers ahead of the data
    for size in dict.fromkeys(sizes):  # each shape once, in order
        jitted.lower(state, *_eval_specs(splits, source, size, steps.batch)).compile()
        if splits.mean is not None and splits.std is not None:  # to_devices' normalisation
            raw = jax.ShapeDtypeStruct((size, *splits.image_shape), np.uint8, sharding=steps.batch)
            device_normalizer(splits.mean, splits.std, steps.batch).lower(raw).compile()
    compile_s = time.perf_counter() - start
    totals: list[dict[str, jax.Array]] = []
    batches = to_devices(
        eval_dataset(splits, batch_size, split, devices), steps.batch, workers=workers,
        mean=splits.mean, std=splits.std,
    )  # fmt: skip
    start = time.perf_counter()
    iterator = iter(batches)
    try:
        for size, (x, y, w) in zip(sizes, iterator, strict=True):
            totals.append(steps.eval(state, x, y, w))
            if on_batch is not None:  # the batch's rows: fetching its weights would stall
                on_batch(size)
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
        "compile_s": compile_s,
        "images_per_s": count / seconds,
    }


def _eval_specs(
    splits: Splits, source: Any, size: int, sharding: jax.sharding.Sharding
) -> tuple[jax.ShapeDtypeStruct, ...]:
    """The global ``(images, labels, weights)`` of an eval batch of ``size`` rows as
    ``to_devices`` delivers them, for compiling ahead of the data."""
    if splits.mean is not None:
        dtype: Any = np.float32  # uint8 images, normalised on the devices
    else:  # images as the source holds them (float32 by ``Splits``' contract)
        dtype = np.asarray(_first_image(splits, source)).dtype
    return (
        jax.ShapeDtypeStruct((size, *splits.image_shape), dtype, sharding=sharding),
        jax.ShapeDtypeStruct((size,), np.int32, sharding=sharding),
        jax.ShapeDtypeStruct((size,), np.float32, sharding=sharding),
    )


def _first_image(splits: Splits, source: Any) -> Any:
    element = source[0]
    if isinstance(splits.eval_transform, grain.MapTransform):
        element = splits.eval_transform.map(element)
    return element[0]


EVAL_ACTIVATION_BOUND = 2**30
"""``default_eval_batch_size``'s bound, in bytes, on a CPU batch's eval activations (see
there)."""
EVAL_BYTES_PER_INPUT_VALUE = 352
"""``default_eval_batch_size``'s estimate of the eval activations' bytes per input value, the
worst of the registered models' (see there)."""
ACCELERATOR_EVAL_BATCH = 256


def default_eval_batch_size(
    image_shape: tuple[int, ...],
    num_images: int,
    devices: int | None = None,
    platform: str | None = None,
) -> int:
    """The batch ``seres eval`` evaluates ``num_images`` images of ``image_shape`` (H, W, C)
    in when none is given, on ``devices`` devices (default: every device) of ``platform``
    (default: JAX's default backend).

    On the CPU: the largest power of two, at most 256, whose eval activations stay within
    ``EVAL_ACTIVATION_BOUND`` (1 GiB), estimated at ``EVAL_BYTES_PER_INPUT_VALUE`` (352)
    bytes per input value. That is the worst of the registered models, measured as the
    temporary bytes of XLA's memory analysis of the compiled eval step (linear in the
    batch, and in the pixels: seresnet50 110 B per value at 160, 224 and 288 px), per
    224x224x3 image: seresnet269d and ecaresnet269d 49.1 MiB (342 B per value),
    seresnextaa201d_32x8d 41.6, seresnet200d 39.8, senet154 29.8, seresnet152d 29.0,
    seresnet50 15.7, seresnet18 3.9; seresnet_tiny 0.41 MiB at 32x32x3 (140 B). So 16 at
    224x224x3 and 256 at 32x32x3; throughput on the CPU hardly depends on the batch past
    a few images. On a GPU or TPU: 256. Either way a multiple of the device count, at
    least one image a device, and no more than ``num_images`` rounded up to a multiple of
    the device count."""
    devices = jax.device_count() if devices is None else devices
    platform = platform or jax.default_backend()
    if platform == "cpu":
        per_image = EVAL_BYTES_PER_INPUT_VALUE * math.prod(image_shape)
        fits = max(1, EVAL_ACTIVATION_BOUND // per_image)
        batch = min(ACCELERATOR_EVAL_BATCH, 2 ** (fits.bit_length() - 1))
    else:
        batch = ACCELERATOR_EVAL_BATCH
    whole = -(-max(num_images, 1) // devices) * devices
    return min(whole, max(devices, batch // devices * devices))


def evaluate_variables(
    model: nn.Module,
    variables: Any,
    splits: Splits,
    batch_size: int,
    mesh: Mesh | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """``evaluate`` for weights outside a training state (e.g. a converted checkpoint), over
    ``mesh`` (default: every device); ``kwargs`` go to ``evaluate``. ``batch_size`` must be a
    multiple of the device count (``default_eval_batch_size``'s is)."""
    steps = compile_steps(mesh or make_mesh())
    if batch_size % steps.batch.mesh.size:
        raise TrainingError(
            f"batch size {batch_size} is not divisible by the {steps.batch.mesh.size} devices"
        )
    state = TrainState.create(model.apply, variables, optax.identity())
    return evaluate(steps, jax.device_put(state, steps.replicated), splits, batch_size, **kwargs)


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
    tensorboard: bool = False,
    initial: Mapping[str, Any] | None = None,
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
    ``initial``: where ``variables`` came from (``InitialWeights.record()``, timm's
    ``--initial-checkpoint``): a run starting at step 0 then evaluates them before the first
    update (an ``on_log`` record of kind ``"initial"``), and ``config.json`` keeps both.
    ``on_log`` receives a record every ``log_every`` steps and at each epoch's end; warnings
    (an unreadable checkpoint skipped, a resume from scratch) go to the ``seres_jax.train``
    loggers.
    Everything is validated before anything is written. A non-finite loss or non-finite
    weights raise ``DivergenceError`` (see the module docstring).
    """
    mesh = mesh or make_mesh()
    config.validate(mesh.size)
    if config.dataset not in (None, dataset.name):
        raise TrainingError(f"the config names dataset {config.dataset!r}, not {dataset.name!r}")
    # Resolved, so that config.json says what ran.
    config = dataclasses.replace(config.resolved(), dataset=dataset.name)
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
    if tensorboard:
        if workdir is None:
            raise TrainingError("TensorBoard logs need a workdir")
        require_tensorboard()
    if workdir is not None:
        workdir = Path(workdir)
        _check_workdir(workdir, resume=resume, overwrite=overwrite)
    changes = _check_resumable(workdir, config, override) if workdir and resume else {}
    # metrics.jsonl, earlier runs included
    records = read_metrics(workdir) if resume and workdir is not None else []
    run = config.steps(len(splits.train))
    steps_per_epoch, last_step = run.per_epoch, run.last
    # The preprocessing, recorded so that a run started from this one's weights uses it.
    preprocessing = config.data_options()
    validation = preprocessing.val_config or preprocessing.data_config
    data = {"train": dataclasses.asdict(preprocessing.data_config),
            "val": dataclasses.asdict(validation)}  # fmt: skip

    model = model.clone(dtype=PRECISIONS[config.precision])
    if variables is None:
        variables = init_variables(model, splits.image_shape, config.seed)
    else:
        # The state is donated to every step: never hand the caller's buffers to it.
        variables = jax.tree.map(lambda a: jnp.array(a, copy=True), variables)
    schedule = config.make_schedule(run.total, run.per_epoch)
    # timm's plateau scheduler: on the host, fed each epoch's metric, its lr set in the state.
    plateau = config.timm_schedule(run.per_epoch).plateau if config.sched == "plateau" else None
    tx = config.make_tx(schedule, run.total)
    steps = compile_steps(mesh, config.grad_accum_steps, config.erasing())
    state = TrainState.create(model.apply, variables, tx, ema=config.ema_config())
    state = jax.device_put(state, steps.replicated)
    options = jax.device_put(StepOptions.from_config(config), steps.replicated)
    batches = train_dataset(splits, config.batch_size, config.seed, config.aug_repeats)

    def read_from(position: int) -> Any:
        return iter(to_devices(batches[position:], steps.batch, workers=config.workers,
                               mean=splits.mean, std=splits.std))  # fmt: skip

    checkpoints = None
    tb_log: TensorBoardLog | None = None
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
                if plateau is not None and restored[3] is not None:
                    plateau.load_state_dict(restored[3])
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
        if tensorboard and workdir is not None and jax.process_index() == 0:
            tb_log = TensorBoardLog(workdir / TENSORBOARD_DIR, start_step=step)
        start = None
        if initial is not None and step == 0:
            val = evaluate(steps, state, splits, config.batch_size)
            start = {"kind": "initial", "epoch": -1, "step": 0, "val_loss": val["loss"],
                     "val_acc": val["acc"], "val_acc5": val["acc5"]}  # fmt: skip
            if tb_log:
                tb_log.write(start)
            if on_log:
                on_log(start)
        if workdir is not None:
            record = None if initial is None or start is None else {**initial, "eval": start}
            _write_run_config(workdir, config, arch, changes, step, record, data)
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
                if on_log or tb_log:
                    rates = _rates(tally.window, time.perf_counter() - tally.window_start)
                    lr = float(schedule(step - 1)) if plateau is None else plateau.lr
                    progress = {"kind": "progress", **rates, "epoch": epoch, "step": step, "lr": lr}
                    if tb_log:
                        tb_log.write(progress)
                    if on_log:
                        on_log(progress)
                tally.new_window()
            if not (save or epoch_end):
                continue
            if not bool(_all_finite((state.params, state.batch_stats, state.opt_state, state.ema))):
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
                if tb_log:
                    tb_log.write(record)
                if step % steps_per_epoch == 0:
                    tally.epoch = np.zeros(3)
                    if plateau is not None:  # timm's lr_scheduler.step(epoch + 1, metric)
                        lr = plateau.step(epoch + 1, _eval_metric(record, config))
                        state = set_learning_rate(state, lr, steps.replicated)
                if on_log:
                    on_log(record)
                tally.new_window()
            if save and checkpoints is not None:
                scheduler = None if plateau is None else plateau.state_dict()
                checkpoints.save(state, tally.epoch, iterator, data_from, scheduler)
    finally:
        iterator.close()
        if checkpoints:
            checkpoints.close()
        if tb_log:
            tb_log.close()
    return TrainResult(state, history, time.perf_counter() - start_time)


def _eval_metric(record: dict[str, Any], config: TrainConfig) -> float:
    """The epoch's ``config.eval_metric`` (timm's ``--eval-metric``), the EMA's when the run
    keeps one, as timm's ``train.py`` feeds its scheduler."""
    key = EVAL_METRICS[config.eval_metric]
    return float(record.get(f"ema_{key}", record[key]))


def set_learning_rate(state: TrainState, lr: float, sharding: Any = None) -> TrainState:
    """``state`` with the lr of an ``optax.inject_hyperparams`` optimizer (a plateau run's,
    ``TrainConfig.make_tx``) set to ``lr``, placed with ``sharding``: no recompilation."""
    hyperparams = dict(state.opt_state.hyperparams)
    value = jnp.asarray(lr, hyperparams["learning_rate"].dtype)
    hyperparams["learning_rate"] = value if sharding is None else jax.device_put(value, sharding)
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


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
    record = {
        "kind": "epoch",
        "epoch": epoch,
        "step": step,
        "train_loss": train["loss"],
        "train_acc": train["acc"],
        "val_loss": val["loss"],
        "val_acc": val["acc"],
        "val_acc5": val["acc5"],
    }
    ema = state.ema_state
    if ema is not None:  # the EMA weights too, as timm's train.py validates both
        val = evaluate(steps, ema, splits, config.batch_size)
        record.update(ema_val_loss=val["loss"], ema_val_acc=val["acc"], ema_val_acc5=val["acc5"])
    return record


def _rates(totals: np.ndarray, seconds: float) -> dict[str, float]:
    loss_sum, correct, count = (float(t) for t in totals)
    if not count:
        return {"loss": float("nan"), "acc": float("nan"), "images_per_s": 0.0}
    return {
        "loss": loss_sum / count,
        "acc": correct / count,
        "images_per_s": count / seconds if seconds > 0 else 0.0,
    }
