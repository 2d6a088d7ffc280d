"""The NNX design section (``bench.py --only nnx-design``): how to jit the Flax NNX training step
(``seres_jax.nnx.train.train_step``), measured against the linen step it must match. Per model
(``NNX_DESIGN_MODELS``) and variant (``NNX_DESIGN_VARIANTS``):

* **linen**: ``seres_jax.train.compile_steps(mesh).train`` (a ``TrainState``, donated), the
  reference;
* **(a)** ``nnx.jit(train_step, donate_argnums=(0, 1))`` called with the model and optimizer:
  Flax's graph mode, which walks the object graph on every call and has no way to pass XLA
  compiler options (XLA's defaults);
* **(b)** the same through ``nnx.cached_partial(jitted, model, optimizer)``, which caches that
  walk;
* **(c)** ``seres_jax.nnx.train.compile_steps(mesh).train``: model and optimizer as pytrees
  (Flax 0.12's tree mode), donated, compiled with ``seres_jax.compiler``'s options;
* **(d)** (c) built with ``SERES_XLA_CPU_OPTIONS=0`` (XLA's defaults), and linen the same way,
  so that graph against tree mode (a, b against d) and the options (c against d) separate.

**What is measured** (one child process per model, every variant in it): each variant's first
call alone (tracing and compilation; the variants in the order listed, JAX's backend started
before), ``warmup`` untimed calls each, then ``rounds`` rounds of one synchronised step of every
variant, the order reversed every other round, so that the machine's load hits them alike. Per
step, the **dispatch time** (the call's wall time until it returns, with the device idle: the
previous step has finished; the host's work per call — graph walk, pytree flattening of the
arguments and unflattening of the results, JAX's dispatch — while the computation runs after
the call returns, asynchronously) and the **step time** (until the results are ready). img/s is
the batch over the median step time. The same rounds time, for linen and (c) alone, training
as a loop runs it (``PIPELINE_CALLS`` calls, then one wait: each call's host work overlaps the
previous step) and inference in eval mode (``INFER_CALLS`` calls of the jitted forward on the
same batch, then one wait: ``jax_runner``'s and ``nnx_runner``'s inference), so that NNX's
throughput against linen's, the issue's goal, is measured in one process, interleaved, on a
machine whose load may change from minute to minute. The compiled steps and forwards
(``lower(...).compile()``, JAX's caches answering): ``memory_analysis()`` temporary, argument
and output bytes, the optimized HLO module's instructions (every computation's, fused ones
included), convolutions and fusions, and XLA's cost analysis. The per-call cost of the
arguments' pytrees (``jax.tree.flatten`` + ``unflatten`` of a ``TrainState`` and of NNX's
``(model, optimizer)``) explains the dispatch times.

``results["nnx_design"]`` carries its own date, command, machine load and versions, so it can
be measured alone and merged into a results file of the other sections."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configs import (
    LR,
    MOMENTUM,
    NESTEROV,
    NNX_DESIGN_MODELS,
    NNX_DESIGN_VARIANTS,
    NNX_GOAL,
    QUICK,
    WEIGHT_DECAY,
)
from .machine import loadavg
from .measure import MIB, synthetic_batch
from .report import _fmt, _ratio, measured_line, section_header, sgd_recipe
from .worker import run_worker, worker_env

# An instruction of an HLO module's text: ``  %name = type op(...)`` (``ROOT`` on the last).
_INSTRUCTION = re.compile(r"^\s+(ROOT\s+)?%?[\w.\-]+ = ")
QUICK_ROUNDS = 2
PYTREE_REPEATS = 20
# Calls per timed sample of the pipelined training step and of inference.
PIPELINE_CALLS = 2
INFER_CALLS = 2
# The pipelined and inference measurements: linen against NNX's (c).
GOAL_VARIANTS = ("linen", "nnx_tree")

# --------------------------------------------------------------------------- the child


@dataclass
class _Variant:
    """One jitted training step, ready to call: ``call()`` runs a step and returns what it
    gives back, ``held()`` what the step updates (to wait for), ``lower()`` the step's
    ``Lowered``, ``options`` the XLA compiler options it was compiled with."""

    call: Callable[[], Any]
    held: Callable[[], Any]
    lower: Callable[[], Any]
    options: dict[str, str] | None


@contextlib.contextmanager
def _xla_defaults(off: bool) -> Iterator[None]:
    """``SERES_XLA_CPU_OPTIONS=0`` while the steps are jitted (``seres_jax.compiler.jit``
    reads it then), if ``off``."""
    from seres_jax.compiler import DISABLE_ENV

    saved = os.environ.get(DISABLE_ENV)
    if off:
        os.environ[DISABLE_ENV] = "0"
    try:
        yield
    finally:
        if off:
            if saved is None:
                del os.environ[DISABLE_ENV]
            else:
                os.environ[DISABLE_ENV] = saved


def _build_variant(name: str, spec: dict[str, Any], images: Any, labels: Any) -> _Variant:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from seres_jax import compiler, optim
    from seres_jax.nnx import train as nnx_train
    from seres_jax.nnx.registry import create_model
    from seres_jax.registry import build_flax
    from seres_jax.train import TrainState, init_variables, make_mesh
    from seres_jax.train import compile_steps as linen_compile_steps

    variant = NNX_DESIGN_VARIANTS[name]
    device = jax.devices(spec["device"])[0]
    platform = device.platform
    mesh = make_mesh([device])
    dtype = jnp.bfloat16 if spec.get("bf16") else None
    tx = optim.sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV)
    box: dict[str, Any] = {}

    if variant.jit == "compile_steps":
        # The options-off twins build the same steps past compile_steps' per-mesh cache.
        off = not variant.seres_options
        with _xla_defaults(off):
            options = compiler.compiler_options(platform)
            if variant.api == "linen":
                make = linen_compile_steps.__wrapped__ if off else linen_compile_steps
            else:
                make = nnx_train.compile_steps.__wrapped__ if off else nnx_train.compile_steps
            steps = make(mesh)
        x, y = jax.device_put(images, steps.batch), jax.device_put(labels, steps.batch)
        smoothing = jax.device_put(np.float32(0.0), steps.replicated)
        with jax.default_device(device):
            if variant.api == "linen":
                model = build_flax(spec["arch"], dtype=dtype)
                size, in_ch = spec["image_size"], images.shape[-1]
                variables = init_variables(model, (size, size, in_ch), spec["seed"])
                state = TrainState.create(model.apply, variables, tx)
                box["state"] = jax.device_put(state, steps.replicated)

                def call() -> Any:
                    box["state"], metrics = steps.train(box["state"], x, y, smoothing)
                    return metrics

                return _Variant(
                    call,
                    lambda: box["state"],
                    lambda: steps.train.lower(box["state"], x, y, smoothing),
                    options,
                )
            nnx_model = create_model(spec["arch"], rngs=nnx.Rngs(spec["seed"]), dtype=dtype)
            optimizer = nnx.Optimizer(nnx_model, tx, wrt=nnx.Param)
        box["state"] = steps.place(nnx_model, optimizer)

        def tree_call() -> Any:
            model, opt = box["state"]
            model, opt, metrics = steps.train(model, opt, x, y, smoothing)
            box["state"] = (model, opt)
            return metrics

        return _Variant(
            tree_call,
            lambda: box["state"],
            lambda: steps.train.lower(*box["state"], x, y, smoothing),
            options,
        )

    # Graph mode: the model and optimizer are updated in place; nnx.jit has no compiler
    # options (XLA's defaults).
    with jax.default_device(device):
        nnx_model = create_model(spec["arch"], rngs=nnx.Rngs(spec["seed"]), dtype=dtype)
        optimizer = nnx.Optimizer(nnx_model, tx, wrt=nnx.Param)
    x, y = jax.device_put(images, device), jax.device_put(labels, device)
    smoothing = jax.device_put(np.float32(0.0), device)
    jitted = nnx.jit(nnx_train.train_step, donate_argnums=(0, 1))
    if variant.jit == "cached_partial":
        cached = nnx.cached_partial(jitted, nnx_model, optimizer)

        def graph_call() -> Any:
            return cached(x, y, smoothing)
    else:

        def graph_call() -> Any:
            return jitted(nnx_model, optimizer, x, y, smoothing)

    return _Variant(
        graph_call,
        lambda: (nnx_model, optimizer),
        lambda: jitted.lower(nnx_model, optimizer, x, y, smoothing),
        None,
    )


def _build_infer(api: str, spec: dict[str, Any], images: Any) -> _Variant:
    """The eval-mode forward of a model of its own (``api``: ``linen`` or ``nnx``), jitted as
    ``jax_runner`` and ``nnx_runner`` jit it (``seres_jax.compiler.jit``)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from seres_jax import compiler
    from seres_jax.nnx.registry import create_model
    from seres_jax.registry import build_flax
    from seres_jax.train import init_variables

    device = jax.devices(spec["device"])[0]
    platform = device.platform
    dtype = jnp.bfloat16 if spec.get("bf16") else None
    x = jax.device_put(images, device)
    options = compiler.compiler_options(platform)
    with jax.default_device(device):
        if api == "linen":
            model = build_flax(spec["arch"], dtype=dtype)
            size, in_ch = spec["image_size"], images.shape[-1]
            variables = init_variables(model, (size, size, in_ch), spec["seed"])
            variables = jax.device_put(variables, device)
            apply = compiler.jit(
                lambda v, images: model.apply(v, images, train=False), platform=platform
            )
            return _Variant(
                lambda: apply(variables, x),
                lambda: variables,
                lambda: apply.lower(variables, x),
                options,
            )
        nnx_model = create_model(spec["arch"], rngs=nnx.Rngs(spec["seed"]), dtype=dtype)
    nnx_model.eval()
    nnx_model = jax.device_put(nnx_model, device)
    forward = compiler.jit(lambda model, images: model(images), platform=platform)
    return _Variant(
        lambda: forward(nnx_model, x),
        lambda: nnx_model,
        lambda: forward.lower(nnx_model, x),
        options,
    )


