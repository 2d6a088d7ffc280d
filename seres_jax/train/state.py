"""The train state: ``TrainState`` (params, BatchNorm statistics, optimizer state, step) and
``init_variables`` (a model's seeded initial weights).

* **State.** ``TrainState.create(apply_fn, variables, tx)`` holds params, BatchNorm
  statistics, optimizer state and the step; with ``ema=EmaConfig(...)`` also timm's
  ``ModelEmaV3`` of the variables (``ema``), which the train step updates after each update
  and which checkpoints keep like the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from ..ema import EmaConfig, init_ema


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; ``apply_fn``, ``tx`` and ``ema_config`` are
    static. ``ema`` is ``None``, or the EMA of ``variables`` (``params`` and ``batch_stats``).

    A pytree: ``jax.device_put(state, steps.replicated)`` places it for ``compile_steps``'
    functions, and orbax saves and restores it.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Callable[..., Any] = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    ema: Any = None
    ema_config: EmaConfig | None = flax.struct.field(pytree_node=False, default=None)

    @classmethod
    def create(
        cls,
        apply_fn: Callable[..., Any],
        variables: Any,
        tx: optax.GradientTransformation,
        *,
        ema: EmaConfig | None = None,
    ) -> TrainState:
        """Step 0 of training ``variables`` (``params``, and ``batch_stats`` if the model has
        BatchNorm) with ``tx`` (e.g. ``TrainConfig.make_tx``); ``apply_fn`` is the model's
        ``apply``. ``ema``: keep timm's model EMA with these hyper-parameters, starting from
        a copy of ``variables`` (as timm's ``deepcopy``), in float32."""
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            apply_fn=apply_fn,
            tx=tx,
            ema=None
            if ema is None
            else init_ema({"params": params, "batch_stats": batch_stats}, jnp.float32),
            ema_config=ema,
        )

    @property
    def variables(self) -> dict[str, Any]:
        """``params`` and ``batch_stats``, as the model's ``apply`` takes them."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    @property
    def ema_state(self) -> TrainState | None:
        """This state with the EMA weights in place of the trained ones (for evaluating
        them), or ``None`` without an EMA."""
        if self.ema is None:
            return None
        return self.replace(params=self.ema["params"], batch_stats=self.ema["batch_stats"])


def init_variables(model: nn.Module, image_shape: tuple[int, ...], seed: int) -> Any:
    """Initialise ``model`` for NHWC images of ``image_shape`` on the host devices.

    Uses the ``rbg`` PRNG for initialisation only: the model draws one random tensor per
    parameter, and XLA's CPU compile time for that many threefry calls is several seconds.
    """
    key = jax.random.key(seed, impl="rbg")
    return jax.jit(model.init)(key, jnp.zeros((1, *image_shape), jnp.float32))
