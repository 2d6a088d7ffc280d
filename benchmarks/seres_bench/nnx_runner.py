"""The JAX NNX implementation (``jax_nnx``): the Flax NNX twin of the model
(``seres_jax.nnx.registry.create_model``) trained by ``seres_jax.nnx.train.compile_steps``'s
step (model and ``nnx.Optimizer`` passed as pytrees and donated, compiled with
``seres_jax.compiler``'s options) and run for inference in eval mode by
``seres_jax.compiler.jit(lambda model, x: model(x))``: what a user of ``seres_jax.nnx`` runs.
The same spec, recipe and measured quantities as ``jax_runner`` (linen), so the two compare
one to one; with ``spec["shard"]`` the batch is split over every local device of the
platform (model and optimizer replicated, ``compile_steps``' layout), else one device.

timm's recipe pieces (``spec["ema"]``, ``spec["grad_accum_steps"]``) are linen-only
(``seres_jax.train``): asked of this runner they raise."""

from __future__ import annotations

import functools
from typing import Any

from .configs import LR, MOMENTUM, NESTEROV, WEIGHT_DECAY
from .jax_runner import _flops, device_peak_mib, jax_info
from .measure import Runners, synthetic_batch


def nnx_runners(spec: dict[str, Any]) -> Runners:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from seres_jax import compiler, optim
    from seres_jax.nnx.registry import create_model
    from seres_jax.nnx.train import compile_steps
    from seres_jax.registry import model_config
    from seres_jax.train import make_mesh

    for key in ("ema", "grad_accum_steps"):
        if spec.get(key) not in (None, 1):
            raise ValueError(f"jax_nnx does not run {key}={spec[key]!r}: a linen-only recipe piece")
    device = jax.devices(spec["device"])[0]
    dtype = jnp.bfloat16 if spec["bf16"] else None  # bf16 compute, float32 params and stats
    arch_spec, arguments = model_config(spec["arch"])
    in_ch = arguments[arch_spec.in_channels_arg]
    images, labels = synthetic_batch(spec, in_ch, arguments["num_classes"])
    with jax.default_device(device):
        model = create_model(spec["arch"], rngs=nnx.Rngs(spec["seed"]), dtype=dtype)
        tx = optim.sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV)
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    params = sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    devices = [device]
    if spec.get("shard"):
        devices = jax.local_devices(backend=spec["device"])
        if spec["batch"] % len(devices):
            raise ValueError(f"batch {spec['batch']} does not split over {len(devices)} devices")
    steps = compile_steps(make_mesh(devices))
    # Every leaf committed to the mesh (the optimizer's step counter is made uncommitted): else
    # the second call, getting committed arrays back, compiles again, in the warm-up.
    model, optimizer = steps.place(model, optimizer)
    x, y = jax.device_put(images, steps.batch), jax.device_put(labels, steps.batch)
    # The label smoothing (the step's options), on the devices once, not sent every call.
    options = jax.device_put(np.float32(0.0), steps.replicated)

    platform = device.platform
    infer_fn = compiler.jit(lambda model, images: model(images), platform=platform)

    def train(n: int) -> None:
        nonlocal model, optimizer
        model.train()
        metrics = None
        for _ in range(n):
            model, optimizer, metrics = steps.train(model, optimizer, x, y, options)
        jax.block_until_ready((model, optimizer, metrics))

    def infer(n: int) -> None:
        # Eval mode is part of the model's pytree structure: infer_fn compiles for it once.
        model.eval()
        jax.block_until_ready([infer_fn(model, x) for _ in range(n)])

    def flops() -> dict[str, float | None]:
        # The steps are compiled by now: lowering and compiling again hits JAX's caches.
        model.train()
        train_flops = _flops(steps.train.lower(model, optimizer, x, y, options))
        model.eval()
        return {"train": train_flops, "infer": _flops(infer_fn.lower(model, x))}

    info = {
        # Merged into the results' JAX settings with linen's info: the key names NNX.
        "nnx_steps": "seres_jax.nnx.train.compile_steps (Flax tree mode)",
        **jax_info(device, len(devices)),
    }
    precision = "bf16" if dtype else "fp32"
    peak = functools.partial(device_peak_mib, device)
    return Runners(train, infer, peak, params, precision, info, flops)