def _pipelined_s(variant: _Variant, calls: int) -> float:
    """Seconds per call of ``calls`` calls in a row with one wait at the end, as a training
    loop or ``Runners.infer`` runs them (the host's work overlaps the device's)."""
    import jax

    jax.block_until_ready(variant.held())
    start = time.perf_counter()
    outs = [variant.call() for _ in range(calls)]
    jax.block_until_ready((outs, variant.held()))
    return (time.perf_counter() - start) / calls


def compiled_stats(lowered: Any) -> dict[str, Any]:
    """Size of a lowered step once compiled: XLA's memory analysis (bytes), the optimized HLO
    module's text lines, instructions (every computation's), convolutions and fusions, and
    the cost analysis' FLOPs and bytes accessed (per device)."""
    compiled = lowered.compile()
    text = compiled.as_text()
    lines = text.splitlines()
    instructions = [line for line in lines if _INSTRUCTION.match(line)]
    stats: dict[str, Any] = {
        "hlo_lines": len(lines),
        "hlo_instructions": len(instructions),
        "convolutions": sum(" convolution(" in line for line in instructions),
        "fusions": sum(" fusion(" in line for line in instructions),
    }
    memory = compiled.memory_analysis()
    for key in ("temp", "argument", "output", "alias", "generated_code"):
        value = getattr(memory, f"{key}_size_in_bytes", None) if memory is not None else None
        stats[f"{key}_bytes"] = int(value) if value is not None else None
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jaxlibs: one entry per program
        cost = cost[0] if cost else None
    for key, name in (("flops", "flops"), ("bytes accessed", "bytes_accessed")):
        value = (cost or {}).get(key)
        stats[name] = float(value) if value is not None else None
    return stats


