"""PyTorch SE-ResNet models: the notebook's CIFAR-sized ``SEResNetTiny``."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import SEResBlockPostAct, SEResBlockPreAct, make_stage


class SEResNetTiny(nn.Module):
    """Stem → three stages (``base``, ``2·base``, ``4·base`` channels; strides 1, 2, 2) → head → fc.

    Keys: ``stem.{0,1}``, ``stage{1,2,3}.{i}.*``, ``head.0`` (BatchNorm), ``fc`` (Linear).
    Parameter counts for the notebook's defaults: 702,986 (post-act) and 702,410 (``preact=True``).
    ``attn`` picks the blocks' channel attention: ``"se"`` (the notebook's), ``"eca"`` or ``None``.
    """

    def __init__(
        self,
        in_ch: int = 3,
        num_classes: int = 10,
        base: int = 32,
        n: int = 2,
        reduction: int = 16,
        preact: bool = False,
        attn: str | None = "se",
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, base, 3, padding=1, bias=False),
            nn.BatchNorm2d(base),
            nn.SiLU(inplace=True),
        )
        block = SEResBlockPreAct if preact else SEResBlockPostAct
        ch1, ch2, ch3 = base, base * 2, base * 4
        self.stage1 = make_stage(
            block, ch1, ch1, n_blocks=n, first_stride=1, reduction=reduction, attn=attn
        )
        self.stage2 = make_stage(
            block, ch1, ch2, n_blocks=n, first_stride=2, reduction=reduction, attn=attn
        )
        self.stage3 = make_stage(
            block, ch2, ch3, n_blocks=n, first_stride=2, reduction=reduction, attn=attn
        )
        self.head = nn.Sequential(
            nn.BatchNorm2d(ch3),
            nn.SiLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(ch3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        return self.fc(self.head(x).flatten(1))
