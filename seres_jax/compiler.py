"""The XLA compiler options seres compiles its hot paths with, and ``jit``, which applies them.

**Why.** On the CPU, recent XLA hands convolutions, dots and reductions to YNNPACK (the
default of ``xla_cpu_experimental_ynn_fusion_type``). For the SE-ResNets here YNNPACK's
convolutions are the slow path: on a 2-core AVX-512 Xeon (jaxlib 0.10.2) they halve the
training step's throughput, while YNNPACK's dots and reductions (BatchNorm's statistics and
their gradients) help; the README's Benchmarks section has the figures. ``CPU_OPTIONS``
therefore keeps YNNPACK for dots and reductions and gives convolutions back to XLA's own
emitter. Numerics stay within the parity tolerances either way, and the parity suite runs
both paths.

**Scope.** Options are passed per ``jax.jit`` (never through ``XLA_FLAGS``), so importing seres
changes nothing for other code, and only when the function is compiled for the CPU: GPU and TPU
compiles get no options. They are dropped, with XLA's defaults kept, when

* ``SERES_XLA_CPU_OPTIONS=0`` is set (to measure or debug XLA's own defaults);
* ``XLA_FLAGS`` already names the flag (the user's choice wins);
* the installed jaxlib does not know the option or its values (checked once, by compiling a
  one-element function with them).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

DISABLE_ENV = "SERES_XLA_CPU_OPTIONS"
YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
# jaxlib 0.10's default (individual dots and convolutions, reductions) minus the convolutions.
CPU_OPTIONS: dict[str, str] = {
    YNN_FUSION_FLAG: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


@functools.cache
def _cpu_options_supported() -> bool:
    try:
        with jax.default_device(jax.devices("cpu")[0]):
            jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # an older jaxlib: unknown option or enum value
        return False
    return True


def compiler_options(platform: str | None = None) -> dict[str, str] | None:
    """The options to compile with for ``platform`` (default: JAX's default backend), or
    ``None`` for XLA's defaults (see the module docstring for when)."""
    if (platform or jax.default_backend()) != "cpu":
        return None
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None
    if YNN_FUSION_FLAG in os.environ.get("XLA_FLAGS", ""):
        return None
    return dict(CPU_OPTIONS) if _cpu_options_supported() else None


def jit(fun: Callable[..., Any], *, platform: str | None = None, **kwargs: Any) -> Any:
    """``jax.jit(fun, **kwargs)`` compiled with ``compiler_options(platform)``."""
    return jax.jit(fun, compiler_options=compiler_options(platform), **kwargs)
