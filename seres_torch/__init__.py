"""seres_torch: the PyTorch reference SE-ResNets, checkpoint-compatible with the notebook.

Layout is PyTorch's NCHW. This package never imports ``seres_jax``.
"""

from importlib import metadata as _metadata

from .blocks import SEResBlockPostAct, SEResBlockPreAct, make_stage
from .layers import ConvBNAct, ECABlock, SEBlock, count_params
from .models import SEResNetTiny

try:
    __version__ = _metadata.version("seres")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

__all__ = [
    "ConvBNAct",
    "ECABlock",
    "SEBlock",
    "SEResBlockPostAct",
    "SEResBlockPreAct",
    "SEResNetTiny",
    "__version__",
    "count_params",
    "make_stage",
]
