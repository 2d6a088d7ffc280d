"""seres: the distribution's own package, holding what every part of it shares: its version.

The code lives in ``seres_torch`` (PyTorch), ``seres_jax`` (JAX/Flax, the converter, training)
and ``seres_cli`` (the ``seres`` command); each re-exports this ``__version__``. This package
imports nothing of theirs, so each of them may import it.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("seres")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
