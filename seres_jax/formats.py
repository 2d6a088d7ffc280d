"""Checkpoint files: atomic writes and the safetensors interchange format (PyTorch key names).

A safetensors file written here is a PyTorch ``state_dict`` (``seres_jax.convert``'s key names
and layouts), readable by ``safetensors.torch.load_file`` and loadable with ``strict=True``
into the ``seres_torch`` model; reading and writing it needs no torch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Readers never see a partial file, and a failure leaves ``path`` as it was (absent or old).
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def save_safetensors(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Write a PyTorch-keyed dict of numpy arrays as safetensors, atomically."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp))


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a safetensors file as a PyTorch-keyed dict of numpy arrays."""
    from safetensors.numpy import load_file

    return load_file(str(path))
