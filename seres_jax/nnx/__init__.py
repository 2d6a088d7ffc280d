"""seres_jax.nnx: every seres model as a Flax NNX module, with the linen models' guarantees.

The modules mirror the linen ones file for file and name for name (``layers``, ``blocks``,
``models``, ``resnet``, ``senet``); the conventions (NHWC, explicit padding, PyTorch's
initialisation and BatchNorm) are ``seres_jax.layers``'. Train/eval mode is NNX's:
``model.train()`` / ``model.eval()``. ``create_model`` builds any registered architecture,
``convert`` moves weights between NNX, linen, PyTorch and checkpoint files, ``train`` trains
with ``nnx.Optimizer``. Importing this package never imports torch.

**Native modules, not ``flax.nnx.bridge`` wrappers of the linen ones**, decided by measurement
(``seresnet_tiny``, 32×32, batch 128, the same jitted SGD step, 2-core CPU):

* step time and program: native 547 ms, bridge 541 ms per step (noise); 3,188 against 3,193
  HLO lines. Parity is no criterion: both compute the linen model's program (the native
  models bit for bit, ``parity_tests/test_nnx_modules.py``);
* how a user sees the model: the bridge's ``ToNNX`` needs a sample input to initialise
  (``lazy_init``: 7.3 s eagerly here; ``create_model`` 5 s, jitted once per architecture, then
  cached), ``train=True, mutable=["batch_stats"]`` on every call instead of NNX's
  ``model.train()``/``model.eval()``, and keeps linen's flat names (``head_0/mean``) where the
  native model has PyTorch's attribute paths (``model.layer1[0].conv1.kernel``);
* cost: 1,091 lines in five files that mirror the linen ones name for name; the numerics are
  shared, not copied (``seres_jax.layers``' ``batch_norm``, ``drop_path``, ``check_groups``,
  the initialisers), so a fix lands in both APIs at once.

The step is jitted with ``jax.jit`` in Flax's tree mode, not ``nnx.jit``: see
``seres_jax.nnx.train``.
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
