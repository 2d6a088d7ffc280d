"""Training NNX models with NNX's own tools: ``train_step`` and ``eval_step`` on a model and
its ``nnx.Optimizer``, and ``compile_steps(mesh)``, the two jitted for a device mesh.

* **Optimizer.** ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` with any of seres' optax
  optimizers (``seres_jax.optim``: the torch-equal SGD and AdamW, timm's LAMB, LARS,
  RMSpropTF, ``recipe_optimizer``); the step's randomness (mixup) comes from the options' seed
  and ``optimizer.step``, dropout's and stochastic depth's from the model's own ``dropout``
  streams.
* **Loss and metrics** are the linen steps' (``seres_jax.train.steps``: ``StepOptions``,
  timm's label smoothing, mixup/cutmix and binary cross-entropy), so both APIs minimise the
  same function of the same batch.
* **Mode.** The steps run the model in the mode it is in, NNX's way: ``model.train()`` before
  training, ``model.eval()`` before evaluating; a step given a model in the wrong mode raises
  when it is traced, never at run time.
* **Devices and speed.** ``compile_steps(mesh)`` jits the steps with ``jax.jit``, passing
  the model and optimizer as pytrees (Flax 0.12's tree mode) and donating them, compiled with
  ``seres_jax.compiler``'s options like the linen steps; ``place`` replicates them over the
  mesh and the batches go in sharded on ``"data"``, so XLA computes BatchNorm's statistics over
  the global batch (PyTorch's ``SyncBatchNorm``), as the linen steps do: 8 devices train as 1.
  Why not ``nnx.jit``: it cannot take XLA compiler options, which on the CPU halves the tiny
  network's training throughput (0.51× linen's), and walks the model's graph on every call
  (9–29 ms of host time; ``nnx.cached_partial`` 2.4–12 ms). Tree mode with seres' options
  compiles linen's program (the same HLO but for one constant, the same temporary memory)
  and runs at 0.98–1.05× linen's throughput (``bench.py --only nnx-design``); its host work
  per call (flattening the modules, 2.8–11 ms) runs while the previous step computes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import compiler
from ..train.steps import (
    DATA_AXIS,
    StepOptions,
    as_options,
    augment_batch,
    batch_metrics,
    eval_metrics,
    step_key,
    train_loss,
)


def _check_mode(model: nnx.Module, train: bool) -> None:
    """Refuse (while tracing) a model whose BatchNorms or dropouts are in the other mode."""
    wrong = [
        ".".join(map(str, path)) or type(model).__name__
        for path, module in nnx.iter_modules(model)
        if getattr(module, "use_running_average", not train) is train
        or getattr(module, "deterministic", not train) is train
    ]
    if wrong:
        want, call = ("train", "model.train()") if train else ("eval", "model.eval()")
        raise ValueError(
            f"the {want} step needs the model in {want} mode (call {call} first); "
            f"in the other mode: {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}"
        )


def train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer[Any],
    images: jax.Array,
    labels: jax.Array,
    options: StepOptions | jax.typing.ArrayLike = 0.0,
) -> dict[str, jax.Array]:
    """One optimizer update of ``model`` (in train mode) on a batch of NHWC ``images``,
    in place: the batch is augmented as ``options`` say (or ``options`` is just the label
    smoothing), BatchNorm normalises with the batch statistics and updates its running ones.
    Returns the metrics of the linen step: ``loss`` (the mean the update minimised),
    ``loss_sum``, ``correct`` and ``count``."""
    _check_mode(model, train=True)
    options = as_options(options)
    images, lam = augment_batch(step_key(optimizer.step[...], options), images, options)

    def loss_fn(model: nnx.Module) -> tuple[jax.Array, jax.Array]:
        logits = model(images)
        return train_loss(logits, labels, lam, options), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    weights = jnp.ones(labels.shape, jnp.float32)
    return {"loss": loss, **batch_metrics(logits, labels, weights, loss * labels.shape[0])}


def eval_step(
    model: nnx.Module, images: jax.Array, labels: jax.Array, weights: jax.Array
) -> dict[str, jax.Array]:
    """Sums of loss, correct top-1 and top-5 predictions of ``model`` (in eval mode) over the
    examples with weight 1 (padding has 0), as the linen ``eval_step``."""
    _check_mode(model, train=False)
    return eval_metrics(model(images), labels, weights)


def _train(
    model: nnx.Module,
    optimizer: nnx.Optimizer[Any],
    images: jax.Array,
    labels: jax.Array,
    options: StepOptions | jax.typing.ArrayLike = 0.0,
) -> tuple[nnx.Module, nnx.Optimizer[Any], dict[str, jax.Array]]:
    metrics = train_step(model, optimizer, images, labels, options)
    return model, optimizer, metrics


@dataclass(frozen=True)
class CompiledSteps:
    """The NNX steps jitted for one mesh, and where their inputs go.

    * ``train(model, optimizer, images, labels, options) -> (model, optimizer, metrics)``:
      ``train_step``; the model and optimizer given are donated (their buffers hold the
      result), so go on with the ones it returns, as with a linen ``TrainState``;
    * ``eval(model, images, labels, weights) -> metrics``: ``eval_step``;
    * ``place(model, optimizer)``: both replicated over the mesh (``replicated``);
    * ``batch``: the sharding of a global batch's images, labels and weights (on ``"data"``).
    """

    train: Callable[..., tuple[nnx.Module, nnx.Optimizer[Any], dict[str, jax.Array]]]
    eval: Callable[..., dict[str, jax.Array]]
    replicated: NamedSharding
    batch: NamedSharding

    def place(self, *nodes: Any) -> Any:
        """Each model or optimizer replicated over the mesh (one node: it, else a tuple)."""
        placed = jax.device_put(nodes, self.replicated)
        return placed[0] if len(placed) == 1 else placed


@functools.cache
def compile_steps(mesh: Mesh) -> CompiledSteps:
    """``train_step`` and ``eval_step`` jitted for ``mesh`` (once per mesh), compiled with
    ``seres_jax.compiler``'s options as the linen steps are, the model and optimizer passed
    as pytrees (Flax's tree mode: no graph walk per call) and donated by the train step."""
    replicated = NamedSharding(mesh, PartitionSpec())
    batch = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    platform = mesh.devices.flat[0].platform
    train = compiler.jit(
        _train,
        platform=platform,
        in_shardings=(replicated, replicated, batch, batch, replicated),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 1),
    )
    evaluate = compiler.jit(
        eval_step,
        platform=platform,
        in_shardings=(replicated, batch, batch, batch),
        out_shardings=replicated,
    )
    return CompiledSteps(train, evaluate, replicated, batch)
