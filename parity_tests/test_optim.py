"""Parity of seres_jax.optim with torch.optim, torch.optim.lr_scheduler and F.cross_entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seres_jax import losses, optim

from .helpers import HAVE_TORCH

if HAVE_TORCH:
    import torch

jax.config.update("jax_default_matmul_precision", "highest")

NUM_STEPS = 25
# Worst errors measured over all cases below (float32, CPU): parameters 5.5e-7 relative
# to their max-abs after 25 AdamW steps (1e-7, one ulp, after the first step; SGD 5.0e-7),
# schedules 4.0e-7 relative per step, cross-entropy 9e-8 relative. optax.adamw itself
# is 7.3e-6 off torch.
PARAM_RTOL = 1e-6
SCHEDULE_RTOL = 1e-6

INIT_SCALE = 0.01
SHAPES = {"conv": (3, 3, 4, 8), "dense": (16, 10), "bias": (10,), "bn_scale": (8,)}


def _init_params():
    # Small, like a real init: steps are then comparable to the parameters, so float32
    # rounding of the stored parameters does not drown the optimizer's own error.
    rng = np.random.default_rng(0)
    return {k: (INIT_SCALE * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}


def _gradients():
    rng = np.random.default_rng(1)
    return [
        {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
        for _ in range(NUM_STEPS)
    ]


# ---------------------------------------------------------------------------- schedules

if HAVE_TORCH:
    lr_sched = torch.optim.lr_scheduler


def _cosine_case(lr, total=NUM_STEPS, warmup=5, start=1.0 / 3.0, final=1e-4):
    def make_torch(opt):
        cosine = lr_sched.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=final)
        if not warmup:
            return cosine
        linear = lr_sched.LinearLR(opt, start_factor=start, total_iters=warmup)
        return lr_sched.SequentialLR(opt, [linear, cosine], milestones=[warmup])

    kwargs = dict(
        base_lr=lr,
        total_steps=total,
        warmup_steps=warmup,
        warmup_start_factor=start,
        final_lr=final,
    )
    return "cosine", kwargs, make_torch, total + 6


def _onecycle_case(lr, total=NUM_STEPS, pct=0.3, div=25.0, final_div=1e4):
    def make_torch(opt):
        return lr_sched.OneCycleLR(
            opt,
            max_lr=lr,
            total_steps=total,
            pct_start=pct,
            div_factor=div,
            final_div_factor=final_div,
            anneal_strategy="cos",
            three_phase=False,
            # torch would also cycle SGD's momentum / Adam's beta1; one_cycle is lr-only.
            cycle_momentum=False,
        )

    kwargs = dict(
        max_lr=lr, total_steps=total, pct_start=pct, div_factor=div, final_div_factor=final_div
    )
    # Torch raises past total_steps, so only in-range steps compare.
    return "onecycle", kwargs, make_torch, total


def _step_case(lr, step_size=7, gamma=0.5):
    def make_torch(opt):
        return lr_sched.StepLR(opt, step_size=step_size, gamma=gamma)

    return "step", dict(base_lr=lr, step_size=step_size, gamma=gamma), make_torch, NUM_STEPS + 6


def _constant_case(lr):
    def make_torch(opt):
        return lr_sched.LambdaLR(opt, lambda step: 1.0)

    return "constant", dict(lr=lr), make_torch, 10


# The configurations the optimizer runs use, as functions of the base lr.
RUN_SCHEDULES = {
    "constant": None,
    "cosine": _cosine_case,
    "onecycle": _onecycle_case,
    "step": _step_case,
}

SCHEDULE_CASES = [
    _cosine_case(0.1),
    _cosine_case(0.1, total=20, warmup=0, final=0.0),
    _cosine_case(0.3, total=40, warmup=10, start=0.01, final=0.0),
    _onecycle_case(0.1),
    # Fractional peak (10 * 0.25 - 1 = 1.5), float-noisy peak (100 * 0.3 - 1 is
    # 29.000000000000004), and the degenerate pct_start of 0 and 1.
    _onecycle_case(0.1, total=10, pct=0.25, div=10.0, final_div=100.0),
    _onecycle_case(0.1, total=100, pct=0.3),
    _onecycle_case(0.1, total=7, pct=0.5),
    _onecycle_case(0.1, total=3, pct=0.0),
    _onecycle_case(0.1, total=20, pct=1.0),
    _step_case(0.1),
    _step_case(0.2, step_size=1, gamma=0.9),
    _constant_case(0.05),
]


def _torch_lrs(make_scheduler, base_lr, num):
    """``get_last_lr()`` after 0, 1, ..., num - 1 scheduler steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(num - 1):
        opt.step()  # no grads, so a no-op; keeps torch's call-order check quiet
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return np.array(lrs)