def _roundtrip_ms(tree: Any) -> tuple[float, int]:
    """Median ms of ``jax.tree.flatten`` + ``jax.tree.unflatten`` of ``tree`` (what a jitted
    call does to its arguments and results), and its leaf count."""
    import jax

    times = []
    for _ in range(PYTREE_REPEATS):
        start = time.perf_counter()
        leaves, treedef = jax.tree.flatten(tree)
        jax.tree.unflatten(treedef, leaves)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, len(jax.tree.leaves(tree))


def design_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The section's child: every variant of ``spec["variants"]`` on one model (see the
    module docstring); ``{"variants": {name: figures}, "pytree_ms": ..., "params": ...}``."""
    import jax
    import numpy as np
    from flax import nnx

    from seres_jax import compiler
    from seres_jax.registry import model_config

    device = jax.devices(spec["device"])[0]
    # Start the backend and run compiler_options' one-time support check (a compilation)
    # before any first call is timed.
    with jax.default_device(device):
        jax.block_until_ready(jax.jit(lambda v: v + 1)(np.float32(0.0)))
    compiler.compiler_options(device.platform)
    arch_spec, arguments = model_config(spec["arch"])
    in_ch = arguments[arch_spec.in_channels_arg]
    images, labels = synthetic_batch(spec, in_ch, arguments["num_classes"])
    names: list[str] = list(spec["variants"])
    variants = {name: _build_variant(name, spec, images, labels) for name in names}
    infers = {api: _build_infer(api, spec, images) for api in ("linen", "nnx")}
    result: dict[str, Any] = {"variants": {}, "infer": {}, "errors": {}}
    for name, variant in variants.items():
        start = time.perf_counter()
        out = variant.call()
        jax.block_until_ready((out, variant.held()))
        result["variants"][name] = {
            "first_call_s": time.perf_counter() - start,
            "compiler_options": variant.options,
            "step_s": [],
            "dispatch_s": [],
            "pipelined_s": [],
        }
    for api, variant in infers.items():
        start = time.perf_counter()
        jax.block_until_ready(variant.call())
        result["infer"][api] = {
            "first_call_s": time.perf_counter() - start,
            "compiler_options": variant.options,
            "call_s": [],
        }
    for variant in [*variants.values(), *infers.values()]:
        for _ in range(spec["warmup"]):
            jax.block_until_ready((variant.call(), variant.held()))

    def synchronised(name: str) -> None:
        variant = variants[name]
        jax.block_until_ready(variant.held())
        start = time.perf_counter()
        out = variant.call()
        returned = time.perf_counter()
        jax.block_until_ready((out, variant.held()))
        done = time.perf_counter()
        result["variants"][name]["step_s"].append(done - start)
        result["variants"][name]["dispatch_s"].append(returned - start)

    def pipelined(name: str) -> None:
        seconds = _pipelined_s(variants[name], PIPELINE_CALLS)
        result["variants"][name]["pipelined_s"].append(seconds)

    def inference(api: str) -> None:
        result["infer"][api]["call_s"].append(_pipelined_s(infers[api], INFER_CALLS))

    measurements: list[Callable[[], None]] = [
        *(functools.partial(synchronised, name) for name in names),
        *(functools.partial(pipelined, name) for name in GOAL_VARIANTS if name in variants),
        *(functools.partial(inference, api) for api in infers),
    ]
    for round_index in range(spec["rounds"]):
        for measurement in measurements if round_index % 2 == 0 else measurements[::-1]:
            measurement()
    targets = [(name, result["variants"][name], v) for name, v in variants.items()]
    targets += [(f"infer {api}", result["infer"][api], v) for api, v in infers.items()]
    for key, figures, variant in targets:
        try:
            start = time.perf_counter()
            figures["compiled"] = compiled_stats(variant.lower())
            figures["compiled_stats_s"] = time.perf_counter() - start
        except Exception as err:  # a backend without memory or cost analysis
            result["errors"][f"{key} compiled"] = f"{type(err).__name__}: {err}"[:500]
    pytree: dict[str, Any] = {}
    for name, variant in variants.items():
        api = NNX_DESIGN_VARIANTS[name].api
        key = "linen_train_state" if api == "linen" else "nnx_model_optimizer"
        if key not in pytree and NNX_DESIGN_VARIANTS[name].jit == "compile_steps":
            ms, leaves = _roundtrip_ms(variant.held())
            pytree[key] = {"ms": ms, "leaves": leaves}
    result["pytree_ms"] = pytree
    for name, variant in variants.items():
        if NNX_DESIGN_VARIANTS[name].api == "nnx":
            model = variant.held()[0]
            result["params"] = sum(
                int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param))
            )
            break
    return result


# --------------------------------------------------------------------------- results


def variant_names(device: str) -> list[str]:
    """The variants measured on ``device``: off the CPU seres passes no XLA options, so the
    options-off twins would repeat their originals and are left out."""
    return [
        name
        for name, variant in NNX_DESIGN_VARIANTS.items()
        if device == "cpu" or variant.seres_options or variant.jit != "compile_steps"
    ]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _img_s(batch: int, samples: list[float] | None) -> float | None:
    median = _median(samples or [])
    return batch / median if median else None


def finish_model(entry: dict[str, Any], result: dict[str, Any]) -> None:
    """A child's answer into the model's entry: medians, images/s, the ratios to linen
    (compiled with seres' options) and to the linen step compiled with the same options, and
    (c) against linen in the three measures of the goal (``entry["goal"]``)."""
    entry["run"] = result
    if "fatal" in result:
        entry["errors"]["child"] = result["fatal"]
        return
    entry["errors"].update(result.get("errors", {}))
    entry["params"] = result.get("params")
    entry["pytree_ms"] = result.get("pytree_ms", {})
    batch = entry["batch"]
    for name, got in result["variants"].items():
        entry["variants"][name] = {
            "label": NNX_DESIGN_VARIANTS[name].label,
            "compiler_options": got["compiler_options"],
            "first_call_s": got["first_call_s"],
            "step_s": _median(got["step_s"]),
            "img_s": _img_s(batch, got["step_s"]),
            "pipelined_img_s": _img_s(batch, got.get("pipelined_s")),
            "dispatch_ms": _ms(_median(got["dispatch_s"])),
            "dispatch_min_ms": _ms(min(got["dispatch_s"], default=None)),
            "compiled": got.get("compiled"),
        }
    for api, got in result.get("infer", {}).items():
        entry["infer"][api] = {
            "compiler_options": got["compiler_options"],
            "first_call_s": got["first_call_s"],
            "img_s": _img_s(batch, got["call_s"]),
            "compiled": got.get("compiled"),
        }
    linen = entry["variants"].get("linen", {})
    for variant in entry["variants"].values():
        variant["vs_linen"] = _ratio(variant["img_s"], linen.get("img_s"))
        same = [
            v
            for n, v in entry["variants"].items()
            if NNX_DESIGN_VARIANTS[n].api == "linen"
            and v["compiler_options"] == variant["compiler_options"]
        ]
        variant["vs_linen_same_options"] = _ratio(
            variant["img_s"], same[0]["img_s"] if same else None
        )
    tree = entry["variants"].get("nnx_tree", {})
    infer = entry["infer"]
    for measure, a, b in (
        ("train_synchronised", linen.get("img_s"), tree.get("img_s")),
        ("train_pipelined", linen.get("pipelined_img_s"), tree.get("pipelined_img_s")),
        ("infer", infer.get("linen", {}).get("img_s"), infer.get("nnx", {}).get("img_s")),
    ):
        entry["goal"][measure] = {"linen": a, "nnx": b, "ratio": _ratio(b, a)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _same_size(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """Whether two compiled programs have the same size (bytes, convolutions; instructions)."""
    if not a or not b:
        return "?"
    same = all(a[k] == b[k] for k in ("temp_bytes", "argument_bytes", "convolutions"))
    delta = a["hlo_instructions"] - b["hlo_instructions"]
    return (
        f"temp and argument bytes and convolutions {'the same' if same else 'differ'}, HLO "
        f"instructions {delta:+d} ({a['hlo_instructions']:,} against {b['hlo_instructions']:,})"
    )


GOAL_MEASURES = {
    "train_synchronised": "train, one synchronised step",
    "train_pipelined": f"train, {PIPELINE_CALLS} calls then one wait (a training loop)",
    "infer": f"inference (eval mode), {INFER_CALLS} calls then one wait",
}
GOAL_SHORT = {
    "train_synchronised": "train (synchronised)",
    "train_pipelined": "train (loop)",
    "infer": "inference",
}


# The goal's measures of throughput: training as a loop runs it, and inference. A single
# synchronised step is latency, shown for what it tells: the host's work of a call, which a
# loop overlaps with the previous step, adds to it in full.
THROUGHPUT_MEASURES = ("train_pipelined", "infer")


def goal_status(entry: dict[str, Any]) -> str:
    """(c) against linen in each measure, the throughput goal (``NNX_GOAL`` in each of
    ``THROUGHPUT_MEASURES``), and the compiled steps' sizes."""
    ratios = {m: g["ratio"] for m, g in entry.get("goal", {}).items() if g["ratio"] is not None}
    if not ratios:
        return ""
    throughput = [ratios[m] for m in THROUGHPUT_MEASURES if m in ratios]
    verdict = "met" if throughput and min(throughput) >= NNX_GOAL else "not met"
    parts = ", ".join(f"{GOAL_SHORT[m]} {r:.3f}×" for m, r in ratios.items())
    text = f"(c) ÷ linen: {parts} (throughput goal ≥ {NNX_GOAL:g}×, loop and inference: {verdict})"
    tree, linen = entry["variants"].get("nnx_tree", {}), entry["variants"].get("linen", {})
    text += "; compiled train step: " + _same_size(tree.get("compiled"), linen.get("compiled"))
    infer = entry.get("infer", {})
    if infer:
        text += "; compiled inference: " + _same_size(
            infer.get("nnx", {}).get("compiled"), infer.get("linen", {}).get("compiled")
        )
    return text


# --------------------------------------------------------------------------- Markdown


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / MIB:,.1f}"


