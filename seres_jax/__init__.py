"""seres_jax: Flax linen SE-ResNets that compute the same function as ``seres_torch``.

Modules take NHWC inputs; see ``seres_jax.layers`` for the layout, padding, naming,
initialisation and BatchNorm conventions, and ``seres_jax.convert`` for moving weights to and
from PyTorch. Importing this package never imports torch.
"""

from seres import __version__

from .blocks import SEResBlockPostAct, SEResBlockPreAct, make_stage
from .convert import ConversionError, flax_to_state_dict, flax_to_torch, torch_to_flax
from .layers import BatchNorm, ConvBNAct, ECABlock, SEBlock, count_params
from .models import SEResNetTiny

__all__ = [
    "BatchNorm",
    "ConvBNAct",
    "ConversionError",
    "ECABlock",
    "SEBlock",
    "SEResBlockPostAct",
    "SEResBlockPreAct",
    "SEResNetTiny",
    "__version__",
    "count_params",
    "flax_to_state_dict",
    "flax_to_torch",
    "make_stage",
    "torch_to_flax",
]
