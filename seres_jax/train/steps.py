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
  first on every host (see the README for a TPU pod slice); each process then reads its own
  share of the records and feeds its part of every global batch (``seres_jax.data.pipeline``).
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
from ..losses import cross_entropy
from ..mixup import MixupConfig, draw_mix, mix_images
from .config import TrainConfig
from .state import TrainState

DATA_AXIS = "data"


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
