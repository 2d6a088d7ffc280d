"""Checkpoint files in four formats, read safely and written atomically.

=====================  ==============  ====================================================
format                 holds           chosen by
=====================  ==============  ====================================================
PyTorch (``torch``)    a state_dict    ``.pt`` / ``.pth``
safetensors            a state_dict    ``.safetensors`` (PyTorch key names; no torch needed)
Flax msgpack           Flax variables  ``.msgpack`` (``flax.serialization``)
orbax                  Flax variables  a directory, or a path without a suffix
=====================  ==============  ====================================================

Reading: PyTorch files are loaded with ``torch.load(weights_only=True)``, so a pickle that
would run code is refused before anything runs; a state_dict nested under ``state_dict`` or
``model`` is unwrapped and a common ``module.`` (DataParallel) or ``_orig_mod.``
(``torch.compile``) prefix is stripped. An orbax directory may be a checkpoint, a step of a
``CheckpointManager`` (its ``default`` item) or a manager's root (its latest step), as
``seres train`` writes them; from a training state only ``params`` and ``batch_stats`` are
kept. Every failure — missing, truncated or corrupt file, wrong content — is a
``CheckpointError`` with one readable message.

Writing goes to a temporary file or directory beside the destination, renamed into place only
when complete, so a failure never leaves a partial or corrupted destination; an existing
destination is replaced only with ``force=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .convert import flax_to_state_dict, to_numpy, to_torch, torch_to_flax

PathLike = str | os.PathLike[str]
Kind = Literal["state_dict", "variables"]
FORMATS: dict[str, tuple[str, Kind]] = {
    ".pt": ("torch", "state_dict"),
    ".pth": ("torch", "state_dict"),
    ".safetensors": ("safetensors", "state_dict"),
    ".msgpack": ("msgpack", "variables"),
    "": ("orbax", "variables"),
}
_WRAPPERS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or written; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: a PyTorch-keyed ``state_dict`` or a Flax ``variables`` tree."""

    kind: Kind
    data: dict[str, Any]
    path: Path

    def to_variables(self, template: Any = None) -> dict[str, Any]:
        """As Flax variables (strict against ``template`` when given)."""
        if self.kind == "state_dict":
            return torch_to_flax(self.data, template)
        if template is not None:  # check, via the state_dict round trip
            return torch_to_flax(flax_to_state_dict(self.data), template)
        return self.data

    def to_state_dict(self, template: Any = None) -> dict[str, Any]:
        """As a PyTorch-keyed dict of arrays (strict against a Flax ``template`` when given)."""
        if template is not None:
            return flax_to_state_dict(self.to_variables(template))
        if self.kind == "variables":
            return flax_to_state_dict(self.data)
        return self.data


def format_of(path: PathLike) -> tuple[str, Kind]:
    """``(format name, kind)`` of ``path``, from its suffix (a directory is orbax)."""
    p = Path(path)
    suffix = "" if p.is_dir() else p.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(s for s in FORMATS if s) + " or a directory (orbax)"
        raise CheckpointError(f"{p}: unknown checkpoint format {suffix!r}; use {known}")
    return FORMATS[suffix]