@pytest.mark.requires_torch
@pytest.mark.parametrize(
    ("name", "kwargs", "make_torch", "num"),
    SCHEDULE_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(SCHEDULE_CASES)],
)
def test_schedule_matches_torch(name, kwargs, make_torch, num):
    base_lr = kwargs.get("base_lr", kwargs.get("lr", kwargs.get("max_lr")))
    expected = _torch_lrs(make_torch, base_lr, num)
    schedule = jax.jit(optim.make_schedule(name, **kwargs))
    ours = np.array([schedule(step) for step in range(num)], np.float64)
    np.testing.assert_allclose(ours, expected, rtol=SCHEDULE_RTOL, atol=0)


def test_one_cycle_holds_min_lr_past_the_end():
    schedule = optim.one_cycle(0.1, total_steps=10)
    ours = [schedule(step) for step in (9, 10, 50)]
    np.testing.assert_allclose(ours, [0.1 / 25 / 1e4] * 3, rtol=SCHEDULE_RTOL)


# --------------------------------------------------------------------------- optimizers

# case -> (make_optimizer name and kwargs, torch.optim class name and kwargs)
OPTIMIZERS = {
    "sgd": ("sgd", {}, "SGD", {}),
    "sgd_momentum_wd": (
        "sgd",
        dict(momentum=0.9, weight_decay=5e-2),
        "SGD",
        dict(momentum=0.9, weight_decay=5e-2),
    ),
    "sgd_nesterov": (
        "sgd",
        dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
        "SGD",
        dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
    ),
    "sgd_dampening": (
        "sgd",
        dict(momentum=0.8, dampening=0.3),
        "SGD",
        dict(momentum=0.8, dampening=0.3),
    ),
    "adamw": (
        "adamw",
        dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=5e-2),
        "AdamW",
        dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-2),
    ),
}


def _run_torch(torch_name, lr, torch_kwargs, make_scheduler, no_decay=()):
    """Parameters after each step; keys in ``no_decay`` go in a weight_decay=0 group."""
    tensors = {k: torch.tensor(v) for k, v in _init_params().items()}
    groups = [
        {"params": [t for k, t in tensors.items() if k not in no_decay]},
        {"params": [t for k, t in tensors.items() if k in no_decay], "weight_decay": 0.0},
    ]
    # foreach=False pins torch's single-tensor reference loop (the CPU default anyway).
    opt = getattr(torch.optim, torch_name)(
        [g for g in groups if g["params"]], lr=lr, foreach=False, **torch_kwargs
    )
    scheduler = make_scheduler(opt) if make_scheduler else None
    history = []
    for grads in _gradients():
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
        if scheduler:
            scheduler.step()
        history.append({k: t.numpy().copy() for k, t in tensors.items()})
    return history


def _run_optax(tx):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree.map(jnp.asarray, _init_params())
    state = tx.init(params)
    history = []
    for grads in _gradients():
        params, state = step(params, state, grads)
        history.append(jax.tree.map(np.asarray, params))
    return history


def _max_param_error(ours, theirs):
    """Worst |ours - torch| over all steps and leaves, relative to the leaf's max-abs."""
    return max(
        np.abs(o[k] - t[k]).max() / np.abs(t[k]).max()
        for o, t in zip(ours, theirs, strict=True)
        for k in t
    )


