"""NNX models by architecture string: ``create_model`` builds, ``abstract_model`` describes.

The names, keyword overrides (``seresnet_tiny:in_ch=1,base=16``) and their checks are
``seres_jax.registry``'s; the class is the linen class's NNX namesake (``ModelSpec.nnx_cls``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers import Dtype
from ..registry import RegistryError, model_config


def _rbg(key: jax.Array) -> jax.Array:
    """An ``rbg`` key from a (threefry) key's bits: XLA compiles ``rbg``'s draws several times
    faster than threefry's on the CPU, with the same distributions (``init_variables`` too
    initialises linen models with it)."""
    data = jax.random.key_data(jax.random.split(key)).reshape(-1)
    return jax.random.wrap_key_data(data, impl="rbg")


def _stream(rngs: nnx.Rngs, name: str, fallback: jax.Array) -> jax.Array:
    try:
        return rngs[name]()
    except (AttributeError, KeyError):  # an Rngs without this stream and without "default"
        return jax.random.fold_in(fallback, 1)


@functools.lru_cache(maxsize=32)
def _initialiser(
    arch: str, dtype: Dtype, param_dtype: Dtype, overrides: tuple[tuple[str, Any], ...]
) -> tuple[nnx.GraphDef[Any], Callable[[jax.Array, jax.Array], Any]]:
    """The structure of ``arch`` and its initial state as one jitted function of the
    ``params`` and ``dropout`` keys, made once per architecture: building an NNX model eagerly
    compiles every parameter's draw on its own (seconds for the tiny network)."""
    spec, arguments = model_config(arch, **dict(overrides))
    cls: Callable[..., nnx.Module] = spec.nnx_cls

    def build(params: jax.Array, dropout: jax.Array) -> nnx.Module:
        rngs = nnx.Rngs(params=params, dropout=dropout)
        return cls(**arguments, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    try:
        # Keys made here, not at import: importing seres must not start a JAX backend (a
        # multi-host run calls jax.distributed.initialize first).
        keys = (jax.random.key(0, impl="rbg"), jax.random.key(0))
        graphdef = nnx.graphdef(nnx.eval_shape(lambda: build(*keys)))
    except ValueError as err:  # widths the arch string's numbers make impossible
        raise RegistryError(f"{arch} cannot be built: {err}") from None
    return graphdef, jax.jit(lambda params, dropout: nnx.state(build(params, dropout)))


def create_model(
    arch: str,
    *,
    rngs: nnx.Rngs,
    dtype: Dtype = None,
    param_dtype: Dtype = jnp.float32,
    **overrides: Any,
) -> nnx.Module:
    """The NNX model named by ``arch`` (any ``seres_jax.registry`` string), initialised as its
    PyTorch twin would be from ``rngs``' ``params`` stream, its dropout streams (if any) from
    ``dropout``; in train mode (NNX's and PyTorch's default: call ``model.eval()`` to infer).
    ``dtype`` is the compute dtype (None: from the inputs), ``param_dtype`` that of the
    parameters and running statistics. An unknown name, keyword or value, or widths the
    numbers make impossible, raise ``RegistryError`` and build nothing. The initialisation
    is one jitted program, compiled once per architecture and process."""
    model_config(arch, **overrides)  # the registry's errors, before anything is traced
    graphdef, initialise = _initialiser(arch, dtype, param_dtype, tuple(sorted(overrides.items())))
    params = rngs.params()
    state = initialise(_rbg(params), _stream(rngs, "dropout", params))
    return nnx.merge(graphdef, state)


def abstract_model(
    arch: str, *, dtype: Dtype = None, param_dtype: Dtype = jnp.float32, **overrides: Any
) -> nnx.Module:
    """``create_model(arch)`` with shapes and dtypes in place of arrays, nothing computed: the
    structure ``to_nnx`` fills."""
    model_config(arch, **overrides)  # the registry's errors before any tracing
    return nnx.eval_shape(
        lambda: create_model(
            arch, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype, **overrides
        )
    )
