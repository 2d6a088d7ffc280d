"""JAX's first step with its persistent compilation cache, enabled as seres' commands enable it
(``seres_jax.compiler.enable_compile_cache``, JAX's own thresholds): one child process compiles
into an empty cache directory (cold), a second child reads the same directory (warm). Only the
first training and inference calls are timed; tracing and lowering are in both, compilation
only in the cold one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .jax_runner import jax_runners
from .measure import first_call_s


def cache_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The first training and inference call of a fresh runner with the cache in
    ``spec["cache_dir"]``, and how many entries the directory holds afterwards."""
    import jax

    from seres_jax.compiler import enable_compile_cache

    directory = Path(spec["cache_dir"])
    enable_compile_cache(directory)
    runners = jax_runners(spec)
    first = {"train": first_call_s(runners.train), "infer": first_call_s(runners.infer)}
    return {
        "first_step_s": first,
        "cache_entries": sum(1 for _ in directory.iterdir()),
        "min_compile_time_s": jax.config.jax_persistent_cache_min_compile_time_secs,
    }