@pytest.mark.requires_torch
@pytest.mark.parametrize("schedule", list(RUN_SCHEDULES))
@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_optimizer_matches_torch(case, schedule):
    name, kwargs, torch_name, torch_kwargs = OPTIMIZERS[case]
    base_lr = 0.1 if name == "sgd" else 1e-2
    if schedule == "constant":
        lr, make_scheduler = base_lr, None
    else:
        sched_name, sched_kwargs, make_scheduler, _ = RUN_SCHEDULES[schedule](base_lr)
        lr = optim.make_schedule(sched_name, **sched_kwargs)
    theirs = _run_torch(torch_name, base_lr, torch_kwargs, make_scheduler)
    ours = _run_optax(optim.make_optimizer(name, lr, **kwargs))
    assert _max_param_error(ours, theirs) <= PARAM_RTOL


def _torch_one_cycle_default(base_lr):
    """``OneCycleLR`` as torch builds it by default: ``cycle_momentum=True``, which cycles
    SGD's momentum (Adam's beta1) between 0.95 and 0.85 against the lr."""
    return lambda opt: lr_sched.OneCycleLR(opt, max_lr=base_lr, total_steps=NUM_STEPS)


def _cycled(name, kwargs):
    """``make_optimizer`` arguments with the momentum (beta1) cycled as torch does."""
    key = "momentum" if name == "sgd" else "b1"
    return {**kwargs, key: optim.one_cycle_momentum(NUM_STEPS)}


@pytest.mark.requires_torch
def test_one_cycle_momentum_matches_torch():
    for torch_cls, kwargs, read in (
        (torch.optim.SGD, {"momentum": 0.9}, lambda g: g["momentum"]),
        (torch.optim.AdamW, {}, lambda g: g["betas"][0]),
    ):
        opt = torch_cls([torch.nn.Parameter(torch.zeros(1))], lr=0.1, **kwargs)
        scheduler = _torch_one_cycle_default(0.1)(opt)
        expected = []
        for _ in range(NUM_STEPS):
            expected.append(read(opt.param_groups[0]))
            opt.step()
            scheduler.step()
        schedule = jax.jit(optim.one_cycle_momentum(NUM_STEPS))
        ours = np.array([schedule(step) for step in range(NUM_STEPS)], np.float64)
        np.testing.assert_allclose(ours, expected, rtol=SCHEDULE_RTOL, atol=0)


@pytest.mark.requires_torch
@pytest.mark.parametrize("case", ["sgd_momentum_wd", "sgd_nesterov", "adamw"])
def test_one_cycle_with_torch_defaults_cycles_momentum_too(case):
    name, kwargs, torch_name, torch_kwargs = OPTIMIZERS[case]
    base_lr = 0.1 if name == "sgd" else 1e-2
    theirs = _run_torch(torch_name, base_lr, torch_kwargs, _torch_one_cycle_default(base_lr))
    lr = optim.one_cycle(base_lr, NUM_STEPS)
    ours = _run_optax(optim.make_optimizer(name, lr, **_cycled(name, kwargs)))
    assert _max_param_error(ours, theirs) <= PARAM_RTOL
    # Without the cycling the run ends visibly elsewhere: the test sees the momentum.
    fixed = _run_optax(optim.make_optimizer(name, lr, **kwargs))
    assert _max_param_error(fixed, theirs) > 100 * PARAM_RTOL


@pytest.mark.requires_torch
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_train_config_one_cycle_is_torch_one_cycle_lr_with_its_defaults(optimizer):
    from seres_jax.train import TrainConfig

    lr = 0.1 if optimizer == "sgd" else 1e-2
    config = TrainConfig(optimizer=optimizer, schedule="onecycle", lr=lr, nesterov=False,
                         weight_decay=5e-2, decay_all=True)  # fmt: skip
    tx, _ = optim.build(config, NUM_STEPS, NUM_STEPS)  # what `fit` runs
    torch_name, torch_kwargs = {
        # OneCycleLR replaces SGD's momentum by its own cycle, as seres replaces --momentum.
        "sgd": ("SGD", dict(momentum=config.momentum, weight_decay=5e-2)),
        "adamw": ("AdamW", dict(weight_decay=5e-2)),
    }[optimizer]
    theirs = _run_torch(torch_name, lr, torch_kwargs, _torch_one_cycle_default(lr))
    assert _max_param_error(_run_optax(tx), theirs) <= PARAM_RTOL


