"""seres_jax.nnx: every seres model as a Flax NNX module, with the linen models' guarantees.

The modules mirror the linen ones file for file and name for name (``layers``, ``blocks``,
``models``, ``resnet``, ``senet``); the conventions (NHWC, explicit padding, PyTorch's
initialisation and BatchNorm) are ``seres_jax.layers``'. Train/eval mode is NNX's:
``model.train()`` / ``model.eval()``. ``create_model`` builds any registered architecture,
``convert`` moves weights between NNX, linen, PyTorch and checkpoint files, ``train`` trains
with ``nnx.Optimizer``. Importing this package never imports torch.
"""

from .blocks import SEResBlockPostAct, SEResBlockPreAct, make_stage
from .convert import (
    from_torch,
    linen_apply,
    linen_path,
    load,
    save,
    to_linen,
    to_nnx,
    to_state_dict,
)
from .layers import BatchNorm, ConvBNAct, DropPath, ECABlock, SEBlock, SEModule, count_params
from .models import SEResNetTiny
from .registry import abstract_model, create_model
from .resnet import SEResNet
from .senet import SENet
from .train import CompiledSteps, compile_steps, eval_step, train_step

__all__ = [
    "BatchNorm",
    "CompiledSteps",
    "ConvBNAct",
    "DropPath",
    "ECABlock",
    "SEBlock",
    "SEModule",
    "SENet",
    "SEResBlockPostAct",
    "SEResBlockPreAct",
    "SEResNet",
    "SEResNetTiny",
    "abstract_model",
    "compile_steps",
    "count_params",
    "create_model",
    "eval_step",
    "from_torch",
    "linen_apply",
    "linen_path",
    "load",
    "make_stage",
    "save",
    "to_linen",
    "to_nnx",
    "to_state_dict",
    "train_step",
]
