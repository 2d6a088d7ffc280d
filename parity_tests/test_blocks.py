"""Parity of the SE residual blocks and make_stage against seres_torch, in eval and train mode."""

from __future__ import annotations

import pytest

import seres_jax as sj
from seres_jax.parity import compare_modules, randomize_batchnorm

from .helpers import HAVE_TORCH, assert_parity, nchw_input

if HAVE_TORCH:
    import seres_torch as st

pytestmark = pytest.mark.requires_torch

# The class of each style, by its name in both frameworks.
BLOCKS = {"postact": "SEResBlockPostAct", "preact": "SEResBlockPreAct"}

# (cin, cout, stride, batch, H, W): identity skip, channel change, stride 2 on odd, even and
# non-square sizes, batch 1.
CASES = [
    (16, 32, 1, 2, 8, 8),
    (8, 16, 2, 3, 17, 13),
    (16, 16, 2, 2, 10, 12),
    (32, 32, 1, 1, 7, 7),
]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "c{}-{}_s{}_b{}_{}x{}".format(*c))
@pytest.mark.parametrize("style", sorted(BLOCKS))
def test_block_parity(style, case, train, jax_device):
    cin, cout, stride, batch, h, w = case
    if train and batch * h * w < 2:
        pytest.skip("train mode needs more than one value per channel")
    torch_cls, flax_cls = getattr(st, BLOCKS[style]), getattr(sj, BLOCKS[style])
    tm = randomize_batchnorm(torch_cls(cin, cout, stride=stride, reduction=4), seed=sum(case))
    fm = flax_cls(cin, cout, stride=stride, reduction=4)
    x = nchw_input((batch, cin, h, w), seed=len(style))
    assert_parity(compare_modules(tm, fm, x, train=train, device=jax_device))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("style", sorted(BLOCKS))
def test_make_stage_parity(style, train, jax_device):
    import flax.linen as nn
    import torch

    torch_cls, flax_cls = getattr(st, BLOCKS[style]), getattr(sj, BLOCKS[style])
    tm = randomize_batchnorm(
        st.make_stage(torch_cls, 8, 16, n_blocks=3, first_stride=2, reduction=4)
    )

    class Stage(nn.Module):
        def setup(self):
            self.stage = sj.make_stage(flax_cls, 8, 16, n_blocks=3, first_stride=2, reduction=4)

        def __call__(self, x, train: bool = False):
            for block in self.stage:
                x = block(x, train)
            return x

    class Wrapped(torch.nn.Module):  # gives the torch stage the same "stage." prefix
        def __init__(self):
            super().__init__()
            self.stage = tm

        def forward(self, x):
            return self.stage(x)

    x = nchw_input((2, 8, 11, 11))
    assert_parity(compare_modules(Wrapped(), Stage(), x, train=train, device=jax_device))


@pytest.mark.parametrize("train", [True], ids=["train"])
@pytest.mark.parametrize("attn", ["eca", None], ids=["eca", "no-attention"])
@pytest.mark.parametrize("style", sorted(BLOCKS))
def test_block_attention_options(style, attn, train, jax_device):
    torch_cls, flax_cls = getattr(st, BLOCKS[style]), getattr(sj, BLOCKS[style])
    tm = randomize_batchnorm(torch_cls(16, 32, stride=2, reduction=4, attn=attn), seed=3)
    fm = flax_cls(16, 32, stride=2, reduction=4, attn=attn)
    x = nchw_input((2, 16, 15, 13), seed=4)
    assert_parity(compare_modules(tm, fm, x, train=train, device=jax_device))
