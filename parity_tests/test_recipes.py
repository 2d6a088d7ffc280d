"""timm's training recipe in the train step: gradient accumulation, clipping, the BCE loss and
the model EMA, against PyTorch running timm's ``train_one_epoch`` on the same micro-batches.

timm's loop, per update: for each of the N micro-batches, forward in train mode (BatchNorm
statistics updated), the loss divided by N, backward (gradients summed); then
``dispatch_clip_grad`` and ``optimizer.step()``; then ``model_ema.update(step=num_updates)``.
``train_step(..., grad_accum_steps=N)`` takes micro-batch ``j`` as rows ``j::N`` of the batch.
Gates as the trajectory test's: 1e-5 on losses, 1e-4 on parameters and running statistics
after 3 updates (measured: ``pytest -s`` prints them).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seres_jax as sj
from seres_jax import compiler, optim
from seres_jax.convert import flax_to_state_dict, torch_to_flax
from seres_jax.data import load_digits, splits_from_arrays, train_dataset
from seres_jax.ema import EmaConfig
from seres_jax.parity import relative_error
from seres_jax.train import StepOptions, TrainConfig, TrainState, train_step

from .helpers import HAVE_TORCH

if HAVE_TORCH:
    import torch
    import torch.nn.functional as F

    import seres_torch as st

UPDATES, BATCH, ACCUM, SMOOTHING, CLIP, LR = 3, 32, 2, 0.1, 0.1, 0.2
LOSS_TOL, STATE_TOL = 1e-5, 1e-4
KW = dict(in_ch=1, num_classes=10, base=8, n=1, reduction=4)


@pytest.fixture(scope="module")
def batches():
    stream = train_dataset(splits_from_arrays(load_digits(seed=0)), BATCH, seed=5)
    return [stream[i] for i in range(UPDATES)]


def _bce_torch(logits, labels):
    # timm's BinaryCrossEntropy(smoothing=SMOOTHING) on integer targets (checked against
    # timm itself in test_losses.py): smoothed one-hots, BCE with logits, mean.
    off = SMOOTHING / logits.shape[-1]
    target = torch.full_like(logits, off).scatter_(1, labels[:, None], 1 - SMOOTHING + off)
    return F.binary_cross_entropy_with_logits(logits, target)


@pytest.mark.requires_torch
def test_accumulated_clipped_bce_updates_match_timms_loop(batches):
    torch_model = st.SEResNetTiny(**KW).train()
    variables = torch_to_flax(torch_model.state_dict())
    opt = torch.optim.SGD(torch_model.parameters(), lr=LR, momentum=0.9, nesterov=True)
    tx = optax.chain(optim.clip_grad(CLIP, "norm"), optim.create_optimizer("nesterov", LR))
    ema = EmaConfig(decay=0.99, use_warmup=True)
    state = TrainState.create(sj.SEResNetTiny(**KW).apply, variables, tx, ema=ema)
    options = StepOptions(label_smoothing=np.float32(SMOOTHING), bce=np.bool_(True))
    step = compiler.jit(
        functools.partial(train_step, options=options, grad_accum_steps=ACCUM),
        platform="cpu",
        donate_argnums=0,
    )

    loss_errors, norms, expected_ema = [], [], jax.tree.map(np.asarray, state.ema)
    for images, labels in batches:
        opt.zero_grad()
        losses = []
        for j in range(ACCUM):  # timm's micro-batches, rows j::ACCUM of the update's batch
            x = torch.from_numpy(images[j::ACCUM].transpose(0, 3, 1, 2))
            loss = _bce_torch(torch_model(x), torch.from_numpy(labels[j::ACCUM]).long())
            (loss / ACCUM).backward()
            losses.append(loss.item())
        norms.append(float(torch.nn.utils.clip_grad_norm_(torch_model.parameters(), CLIP)))
        opt.step()
        state, metrics = step(state, images, labels)
        loss_j, loss_t = float(metrics["loss"]), float(np.mean(losses))
        loss_errors.append(abs(loss_j - loss_t) / abs(loss_t))
        # The EMA the step keeps is timm's, updated with step=num_updates after the update.
        expected_ema = ema.update(expected_ema, jax.device_get(state.variables), state.step)

    final = flax_to_state_dict(jax.device_get(state.variables))
    reference = torch_model.state_dict()
    params = {k for k, _ in torch_model.named_parameters()}
    param_err = max(relative_error(final[k], reference[k]) for k in params)
    stats = [k for k in reference if k.endswith(("running_mean", "running_var"))]
    stats_err = max(relative_error(final[k], reference[k]) for k in stats)
    counts = {int(final[k]) for k in reference if k.endswith("num_batches_tracked")}
    ema_err = max(
        jax.tree.leaves(jax.tree.map(relative_error, jax.device_get(state.ema), expected_ema))
    )
    print(f"accumulated BCE + clipping: worst loss {max(loss_errors):.2e}, params "
          f"{param_err:.2e}, running stats {stats_err:.2e}, EMA {ema_err:.2e}")  # fmt: skip
    assert max(loss_errors) < LOSS_TOL, loss_errors
    assert param_err < STATE_TOL and stats_err < STATE_TOL
    assert counts == {UPDATES * ACCUM}  # every micro-batch updated the statistics
    assert ema_err < 1e-6
    initial = flax_to_state_dict(variables)
    assert max(relative_error(final[k], initial[k]) for k in params) > 1e-3
    assert min(norms) > CLIP  # the clipping acted at every update, else it is not tested


def _accumulation_case(batch: int):
    model = sj.SEResNetTiny(**KW)
    splits = splits_from_arrays(load_digits(seed=0))
    images, labels = train_dataset(splits, batch, seed=1)[0]
    variables = jax.jit(model.init)(jax.random.key(0), images[:1])
    tx = optim.create_optimizer("momentum", 0.1)
    options = StepOptions(mixup=np.float32(1.0), seed=np.uint32(3))
    fresh = functools.partial(TrainState.create, model.apply, variables, tx)
    return fresh, images, labels, options


def test_accumulation_draws_each_micro_batch_separately():
    """With mixup and dropout on, micro-batches draw their own masks: an accumulated update
    is not the one-batch update (it would be if the key were shared), and is deterministic."""
    fresh, images, labels, options = _accumulation_case(16)
    one = jax.jit(functools.partial(train_step, options=options))
    two = jax.jit(functools.partial(train_step, options=options, grad_accum_steps=2))
    a = one(fresh(), images, labels)[0]
    b, c = (two(fresh(), images, labels)[0] for _ in range(2))
    assert max(jax.tree.leaves(jax.tree.map(relative_error, a.params, b.params))) > 1e-4
    jax.tree.map(np.testing.assert_array_equal, b.params, c.params)


@pytest.mark.slow
def test_compiled_accumulation_holds_one_micro_batch():
    """``compile_steps(mesh, N)`` runs each micro-batch as its own program (``fit``'s path,
    covered end to end by test_image_training): its update equals the one-program
    ``train_step(..., grad_accum_steps=N)`` (8 devices, batch sharded), and the micro-batch
    program needs the temporary memory of a plain step on one micro-batch, not of the whole
    batch (on XLA:CPU the one-program step holds all N at once)."""
    from seres_jax.train import compile_steps, make_mesh
    from seres_jax.train.steps import _accumulate, _start

    fresh, images, labels, options = _accumulation_case(32)
    two = jax.jit(functools.partial(train_step, options=options, grad_accum_steps=2))
    joined, expected = two(fresh(), images, labels)

    def temp_bytes(fn, *args):
        return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes

    state = fresh()
    micro = functools.partial(_accumulate, options=options, count=2)
    per_micro = temp_bytes(micro, state, _start(state), images, labels, np.int32(0))
    plain = functools.partial(train_step, options=options)
    half = temp_bytes(plain, state, images[:16], labels[:16])
    whole = temp_bytes(plain, state, images, labels)
    assert per_micro < 1.1 * half < 0.7 * whole, (per_micro, half, whole)

    steps = compile_steps(make_mesh(), 2)
    x, y = jax.device_put((images, labels), steps.batch)
    # A copy: the step donates the state's buffers, which `variables` would share.
    state = jax.device_put(jax.tree.map(jnp.copy, fresh()), steps.replicated)
    split, metrics = steps.train(state, x, y, options)
    worst = max(jax.tree.leaves(jax.tree.map(relative_error, split.params, joined.params)))
    assert worst < 1e-5, worst  # 8 devices against 1: the reductions' order differs
    assert float(metrics["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-6)
    assert float(metrics["count"]) == 32


def test_validation_resolution_follows_the_weights_test_config():
    # seresnet50.a1_in1k: trained at 224 (crop 0.95), tested at 288 (crop 1.0), as timm's
    # pretrained config says; per-epoch evaluation defaults to the latter.
    options = TrainConfig(model="seresnet50.a1_in1k").data_options()
    assert (options.data_config.input_size, options.data_config.crop_pct) == (224, 0.95)
    assert (options.val_config.input_size, options.val_config.crop_pct) == (288, 1.0)
    explicit = TrainConfig(model="seresnet50.a1_in1k", val_image_size=256, val_crop_pct=0.9)
    assert explicit.data_options().val_config.input_size == 256
    assert explicit.data_options().val_config.crop_pct == 0.9
    # A run at a size of its own validates at it; `seres eval` of a bare checkpoint at timm's
    # resolve_data_config({}, model=m), the training size.
    assert TrainConfig(model="seresnet50.a1_in1k", image_size=160).data_options().val_config is None
    bare = TrainConfig(model="seresnet50.a1_in1k").data_options(val_at_test_size=False)
    assert bare.val_config is None
    assert TrainConfig(model="seresnet_tiny").data_options().val_config is None


def test_plateau_scheduler_follows_the_metric_and_resumes(tmp_path):
    """timm's plateau scheduler in ``fit``: each epoch's lr is what timm's
    ``PlateauLRScheduler`` gives for the top-5 accuracies seen (``seres_jax.scheduler``'s
    twin, checked against timm in test_scheduler.py), the optimizer runs with it, and a run
    stopped after 2 epochs and resumed (the scheduler's state in the checkpoint) ends where
    the straight run does, bit for bit."""
    from seres_jax.registry import build_flax
    from seres_jax.train import fit

    arch = "seresnet_tiny:in_ch=1,base=4,n=1,num_classes=10"
    data = load_digits(seed=0)
    config = TrainConfig(model=arch, epochs=5, batch_size=256, sched="plateau", lr=0.2,
                         patience_epochs=0, decay_rate=0.5, eval_metric="top5",
                         warmup_epochs=1, warmup_lr=0.01, log_every=1)  # fmt: skip
    lrs: dict[int, float] = {}
    straight = fit(build_flax(arch), data, config, workdir=tmp_path / "a",
                   on_log=lambda r: lrs.setdefault(r["epoch"], r.get("lr")))  # fmt: skip
    plateau = config.timm_schedule(5).plateau
    expected = [plateau.lr]
    for record in straight.history[:-1]:
        expected.append(plateau.step(record["epoch"] + 1, record["val_acc5"]))
    assert [lrs[e] for e in range(5)] == pytest.approx(expected, rel=1e-7)
    assert len(set(expected)) >= 3  # warmup, the base lr and at least one decay
    final_lr = plateau.step(5, straight.history[-1]["val_acc5"])
    held = float(straight.state.opt_state.hyperparams["learning_rate"])
    assert held == pytest.approx(final_lr, rel=1e-7)

    steps_per_epoch = len(data.train_labels) // 256
    stopped = dataclasses.replace(config, max_steps=2 * steps_per_epoch)
    fit(build_flax(arch), data, stopped, workdir=tmp_path / "b")
    resumed = fit(build_flax(arch), data, config, workdir=tmp_path / "b", resume=True)
    jax.tree.map(np.testing.assert_array_equal, resumed.state.params, straight.state.params)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history[2:]]
