"""The steps: ``train_step`` and ``eval_step``, their recipe knobs (``StepOptions``), the
device mesh (``make_mesh``) and the steps jitted for it (``compile_steps``).

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
  first on every host (docs/guides/training.md shows a TPU pod slice); each process then reads
  its own share of the records and feeds its part of every global batch
  (``seres_jax.data.pipeline``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import compiler
from ..data import stream_seed
from ..losses import binary_cross_entropy, cross_entropy
from ..mixup import MixupConfig, draw_mix, mix_images, mixup_target
from ..random_erasing import RandomErasing, random_erasing
from .config import TrainConfig
from .state import TrainState

DATA_AXIS = "data"
"""The name of the device mesh's one axis (``make_mesh``): batches are sharded along it, the
training state is replicated."""


def batch_metrics(
    logits: jax.Array, labels: jax.Array, weights: jax.Array, loss: jax.Array
) -> dict[str, jax.Array]:
    """``loss_sum`` (given), and the ``correct`` top-1 predictions and ``count`` of the
    examples with weight 1 (padding has 0)."""
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
    the draws come from ``seed`` and the step, so a resumed run draws the same.

    ``bce`` switches the loss from the cross-entropy to timm's ``BinaryCrossEntropy`` on the
    (mixed, smoothed) soft targets, with ``bce_target_thresh`` (negative: none),
    ``bce_sum`` (sum over the classes) and ``bce_pos_weight`` (1: none), as timm's
    ``--bce-loss --bce-target-thresh --bce-sum --bce-pos-weight``."""

    label_smoothing: jax.typing.ArrayLike = 0.0
    mixup: jax.typing.ArrayLike = 0.0
    cutmix: jax.typing.ArrayLike = 0.0
    mix_prob: jax.typing.ArrayLike = 1.0
    switch_prob: jax.typing.ArrayLike = 0.5
    seed: jax.typing.ArrayLike = 0
    bce: jax.typing.ArrayLike = False
    bce_target_thresh: jax.typing.ArrayLike = -1.0
    bce_sum: jax.typing.ArrayLike = False
    bce_pos_weight: jax.typing.ArrayLike = 1.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> StepOptions:
        """The options of ``config``'s recipe, as float32/uint32/bool scalars."""
        thresh, pos_weight = config.bce_target_thresh, config.bce_pos_weight
        return cls(
            label_smoothing=np.float32(config.label_smoothing),
            mixup=np.float32(config.mixup),
            cutmix=np.float32(config.cutmix),
            mix_prob=np.float32(config.mix_prob),
            switch_prob=np.float32(config.mixup_switch_prob),
            seed=np.uint32(stream_seed(config.seed)),
            bce=np.bool_(config.bce_loss),
            bce_target_thresh=np.float32(-1.0 if thresh is None else thresh),
            bce_sum=np.bool_(config.bce_sum),
            bce_pos_weight=np.float32(1.0 if pos_weight is None else pos_weight),
        )


def train_loss(
    logits: jax.Array, labels: jax.Array, lam: jax.Array, options: StepOptions
) -> jax.Array:
    """The loss timm's ``train.py`` minimises for these options: the cross-entropy against
    the mixed smoothed targets, or with ``options.bce`` the binary cross-entropy."""
    # timm's mixed soft target, lam * y + (1 - lam) * flip(y) (each smoothed), through the
    # cross-entropy's linearity in the target: at lam = 1 exactly the unmixed loss.
    smoothing = options.label_smoothing
    ce = lam * _smoothed_cross_entropy(logits, labels, smoothing) + (
        1 - lam
    ) * _smoothed_cross_entropy(logits, labels[::-1], smoothing)
    # The BCE is not linear in a thresholded target: it takes the mixed targets themselves.
    # Both losses cost O(batch x classes), nothing beside the model; selecting one keeps the
    # loss a traced option (the other's gradient is an exact zero).
    targets = mixup_target(labels, logits.shape[-1], lam, smoothing)
    thresh = jnp.asarray(options.bce_target_thresh, jnp.float32)
    targets = jnp.where(thresh >= 0, (targets > thresh).astype(jnp.float32), targets)
    pos_weight = options.bce_pos_weight
    bce = jnp.where(
        options.bce_sum,
        binary_cross_entropy(logits, targets, sum_classes=True, pos_weight=pos_weight),
        binary_cross_entropy(logits, targets, pos_weight=pos_weight),
    )
    return jnp.where(options.bce, bce, ce)


