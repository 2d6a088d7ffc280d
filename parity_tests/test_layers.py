"""SEBlock, ConvBNAct and the PyTorch-semantics BatchNorm against their torch counterparts."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seres_jax as sj
from seres_jax.convert import torch_to_flax
from seres_jax.parity import compare_modules, randomize_batchnorm, relative_error

from .helpers import HAVE_TORCH, assert_parity, nchw_input

if HAVE_TORCH:
    import torch

    import seres_torch as st


@pytest.mark.requires_torch
@pytest.mark.parametrize(
    ("channels", "reduction", "min_hidden", "shape"),
    [(64, 16, 4, (2, 5, 5)), (12, 3, 5, (1, 7, 3)), (6, 16, 4, (3, 1, 1)), (32, 2, 4, (2, 4, 6))],
)
def test_se_block_parity(channels, reduction, min_hidden, shape, jax_device):
    tm = st.SEBlock(channels, reduction, min_hidden)
    fm = sj.SEBlock(channels, reduction, min_hidden)
    x = nchw_input((shape[0], channels, *shape[1:]))
    assert_parity(compare_modules(tm, fm, x, train=False, device=jax_device))


@pytest.mark.requires_torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(
    ("cin", "cout", "k", "s", "p", "act", "hw"),
    [
        (3, 8, 3, 1, 1, "silu", (9, 9)),
        (8, 8, 3, 2, 1, "relu", (10, 10)),
        (4, 6, 1, 2, 0, "silu", (7, 5)),
        (5, 7, 5, 2, 2, "relu", (13, 16)),
        (4, 4, 3, 1, 0, "silu", (6, 5)),
    ],
)
def test_conv_bn_act_parity(cin, cout, k, s, p, act, hw, train, jax_device):
    tm = randomize_batchnorm(st.ConvBNAct(cin, cout, k=k, s=s, p=p, act=act))
    fm = sj.ConvBNAct(cin, cout, k=k, s=s, p=p, act=act)
    x = nchw_input((2, cin, *hw), seed=k + s)
    assert_parity(compare_modules(tm, fm, x, train=train, device=jax_device))


@pytest.mark.requires_torch
def test_unknown_activation_is_rejected_in_both():
    with pytest.raises(ValueError, match="gelu"):
        st.ConvBNAct(3, 3, act="gelu")
    with pytest.raises(ValueError, match="gelu"):
        jax.eval_shape(
            sj.ConvBNAct(3, 3, act="gelu").init, jax.random.key(0), jnp.ones((1, 4, 4, 3))
        )


if HAVE_TORCH:

    class _TorchBN(torch.nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(x)


class _FlaxBN(nn.Module):
    def setup(self):
        self.bn = sj.BatchNorm()

    def __call__(self, x, train: bool = False):
        return self.bn(x, train)


@pytest.mark.requires_torch
@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (1, 2, 3, 1), (2, 5, 1, 1)])
def test_batchnorm_running_statistics_follow_torch_over_many_steps(shape):
    """Unbiased running variance, PyTorch momentum, batch counter; n = 2 included."""
    tm = randomize_batchnorm(_TorchBN(shape[1]), seed=2).train()
    fm = _FlaxBN()
    variables = torch_to_flax(tm.state_dict())
    step = jax.jit(functools.partial(fm.apply, train=True, mutable=["batch_stats"]))
    for i in range(5):
        # An offset mean makes a biased/unbiased or momentum mix-up visible.
        x = nchw_input(shape, seed=i) * (1 + i) + 3.0
        y_t = tm(torch.from_numpy(x)).detach().numpy()
        y_j, updates = step(variables, x.transpose(0, 2, 3, 1))
        variables = {"params": variables["params"], **updates}
        assert relative_error(y_j, y_t.transpose(0, 2, 3, 1)) < 1e-5
    bs = variables["batch_stats"]["bn"]
    assert relative_error(bs["mean"], tm.bn.running_mean.numpy()) < 1e-6
    assert relative_error(bs["var"], tm.bn.running_var.numpy()) < 1e-6
    assert int(bs["num_batches_tracked"]) == int(tm.bn.num_batches_tracked)


def test_batchnorm_init_does_not_touch_statistics_and_eval_uses_them():
    fm = _FlaxBN()
    x = jnp.asarray(nchw_input((4, 5, 5, 3))) + 2.0
    variables = jax.jit(functools.partial(fm.init, train=True))(jax.random.key(0), x)
    bs = variables["batch_stats"]["bn"]
    np.testing.assert_array_equal(bs["mean"], np.zeros(3))
    np.testing.assert_array_equal(bs["var"], np.ones(3))
    assert int(bs["num_batches_tracked"]) == 0
    # Eval with the initial statistics (mean 0, var 1) is x / sqrt(1 + eps).
    y = jax.jit(fm.apply)(variables, x)
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-6)


@pytest.mark.requires_torch
def test_batchnorm_train_needs_more_than_one_value_per_channel_like_torch():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm2d(3).train()(torch.ones(1, 3, 1, 1))
    fm = _FlaxBN()
    variables = jax.eval_shape(fm.init, jax.random.key(0), jnp.ones((1, 1, 1, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        jax.eval_shape(
            functools.partial(fm.apply, train=True, mutable=["batch_stats"]),
            variables,
            jnp.ones((1, 1, 1, 3)),
        )


@pytest.mark.requires_torch
def test_explicit_padding_matches_torch_where_same_would_not():
    """A stride-2 3×3 conv on an even input: PyTorch pads (1, 1); "SAME" would pad (0, 1)."""
    conv_t = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
    x = nchw_input((1, 2, 8, 8))
    y_t = conv_t(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    kernel = {"params": {"kernel": conv_t.weight.detach().numpy().transpose(2, 3, 1, 0)}}
    ours = sj.layers.conv2d(2, 3, 3, stride=2, padding=1)
    same = nn.Conv(3, (3, 3), strides=(2, 2), padding="SAME", use_bias=False)
    x_j = x.transpose(0, 2, 3, 1)
    assert relative_error(ours.apply(kernel, x_j), y_t) < 1e-6
    assert relative_error(same.apply(kernel, x_j), y_t) > 1e-2


@pytest.mark.requires_torch
@pytest.mark.parametrize(
    ("channels", "kernel_size", "shape"),
    [(16, None, (2, 5, 5)), (128, None, (1, 3, 4)), (2048, None, (2, 1, 1)), (24, 5, (3, 4, 4))],
)
def test_eca_block_parity(channels, kernel_size, shape, jax_device):
    tm = st.ECABlock(channels, kernel_size)
    fm = sj.ECABlock(channels, kernel_size)
    x = nchw_input((shape[0], channels, *shape[1:]))
    assert_parity(compare_modules(tm, fm, x, train=False, device=jax_device))


@pytest.mark.requires_torch
def test_eca_kernel_size_follows_timm():
    # timm EcaModule: t = int(abs(log2(C) + 1) / 2); k = max(t if t odd else t + 1, 3)
    expected = {16: 3, 32: 3, 64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7, 1 << 14: 7}
    for channels, k in expected.items():
        assert st.layers.eca_kernel_size(channels) == k == sj.layers.eca_kernel_size(channels)
        assert st.ECABlock(channels).conv.weight.shape == (1, 1, k)


@pytest.mark.requires_torch
def test_unknown_attention_is_rejected_in_both():
    with pytest.raises(ValueError, match="cbam"):
        st.SEResBlockPostAct(8, 8, attn="cbam")
    with pytest.raises(ValueError, match="cbam"):
        block = sj.SEResBlockPostAct(8, 8, attn="cbam")
        jax.eval_shape(block.init, jax.random.key(0), jnp.ones((1, 4, 4, 8)))


@pytest.mark.requires_torch
def test_one_attention_factory_serves_both_families():
    """One vocabulary per framework, mirrored; ``"se"`` is the notebook's ``SEBlock`` in its
    blocks and timm's ``SEModule`` in the zoo (their keys differ: ``fc.0`` vs ``fc1``)."""
    from seres_jax import resnet as jr
    from seres_torch import resnet as tr

    for layers in (st.layers, sj.layers):
        assert [cls.__name__ for cls in layers.ATTENTION_LAYERS.values()] == [
            "SEModule",
            "ECABlock",
        ]
        assert layers.ATTENTIONS == ("se", "eca", "none")
        assert layers.create_attn(None, 64) is None and layers.create_attn("none", 64) is None
    assert st.SEResBlockPostAct(64, 64, reduction=4).se.fc[0].out_channels == 16
    assert tr.BasicBlock(64, 64).se.fc1.out_channels == 8  # make_divisible(64 / 16, 8)
    assert type(tr.Bottleneck(64, 16, attn="eca").se) is st.ECABlock
    x = jnp.zeros((1, 4, 4, 64))
    post = jax.eval_shape(sj.SEResBlockPostAct(64, 64, reduction=4).init, jax.random.key(0), x)
    assert post["params"]["se"]["fc_0"]["kernel"].shape == (1, 1, 64, 16)
    basic = jax.eval_shape(jr.BasicBlock(64, 64).init, jax.random.key(0), x)
    assert basic["params"]["se"]["fc1"]["kernel"].shape == (1, 1, 64, 8)


@pytest.mark.requires_torch
def test_conv2d_initialises_grouped_convolutions_as_torch():
    """PyTorch's default bound is ``1/sqrt(fan_in)`` with ``fan_in = cin / groups * k * k``."""
    ours = sj.layers.conv2d(8, 16, 3, groups=4)
    kernel = ours.init(jax.random.key(0), jnp.zeros((1, 5, 5, 8)))["params"]["kernel"]
    theirs = torch.nn.Conv2d(8, 16, 3, groups=4, bias=False).weight
    assert kernel.shape == tuple(theirs.permute(2, 3, 1, 0).shape) == (3, 3, 2, 16)
    bound = 1 / np.sqrt(2 * 3 * 3)
    assert bound / 2 < float(jnp.abs(kernel).max()) <= bound  # bound / 2: fan_in without groups
