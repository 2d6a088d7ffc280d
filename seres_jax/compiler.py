"""The XLA compiler options seres compiles its hot paths with, ``jit``, which applies them, and
the persistent compilation cache of seres' commands (``enable_compile_cache``).

**Why.** On the CPU, recent XLA hands convolutions, dots and reductions to YNNPACK (the
default of ``xla_cpu_experimental_ynn_fusion_type``). For the SE-ResNets here YNNPACK's
convolutions are the slow path: on a 2-core AVX-512 Xeon (jaxlib 0.10.2) they halve the
training step's throughput, while YNNPACK's dots and reductions (BatchNorm's statistics and
their gradients) help; docs/benchmarks.md has the figures. ``CPU_OPTIONS``
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

**Compilation cache.** Compiling the training step takes seconds on the CPU; ``seres train``,
``eval`` and ``demo`` therefore keep JAX's persistent compilation cache, by default in
``default_compile_cache()``, so a second run of the same model loads its executables instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

DISABLE_ENV = "SERES_XLA_CPU_OPTIONS"
"""The environment variable that, set to ``0``, drops ``CPU_OPTIONS``: XLA's defaults apply."""
CACHE_ENV = "SERES_COMPILE_CACHE"
"""The environment variable naming the directory of the commands' compilation cache, or
``off`` (see ``default_compile_cache``)."""
YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
"""The XLA CPU option choosing the operations YNNPACK runs; where ``XLA_FLAGS`` already names
it, the user's value wins and ``CPU_OPTIONS`` is dropped."""
CPU_OPTIONS: dict[str, str] = {
    YNN_FUSION_FLAG: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}
"""The options ``jit`` compiles with on the CPU: jaxlib 0.10's default (individual dots and
convolutions, reductions) minus the convolutions, which XLA's own emitter runs faster here
(see the module docstring)."""


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


def default_compile_cache() -> str:
    """Where seres' commands keep JAX's persistent compilation cache unless told otherwise:
    ``$SERES_COMPILE_CACHE`` (a directory, or ``off``), else a directory JAX is already
    configured with (``JAX_COMPILATION_CACHE_DIR``, ``jax.config``), else
    ``$XDG_CACHE_HOME/seres/jax`` (``~/.cache/seres/jax``)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    # jax's Config declares its flags at run time, out of a type checker's sight.
    configured: str | None = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return str(Path(base) / "seres" / "jax")


def enable_compile_cache(directory: str | os.PathLike[str] | None) -> Path | None:
    """Use JAX's persistent compilation cache in ``directory`` (created if missing), so a
    later process compiling the same computation loads it instead; ``None`` or ``"off"``
    turns the cache off. Returns the directory in use, or ``None``.

    Takes effect for the next compilation even after others (the cache is re-opened). What is
    cached follows JAX's own thresholds (``jax_persistent_cache_min_compile_time_secs``).
    """
    from jax.experimental.compilation_cache import compilation_cache

    path = None if directory is None or str(directory) == "off" else Path(directory).expanduser()
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_enable_compilation_cache", path is not None)
    compilation_cache.reset_cache()
    return path