def augment_batch(
    key: jax.Array,
    images: jax.Array,
    options: StepOptions,
    erasing: RandomErasing | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The batch the model trains on and the weight ``lam`` of its own labels: ``images``
    randomly erased (timm's ``RandomErasing``, a per-image transform), then mixed (timm's
    ``Mixup``, on the batch), as timm's loader and loop order them; draws from ``key``."""
    if erasing is not None:
        images = random_erasing(jax.random.fold_in(key, 1), images, erasing)
    lam = jnp.ones((), jnp.float32)
    if images.shape[0] % 2 == 0:  # timm mixes even batches only (`TrainConfig` checks)
        mixing = MixupConfig(options.mixup, options.cutmix, options.mix_prob, options.switch_prob)
        draw = draw_mix(jax.random.split(key)[0], images.shape[1], images.shape[2], mixing)
        images, lam = mix_images(images, draw), draw.lam
    return images, lam


def _micro_step(
    state: TrainState,
    batch_stats: Any,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    options: StepOptions,
    scale: float,
    erasing: RandomErasing | None = None,
) -> tuple[Any, Any, jax.Array, jax.Array]:
    """Gradients wrt ``state.params`` of the loss over ``scale`` on one (micro-)batch:
    ``(grads, batch_stats, loss, logits)``, BatchNorm in train mode updating ``batch_stats``,
    on the batch ``augment_batch`` makes of the images."""
    dropout_key = jax.random.split(key)[1]
    images, lam = augment_batch(key, images, options, erasing)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, jax.Array, Any]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        loss = train_loss(logits, labels, lam, options)
        # timm divides each micro-batch's loss by the accumulation count before backward.
        scaled = loss / scale if scale != 1 else loss
        return scaled, (loss, logits, updates["batch_stats"])

    (_, (loss, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    return grads, batch_stats, loss, logits


def _micro_batch(x: jax.Array, count: int, index: jax.typing.ArrayLike) -> jax.Array:
    """Micro-batch ``index`` of ``count``: rows ``index, index + count, ...`` of ``x``. It
    spans every device's rows of the sharded batch, so no data moves between devices."""
    rows = x.reshape(x.shape[0] // count, count, *x.shape[1:])
    return jax.lax.dynamic_index_in_dim(rows, index, axis=1, keepdims=False)


def step_key(step: jax.typing.ArrayLike, options: StepOptions) -> jax.Array:
    """The randomness of update ``step`` (mixup's draws, dropout's masks), from the options'
    seed and the step alone, so a resumed run draws what the uninterrupted one drew."""
    return jax.random.fold_in(jax.random.key(jnp.asarray(options.seed, jnp.uint32)), step)


@flax.struct.dataclass
class _Accumulated:
    """The micro-batches run so far: their summed gradients, the BatchNorm statistics after
    the last, and their summed metrics."""

    grads: Any
    batch_stats: Any
    metrics: dict[str, jax.Array]


def _start(state: TrainState) -> _Accumulated:
    zero = jnp.zeros((), jnp.float32)
    grads = jax.tree.map(jnp.zeros_like, state.params)
    metrics = {"loss_sum": zero, "correct": zero, "count": zero}
    return _Accumulated(grads, state.batch_stats, metrics)


def _accumulate(
    state: TrainState,
    acc: _Accumulated,
    images: jax.Array,
    labels: jax.Array,
    index: jax.typing.ArrayLike,
    options: StepOptions,
    count: int,
    erasing: RandomErasing | None = None,
) -> _Accumulated:
    """``acc`` with micro-batch ``index`` of ``count`` added, as timm's ``--grad-accum-steps``
    runs it: its own mixup and dropout draws, the BatchNorm statistics carried on, its loss
    divided by ``count``."""
    x, y = _micro_batch(images, count, index), _micro_batch(labels, count, index)
    key = jax.random.fold_in(step_key(state.step, options), index)
    grads, batch_stats, loss, logits = _micro_step(
        state, acc.batch_stats, x, y, key, options, count, erasing
    )
    counted = batch_metrics(logits, y, jnp.ones(y.shape, jnp.float32), loss * y.shape[0])
    return _Accumulated(
        jax.tree.map(jnp.add, acc.grads, grads),
        batch_stats,
        jax.tree.map(jnp.add, acc.metrics, counted),
    )


def _update(
    state: TrainState, grads: Any, batch_stats: Any, loss: jax.Array, metrics: dict[str, jax.Array]
) -> tuple[TrainState, dict[str, jax.Array]]:
    """The optimizer's update with ``grads``, then the EMA's (timm's ``ModelEmaV3`` after each
    update, its step the update count)."""
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    ema = state.ema
    if state.ema_config is not None:
        ema = state.ema_config.update(
            state.ema, {"params": params, "batch_stats": batch_stats}, step
        )
    new_state = state.replace(
        step=step, params=params, batch_stats=batch_stats, opt_state=opt_state, ema=ema
    )
    return new_state, {"loss": loss, **metrics}


def _finish(state: TrainState, acc: _Accumulated) -> tuple[TrainState, dict[str, jax.Array]]:
    loss = acc.metrics["loss_sum"] / acc.metrics["count"]
    return _update(state, acc.grads, acc.batch_stats, loss, acc.metrics)


def as_options(options: StepOptions | jax.typing.ArrayLike) -> StepOptions:
    """``options``, or a bare label smoothing as ``StepOptions``."""
    return options if isinstance(options, StepOptions) else StepOptions(label_smoothing=options)


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    options: StepOptions | jax.typing.ArrayLike = 0.0,
    *,
    grad_accum_steps: int = 1,
    erasing: RandomErasing | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on a batch; BatchNorm in train mode (batch statistics).

    ``options`` is a ``StepOptions`` (label smoothing, mixup/cutmix, the loss), or just the
    label smoothing. With ``grad_accum_steps=N`` (static) the batch is N micro-batches (rows
    ``j::N``), run one after the other as timm's ``--grad-accum-steps`` runs them: each
    updates the BatchNorm statistics and draws its own mixup and dropout, its loss is divided
    by N, the gradients are summed and the optimizer updates once. Jitted whole, this is one
    XLA program, which holds every micro-batch's activations at once on XLA:CPU (measured: 4
    micro-batches of 64 take the temporary memory of one batch of 256); ``compile_steps``
    runs each micro-batch as its own program instead, in the memory of one. With an EMA in
    the state (``TrainState.create(..., ema=EmaConfig(...))``) it is updated after the
    optimizer. ``erasing`` (static): timm's random erasing of each (micro-)batch's images,
    before mixup (``seres_jax.random_erasing``). Returns the new state and the batch's
    metrics: ``loss``, the mean loss the step minimised; ``loss_sum``, that mean times the
    batch size; ``correct`` (against the unmixed labels) and ``count``.
    """
    options = as_options(options)
    if images.shape[0] % grad_accum_steps:
        raise ValueError(
            f"batch of {images.shape[0]} is not {grad_accum_steps} equal micro-batches"
        )
    if grad_accum_steps == 1:
        grads, batch_stats, loss, logits = _micro_step(
            state,
            state.batch_stats,
            images,
            labels,
            step_key(state.step, options),
            options,
            1,
            erasing,
        )
        weights = jnp.ones(labels.shape, jnp.float32)
        metrics = batch_metrics(logits, labels, weights, loss * labels.shape[0])
        return _update(state, grads, batch_stats, loss, metrics)
    acc = _start(state)
    for index in range(grad_accum_steps):
        acc = _accumulate(state, acc, images, labels, index, options, grad_accum_steps, erasing)
    return _finish(state, acc)


def eval_step(
    state: TrainState, images: jax.Array, labels: jax.Array, weights: jax.Array
) -> dict[str, jax.Array]:
    """Sums of loss, correct top-1 and top-5 predictions over the examples with weight 1
    (padding has 0)."""
    return eval_metrics(state.apply_fn(state.variables, images, train=False), labels, weights)


def eval_metrics(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
    """``eval_step``'s sums from the model's ``logits``."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    _, top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))
    correct5 = jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * weights)
    return {**batch_metrics(logits, labels, weights, jnp.sum(nll * weights)), "correct5": correct5}


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


def _accumulating_train(
    mesh: Mesh,
    grad_accum_steps: int,
    erasing: RandomErasing | None,
    replicated: NamedSharding,
    batch: NamedSharding,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """``train_step(..., grad_accum_steps)`` as one program per micro-batch and one for the
    update, so that one micro-batch's activations are alive at a time on any backend (timm's
    loop too runs them one by one); the gradient sums are donated from one to the next."""
    platform = mesh.devices.flat[0].platform
    start = compiler.jit(_start, platform=platform, out_shardings=replicated)
    accumulate = compiler.jit(
        functools.partial(_accumulate, count=grad_accum_steps, erasing=erasing),
        platform=platform,
        in_shardings=(replicated, replicated, batch, batch, replicated, replicated),
        out_shardings=replicated,
        donate_argnums=(1,),
    )
    finish = compiler.jit(
        _finish,
        platform=platform,
        in_shardings=(replicated, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    # The micro-batch indices live on the devices: no host-to-device copy inside the loop.
    indices = [jax.device_put(np.int32(j), replicated) for j in range(grad_accum_steps)]

    def train(
        state: TrainState,
        images: jax.Array,
        labels: jax.Array,
        options: StepOptions | jax.typing.ArrayLike = 0.0,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        options = as_options(options)
        if images.shape[0] % grad_accum_steps:
            raise ValueError(
                f"batch of {images.shape[0]} is not {grad_accum_steps} equal micro-batches"
            )
        acc = start(state)
        for index in indices:
            acc = accumulate(state, acc, images, labels, index, options)
        return finish(state, acc)

    return train


@functools.cache
def compile_steps(
    mesh: Mesh, grad_accum_steps: int = 1, erasing: RandomErasing | None = None
) -> CompiledSteps:
    """Jit the steps for ``mesh`` (once: the result is cached per mesh, accumulation count and
    erasing), compiled with ``seres_jax.compiler``'s options for the mesh's platform; the train
    step accumulates ``grad_accum_steps`` micro-batches per update (see ``train_step``), each
    micro-batch its own program, so that accumulation needs the memory of one, and erases
    with ``erasing``."""
    replicated = NamedSharding(mesh, PartitionSpec())
    batch = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    platform = mesh.devices.flat[0].platform
    if grad_accum_steps > 1:
        train = _accumulating_train(mesh, grad_accum_steps, erasing, replicated, batch)
    else:
        train = compiler.jit(
            functools.partial(train_step, erasing=erasing),
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
