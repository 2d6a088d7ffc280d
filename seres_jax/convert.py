"""Weight conversion between PyTorch ``state_dict`` keys and Flax variables, both directions.

One naming rule maps every PyTorch key to exactly one Flax path and back; nothing is guessed
from substrings.

**Module path.** A PyTorch key is ``<module path>.<leaf>``. Each module-path component becomes
one Flax module name, except that an integer component ``i`` (a member of an ``nn.Sequential``
or ``nn.ModuleList``) is joined to the component before it as ``<prev>_<i>``: ``stage1.0.se.fc.2``
↔ ``stage1_0/se/fc_2``. This is how Flax names the members of a list assigned in ``setup``
(see ``seres_jax.layers``). Going back, a Flax name ending in ``_<digits>`` groups is split at
them. The rule is a bijection as long as no PyTorch attribute name itself ends in
``_<digits>`` and no key starts with an index; keys that break it are rejected, by name.

**Leaves.**

==========================  =================================  ===============================
PyTorch                     Flax                               layout
==========================  =================================  ===============================
``weight`` (ndim ≥ 3)       ``params/…/kernel``                ``(O, I, *k)`` ↔ ``(*k, I, O)``
``weight`` (ndim 2)         ``params/…/kernel``                ``(out, in)`` ↔ ``(in, out)``
``weight`` (ndim 1)         ``params/…/scale``                 BatchNorm γ, unchanged
``bias``                    ``params/…/bias``                  unchanged
``running_mean``            ``batch_stats/…/mean``             unchanged
``running_var``             ``batch_stats/…/var``              unchanged
``num_batches_tracked``     ``batch_stats/…/num_batches_tracked``  int64 ↔ int32
==========================  =================================  ===============================

Values are copied, never shared with the source, and keep their dtype (float16, bfloat16,
float32 and float64 round-trip bit for bit); ``num_batches_tracked`` is stored as int32 in Flax,
where 64-bit integers are off by default, and must fit in it.

``torch_to_flax`` takes torch tensors or numpy arrays (e.g. from ``safetensors.numpy``), so it
runs without torch; its result holds numpy arrays, which ``Module.apply`` and ``jax.device_put``
accept. ``flax_to_state_dict`` is the torch-free reverse, ``flax_to_torch`` wraps it in tensors.
With a template, conversion is strict: every missing, unexpected and mis-shaped or mis-typed
entry is listed, once, in one ``ConversionError`` and nothing is returned (nor converted).
Problems are named in the source's own terms: PyTorch keys and PyTorch shapes for a
``state_dict`` (``'fc.weight' is (10, 32)``), Flax paths and shapes for variables.
``check_state_dict`` and ``check_variables`` run the same check on anything with a ``shape``
and a ``dtype``, so a file's declared entries can be checked before its tensors are read.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from flax.core import unfreeze
from flax.traverse_util import flatten_dict

if TYPE_CHECKING:
    import torch

FlaxPath = tuple[str, ...]
"""A leaf's place in Flax variables: ``(collection, *modules, leaf)`` as ``flatten_dict`` keys
it, e.g. ``("params", "layer1_0", "conv1", "kernel")``."""

# PyTorch leaf name -> (Flax collection, Flax leaf name), for every leaf except `weight`,
# whose Flax name depends on its rank (see the module docstring).
_LEAVES = {
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
    "num_batches_tracked": ("batch_stats", "num_batches_tracked"),
}
_FLAX_LEAVES = {flax: torch for torch, flax in _LEAVES.items()}
# PyTorch's order of a module's entries, used to order keys when there is no template.
_TORCH_LEAF_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_RANK = {"bias": 1, "running_mean": 1, "running_var": 1, "num_batches_tracked": 0}
_INDEXED = re.compile(r"^(.*?)((?:_\d+)+)$")
_FLOAT_KINDS = "f"
_INT32 = np.iinfo(np.int32)


class ConversionError(ValueError):
    """A checkpoint does not map onto the model; ``problems`` lists every offending entry."""

    def __init__(self, problems: Iterable[str], context: str = "conversion") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{context} failed with {len(self.problems)} problem(s):\n{lines}")


class _UnmappableError(Exception):
    pass


class _Spec(NamedTuple):
    """The shape and dtype of an entry, without its values."""

    shape: tuple[int, ...]
    dtype: Any


# --------------------------------------------------------------------------- naming rule


def torch_key_to_flax_path(key: str, ndim: int) -> FlaxPath:
    """The Flax path ``(collection, *modules, leaf)`` of PyTorch key ``key`` of rank ``ndim``."""
    *modules, leaf = key.split(".")
    if not modules:
        raise _UnmappableError("a key needs a module path before its leaf name")
    if leaf == "weight":
        if ndim == 0:
            raise _UnmappableError("a weight cannot be a scalar")
        collection, flax_leaf = "params", ("scale" if ndim == 1 else "kernel")
    elif leaf in _LEAVES:
        collection, flax_leaf = _LEAVES[leaf]
    else:
        raise _UnmappableError(f"unknown leaf {leaf!r}; expected one of {_TORCH_LEAF_ORDER}")
    names: list[str] = []
    for part in modules:
        if part.isdigit():
            if not names:
                raise _UnmappableError("a key cannot start with a sequence index")
            names[-1] = f"{names[-1]}_{part}"
        elif not part or _INDEXED.match(part):
            raise _UnmappableError(
                f"module name {part!r} is empty or ends in _<digits>, which the "
                "naming rule reserves for sequence members"
            )
        else:
            names.append(part)
    return (collection, *names, flax_leaf)


def flax_path_to_torch_key(path: FlaxPath, ndim: int) -> str:
    """The PyTorch key of Flax path ``(collection, *modules, leaf)``; inverse of the above."""
    if len(path) < 3:
        raise _UnmappableError("a path needs a collection, a module and a leaf")
    collection, *modules, leaf = path
    if collection == "params" and leaf in ("kernel", "scale"):
        if (leaf == "scale") != (ndim == 1) or ndim == 0:
            raise _UnmappableError(f"a {leaf!r} of rank {ndim} has no PyTorch counterpart")
        torch_leaf = "weight"
    elif (collection, leaf) in _FLAX_LEAVES:
        torch_leaf = _FLAX_LEAVES[(collection, leaf)]
    else:
        raise _UnmappableError(
            f"no PyTorch counterpart for leaf {leaf!r} in collection {collection!r}"
        )
    return f"{flax_module_path_to_torch(modules)}.{torch_leaf}"


def flax_module_path_to_torch(names: Iterable[str]) -> str:
    """PyTorch's dotted module path for Flax module names: ``("stage1_0", "se", "fc_2")`` ->
    ``"stage1.0.se.fc.2"`` (the naming rule without the leaf)."""
    parts: list[str] = []
    for name in names:
        match = _INDEXED.match(name)
        if match:
            parts.append(match.group(1))
            parts.extend(match.group(2)[1:].split("_"))
        else:
            parts.append(name)
    return ".".join(parts)


_TILE = 128
_TILED_BYTES = 1 << 20


def _reverse_axes(value: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``value`` with its axes reversed (a 3-D array, or 2-D).

    OIHW -> HWIO is this on ``(O, I, H*W)``, and so is the way back. numpy copies a transposed
    view element by element with a stride of a whole row, missing the cache on every element
    (~0.2x memcpy speed here); copying tile by tile keeps both sides in cache (~0.5x).
    """
    out = np.empty(value.shape[::-1], value.dtype)
    if value.nbytes < _TILED_BYTES:
        out[...] = value.transpose()
        return out
    ranges = [range(0, n, _TILE) for n in value.shape]
    for starts in itertools.product(*ranges):
        src = tuple(slice(i, i + _TILE) for i in starts)
        out[src[::-1]] = value[src].transpose()
    return out


