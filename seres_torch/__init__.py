"""seres_torch: the PyTorch reference SE-ResNets, checkpoint-compatible with the notebook.

Layout is PyTorch's NCHW. This package never imports ``seres_jax``.
"""

from seres import __version__

from .blocks import SEResBlockPostAct, SEResBlockPreAct, make_stage
from .layers import ConvBNAct, ECABlock, SEBlock, count_params
from .models import SEResNetTiny

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
