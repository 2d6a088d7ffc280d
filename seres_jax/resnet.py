"""Flax SE / ECA ResNets, ResNeXts and SENet-154, mirroring ``seres_torch.resnet`` (timm's
layout and options: ``stem_type``, ``block_reduce_first``, ``down_kernel_size``, ``avg_down``,
``aa_layer``, ``block_widths``; see there).

Parameter names follow timm's keys through the converter's naming rule (``conv1``, ``bn1``,
``layer1_0/conv1``, ``layer1_0/se/fc1``, ``layer2_0/downsample_0``, ``fc``), so a timm
``state_dict`` converts strictly. NHWC, explicit symmetric padding, PyTorch BatchNorm semantics
(``seres_jax.layers``); ``dtype=jnp.bfloat16`` with float32 parameters is the TPU setting.
Convolutions are ``layers.conv2d`` with timm's initialisation; ``attn`` names any attention of
``layers.create_attn`` (``"se"`` is timm's ``SEModule``, ``"eca"`` its ``EcaModule``).

The one signature difference from PyTorch: a block there receives its ``downsample`` module,
here it builds it (``self.downsample``, timm's keys) from ``project: bool``, ``avg_down`` and
``down_kernel_size``.

Stochastic depth (``drop_path_rate``: a ``layers.DropPath`` on each block's branch after the
attention, before the add, at the rate ``drop_path_rates`` gives the block) and dropout before
``fc`` (``drop_rate``) are timm's, 0 by default; in train mode they draw their masks from the
``"dropout"`` RNG stream: ``apply(..., train=True, rngs={"dropout": key})``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import (
    HE_NORMAL,
    BatchNorm,
    DropPath,
    Dtype,
    SEModule,
    conv2d,
    create_attn,
    eca_kernel_size,
    make_divisible,
    torch_uniform,
)

# SEModule and make_divisible lived here before the attention vocabulary moved to layers.
__all__ = [
    "AA_LAYERS",
    "BLOCKS",
    "STEM_TYPES",
    "ZOO",
    "BasicBlock",
    "Bottleneck",
    "SEModule",
    "SEResNet",
    "anti_alias",
    "avg_pool_ceil",
    "create_model",
    "drop_path_rates",
    "make_divisible",
    "max_pool_stem",
]

# timm's deep stems with average-pool shortcuts: the "d" and "t" (tiered) models.
_D: dict[str, Any] = dict(stem_width=32, stem_type="deep", avg_down=True)
_T: dict[str, Any] = dict(stem_width=32, stem_type="deep_tiered", avg_down=True)
_B: dict[str, Any] = dict(block="bottleneck")
_X: dict[str, Any] = dict(block="bottleneck", cardinality=32)
# Per-block output widths of (conv1, conv2, conv3) of timm's pruned models, from
# timm/models/_pruned/ecaresnet{50d,101d}_pruned.txt (Knapsack pruning, arXiv 2002.08258).
_PRUNED_50D = (
    (47, 18, 19),
    (52, 22, 19),
    (64, 35, 19),
    (85, 37, 171),
    (107, 80, 171),
    (120, 85, 171),
    (125, 87, 171),
    (198, 126, 818),
    (255, 232, 818),
    (256, 233, 818),
    (253, 235, 818),
    (256, 225, 818),
    (256, 239, 818),
    (492, 237, 2022),
    (512, 500, 2022),
    (512, 490, 2022),
)
_PRUNED_101D = (
    (45, 25, 26),
    (53, 20, 26),
    (60, 27, 26),
    (81, 24, 142),
    (93, 49, 142),
    (102, 54, 142),
    (122, 78, 142),
    (101, 25, 278),
    (239, 160, 278),
    (234, 156, 278),
    (250, 176, 278),
    (253, 191, 278),
    (251, 175, 278),
    (230, 128, 278),
    (244, 154, 278),
    (244, 159, 278),
    (238, 97, 278),
    (244, 149, 278),
    (253, 181, 278),
    (245, 119, 278),
    (255, 216, 278),
    (256, 201, 278),
    (253, 149, 278),
    (254, 141, 278),
    (256, 190, 278),
    (256, 217, 278),
    (255, 156, 278),
    (256, 155, 278),
    (256, 232, 278),
    (256, 214, 278),
    (499, 289, 2042),
    (512, 512, 2042),
    (512, 502, 2042),
)
ZOO: dict[str, dict[str, Any]] = {
    "seresnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "seresnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "seresnet50": dict(_B, layers=(3, 4, 6, 3)),
    "seresnet50t": dict(_B, layers=(3, 4, 6, 3), **_T),
    "seresnet101": dict(_B, layers=(3, 4, 23, 3)),
    "seresnet152": dict(_B, layers=(3, 8, 36, 3)),
    "seresnet152d": dict(_B, layers=(3, 8, 36, 3), **_D),
    "seresnet200d": dict(_B, layers=(3, 24, 36, 3), **_D),
    "seresnet269d": dict(_B, layers=(3, 30, 48, 8), **_D),
    "seresnetaa50d": dict(_B, layers=(3, 4, 6, 3), aa_layer="avg", **_D),
    "seresnext26d_32x4d": dict(_X, layers=(2, 2, 2, 2), base_width=4, **_D),
    "seresnext26t_32x4d": dict(_X, layers=(2, 2, 2, 2), base_width=4, **_T),
    "seresnext50_32x4d": dict(_X, layers=(3, 4, 6, 3), base_width=4),
    "seresnext101_32x4d": dict(_X, layers=(3, 4, 23, 3), base_width=4),
    "seresnext101_32x8d": dict(_X, layers=(3, 4, 23, 3), base_width=8),
    "seresnext101_64x4d": dict(_B, layers=(3, 4, 23, 3), cardinality=64, base_width=4),
    "seresnext101d_32x8d": dict(_X, layers=(3, 4, 23, 3), base_width=8, **_D),
    "seresnextaa101d_32x8d": dict(_X, layers=(3, 4, 23, 3), base_width=8, aa_layer="avg", **_D),
    "seresnextaa201d_32x8d": dict(
        _X, layers=(3, 24, 36, 4), base_width=8, aa_layer="avg", **dict(_D, stem_width=64)
    ),
    "senet154": dict(
        _B, layers=(3, 8, 36, 3), cardinality=64, base_width=4, stem_type="deep",
        down_kernel_size=3, block_reduce_first=2,
    ),
    "ecaresnet26t": dict(_B, layers=(2, 2, 2, 2), attn="eca", **_T),
    "ecaresnet50d": dict(_B, layers=(3, 4, 6, 3), attn="eca", **_D),
    "ecaresnet50d_pruned": dict(
        _B, layers=(3, 4, 6, 3), attn="eca", block_widths=_PRUNED_50D, **_D
    ),
    "ecaresnet50t": dict(_B, layers=(3, 4, 6, 3), attn="eca", **_T),
    "ecaresnet101d": dict(_B, layers=(3, 4, 23, 3), attn="eca", **_D),
    "ecaresnet101d_pruned": dict(
        _B, layers=(3, 4, 23, 3), attn="eca", block_widths=_PRUNED_101D, **_D
    ),
    "ecaresnet200d": dict(_B, layers=(3, 24, 36, 3), attn="eca", **_D),
    "ecaresnet269d": dict(_B, layers=(3, 30, 48, 8), attn="eca", **_D),
    # 7×7 stem (timm ignores its stem_width=32 there) with average-pool shortcuts.
    "ecaresnetlight": dict(_B, layers=(1, 1, 11, 3), attn="eca", avg_down=True),
    "ecaresnext26t_32x4d": dict(_X, layers=(2, 2, 2, 2), base_width=4, attn="eca", **_T),
    "ecaresnext50t_32x4d": dict(_X, layers=(3, 4, 6, 3), base_width=4, attn="eca", **_T),
}  # fmt: skip
"""timm's SE and ECA ResNets by timm's name: each one's ``SEResNet`` arguments, timm's own
(its ``block_args``' ``attn_layer`` as ``attn``); ``create_model`` builds them."""

# timm's convolutions: PyTorch's geometry, He-normal over fan-out.
_conv = partial(conv2d, kernel_init=HE_NORMAL)


STEM_TYPES = ("", "deep", "deep_tiered")
"""timm's ``stem_type`` values: ``""`` a 7×7 convolution, ``"deep"`` three 3×3 ones,
``"deep_tiered"`` three 3×3 ones with a narrower first (the "d" and "t" models)."""
AA_LAYERS = ("avg",)
"""timm's anti-aliasing layers by ``create_aa``'s names (``aa_layer``): ``"avg"`` is its
``aa_layer=nn.AvgPool2d``."""


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


def _identity(x: jax.Array) -> jax.Array:
    return x


def anti_alias(aa_layer: str | None, stride: int = 2) -> Callable[[jax.Array], jax.Array]:
    """timm's ``create_aa`` for ``nn.AvgPool2d`` (mirror of ``seres_torch.resnet.anti_alias``):
    a 2×2/2 average pool without padding, floor mode, that takes over a convolution's stride;
    the identity without anti-aliasing."""
    if aa_layer is None or stride == 1:
        return _identity
    if aa_layer not in AA_LAYERS:
        raise ValueError(f"unknown aa_layer {aa_layer!r}; expected one of {AA_LAYERS} or None")
    return partial(nn.avg_pool, window_shape=(stride, stride), strides=(stride, stride),
                   padding=((0, 0), (0, 0)))  # fmt: skip


def drop_path_rates(drop_path_rate: float, layers: Sequence[int]) -> list[float]:
    """Each block's stochastic-depth rate, in order (mirror of
    ``seres_torch.resnet.drop_path_rates``): timm's ``drop_path_rate * i / (n - 1)``."""
    n = sum(layers)
    return [drop_path_rate * i / max(n - 1, 1) for i in range(n)]


def attention_kwargs(attn: str | None, unpruned: int) -> dict[str, Any]:
    """What a block's attention takes beyond its width (shared with ``seres_jax.nnx.resnet``).
    timm prunes a block's convolutions, not its attention module: ECA keeps the kernel size
    of the unpruned width (the same size whenever the block is not pruned). ECA's Conv1d is
    not one timm re-initialises; SE's Conv2d are (He-normal)."""
    if attn == "eca":
        return {"kernel_size": eca_kernel_size(unpruned)}
    return {"kernel_init": HE_NORMAL}


def _attention(attn: str | None, channels: int, unpruned: int, **dt: Any) -> nn.Module | None:
    return create_attn(attn, channels, **attention_kwargs(attn, unpruned), **dt)


class _Block(nn.Module):
    expansion: ClassVar[int] = 1
    inplanes: int
    planes: int
    stride: int = 1
    project: bool = False
    cardinality: int = 1
    base_width: int = 64
    attn: str | None = "se"
    reduce_first: int = 1
    aa_layer: str | None = None
    widths: Sequence[int] | None = None
    avg_down: bool = False
    down_kernel_size: int = 1
    zero_init_last: bool = True
    drop_path: float = 0.0  # the branch's stochastic-depth rate
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def _common(self, outplanes: int) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.se = _attention(self.attn, outplanes, self.planes * self.expansion, **dt)
        # As timm (and seres_torch's ``drop_path`` attribute): no module at rate 0.
        self.drop_path_layer = DropPath(self.drop_path) if self.drop_path > 0.0 else None
        self.aa = anti_alias(self.aa_layer, self.stride)
        self.downsample: list[Any] | None
        if not self.project:
            self.downsample = None
        elif self.avg_down:
            pool = avg_pool_ceil if self.stride != 1 else _identity
            conv = _conv(self.inplanes, outplanes, 1, **dt)
            self.downsample = [pool, conv, BatchNorm(**dt)]
        else:
            k = self.down_kernel_size if self.stride != 1 else 1
            pad = (self.stride - 1 + k - 1) // 2
            conv = _conv(self.inplanes, outplanes, k, self.stride, pad, **dt)
            self.downsample = [conv, BatchNorm(**dt)]

    def _conv_stride(self) -> int:
        return 1 if self.aa_layer is not None else self.stride  # the pool strides instead

    def _finish(self, y: jax.Array, x: jax.Array, train: bool) -> jax.Array:
        if self.se is not None:
            y = self.se(y)
        if self.drop_path_layer is not None:
            y = self.drop_path_layer(y, train)
        shortcut = x
        for layer in self.downsample or ():
            shortcut = layer(shortcut, train) if isinstance(layer, BatchNorm) else layer(shortcut)
        return nn.relu(y + shortcut)

    def _last_bn(self) -> BatchNorm:
        init = nn.initializers.zeros if self.zero_init_last else nn.initializers.ones
        return BatchNorm(scale_init=init, dtype=self.dtype, param_dtype=self.param_dtype)


class BasicBlock(_Block):
    """conv3×3(stride)-BN-ReLU(-anti-alias) → conv3×3-BN → attention → drop path → + shortcut
    → ReLU; ``widths``: ``conv1``'s and ``conv2``'s, ``drop_path``: the branch's rate (its
    ``DropPath`` is ``drop_path_layer``; see ``seres_torch.resnet.BasicBlock``)."""

    expansion = 1

    def setup(self) -> None:
        if self.cardinality != 1 or self.base_width != 64:
            raise ValueError("BasicBlock supports only cardinality 1 and base_width 64")
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        first, out = self.widths or (self.planes // self.reduce_first, self.planes)
        self.conv1 = _conv(self.inplanes, first, 3, self._conv_stride(), 1, **dt)
        self.bn1 = BatchNorm(**dt)
        self.conv2 = _conv(first, out, 3, padding=1, **dt)
        self.bn2 = self._last_bn()
        self._common(out)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self.aa(nn.relu(self.bn1(self.conv1(x), train)))
        return self._finish(self.bn2(self.conv2(y), train), x, train)


class Bottleneck(_Block):
    """1×1-BN-ReLU → grouped 3×3(stride)-BN-ReLU(-anti-alias) → 1×1-BN → attention →
    drop path → + shortcut → ReLU; ``widths``: ``conv1``'s, ``conv2``'s and ``conv3``'s,
    ``drop_path`` as in ``BasicBlock`` (see ``seres_torch.resnet.Bottleneck``)."""

    expansion = 4

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width = int(self.planes * (self.base_width / 64)) * self.cardinality
        outplanes = self.planes * self.expansion
        first, width, outplanes = self.widths or (width // self.reduce_first, width, outplanes)
        self.conv1 = _conv(self.inplanes, first, 1, **dt)
        self.bn1 = BatchNorm(**dt)
        stride = self._conv_stride()
        self.conv2 = _conv(first, width, 3, stride, 1, groups=self.cardinality, **dt)
        self.bn2 = BatchNorm(**dt)
        self.conv3 = _conv(width, outplanes, 1, **dt)
        self.bn3 = self._last_bn()
        self._common(outplanes)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(self.bn1(self.conv1(x), train))
        y = self.aa(nn.relu(self.bn2(self.conv2(y), train)))
        return self._finish(self.bn3(self.conv3(y), train), x, train)


BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
"""The block classes ``SEResNet``'s ``block`` may name."""


def _stem_widths(stem_type: str, stem_width: int) -> tuple[int, int, int]:
    """The deep stem's three convolution widths (timm's ``stem_chs`` and ``inplanes``)."""
    if stem_type not in STEM_TYPES:
        raise ValueError(f"unknown stem_type {stem_type!r}; expected one of {STEM_TYPES}")
    first = 3 * (stem_width // 4) if stem_type == "deep_tiered" else stem_width
    return first, stem_width, 2 * stem_width


def _block_widths(
    block_widths: Sequence[Sequence[int]] | None, layers: Sequence[int]
) -> list[Sequence[int] | None]:
    """Each block's ``widths`` (``None``: the block's own rule), checked against ``layers``."""
    if block_widths is None:
        return [None] * sum(layers)
    if len(block_widths) != sum(layers):
        raise ValueError(
            f"block_widths has {len(block_widths)} entries, layers {tuple(layers)} make "
            f"{sum(layers)} blocks"
        )
    return list(block_widths)


class SEResNet(nn.Module):
    """timm's ``ResNet`` with SE (or ECA) blocks; mirror of ``seres_torch.resnet.SEResNet``."""

    block: str = "bottleneck"
    layers: Sequence[int] = (3, 4, 6, 3)
    num_classes: int = 1000
    in_chans: int = 3
    cardinality: int = 1
    base_width: int = 64
    stem_width: int = 64
    stem_type: str = ""
    block_reduce_first: int = 1
    down_kernel_size: int = 1
    avg_down: bool = False
    aa_layer: str | None = None
    attn: str | None = "se"
    channels: Sequence[int] = (64, 128, 256, 512)
    block_widths: Sequence[Sequence[int]] | None = None
    zero_init_last: bool = True
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block_cls = BLOCKS[self.block]
        stem = _stem_widths(self.stem_type, self.stem_width)
        inplanes = stem[2] if self.stem_type else 64  # as timm: no stem_width for the 7×7
        # A list of layers (deep stem) or one convolution, named as timm names them.
        self.conv1: Any
        if self.stem_type:
            self.conv1 = [
                _conv(self.in_chans, stem[0], 3, 2, 1, **dt), BatchNorm(**dt), nn.relu,
                _conv(stem[0], stem[1], 3, padding=1, **dt), BatchNorm(**dt), nn.relu,
                _conv(stem[1], inplanes, 3, padding=1, **dt),
            ]  # fmt: skip
        else:
            self.conv1 = _conv(self.in_chans, inplanes, 7, 2, 3, **dt)
        self.bn1 = BatchNorm(**dt)
        # With anti-aliasing timm replaces the max-pool by the 2×2/2 average pool.
        self.maxpool = anti_alias(self.aa_layer) if self.aa_layer else max_pool_stem
        widths = iter(_block_widths(self.block_widths, self.layers))
        rates = iter(drop_path_rates(self.drop_path_rate, self.layers))
        stages = []
        for index, (planes, repeats) in enumerate(zip(self.channels, self.layers, strict=True)):
            stride = 1 if index == 0 else 2
            outplanes = planes * block_cls.expansion
            # timm decides on a projection before pruning; the stem is never pruned, so
            # inplanes is unpruned where the stride is 1 (the first stage).
            project = stride != 1 or inplanes != outplanes
            blocks = []
            for i in range(repeats):
                block_width = next(widths)
                blocks.append(
                    block_cls(
                        inplanes,
                        planes,
                        stride if i == 0 else 1,
                        project=i == 0 and project,
                        cardinality=self.cardinality,
                        base_width=self.base_width,
                        attn=self.attn,
                        reduce_first=self.block_reduce_first,
                        aa_layer=self.aa_layer,
                        widths=block_width,
                        avg_down=self.avg_down,
                        down_kernel_size=self.down_kernel_size,
                        zero_init_last=self.zero_init_last,
                        drop_path=next(rates),
                        **dt,
                    )
                )
                inplanes = block_width[-1] if block_width else outplanes
            stages.append(blocks)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.dropout = nn.Dropout(self.drop_rate)  # the identity at rate 0: no RNG needed
        init = torch_uniform(inplanes)
        self.fc = nn.Dense(self.num_classes, kernel_init=init, bias_init=init, **dt)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for layer in self.conv1 if self.stem_type else (self.conv1,):
            x = layer(x, train) if isinstance(layer, BatchNorm) else layer(x)
        x = self.maxpool(nn.relu(self.bn1(x, train)))
        for block in (*self.layer1, *self.layer2, *self.layer3, *self.layer4):
            x = block(x, train)
        x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
        return self.fc(self.dropout(x, deterministic=not train))


def create_model(name: str, **overrides: Any) -> SEResNet:
    """A zoo model by timm's name, e.g. ``create_model("seresnet50", num_classes=10)``."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    return SEResNet(**{**ZOO[name], **overrides})
