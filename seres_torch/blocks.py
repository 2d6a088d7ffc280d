"""PyTorch SE residual blocks (post- and pre-activation) and ``make_stage``.

SE is applied at the end of the residual branch, just before the skip is added; the skip is the
identity, or a strided 1×1 projection whenever the stride or the channel count changes.
``attn`` swaps the channel attention (any name of ``layers.create_attn``; ``"se"``, the default,
is the notebook's ``SEBlock`` with ``reduction``); it is kept under the attribute ``se`` whatever
it is, as timm does.
Attribute names are the notebook's and fix the ``state_dict`` keys.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNAct, SEBlock, create_attn


def _needs_projection(cin: int, cout: int, stride: int) -> bool:
    return stride != 1 or cin != cout


class SEResBlockPostAct(nn.Module):
    """``conv-BN-SiLU → conv-BN → SE → + skip → SiLU`` (the classic ResNet placement).

    Keys: ``conv1.{conv,bn}``, ``conv2.{0,1}``, ``se.fc.{0,2}`` and, when projecting,
    ``proj.{0,1}`` (1×1 conv, BatchNorm).
    """

    def __init__(
        self, cin: int, cout: int, stride: int = 1, reduction: int = 16, attn: str | None = "se"
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, k=3, s=stride, p=1, act="silu")
        self.conv2 = nn.Sequential(
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.se = create_attn(attn, cout, se_layer=partial(SEBlock, reduction=reduction))
        self.proj = None
        if _needs_projection(cin, cout, stride):
            self.proj = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        self.out_act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.proj is None else self.proj(x)
        y = self.conv2(self.conv1(x))
        if self.se is not None:
            y = self.se(y)
        return self.out_act(y + skip)


class SEResBlockPreAct(nn.Module):
    """``BN-SiLU → conv → BN-SiLU → conv → SE → + skip`` (ResNet v2 placement).

    Keys: ``bn1``, ``conv1``, ``bn2``, ``conv2``, ``se.fc.{0,2}`` and, when projecting, ``proj``
    (a bare 1×1 conv applied to the block's raw input, as in the notebook).
    """

    def __init__(
        self, cin: int, cout: int, stride: int = 1, reduction: int = 16, attn: str | None = "se"
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.se = create_attn(attn, cout, se_layer=partial(SEBlock, reduction=reduction))
        self.proj = None
        if _needs_projection(cin, cout, stride):
            self.proj = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.proj is None else self.proj(x)
        y = self.conv1(F.silu(self.bn1(x)))
        y = self.conv2(F.silu(self.bn2(y)))
        if self.se is not None:
            y = self.se(y)
        return y + skip


def make_stage(
    block_cls: type[nn.Module],
    cin: int,
    cout: int,
    n_blocks: int,
    first_stride: int,
    reduction: int,
    **block_kwargs: Any,
) -> nn.Sequential:
    """``n_blocks`` blocks: the first changes channels and stride, the rest keep ``cout``."""
    layers = [block_cls(cin, cout, stride=first_stride, reduction=reduction, **block_kwargs)]
    layers += [
        block_cls(cout, cout, stride=1, reduction=reduction, **block_kwargs)
        for _ in range(1, n_blocks)
    ]
    return nn.Sequential(*layers)
