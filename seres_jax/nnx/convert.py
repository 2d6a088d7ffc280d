"""Weights in and out of NNX models: linen variables (``to_nnx``/``to_linen``), PyTorch
``state_dict``s (``from_torch``/``to_state_dict``) and checkpoint files (``load``/``save``).

**The rule.** An NNX model's state path is its linen twin's variable path with each list index
joined to the name before it, ``('layer1', 0, 'conv1', 'kernel')`` ↔ ``layer1_0/conv1/kernel``
(the naming rule ``seres_jax.convert`` applies to PyTorch's ``nn.Sequential`` members), and
``nnx.Param`` ↔ the ``"params"`` collection, ``nnx.BatchStat`` ↔ ``"batch_stats"``. The arrays
are the same, in the same layout (NHWC, HWIO: ``seres_jax.layers``), so linen ↔ NNX moves them
unchanged, bit for bit, and everything PyTorch-facing (key names, layouts, strictness, the
errors that list every bad entry) is ``seres_jax.convert``'s: one converter for both APIs.

RNG streams (a ``DropPath``'s or ``Dropout``'s masks) are NNX state but not weights: they are
not converted, and a converted model's streams start from ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.core import unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict

from ..convert import ConversionError, check_variables, flax_to_state_dict, torch_to_flax
from ..formats import format_of, load_checkpoint, save_state_dict, save_variables
from ..layers import Dtype
from ..registry import variables_template
from .registry import abstract_model

_COLLECTIONS: tuple[tuple[str, type[nnx.Variable[Any]]], ...] = (
    ("params", nnx.Param),
    ("batch_stats", nnx.BatchStat),
)


def linen_path(path: tuple[Any, ...]) -> tuple[str, ...]:
    """The linen module path of an NNX state path: ``('stem', 0, 'kernel')`` -> ``('stem_0',
    'kernel')``."""
    names: list[str] = []
    for part in path:
        if isinstance(part, int) and names:
            names[-1] = f"{names[-1]}_{part}"
        else:
            names.append(str(part))
    return tuple(names)


def _linen_key(collection: str, path: tuple[Any, ...]) -> tuple[str, ...]:
    return (collection, *linen_path(path))


def _collection(variable: Any) -> str | None:
    for name, kind in _COLLECTIONS:
        if isinstance(variable, kind):
            return name
    return None


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _floating_dtype(dtypes: set[str], where: str) -> Any:
    """The one floating dtype of a checkpoint's weights (float32 if it holds none)."""
    floating = sorted(d for d in dtypes if d.startswith(("float", "bfloat")))
    if len(floating) > 1:
        raise ConversionError(
            [f"its weights mix {', '.join(floating)}: pass param_dtype= to choose the model's"],
            where,
        )
    return jnp.dtype(floating[0]) if floating else jnp.float32


def _variables(state: Any) -> dict[str, Any]:
    """The linen variables of an NNX state (the arrays themselves: traceable)."""
    flat = {}
    for path, variable in nnx.to_flat_state(state):
        collection = _collection(variable)
        if collection is not None:
            flat[_linen_key(collection, path)] = variable.get_value()
    return unflatten_dict(flat)


def _filled(state: Any, variables: Mapping[str, Any], other: Callable[[Any], Any]) -> Any:
    """``state`` with each weight taken from linen ``variables`` and every other variable (an
    RNG stream's key or count) replaced by ``other(its value)``."""
    weights = flatten_dict(unfreeze(dict(variables)))
    filled = []
    for path, variable in nnx.to_flat_state(state):
        collection = _collection(variable)
        if collection is None:
            value = other(variable.get_value())
        else:
            value = jnp.asarray(weights[_linen_key(collection, path)])
        filled.append((path, variable.replace(value)))
    return nnx.from_flat_state(filled)


def linen_apply(module: nnx.Module) -> Callable[..., Any]:
    """``module``'s function in linen's calling convention, ``apply(variables, x, *,
    train=False, mutable=())`` -> output, or ``(output, {"batch_stats": ...})`` when
    ``mutable`` names the statistics: for code written against linen models (the parity
    tooling, a linen ``TrainState``) to run the NNX model with given weights. Traceable: the
    weights are arguments, ``module``'s own are not used (its RNG streams are), so an abstract
    module (``abstract_model``) will do."""
    graphdef, state = nnx.split(module)

    def apply(
        variables: Mapping[str, Any], x: jax.Array, *, train: bool = False, mutable: Any = ()
    ) -> Any:
        model = nnx.merge(graphdef, _filled(state, variables, _concrete))
        if train:
            model.train()
        else:
            model.eval()
        out = model(x)
        if not mutable:
            return out
        return out, {"batch_stats": _variables(nnx.state(model)).get("batch_stats", {})}

    return apply


def to_linen(module: nnx.Module, arch: str | None = None) -> dict[str, Any]:
    """The linen variables (``{"params": ..., "batch_stats": ...}``, numpy arrays copied to
    the host) of an NNX seres model, bit for bit: what ``seres_jax.formats.save_variables``
    writes and the linen model's ``apply`` takes. With ``arch``, strict (a module of another
    architecture or other sizes raises a ``ConversionError`` listing every missing, unexpected
    and mismatched entry)."""
    variables = jax.device_get(_variables(nnx.state(module)))
    if arch is not None:
        dtypes = {_dtype_name(v.dtype) for v in jax.tree.leaves(variables)}
        template = variables_template(arch, param_dtype=_floating_dtype(dtypes, "to_linen"))
        try:
            check_variables(variables, template)
        except ConversionError as err:
            raise ConversionError(err.problems, f"to_linen: the module is not a {arch}") from None
    return variables