def _int(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def nnx_design_markdown(results: dict[str, Any]) -> str:
    """The report's NNX design section (empty if it did not run)."""
    section = results.get("nnx_design")
    if not section:
        return ""
    s = section["settings"]
    lines = [
        "",
        "## NNX: how to jit the training step",
        "",
        measured_line(section),
        "",
        "`seres_jax.nnx.train.train_step` (SGD as above, float32) jitted four ways against the "
        "linen step `seres_jax.train.compile_steps`: (a) Flax's graph mode `nnx.jit`, which "
        "walks the model's object graph every call and takes no XLA compiler options; (b) the "
        "same through `nnx.cached_partial`; (c) seres' `seres_jax.nnx.train.compile_steps` "
        "(tree mode: model and optimizer as pytrees, donated, seres' XLA options); (d) (c) "
        "built with `SERES_XLA_CPU_OPTIONS=0`, XLA's defaults, as (a) and (b) are, against "
        "linen built the same way. One child process per model holds every variant: each "
        f"variant's first call alone (compilation included), {s['warmup']} warm-up call(s) "
        "each, then rounds of one synchronised step of every variant, the order reversed every "
        "other round. step s: median; img/s: batch ÷ median step; ÷ linen: against linen with "
        "seres' options, and against linen compiled with the same options as the variant. "
        "dispatch ms: the call's wall time until it returns with the device idle (median / "
        "fastest): the host's work per call (graph walk, pytree flattening of the arguments and "
        "unflattening of the results, JAX's dispatch); the step computes after the call "
        "returns. Compiled step (`lower().compile()`): `memory_analysis()` temporary and "
        "argument MiB, the optimized HLO module's instructions (fused computations included), "
        "convolutions and fusions.",
        "",
        "| model | variant | XLA options | step s | img/s | ÷ linen | ÷ linen, same options "
        "| first call s | dispatch ms | temp MiB | argument MiB | HLO instructions "
        "| convolutions | fusions |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    notes = []
    goal_rows: list[str] = []
    for name, entry in section["models"].items():
        size = entry["image_size"]
        params = f"{entry['params'] / 1e6:.2f} M params" if entry.get("params") else "? params"
        measured = entry.get("measured", {})
        when = measured.get("created")
        label = (
            f"{name}: `{entry['arch']}` ({size}×{size}, batch {entry['batch']}, "
            f"{entry['rounds']} rounds, {params}"
            + (f"; measured {when}" if when and when != section["created"] else "")
            + ")"
        )
        goal_rows += [
            f"| {name} | {GOAL_MEASURES[measure]} | {_fmt(got['linen'], 'img_s')} | "
            f"{_fmt(got['nnx'], 'img_s')} | {_fmt(got['ratio'], 'ratio')} |"
            for measure, got in entry.get("goal", {}).items()
        ]
        for variant in entry["variants"].values():
            compiled = variant.get("compiled") or {}
            dispatch = (
                "–"
                if variant["dispatch_ms"] is None
                else f"{variant['dispatch_ms']:.1f} / {variant['dispatch_min_ms']:.1f}"
            )
            cells = [
                variant["label"],
                "seres" if variant["compiler_options"] else "XLA defaults",
                "–" if variant["step_s"] is None else f"{variant['step_s']:.3f}",
                _fmt(variant["img_s"], "img_s"),
                _fmt(variant["vs_linen"], "ratio"),
                _fmt(variant["vs_linen_same_options"], "ratio"),
                _fmt(variant["first_call_s"], "s"),
                dispatch,
                _mib(compiled.get("temp_bytes")),
                _mib(compiled.get("argument_bytes")),
                _int(compiled.get("hlo_instructions")),
                _int(compiled.get("convolutions")),
                _int(compiled.get("fusions")),
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            label = ""
        pytree = entry.get("pytree_ms", {})
        if pytree:
            parts = []
            for key, what in (
                ("linen_train_state", "linen's `TrainState`"),
                ("nnx_model_optimizer", "NNX's `(model, optimizer)`"),
            ):
                if key in pytree:
                    got = pytree[key]
                    parts.append(f"{what} {got['ms']:.2f} ms ({got['leaves']} leaves)")
            notes.append(f"{name}: pytree flatten + unflatten per call: " + ", ".join(parts))
        status = goal_status(entry)
        if status:
            notes.append(f"{name}: {status}")
        for key, error in entry["errors"].items():
            first_line = error.splitlines()[0] if error else ""
            notes.append(f"{name} / {key}: error: {first_line[:160]}")
    if goal_rows:
        lines += [
            "",
            f"(c) against linen, measured in the same rounds: the synchronised step above, the "
            "training step as a loop runs it (the host's work of a call overlapping the previous "
            "step), and inference (models of their own in eval mode, each jitted forward as the "
            "`jax` and `jax_nnx` runners jit it). The goal, ≥ "
            f"{NNX_GOAL:g}× in throughput, is the loop's and inference's; the synchronised step "
            "adds the host's work per call in full.",
            "",
            "| model | measure | linen img/s | NNX (c) img/s | NNX ÷ linen |",
            "| --- | --- | ---: | ---: | ---: |",
            *goal_rows,
        ]
    notes += section.get("notes", [])
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the run


def empty_model_entry(name: str, image_size: int, batch: int, rounds: int) -> dict[str, Any]:
    model = NNX_DESIGN_MODELS[name]
    return {
        "arch": model.arch,
        "description": model.description,
        "image_size": image_size,
        "batch": batch,
        "rounds": rounds,
        "params": None,
        "variants": {},
        "infer": {},
        "goal": {},
        "pytree_ms": {},
        "errors": {},
    }


def run_nnx_design(
    results: dict[str, Any],
    *,
    models: list[str],
    device: str,
    bf16: bool,
    quick: bool,
    warmup: int,
    rounds: int | None,
    seed: int,
    timeout: float,
    tmp: Path,
    log: Callable[[str], None],
) -> None:
    """Every model's variants, one child each, into ``results["nnx_design"]``."""
    names = variant_names(device)
    section: dict[str, Any] = {
        **section_header(),
        "settings": {
            "device": device,
            "bf16": bf16,
            "quick": quick,
            "warmup": warmup,
            "seed": seed,
            "variants": {n: NNX_DESIGN_VARIANTS[n].label for n in names},
            "goal": NNX_GOAL,
            "recipe": sgd_recipe(),
        },
        "models": {},
        "notes": [],
    }
    results["nnx_design"] = section
    for name in models:
        model = NNX_DESIGN_MODELS[name]
        batch = min(model.batch, QUICK["batch"]) if quick else model.batch
        n_rounds = QUICK_ROUNDS if quick else (rounds or model.rounds)
        entry = empty_model_entry(name, model.image_size, batch, n_rounds)
        entry["measured"] = {"created": section["created"], "loadavg_start": loadavg()}
        section["models"][name] = entry
        spec = {
            "kind": "nnx_design", "arch": model.arch, "image_size": model.image_size,
            "batch": batch, "rounds": n_rounds, "warmup": warmup, "device": device,
            "bf16": bf16, "seed": seed, "variants": names,
        }  # fmt: skip
        log(f"[nnx-design {name}] {len(names)} variants, {n_rounds} rounds ...")
        start = time.perf_counter()
        env = worker_env("nnx_design", "jax", device, tmp / f"nnx-design-{name}")
        finish_model(entry, run_worker(spec, env, timeout))
        entry["measured"]["loadavg_end"] = loadavg()
        status = goal_status(entry) or "error: " + "; ".join(entry["errors"].values())[:200]
        log(f"[nnx-design {name}] {status}, {time.perf_counter() - start:.0f} s")
    section["machine"]["loadavg_end"] = loadavg()
