"""Training-trajectory parity: the same initial weights and batches, 10 optimizer steps in
PyTorch and in JAX (the linen model with seres' step, and the NNX model with ``nnx.Optimizer``
and ``seres_jax.nnx``'s step), give the same loss at every step and the same weights and
running statistics at the end.

Tolerance: 10 steps compound float32 rounding through forward, backward and optimizer, so
the gates are 1e-5 on each step's loss (relative) and 1e-4 on parameters and running
statistics (relative to each tensor's max-abs). Measured here: losses ~1.2e-7, parameters
~2.0e-6 (SGD) and ~3.4e-6 (AdamW), running statistics ~5.4e-7 (`pytest -s` prints them).
"""

from __future__ import annotations

import functools

import jax
import pytest
from flax import nnx

import seres_jax as sj
from seres_jax import compiler, optim
from seres_jax import nnx as snnx
from seres_jax.convert import flax_to_state_dict, torch_to_flax
from seres_jax.data import load_digits, splits_from_arrays, train_dataset
from seres_jax.parity import relative_error
from seres_jax.registry import format_arch
from seres_jax.train import StepOptions, TrainState, make_mesh, train_step

from .helpers import HAVE_TORCH

if HAVE_TORCH:
    import torch
    import torch.nn.functional as F

    import seres_torch as st

pytestmark = pytest.mark.requires_torch

STEPS, BATCH, SMOOTHING = 10, 32, 0.1
LOSS_TOL, STATE_TOL = 1e-5, 1e-4


def _torch_sgd(params, lr, total):
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-3, nesterov=True)
    warm = 3
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / 3, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm),
        ],
        milestones=[warm],
    )
    tx = optim.sgd(
        optim.warmup_cosine(lr, total, warmup_steps=warm), momentum=0.9, weight_decay=5e-3,
        nesterov=True,
    )  # fmt: skip
    return opt, sched, tx


def _torch_adamw(params, lr, total):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    # torch's defaults: cycle_momentum=True cycles AdamW's beta1 against the lr.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    tx = optim.adamw(
        optim.one_cycle(lr, total), b1=optim.one_cycle_momentum(total), weight_decay=0.05
    )
    return opt, sched, tx


@pytest.fixture(scope="module")
def batches():
    stream = train_dataset(splits_from_arrays(load_digits(seed=0)), BATCH, seed=3)
    return [stream[i] for i in range(STEPS)]


def _linen_loop(kw, variables, tx, options):
    """seres' linen step, compiled as its own training loop compiles it (with its XLA
    options): ``step(images, labels) -> loss`` and ``final() -> variables``."""
    state = TrainState.create(sj.SEResNetTiny(**kw).apply, variables, tx)
    jitted = compiler.jit(
        functools.partial(train_step, options=options), platform="cpu", donate_argnums=0
    )

    def step(images, labels):
        nonlocal state
        state, metrics = jitted(state, images, labels)
        return metrics

    return step, lambda: jax.device_get(state.variables)


def _nnx_loop(kw, variables, tx, options):
    """The same with the NNX model, ``nnx.Optimizer`` and ``seres_jax.nnx.compile_steps``."""
    arch = format_arch("seresnet_tiny", kw)
    model = snnx.to_nnx(variables, arch)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    steps = snnx.compile_steps(make_mesh(jax.devices("cpu")[:1]))

    def step(images, labels):
        nonlocal model, optimizer
        model, optimizer, metrics = steps.train(model, optimizer, images, labels, options)
        return metrics

    return step, lambda: snnx.to_linen(model, arch)


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize(
    ("name", "make", "lr", "preact"),
    [("sgd", _torch_sgd, 0.05, False), ("adamw", _torch_adamw, 2e-3, True)],
    ids=["sgd-nesterov-wd-warmup_cosine-postact", "adamw-onecycle-preact"],
)
def test_ten_steps_match_pytorch(name, make, lr, preact, api, batches):
    kw = dict(in_ch=1, num_classes=10, base=8, n=1, reduction=4, preact=preact)
    torch_model = st.SEResNetTiny(**kw).train()
    variables = torch_to_flax(torch_model.state_dict())
    opt, sched, tx = make(torch_model.parameters(), lr, STEPS)
    options = StepOptions(label_smoothing=SMOOTHING)  # no mixup: torch's plain smoothed loss
    loop = _linen_loop if api == "linen" else _nnx_loop
    step, final_variables = loop(kw, variables, tx, options)

    loss_errors = []
    for images, labels in batches:
        opt.zero_grad()
        logits = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
        loss_t = F.cross_entropy(logits, torch.from_numpy(labels).long(), label_smoothing=SMOOTHING)
        loss_t.backward()
        opt.step()
        sched.step()
        metrics = step(images, labels)
        loss_j = float(metrics["loss_sum"]) / BATCH
        loss_errors.append(abs(loss_j - loss_t.item()) / abs(loss_t.item()))

    final = flax_to_state_dict(final_variables())
    reference = torch_model.state_dict()
    assert set(final) == set(reference)
    param_names = {k for k, _ in torch_model.named_parameters()}
    param_err = max(relative_error(final[k], reference[k]) for k in param_names)
    stats_err = max(
        relative_error(final[k], reference[k])
        for k in reference
        if k.endswith(("running_mean", "running_var"))
    )
    counts = {int(final[k]) for k in reference if k.endswith("num_batches_tracked")}
    print(f"{api} {name} {'pre' if preact else 'post'}: worst loss {max(loss_errors):.2e}, "
          f"params {param_err:.2e}, running stats {stats_err:.2e}")  # fmt: skip
    assert max(loss_errors) < LOSS_TOL, loss_errors
    assert param_err < STATE_TOL
    assert stats_err < STATE_TOL
    assert counts == {STEPS}
    # The weights really moved, so parity is not met by a no-op.
    initial = flax_to_state_dict(variables)
    assert max(relative_error(final[k], initial[k]) for k in param_names) > 1e-3
