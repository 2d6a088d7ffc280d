"""The train state: ``TrainState`` (params, BatchNorm statistics, optimizer state, step) and
``init_variables`` (a model's seeded initial weights).

* **State.** ``TrainState.create(apply_fn, variables, tx)`` holds params, BatchNorm
  statistics, optimizer state and the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax


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


def init_variables(model: nn.Module, image_shape: tuple[int, ...], seed: int) -> Any:
    """Initialise ``model`` for NHWC images of ``image_shape`` on the host devices.

    Uses the ``rbg`` PRNG for initialisation only: the model draws one random tensor per
    parameter, and XLA's CPU compile time for that many threefry calls is several seconds.
    """
    key = jax.random.key(seed, impl="rbg")
    return jax.jit(model.init)(key, jnp.zeros((1, *image_shape), jnp.float32))
