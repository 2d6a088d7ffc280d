"""A run's starting weights from a checkpoint: timm's ``--initial-checkpoint`` and
``--pretrained``, with timm's head and input adaptation.

``initial_weights`` reads any checkpoint seres reads (``.pt``/``.pth``/``.safetensors``/
``.msgpack``, an orbax directory, a seres work directory) onto the run's freshly initialised
variables, as timm's ``load_pretrained`` / ``load_checkpoint`` do:

* a classifier whose class count differs from the run's (a 2-D ``*.weight`` with its ``*.bias``,
  same features, other rows) keeps the run's fresh initialisation: timm drops it;
* a first convolution made for 3 input channels on a run with another count is adapted as
  timm's ``adapt_input_conv`` does: summed over the channels for 1, the RGB kernels repeated
  and scaled by ``3 / in_chans`` for more;
* every other tensor must match the run's architecture exactly: a checkpoint of another
  architecture is a ``ConversionError`` naming its first differing keys, as ``seres convert``.

The optimizer state always starts fresh. ``InitialWeights`` records what happened (the
source, the SHA-256 of its tensors, the keys re-initialised and adapted) for the run's
``config.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..convert import ConversionError, flax_to_state_dict, torch_to_flax
from ..formats import load_checkpoint, tensor_digest

__all__ = ["InitialWeights", "adapt_input_conv", "initial_weights"]


@dataclass(frozen=True)
class InitialWeights:
    """The starting variables of a run and where they came from: ``source`` (as the user
    named it), ``sha256`` (of its tensors, ``seres_jax.formats.tensor_digest``),
    ``reinitialised`` (the classifier's PyTorch-named keys left at the run's initialisation)
    and ``adapted`` (the input convolution's key, adapted to the run's channels)."""

    source: str
    sha256: str
    variables: dict[str, Any]
    reinitialised: tuple[str, ...] = ()
    adapted: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """What ``config.json`` keeps of it."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "reinitialised": list(self.reinitialised),
            "adapted": list(self.adapted),
        }


def adapt_input_conv(in_chans: int, weight: np.ndarray) -> np.ndarray:
    """timm's ``adapt_input_conv`` on an OIHW kernel made for 3 (or 3k, a space-to-depth stem)
    input channels: for 1 channel the sum over the colours, for more the RGB kernels repeated
    to ``in_chans`` and scaled by ``3 / in_chans`` (the activations keep their scale)."""
    out, inputs, kh, kw = weight.shape
    kernel = weight.astype(np.float32)
    if in_chans == 1:
        if inputs > 3:
            if inputs % 3:
                raise ConversionError([f"cannot adapt a {inputs}-channel input kernel to 1"])
            kernel = kernel.reshape(out, inputs // 3, 3, kh, kw).sum(axis=2)
        else:
            kernel = kernel.sum(axis=1, keepdims=True)
    elif in_chans != 3:
        if inputs != 3:
            raise ConversionError([f"cannot adapt a {inputs}-channel input kernel to {in_chans}"])
        repeat = math.ceil(in_chans / 3)
        kernel = np.tile(kernel, (1, repeat, 1, 1))[:, :in_chans] * np.float32(3 / in_chans)
    return kernel.astype(weight.dtype)


def _source_path(path: Path) -> Path:
    # A seres work directory: its checkpoints (the newest step), as `seres eval` reads a run.
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def _is_classifier(key: str, ours: Any, theirs: Any, ckpt: Mapping[str, Any]) -> bool:
    prefix = key.removesuffix(".weight")
    if not key.endswith(".weight") or len(ours.shape) != 2 or len(theirs.shape) != 2:
        return False
    bias = ckpt.get(f"{prefix}.bias")
    return ours.shape[1] == theirs.shape[1] and (bias is None or bias.shape == theirs.shape[:1])


def _is_input_conv(ours: Any, theirs: Any) -> bool:
    return (
        len(ours.shape) == len(theirs.shape) == 4
        and ours.shape[0] == theirs.shape[0]
        and ours.shape[2:] == theirs.shape[2:]
        and theirs.shape[1] % 3 == 0
        and (ours.shape[1] == 1 or theirs.shape[1] == 3)
    )


def initial_weights(
    source: str | Path, fresh: Mapping[str, Any], *, name: str | None = None
) -> InitialWeights:
    """``source``'s weights on the run's architecture, whose freshly initialised variables are
    ``fresh`` (``params``, ``batch_stats``): the classifier re-initialised where the class
    counts differ, the input convolution adapted where the channel counts do (see the module
    docstring). ``name``: how the source is named in the record and errors (default: the path;
    e.g. the ``hf-hub:`` name it was resolved from)."""
    path = _source_path(Path(source))
    label = name or str(source)
    checkpoint = load_checkpoint(path)
    theirs = {k: np.asarray(v) for k, v in checkpoint.to_state_dict().items()}
    ours = flax_to_state_dict(jax.device_get(dict(fresh)))
    reinitialised: list[str] = []
    adapted: list[str] = []
    merged = dict(theirs)
    for key in sorted(ours.keys() & theirs.keys()):
        mine, other = ours[key], theirs[key]
        if mine.shape == other.shape:
            continue
        if _is_classifier(key, mine, other, theirs):
            bias = f"{key.removesuffix('.weight')}.bias"
            merged[key] = mine
            reinitialised.append(key)
            if bias in theirs and bias in ours:
                merged[bias] = ours[bias]
                reinitialised.append(bias)
        elif _is_input_conv(mine, other):
            merged[key] = adapt_input_conv(mine.shape[1], other)
            adapted.append(key)
    if len({k.removesuffix(".weight").removesuffix(".bias") for k in reinitialised}) > 1:
        shapes = [f"{k}: {theirs[k].shape} there, {ours[k].shape} here" for k in reinitialised]
        raise ConversionError(shapes, f"{label}: more than one classifier to re-initialise")
    template = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), dict(fresh))
    variables = torch_to_flax(merged, template)
    return InitialWeights(
        source=label,
        sha256=tensor_digest(theirs),
        variables=variables,
        reinitialised=tuple(reinitialised),
        adapted=tuple(adapted),
    )