def _placeholder(value: Any) -> jax.Array:
    """A concrete stand-in for an abstract RNG stream's key or count (reseeded after)."""
    if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        return jax.random.key(0)
    return jnp.zeros(value.shape, value.dtype)


def _concrete(value: Any) -> Any:
    return _placeholder(value) if isinstance(value, jax.ShapeDtypeStruct) else value


def to_nnx(
    variables: Mapping[str, Any],
    arch: str,
    *,
    dtype: Dtype = None,
    param_dtype: Dtype = None,
    seed: int = 0,
) -> nnx.Module:
    """The NNX model ``arch`` holding linen ``variables`` (a ``seres train`` checkpoint's, a
    converter's, ``model.init``'s), bit for bit, in train mode. ``param_dtype`` defaults to the
    variables' own floating dtype. Strict: every missing, unexpected and mismatched entry is
    listed in one ``ConversionError`` and nothing is built. The dropout streams start from
    ``seed``."""
    variables = unfreeze(dict(variables))
    if param_dtype is None:
        dtypes = {_dtype_name(np.asarray(v).dtype) for v in jax.tree.leaves(variables)}
        param_dtype = _floating_dtype(dtypes, "to_nnx")
    check_variables(variables, variables_template(arch, param_dtype=param_dtype))
    return _build(variables, arch, dtype, param_dtype, seed)


def _build(
    variables: Mapping[str, Any], arch: str, dtype: Dtype, param_dtype: Dtype, seed: int
) -> nnx.Module:
    """``to_nnx`` of variables already checked against ``arch``'s template."""
    graphdef, state = nnx.split(abstract_model(arch, dtype=dtype, param_dtype=param_dtype))
    model = nnx.merge(graphdef, _filled(state, variables, _placeholder))
    if any(_collection(v) is None for _, v in nnx.to_flat_state(nnx.state(model))):
        nnx.reseed(model, dropout=seed)
    return model


def from_torch(
    source: Any,
    arch: str,
    *,
    dtype: Dtype = None,
    param_dtype: Dtype = None,
    seed: int = 0,
) -> nnx.Module:
    """The NNX model ``arch`` with the weights of a PyTorch module or ``state_dict`` (torch
    tensors or numpy arrays: timm's keys, the notebook's, ``seres_torch``'s), bit for bit and
    in their dtype unless ``param_dtype`` says otherwise. A module's train/eval mode carries
    over; a ``state_dict`` gives train mode, as a fresh PyTorch module has. Strict, as
    ``seres_jax.convert.torch_to_flax`` with a template: one ``ConversionError`` names every
    offending key and shape, in PyTorch's terms, and nothing is built."""
    state_dict = source.state_dict() if hasattr(source, "state_dict") else source
    if param_dtype is None:
        dtypes = {_dtype_name(v.dtype) for v in state_dict.values() if hasattr(v, "dtype")}
        param_dtype = _floating_dtype(dtypes, "from_torch")
    variables = torch_to_flax(state_dict, variables_template(arch, param_dtype=param_dtype))
    model = _build(variables, arch, dtype, param_dtype, seed)  # torch_to_flax checked it
    if getattr(source, "training", True) is False:
        model.eval()
    return model


def to_state_dict(module: nnx.Module, arch: str | None = None) -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` (numpy arrays, PyTorch's layout and timm's/the notebook's keys)
    of an NNX seres model, bit for bit; ``seres_jax.convert.to_torch`` makes tensors of it.
    With ``arch``, strict as ``to_linen``. Modules come in name order, as NNX keeps its state
    (``load_state_dict`` takes any order); ``flax_to_state_dict(to_linen(module), template)``
    follows a PyTorch ``template``'s order instead."""
    return flax_to_state_dict(to_linen(module, arch))


def load(
    path: str | os.PathLike[str],
    arch: str,
    *,
    dtype: Dtype = None,
    param_dtype: Dtype = jnp.float32,
    seed: int = 0,
) -> nnx.Module:
    """The NNX model ``arch`` with the weights of a checkpoint file in any format
    ``seres_jax.formats`` reads (``.pt``/``.pth``/``.bin``, ``.safetensors``, ``.msgpack``, an
    orbax directory) or of a ``seres train`` work directory's latest checkpoint, as ``seres
    eval`` reads them: checked against ``arch`` before any tensor is read."""
    from ..train.workdir import CHECKPOINT_DIR  # the training stack, only when reading a run

    if (Path(path) / CHECKPOINT_DIR).is_dir():
        path = Path(path) / CHECKPOINT_DIR
    template = variables_template(arch, param_dtype=param_dtype)
    variables = load_checkpoint(path, template=template).to_variables(template)
    return _build(variables, arch, dtype, param_dtype, seed)  # checked against the template


def save(
    module: nnx.Module,
    path: str | os.PathLike[str],
    arch: str | None = None,
    *,
    force: bool = False,
) -> None:
    """Write an NNX model's weights as a checkpoint ``seres convert``, ``seres eval`` and
    ``load`` read: Flax variables (``.msgpack``, orbax directory) or a PyTorch ``state_dict``
    (``.pt``, ``.safetensors``), atomically; an existing ``path`` is replaced only with
    ``force``. With ``arch``, strict as ``to_linen``."""
    variables = to_linen(module, arch)
    if format_of(path)[1] == "variables":
        save_variables(variables, path, force=force)
    else:
        save_state_dict(flax_to_state_dict(variables), path, force=force)