# --------------------------------------------------------------------------- reading


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Read ``path`` in the format its name says (see the module docstring)."""
    p = Path(path)
    name, kind = format_of(p)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    reader = {
        "torch": _read_torch,
        "safetensors": _read_safetensors,
        "msgpack": _read_msgpack,
        "orbax": _read_orbax,
    }[name]
    return Checkpoint(kind, reader(p), p)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _read_torch(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it holds pickled objects other than tensors and "
            f"containers, which weights_only=True does not run (nothing was executed; "
            f"{_first_line(err)})"
        ) from None
    except Exception as err:  # truncated zip, bad magic number, EOF, ...
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})"
        ) from None
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors)")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(bad)}")
    state_dict = dict(obj)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({_first_line(err)})"
        ) from None


def _read_msgpack(path: Path) -> dict[str, Any]:
    from flax.serialization import msgpack_restore

    try:
        tree = msgpack_restore(path.read_bytes())
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a readable Flax msgpack file ({_first_line(err)})"
        ) from None
    return _variables_from(tree, path)


def _orbax_item(path: Path) -> Path:
    """The checkpoint directory inside a CheckpointManager layout, or ``path`` itself."""
    if (path / "_CHECKPOINT_METADATA").exists() and not (path / "default").is_dir():
        return path
    if (path / "default").is_dir():
        return path / "default"
    steps = sorted((int(p.name), p) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
    if steps:
        return _orbax_item(steps[-1][1])
    raise CheckpointError(f"{path}: not an orbax checkpoint directory")


def _read_orbax(path: Path) -> dict[str, Any]:
    import jax
    import orbax.checkpoint as ocp

    item = _orbax_item(path)
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            metadata = checkpointer.metadata(item.absolute()).item_metadata.tree
            # Host numpy arrays: no device placement, no sharding to guess.
            as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
            tree = checkpointer.restore(
                item.absolute(), args=ocp.args.PyTreeRestore(restore_args=as_numpy)
            )
    except Exception as err:
        raise CheckpointError(
            f"{item}: not a readable orbax checkpoint ({_first_line(err)})"
        ) from None
    return _variables_from(tree, path)


def _variables_from(tree: Any, path: Path) -> dict[str, Any]:
    """``params`` and ``batch_stats`` of a variables dict or a saved training state."""
    if not isinstance(tree, Mapping) or "params" not in tree:
        raise CheckpointError(f"{path}: expected Flax variables with a 'params' collection")
    return {k: tree[k] for k in ("params", "batch_stats") if tree.get(k)}


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: PathLike, *, force: bool = True, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    Readers never see a partial file, and a failure leaves ``path`` as it was (absent or old).
    With ``force=False`` an existing ``path`` is an error, raised before anything is written.
    """
    target = Path(path)
    if target.exists() and not force:
        raise CheckpointError(f"{target} exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = staging / target.name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            # A directory cannot be swapped in one rename: move the old one into the
            # staging area first, so it is deleted with it.
            target.rename(staging / ".replaced")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_state_dict(state_dict: Mapping[str, Any], path: PathLike, *, force: bool = True) -> None:
    """Write a PyTorch-keyed dict of arrays or tensors as ``.pt``/``.pth`` or ``.safetensors``."""
    name, kind = format_of(path)
    if kind != "state_dict":
        raise CheckpointError(f"{path}: a state_dict is written as .pt, .pth or .safetensors")
    # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
    arrays = {k: np.require(to_numpy(v), requirements="C") for k, v in state_dict.items()}
    with atomic_path(path, force=force) as tmp:
        if name == "torch":
            import torch

            torch.save({k: to_torch(v) for k, v in arrays.items()}, tmp)
        else:
            from safetensors.numpy import save_file

            save_file(arrays, tmp)


def save_variables(variables: Mapping[str, Any], path: PathLike, *, force: bool = True) -> None:
    """Write Flax variables as ``.msgpack`` or an orbax directory."""
    import jax

    name, kind = format_of(path)
    if kind != "variables":
        raise CheckpointError(f"{path}: Flax variables are written as .msgpack or orbax")
    tree = jax.device_get(dict(variables))
    with atomic_path(path, force=force, directory=name == "orbax") as tmp:
        if name == "msgpack":
            from flax.serialization import msgpack_serialize

            tmp.write_bytes(msgpack_serialize(tree))
        else:
            import orbax.checkpoint as ocp

            with ocp.PyTreeCheckpointer() as checkpointer:
                checkpointer.save(tmp.absolute(), tree)


def save_checkpoint(checkpoint: Checkpoint, path: PathLike, *, force: bool = False,
                    template: Any = None) -> None:  # fmt: skip
    """Write ``checkpoint`` in the format ``path`` names, converting as needed."""
    _, kind = format_of(path)
    if kind == "state_dict":
        save_state_dict(checkpoint.to_state_dict(template), path, force=force)
    else:
        save_variables(checkpoint.to_variables(template), path, force=force)