NO_DECAY = ("bias", "bn_scale")


@pytest.mark.requires_torch
@pytest.mark.parametrize(
    "mask",
    [optim.decay_kernels_only, {k: k not in NO_DECAY for k in SHAPES}],
    ids=["callable", "pytree"],
)
@pytest.mark.parametrize("case", ["sgd_momentum_wd", "adamw"])
def test_weight_decay_mask_matches_torch_param_groups(case, mask):
    name, kwargs, torch_name, torch_kwargs = OPTIMIZERS[case]
    theirs = _run_torch(torch_name, 1e-2, torch_kwargs, None, no_decay=NO_DECAY)
    ours = _run_optax(optim.make_optimizer(name, 1e-2, weight_decay_mask=mask, **kwargs))
    assert _max_param_error(ours, theirs) <= PARAM_RTOL
    # And the mask really mattered: decaying everything ends elsewhere.
    unmasked = _run_optax(optim.make_optimizer(name, 1e-2, **kwargs))
    assert not np.allclose(unmasked[-1]["bias"], theirs[-1]["bias"], rtol=1e-4, atol=0)


@pytest.mark.requires_torch
def test_adamw_closes_optax_bias_correction_gap():
    """optax.adamw's float32 bias correction is visibly off torch (7.3e-6); ours is not."""
    _, _, torch_name, torch_kwargs = OPTIMIZERS["adamw"]
    theirs = _run_torch(torch_name, 1e-2, torch_kwargs, None)
    reference = _run_optax(optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=5e-2))
    assert _max_param_error(reference, theirs) > 4 * PARAM_RTOL


# ----------------------------------------------------------------------------- loss


@pytest.mark.requires_torch
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(label_smoothing):
    rng = np.random.default_rng(2)
    logits = (3 * rng.standard_normal((16, 10))).astype(np.float32)
    labels = rng.integers(0, 10, size=16)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels), label_smoothing=label_smoothing
    ).item()
    ours = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), label_smoothing)
    assert ours.dtype == jnp.float32
    np.testing.assert_allclose(float(ours), expected, rtol=1e-6)

    bf16_logits = jnp.asarray(logits, jnp.bfloat16)
    ours_bf16 = losses.cross_entropy(bf16_logits, jnp.asarray(labels), label_smoothing)
    assert ours_bf16.dtype == jnp.float32
    # Computed in float32, so it equals torch's float32 loss of the bf16-rounded logits...
    rounded = torch.tensor(np.asarray(bf16_logits, np.float32))
    expected_rounded = torch.nn.functional.cross_entropy(
        rounded, torch.tensor(labels), label_smoothing=label_smoothing
    ).item()
    np.testing.assert_allclose(float(ours_bf16), expected_rounded, rtol=1e-6)
    # ...and is within the bf16 bound of the float32 loss: rounding moves each logit by at
    # most 2**-8 relative, and the loss is 2-Lipschitz in the max-norm of the logits.
    bf16_bound = 2 * np.abs(logits).max() * 2**-8
    np.testing.assert_allclose(float(ours_bf16), expected, rtol=0, atol=bf16_bound)


def test_cross_entropy_rejects_bad_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.cross_entropy(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), 1.5)


# ---------------------------------------------------------------------------- dispatch


def test_unknown_optimizer_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"'adam'.*sgd, adamw"):
        optim.make_optimizer("adam", 1e-3)


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"'linear'.*cosine, onecycle, step, constant"):
        optim.make_schedule("linear", lr=1e-3)


def test_invalid_sgd_arguments_raise():
    with pytest.raises(ValueError, match="Nesterov"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.sgd(0.1, momentum=0.9, dampening=0.1, nesterov=True)


def test_optim_cross_entropy_is_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="seres_jax.losses.cross_entropy"):
        old = optim.cross_entropy
    assert old is losses.cross_entropy
