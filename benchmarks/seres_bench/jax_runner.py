"""The JAX implementation: the Flax model's training step (``seres_jax.train.train_step`` with
``seres_jax.optim.sgd``, state donated) and eval-mode forward, compiled as seres compiles its own
steps (``seres_jax.compiler.jit``). With ``spec["shard"]`` the batch is split over every local
device of the platform (state replicated, as ``seres train`` lays it out); else one device.

timm's recipe pieces, off unless the spec asks (the recipe-overhead section): ``spec["ema"]``,
``seres_jax.ema.EmaConfig``'s keywords, keeps a model EMA in the state (updated inside the
step); ``spec["grad_accum_steps"]`` scans the batch as that many micro-batches; stochastic depth
is the architecture string's ``drop_path_rate``."""

from __future__ import annotations

import functools
import os
from typing import Any

from .configs import LR, MOMENTUM, NESTEROV, WEIGHT_DECAY
from .measure import MIB, Runners, synthetic_batch


def jax_runners(spec: dict[str, Any]) -> Runners:
    import jax
    import jax.numpy as jnp

    from seres_jax import compiler, optim
    from seres_jax.ema import EmaConfig
    from seres_jax.registry import build_flax, model_config
    from seres_jax.train import TrainState, init_variables, train_step

    device = jax.devices(spec["device"])[0]
    dtype = jnp.bfloat16 if spec["bf16"] else None  # bf16 compute, float32 params and stats
    model = build_flax(spec["arch"], dtype=dtype)
    arch_spec, arguments = model_config(spec["arch"])
    in_ch = arguments[arch_spec.in_channels_arg]
    images, labels = synthetic_batch(spec, in_ch, arguments["num_classes"])
    with jax.default_device(device):
        size = spec["image_size"]
        variables = init_variables(model, (size, size, in_ch), spec["seed"])
        variables = jax.device_put(variables, device)
        tx = optim.sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV)
        ema = EmaConfig(**spec["ema"]) if spec.get("ema") else None
        state = TrainState.create(model.apply, variables, tx, ema=ema)
        # Commit every leaf to the device (the step counter and optimizer counters are made
        # uncommitted): else the step's second call, getting committed arrays back, compiles
        # again, and that compilation lands in the warm-up instead of the first call.
        state = jax.device_put(state, device)
    del variables  # the state holds them; nothing else may keep donated buffers alive
    devices = 1
    if spec.get("shard"):
        from jax.sharding import NamedSharding, PartitionSpec

        from seres_jax.train import make_mesh

        mesh = make_mesh(jax.local_devices(backend=spec["device"]))
        devices = mesh.size
        if spec["batch"] % devices:
            raise ValueError(f"batch {spec['batch']} does not split over {devices} devices")
        state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
        batch_place: Any = NamedSharding(mesh, PartitionSpec(*mesh.axis_names))
    else:
        batch_place = device
    x, y = jax.device_put(images, batch_place), jax.device_put(labels, batch_place)
    params = sum(int(p.size) for p in jax.tree.leaves(state.params))

    # The state is donated: XLA updates parameters and optimizer state in place. Compiled as
    # seres compiles its own steps (seres_jax.compiler: XLA options on the CPU).
    platform = device.platform
    accum = int(spec.get("grad_accum_steps", 1))
    step_fn = functools.partial(train_step, grad_accum_steps=accum) if accum > 1 else train_step
    train_fn = compiler.jit(step_fn, platform=platform, donate_argnums=0)
    infer_fn = compiler.jit(
        lambda v, images: model.apply(v, images, train=False), platform=platform
    )

    def train(n: int) -> None:
        nonlocal state
        metrics = None
        for _ in range(n):
            state, metrics = train_fn(state, x, y)
        jax.block_until_ready((state, metrics))

    def infer(n: int) -> None:
        # Keep every output and wait for all of them: the calls are independent, so waiting
        # for the last alone would not prove the others finished.
        variables = state.variables
        jax.block_until_ready([infer_fn(variables, x) for _ in range(n)])

    def flops() -> dict[str, float | None]:
        # The steps are compiled by now: lowering and compiling again hits JAX's caches.
        return {
            "train": _flops(train_fn.lower(state, x, y)),
            "infer": _flops(infer_fn.lower(state.variables, x)),
        }

    precision = "bf16" if dtype else "fp32"
    peak = functools.partial(device_peak_mib, device)
    return Runners(train, infer, peak, params, precision, jax_info(device, devices), flops)


def device_peak_mib(device: Any) -> float | None:
    """The device's peak memory in use (MiB), where its backend reports one (the CPU's not)."""
    try:
        stats = device.memory_stats()  # None on the CPU backend
    except Exception:
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return float(stats["peak_bytes_in_use"]) / MIB


def jax_info(device: Any, devices: int) -> dict[str, Any]:
    """What the results' JAX settings record of a runner: the device, how many the step uses,
    the backend, the precision flags and the XLA options it compiles with."""
    import jax

    from seres_jax import compiler

    return {
        "device": str(device),
        "devices": devices,
        "device_kind": device.device_kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        # jax's Config declares its flags at run time, out of a type checker's sight.
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,  # type: ignore[attr-defined]
        "jax_enable_x64": bool(jax.config.jax_enable_x64),  # type: ignore[attr-defined]
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "compiler_options": compiler.compiler_options(device.platform),
        "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", ""),
    }


def _flops(lowered: Any) -> float | None:
    """FLOPs of one call from XLA's cost analysis of the compiled program (per device)."""
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, list):  # older jaxlibs: one entry per program
        cost = cost[0] if cost else None
    value = (cost or {}).get("flops")
    return float(value) if value is not None else None