def _to_flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel":  # (O, I, *k) -> (*k, I, O); (out, in) -> (in, out)
        o, i, *k = value.shape
        return _reverse_axes(value.reshape(o, i, -1) if k else value).reshape(*k, i, o)
    if leaf == "num_batches_tracked":
        return value.astype(np.int32)
    return np.array(value, order="C", copy=True)


def _to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel":  # (*k, I, O) -> (O, I, *k); (in, out) -> (out, in)
        *k, i, o = value.shape
        return _reverse_axes(value.reshape(-1, i, o) if k else value).reshape(o, i, *k)
    if leaf == "num_batches_tracked":
        return value.astype(np.int64)
    return np.array(value, order="C", copy=True)


# --------------------------------------------------------------------------- values


def _is_torch_tensor(value: Any) -> bool:
    # Without torch imported nothing can be a tensor: this check never imports torch itself.
    torch_mod = sys.modules.get("torch")
    return torch_mod is not None and isinstance(value, torch_mod.Tensor)


def to_numpy(value: Any) -> np.ndarray:
    """A host numpy view of a torch tensor, numpy array or jax array; anything else is refused."""
    if _is_torch_tensor(value):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            # numpy has no bfloat16 of its own: reinterpret the bits as ml_dtypes' bfloat16.
            import ml_dtypes

            return tensor.view(sys.modules["torch"].int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.numpy()
    if isinstance(value, np.ndarray | np.generic) or hasattr(value, "__array_namespace__"):
        return np.asarray(value)
    raise _UnmappableError(f"value of type {type(value).__name__} is not an array")


def _check_value(leaf: str, value: Any) -> None:
    """Refuse values no layer could hold (object arrays, wrong ranks, integer weights).

    ``value`` is an array, or anything with its ``shape`` and ``dtype`` (a file's declared
    entry): a counter's range is then left for the conversion to check.
    """
    shape = tuple(value.shape)
    if leaf in _RANK and len(shape) != _RANK[leaf]:
        raise _UnmappableError(f"{leaf} must have rank {_RANK[leaf]}, got shape {shape}")
    if leaf == "num_batches_tracked":
        if value.dtype.kind not in "iu":
            raise _UnmappableError(f"num_batches_tracked must be an integer, got {value.dtype}")
        if isinstance(value, np.ndarray) and not _INT32.min <= int(value) <= _INT32.max:
            raise _UnmappableError(f"num_batches_tracked={int(value)} does not fit in int32")
    elif value.dtype.kind != _FLOAT_KINDS and value.dtype.name != "bfloat16":
        raise _UnmappableError(f"expected a floating-point array, got dtype {value.dtype}")


def _dtype_name(dtype: Any) -> str:
    # torch dtypes print as "torch.float32"; numpy and jax dtypes as "float32".
    return str(dtype).removeprefix("torch.")


def _describe(shape: Iterable[int], dtype: Any) -> str:
    return f"{tuple(shape)} {_dtype_name(dtype)}"


def _compare(
    converted: Mapping[Any, np.ndarray | _Spec],
    expected: Mapping[Any, Any],
    name: Any,
) -> list[str]:
    """Every missing, unexpected and mismatched entry of ``converted`` against ``expected``."""
    problems = [
        f"missing: {name(k)} (model expects {_describe(v.shape, v.dtype)})"
        for k, v in expected.items()
        if k not in converted
    ]
    problems += [
        f"unexpected: {name(k)} {_describe(v.shape, v.dtype)}"
        for k, v in converted.items()
        if k not in expected
    ]
    for k, v in converted.items():
        want = expected.get(k)
        if want is None:
            continue
        if tuple(v.shape) != tuple(want.shape):
            problems.append(
                f"shape mismatch: {name(k)} is {tuple(v.shape)}, model expects {tuple(want.shape)}"
            )
        elif _dtype_name(v.dtype) != _dtype_name(want.dtype):
            problems.append(
                f"dtype mismatch: {name(k)} is {_dtype_name(v.dtype)}, "
                f"model expects {_dtype_name(want.dtype)}"
            )
    return problems


def _unflatten(flat: Mapping[FlaxPath, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _flax_name(path: FlaxPath) -> str:
    return "/".join(path)


# --------------------------------------------------------------------------- torch -> flax


def _torch_layout(path: FlaxPath, shape: tuple[int, ...]) -> tuple[int, ...]:
    """PyTorch's shape of the entry at Flax ``path`` of Flax shape ``shape``."""
    if path[-1] == "kernel":  # (*k, I, O) -> (O, I, *k)
        *k, i, o = shape
        return (o, i, *k)
    return shape


def _map_torch_keys(
    entries: Mapping[Any, Any], *, check_values: bool
) -> tuple[dict[FlaxPath, tuple[str, Any]], list[str]]:
    """The Flax path of every entry, as ``{path: (key, value)}``, and why the others have none
    (or, with ``check_values``, hold what no layer could). Values need only shape and dtype."""
    problems: list[str] = []
    mapped: dict[FlaxPath, tuple[str, Any]] = {}
    for key, value in entries.items():
        try:
            if not isinstance(key, str):
                raise _UnmappableError("keys must be strings")
            path = torch_key_to_flax_path(key, len(value.shape))
            if check_values:
                _check_value(key.rsplit(".", 1)[-1], value)
            if path in mapped:
                raise _UnmappableError(f"maps to {_flax_name(path)}, as {mapped[path][0]!r} does")
        except _UnmappableError as err:
            problems.append(f"{key!r}: {err}")
            continue
        mapped[path] = (key, value)
    return mapped, problems


def _template_problems(
    entries: Mapping[FlaxPath, Any],
    template: Any,
    name: Callable[[FlaxPath], str],
    layout: Callable[[FlaxPath, tuple[int, ...]], tuple[int, ...]],
) -> list[str]:
    """Every missing, unexpected, mismatched or out-of-range entry against ``template``, each
    listed once, in the entries' own names (``name``) and layout (``layout`` maps a Flax
    shape to it)."""
    expected = flatten_dict(unfreeze(template))
    want = {path: _Spec(layout(path, tuple(s.shape)), s.dtype) for path, s in expected.items()}
    problems: list[str] = []
    have: dict[FlaxPath, _Spec] = {}
    for path, value in entries.items():
        if path[-1] == "num_batches_tracked" and path in want:
            # Any integer counter that fits int32 is converted to the model's dtype.
            try:
                _check_value(path[-1], value)
            except _UnmappableError as err:
                problems.append(f"{name(path)}: {err}")
            have[path] = want[path]
        else:
            have[path] = _Spec(tuple(value.shape), value.dtype)
    return problems + _compare(have, want, name)


def _torch_template_problems(
    mapped: Mapping[FlaxPath, tuple[str, Any]], template: Any
) -> list[str]:
    """``_template_problems`` in PyTorch's names and layout."""

    def name(path: FlaxPath) -> str:
        if path in mapped:
            return repr(mapped[path][0])
        try:
            return repr(flax_path_to_torch_key(path, len(_flax_shape(template, path))))
        except _UnmappableError:
            return _flax_name(path)

    entries = {path: value for path, (_, value) in mapped.items()}
    return _template_problems(entries, template, name, _torch_layout)


def _flax_shape(template: Any, path: FlaxPath) -> tuple[int, ...]:
    node = template
    for part in path:
        node = node[part]
    return tuple(node.shape)


def check_state_dict(state_dict: Mapping[str, Any], template: Any) -> None:
    """Raise ``ConversionError`` listing every entry of a PyTorch-keyed mapping that does not
    fit ``template`` (Flax variables or their shapes), in PyTorch's names and layout.

    Values need only ``shape`` and ``dtype``, so a file's declared entries can be checked
    before any tensor is read.
    """
    mapped, problems = _map_torch_keys(state_dict, check_values=False)
    problems += _torch_template_problems(mapped, template)
    if problems:
        raise ConversionError(problems, "torch_to_flax")


def check_variables(variables: Mapping[str, Any], template: Any) -> None:
    """Raise ``ConversionError`` listing every entry of Flax ``variables`` that does not fit
    ``template``, in Flax's names and layout. Values need only ``shape`` and ``dtype``."""
    flat = flatten_dict(unfreeze(dict(variables)))
    problems = _template_problems(flat, template, _flax_name, lambda _, shape: shape)
    if problems:
        raise ConversionError(problems, "checking Flax variables")


def torch_to_flax(state_dict: Mapping[str, Any], template: Any = None) -> dict[str, Any]:
    """Convert a PyTorch ``state_dict`` to Flax variables ``{"params": ..., "batch_stats": ...}``.

    ``state_dict`` maps keys to torch tensors or numpy arrays. ``template`` (optional) is the
    model's Flax variables or their abstract shapes (``jax.eval_shape(model.init, ...)``);
    with it, the checkpoint must match it exactly, in names, shapes and dtypes. Collections
    with no entries are left out. Raises ``ConversionError`` listing every problem, in
    PyTorch's names and layout, before anything is converted.
    """
    problems: list[str] = []
    arrays: dict[Any, np.ndarray] = {}
    for key, value in state_dict.items():
        try:
            arrays[key] = to_numpy(value)
        except _UnmappableError as err:
            problems.append(f"{key!r}: {err}")
    mapped, unmapped = _map_torch_keys(arrays, check_values=template is None)
    problems += unmapped
    if template is not None:
        problems += _torch_template_problems(mapped, template)
    if problems:
        raise ConversionError(problems, "torch_to_flax")
    order = flatten_dict(unfreeze(template)) if template is not None else mapped
    return _unflatten({path: _to_flax_layout(path[-1], mapped[path][1]) for path in order})


# --------------------------------------------------------------------------- flax -> torch


def _template_state_dict(template: Any) -> Mapping[str, Any]:
    state_dict = template.state_dict() if hasattr(template, "state_dict") else template
    if not isinstance(state_dict, Mapping):
        raise TypeError("template must be a torch module or a state_dict-like mapping")
    return state_dict


def flax_to_state_dict(variables: Mapping[str, Any], template: Any = None) -> dict[str, np.ndarray]:
    """Flax variables -> a PyTorch-keyed dict of numpy arrays, in PyTorch layout (no torch needed).

    ``template`` (optional) is a torch module or a ``state_dict`` (any mapping whose values have
    ``shape`` and ``dtype``); with it the result must match it exactly and follows its key order.
    Without one, keys come module by module in the variables' order, each module's entries in
    PyTorch's order (weight, bias, running_mean, running_var, num_batches_tracked).
    """
    problems: list[str] = []
    by_module: dict[str, dict[str, np.ndarray]] = {}
    origin: dict[str, FlaxPath] = {}
    for path, value in flatten_dict(unfreeze(dict(variables))).items():
        try:
            array = to_numpy(value)
            key = flax_path_to_torch_key(path, array.ndim)
            _check_value(key.rsplit(".", 1)[-1], array)
        except _UnmappableError as err:
            problems.append(f"{_flax_name(path)}: {err}")
            continue
        if key in origin:
            problems.append(
                f"{_flax_name(path)}: maps to {key!r}, as {_flax_name(origin[key])} does"
            )
            continue
        origin[key] = path
        module, leaf = key.rsplit(".", 1)
        by_module.setdefault(module, {})[leaf] = _to_torch_layout(path[-1], array)

    flat = {
        f"{module}.{leaf}": leaves[leaf]
        for module, leaves in by_module.items()
        for leaf in _TORCH_LEAF_ORDER
        if leaf in leaves
    }
    if template is not None:
        expected = _template_state_dict(template)

        def name(key: str) -> str:
            return f"{_flax_name(origin[key])} -> {key!r}" if key in origin else repr(key)

        problems += _compare(flat, expected, name)
        if not problems:
            flat = {key: flat[key] for key in expected}
    if problems:
        raise ConversionError(problems, "flax_to_torch")
    return flat


def flax_to_torch(variables: Mapping[str, Any], template: Any = None) -> dict[str, torch.Tensor]:
    """Flax variables -> a PyTorch ``state_dict`` (CPU tensors); see ``flax_to_state_dict``."""
    return {k: to_torch(v) for k, v in flax_to_state_dict(variables, template).items()}


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``array``'s memory (bfloat16 included, which numpy lacks)."""
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
