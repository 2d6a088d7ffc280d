"""Flax SE-ResNet / SE-ResNeXt family, mirroring ``seres_torch.resnet`` (timm's layout).

Parameter names follow timm's keys through the converter's naming rule (``conv1``, ``bn1``,
``layer1_0/conv1``, ``layer1_0/se/fc1``, ``layer2_0/downsample_0``, ``fc``), so a timm
``state_dict`` converts strictly. NHWC, explicit symmetric padding, PyTorch BatchNorm semantics
(``seres_jax.layers``); ``dtype=jnp.bfloat16`` with float32 parameters is the TPU setting.
Convolutions are ``layers.conv2d`` with timm's initialisation; ``attn`` names any attention of
``layers.create_attn`` (``"se"`` is timm's ``SEModule``).

The one signature difference from PyTorch: a block there receives its ``downsample`` module,
here it builds it (``self.downsample``, timm's keys) from ``project: bool`` and ``avg_down``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import BatchNorm, Dtype, SEModule, conv2d, create_attn, make_divisible, torch_uniform

# SEModule and make_divisible lived here before the attention vocabulary moved to layers.
__all__ = [
    "BLOCKS",
    "DATA_CONFIGS",
    "ZOO",
    "BasicBlock",
    "Bottleneck",
    "SEModule",
    "SEResNet",
    "avg_pool_ceil",
    "create_model",
    "make_divisible",
    "max_pool_stem",
]

ZOO: dict[str, dict[str, Any]] = {
    "seresnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "seresnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "seresnet50": dict(block="bottleneck", layers=(3, 4, 6, 3)),
    "seresnet101": dict(block="bottleneck", layers=(3, 4, 23, 3)),
    "seresnet152": dict(block="bottleneck", layers=(3, 8, 36, 3)),
    "seresnext26d_32x4d": dict(
        block="bottleneck", layers=(2, 2, 2, 2), cardinality=32, base_width=4, stem_width=32,
        deep_stem=True, avg_down=True,
    ),
    "seresnext50_32x4d": dict(
        block="bottleneck", layers=(3, 4, 6, 3), cardinality=32, base_width=4
    ),
}  # fmt: skip

# The preprocessing each model's default timm weights expect: timm 1.0.31's pretrained_cfg for
# the tag ``timm.create_model(name)`` picks ("untrained" where timm has no weights, which keeps
# timm's ResNet defaults), as the fields of ``seres_jax.data.DataConfig`` (centre-crop
# evaluation). Recorded in parity_tests/fixtures/timm_data_configs.json with the other tags.
_TIMM_RESNET_DATA: dict[str, Any] = dict(
    input_size=224, crop_pct=0.875, interpolation="bicubic", mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225), test_input_size=288, test_crop_pct=0.95,
)  # fmt: skip
DATA_CONFIGS: dict[str, dict[str, Any]] = {name: dict(_TIMM_RESNET_DATA) for name in ZOO}
# seresnet50's default tag is a1_in1k (timm's "ResNet strikes back" recipe), evaluated with
# a larger crop; its ra2_in1k weights keep the defaults above.
DATA_CONFIGS["seresnet50"].update(crop_pct=0.95, test_crop_pct=1.0)

# timm's convolutions: PyTorch's geometry, He-normal over fan-out.
_conv = partial(conv2d, kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))


def avg_pool_ceil(x: jax.Array) -> jax.Array:
    """``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`` on NHWC: an odd edge
    gets a window of its own, averaged over the values it holds."""
    pad = ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0))
    window = (1, 2, 2, 1)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, pad)
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, window, pad)
    return total / count


def max_pool_stem(x: jax.Array) -> jax.Array:
    """``MaxPool2d(3, stride=2, padding=1)``: padding never wins a max, as in PyTorch."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class _Block(nn.Module):
    expansion: ClassVar[int] = 1
    inplanes: int
    planes: int
    stride: int = 1
    project: bool = False
    cardinality: int = 1
    base_width: int = 64
    attn: str | None = "se"
    avg_down: bool = False
    zero_init_last: bool = True
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def _common(self, outplanes: int) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.se = create_attn(self.attn, outplanes, **dt)
        if not self.project:
            self.downsample = None
        elif self.avg_down:
            pool = avg_pool_ceil if self.stride != 1 else (lambda x: x)
            conv = _conv(self.inplanes, outplanes, 1, **dt)
            self.downsample = [pool, conv, BatchNorm(**dt)]
        else:
            conv = _conv(self.inplanes, outplanes, 1, self.stride, **dt)
            self.downsample = [conv, BatchNorm(**dt)]

    def _finish(self, y: jax.Array, x: jax.Array, train: bool) -> jax.Array:
        if self.se is not None:
            y = self.se(y)
        shortcut = x
        for layer in self.downsample or ():
            shortcut = layer(shortcut, train) if isinstance(layer, BatchNorm) else layer(shortcut)
        return nn.relu(y + shortcut)

    def _last_bn(self) -> BatchNorm:
        init = nn.initializers.zeros if self.zero_init_last else nn.initializers.ones
        return BatchNorm(scale_init=init, dtype=self.dtype, param_dtype=self.param_dtype)


class BasicBlock(_Block):
    """conv3×3(stride)-BN-ReLU → conv3×3-BN → attention → + shortcut → ReLU."""

    expansion = 1

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.conv1 = _conv(self.inplanes, self.planes, 3, self.stride, 1, **dt)
        self.bn1 = BatchNorm(**dt)
        self.conv2 = _conv(self.planes, self.planes, 3, padding=1, **dt)
        self.bn2 = self._last_bn()
        self._common(self.planes)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(self.bn1(self.conv1(x), train))
        return self._finish(self.bn2(self.conv2(y), train), x, train)


class Bottleneck(_Block):
    """1×1-BN-ReLU → grouped 3×3(stride)-BN-ReLU → 1×1-BN → attention → + shortcut → ReLU."""

    expansion = 4

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width = int(self.planes * (self.base_width / 64)) * self.cardinality
        outplanes = self.planes * self.expansion
        self.conv1 = _conv(self.inplanes, width, 1, **dt)
        self.bn1 = BatchNorm(**dt)
        self.conv2 = _conv(width, width, 3, self.stride, 1, groups=self.cardinality, **dt)
        self.bn2 = BatchNorm(**dt)
        self.conv3 = _conv(width, outplanes, 1, **dt)
        self.bn3 = self._last_bn()
        self._common(outplanes)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(self.bn1(self.conv1(x), train))
        y = nn.relu(self.bn2(self.conv2(y), train))
        return self._finish(self.bn3(self.conv3(y), train), x, train)


BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class SEResNet(nn.Module):
    """timm's ``ResNet`` with SE (or ECA) blocks; mirror of ``seres_torch.resnet.SEResNet``."""

    block: str = "bottleneck"
    layers: Sequence[int] = (3, 4, 6, 3)
    num_classes: int = 1000
    in_chans: int = 3
    cardinality: int = 1
    base_width: int = 64
    stem_width: int = 64
    deep_stem: bool = False
    avg_down: bool = False
    attn: str | None = "se"
    channels: Sequence[int] = (64, 128, 256, 512)
    zero_init_last: bool = True
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block_cls = BLOCKS[self.block]
        inplanes = self.stem_width * 2 if self.deep_stem else 64  # as timm: no stem_width
        # A list of layers (deep stem) or one convolution, named as timm names them.
        self.conv1: Any
        if self.deep_stem:
            w = self.stem_width
            self.conv1 = [
                _conv(self.in_chans, w, 3, 2, 1, **dt), BatchNorm(**dt), nn.relu,
                _conv(w, w, 3, padding=1, **dt), BatchNorm(**dt), nn.relu,
                _conv(w, inplanes, 3, padding=1, **dt),
            ]  # fmt: skip
        else:
            self.conv1 = _conv(self.in_chans, inplanes, 7, 2, 3, **dt)
        self.bn1 = BatchNorm(**dt)
        stages = []
        for index, (planes, repeats) in enumerate(zip(self.channels, self.layers, strict=True)):
            stride = 1 if index == 0 else 2
            outplanes = planes * block_cls.expansion
            blocks = []
            for i in range(repeats):
                blocks.append(
                    block_cls(
                        inplanes,
                        planes,
                        stride if i == 0 else 1,
                        project=i == 0 and (stride != 1 or inplanes != outplanes),
                        cardinality=self.cardinality,
                        base_width=self.base_width,
                        attn=self.attn,
                        avg_down=self.avg_down,
                        zero_init_last=self.zero_init_last,
                        **dt,
                    )
                )
                inplanes = outplanes
            stages.append(blocks)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        init = torch_uniform(inplanes)
        self.fc = nn.Dense(self.num_classes, kernel_init=init, bias_init=init, **dt)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for layer in self.conv1 if self.deep_stem else (self.conv1,):
            x = layer(x, train) if isinstance(layer, BatchNorm) else layer(x)
        x = max_pool_stem(nn.relu(self.bn1(x, train)))
        for block in (*self.layer1, *self.layer2, *self.layer3, *self.layer4):
            x = block(x, train)
        return self.fc(jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype))


def create_model(name: str, **overrides: Any) -> SEResNet:
    """A zoo model by timm's name, e.g. ``create_model("seresnet50", num_classes=10)``."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    return SEResNet(**{**ZOO[name], **overrides})
