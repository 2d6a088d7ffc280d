"""``seres_jax.optim``'s timm optimizers (LAMB, LARS, RMSpropTF), timm's optimizer names and
gradient clipping, against timm.

50 steps of each run recorded in ``fixtures/timm_optim.safetensors`` by
``fixtures/record_timm_optim.py`` (timm's ``create_optimizer_v2`` on a reduced SE-ResNet-18,
timm's param groups, a warmup-cosine lr written before each step, NumPy-drawn gradients) are
replayed here through :func:`seres_jax.optim.create_optimizer` with ``decay_kernels_only``
(and :func:`seres_jax.optim.clip_grad` for the clipping runs), in Flax layout; the final
parameters must match timm's to ``PARAM_RTOL``, per tensor relative to its max-abs. Where timm
is installed the recorder runs live too. Nothing here imports torch.
"""

from __future__ import annotations

import inspect
import json
import runpy
from functools import cache, partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict
from safetensors import safe_open
from safetensors.numpy import load_file

from seres_jax import convert, optim
from seres_jax.registry import variables_template

from .helpers import WORST

FIXTURE = Path(__file__).parent / "fixtures" / "timm_optim.safetensors"
SCRIPT = FIXTURE.with_name("record_timm_optim.py")
# The recorder's ARCH_KWARGS as an architecture string (checked against the file below).
ARCH = "seresnet18:channels=4-4-8-8,layers=1-1-1-1,in_chans=1,num_classes=10"
# The recorder's gradient sequence and constants, from the script itself (it imports torch and
# timm only to record).
RECORDER = runpy.run_path(str(SCRIPT))
gradients, NUM_STEPS, ZERO_ALWAYS = (RECORDER[k] for k in ("gradients", "NUM_STEPS", "ZERO_ALWAYS"))
# Worst measured after 50 steps (float32, CPU; max|ours - timm| / max|timm| per tensor):
# LAMB 2.8e-7, LARS 4.0e-7, RMSpropTF 8.0e-7 (centered), SGD 2.9e-7, AdamW 1.3e-6, with
# clipping 3.7e-7; one clip_grad update 3.3e-7 (agc). Forgetting any one of the options
# (see test_recorded_runs_are_far_apart) lands 3e-5 to 1e+1 off.
PARAM_RTOL = 1e-5


@cache
def _metadata() -> dict[str, Any]:
    with safe_open(str(FIXTURE), "np") as f:
        return {k: json.loads(v) for k, v in f.metadata().items()}


@cache
def _recorded() -> dict[str, np.ndarray]:
    return load_file(str(FIXTURE))


@cache
def _template() -> dict[str, Any]:
    return {"params": variables_template(ARCH)["params"]}


def _to_flax(state_dict: dict[str, np.ndarray]) -> Any:
    """PyTorch-keyed parameters (or gradients: they transpose alike) -> Flax ``params``."""
    return convert.torch_to_flax(state_dict, _template())["params"]


def _entries(recorded: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in recorded.items() if k.startswith(prefix)}


def _stacked_gradients(shapes: dict[str, tuple[int, ...]], seed: int) -> Any:
    steps = [_to_flax(gradients(shapes, step, seed)) for step in range(NUM_STEPS)]
    return jax.tree.map(lambda *g: np.stack(g), *steps)


def _optimizer(spec: dict[str, Any], factors: np.ndarray, **overrides: Any) -> Any:
    """The run's optimizer, built as timm's ``create_optimizer_v2`` builds it from a model."""
    lrs = jnp.asarray(spec["lr"] * factors, jnp.float32)
    kwargs = dict(spec["kwargs"], **overrides)
    opt = optim.create_optimizer(
        spec["opt"],
        lambda count: lrs[count],  # timm's scheduler: the group's lr, set before each step
        weight_decay=spec["weight_decay"],
        mask=optim.decay_kernels_only,
        **kwargs,
    )
    if spec.get("clip"):
        opt = optax.chain(optim.clip_grad(spec["clip"][1], spec["clip"][0]), opt)
    return opt


@partial(jax.jit, static_argnums=0)
def _trajectory(opt: optax.GradientTransformation, params: Any, grads: Any) -> Any:
    def step(carry: Any, g: Any) -> tuple[Any, None]:
        p, state = carry
        updates, state = opt.update(g, state, p)
        return (optax.apply_updates(p, updates), state), None

    return jax.lax.scan(step, (params, opt.init(params)), grads)[0][0]


def _relative_errors(ours: Any, reference: Any) -> dict[str, float]:
    """Per Flax path: max|ours - reference| / max|reference| (0 where both are all zero)."""
    ours_flat, ref_flat = flatten_dict(ours, sep="/"), flatten_dict(reference, sep="/")
    assert ours_flat.keys() == ref_flat.keys()
    errors = {}
    for path, ref in ref_flat.items():
        diff = float(np.max(np.abs(np.asarray(ours_flat[path], np.float64) - ref)))
        scale = float(np.max(np.abs(ref)))
        errors[path] = diff / scale if scale else (0.0 if diff == 0 else np.inf)
    return errors


def _worst(errors: dict[str, float]) -> tuple[str, float]:
    path = max(errors, key=errors.__getitem__)
    return path, errors[path]


def _replay(
    recorded: dict[str, np.ndarray], spec: dict[str, Any], seed: int, **overrides: Any
) -> dict[str, float]:
    init = _entries(recorded, "init/")
    shapes = {k: v.shape for k, v in init.items()}
    opt = _optimizer(spec, recorded["lr_factors"], **overrides)
    final = _trajectory(opt, _to_flax(init), _stacked_gradients(shapes, seed))
    return _relative_errors(
        jax.device_get(final), _to_flax(_entries(recorded, f"{spec['name']}/final/"))
    )


def _runs() -> dict[str, dict[str, Any]]:
    return {name: dict(spec, name=name) for name, spec in _metadata()["runs"].items()}


# Each run costs a compilation (1-3 s on 2 CPU cores): the default suite replays the runs that
# together use every option (LAMB's decay-gated adaptation and its LAMBC/always_adapt form,
# LARS from timm's defaults and LARC with Nesterov, RMSpropTF coupled with the lr in the
# momentum and centered/decoupled without; the clipping modes are checked on one step by
# test_clipped_gradients_match_timm); `pytest -m slow` replays the rest too.
DEFAULT_RUNS = (
    "lamb",
    "lambc_adapt",
    "lars",
    "larc_nesterov",
    "rmsproptf",
    "rmsproptf_centered",
)


def _note(spec: dict[str, Any], err: float) -> None:
    kind = f"clip_{spec['clip'][0]}" if spec.get("clip") else spec["opt"]
    worst = WORST.setdefault("timm optimizers (50 steps)", {})
    worst[kind] = max(worst.get(kind, 0.0), err)


# --------------------------------------------------------------------------------- tests


def test_fixture_is_the_tested_setup():
    """The file records this file's architecture and steps, and its gradients are ours."""
    meta, recorded = _metadata(), _recorded()
    assert meta["arch_kwargs"] == dict(
        channels=[4, 4, 8, 8], layers=[1, 1, 1, 1], in_chans=1, num_classes=10
    )
    assert recorded["lr_factors"].shape == (NUM_STEPS,)
    shapes = {k: v.shape for k, v in _entries(recorded, "init/").items()}
    norms = [
        np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in gradients(shapes, s, 0).values()))
        for s in range(NUM_STEPS)
    ]
    np.testing.assert_allclose(norms, recorded["grad_norms"], rtol=1e-12)
    # LAMB's global clipping acts on most steps and not on the scaled-down ones.
    assert (recorded["grad_norms"] > 10).sum() > 40 and (recorded["grad_norms"] < 1).sum() >= 7


@pytest.mark.parametrize(
    "name",
    [n if n in DEFAULT_RUNS else pytest.param(n, marks=pytest.mark.slow) for n in _runs()],
)
def test_matches_recorded_timm(name):
    spec = _runs()[name]
    path, err = _worst(_replay(_recorded(), spec, seed=0))
    _note(spec, err)
    assert err <= PARAM_RTOL, f"{name}: {path} off timm by {err:.2e} (relative to its max-abs)"


@pytest.mark.parametrize("mode", optim.CLIP_MODES)
def test_clipped_gradients_match_timm(mode):
    """One ``clip_grad`` update equals timm's ``dispatch_clip_grad`` on the first step; the
    clipping does act (a sizeable share of gradients is changed, not all)."""
    recorded = _recorded()
    spec = _runs()[f"clip_{mode}"]
    init = _entries(recorded, "init/")
    raw = gradients({k: v.shape for k, v in init.items()}, 0, 0)
    clip = optim.clip_grad(spec["clip"][1], mode)
    params = _to_flax(init)
    ours = jax.jit(lambda g, p: clip.update(g, clip.init(p), p)[0])(_to_flax(raw), params)
    expected = _entries(recorded, f"clip_{mode}/clipped/")
    path, err = _worst(_relative_errors(ours, _to_flax(expected)))
    assert err <= 1e-6, f"{mode}: {path} off timm by {err:.2e}"
    changed = np.mean([not np.array_equal(raw[k], expected[k]) for k in raw])
    assert 0.2 < changed <= 1.0


def test_agc_reduces_over_flax_output_units():
    """AGC's units are the *last* Flax axis: reducing over every axis but the first (timm's
    torch layout read literally) measurably misses timm."""
    recorded = _recorded()
    init = _entries(recorded, "init/")
    raw = _to_flax(gradients({k: v.shape for k, v in init.items()}, 0, 0))
    params = _to_flax(init)
    value = _runs()["clip_agc"]["clip"][1]

    def wrong_norm(x):  # timm's reduction applied to Flax layout as is
        if x.ndim <= 1:
            return jnp.linalg.norm(x)
        return jnp.sqrt(jnp.sum(x * x, axis=tuple(range(1, x.ndim)), keepdims=True))

    def wrong_clip(g, p):
        max_norm = jnp.maximum(wrong_norm(p), 1e-3) * value
        norm = wrong_norm(g)
        return jnp.where(norm < max_norm, g, g * (max_norm / jnp.maximum(norm, 1e-6)))

    wrong = jax.jit(partial(jax.tree.map, wrong_clip))(raw, params)
    expected = _to_flax(_entries(recorded, "clip_agc/clipped/"))
    assert _worst(_relative_errors(wrong, expected))[1] > 1e-2


def test_recorded_runs_are_far_apart():
    """Any two runs of one optimizer end ``> 100 * PARAM_RTOL`` apart, so an implementation
    that ignored an option telling two runs apart (decay, trust_clip, centering, ...) would
    fail one of them by far; and every run moved every tensor it trains."""
    recorded, runs = _recorded(), _runs()
    init = _entries(recorded, "init/")
    finals = {name: _entries(recorded, f"{name}/final/") for name in runs}
    for name, final in finals.items():
        moved = [k for k in init if not np.array_equal(final[k], init[k])]
        assert set(init) - set(moved) <= {ZERO_ALWAYS}, name
    for a in runs:
        for b in runs:
            if a < b and runs[a]["opt"] == runs[b]["opt"]:
                worst = max(_relative_errors(finals[a], finals[b]).values())
                assert worst > 100 * PARAM_RTOL, (a, b, worst)


@pytest.mark.slow
def test_fixture_tells_the_variants_apart():
    """The recorded runs are sensitive to what the optimizers must get right: LAMB without
    its global gradient clipping, or adapting the undecayed leaves, lands far off timm."""
    recorded, runs = _recorded(), _runs()
    assert _worst(_replay(recorded, runs["lamb"], 0, max_grad_norm=None))[1] > 1e-3
    assert _worst(_replay(recorded, runs["lamb"], 0, always_adapt=True))[1] > 1e-3


def test_decay_kernels_only_is_timms_param_groups():
    """``decay_kernels_only`` leaves exactly the parameters timm's
    ``param_groups_weight_decay`` excludes undecayed."""
    params = _template()["params"]
    flags = flatten_dict(optim.decay_kernels_only(params))
    shapes = flatten_dict(params)
    no_decay = sorted(
        convert.flax_path_to_torch_key(("params", *path), len(shapes[path].shape))
        for path, decayed in flags.items()
        if not decayed
    )
    assert no_decay == _metadata()["no_decay"]


# Arguments of timm's classes these factories leave out (timm-only features or torch's
# extras); every other keyword must exist here with timm's default.
_NOT_PROVIDED = {
    "lr",
    "foreach",
    "maximize",
    "differentiable",
    "fused",
    "capturable",
    "amsgrad",
    "caution",
    "decoupled_decay",  # Lamb's (RMSpropTF's is provided)
    "corrected_weight_decay",
}


@pytest.mark.parametrize("name", optim.TIMM_OPTIMIZER_NAMES)
def test_names_follow_timms_registry(name):
    """Each name takes what timm's registry entry takes, with its defaults, and its factory
    has the timm class's keyword defaults."""
    entry = _metadata()["registry"][name]
    ours = optim._TIMM_OPTIMIZERS[name]
    assert (ours.has_eps, ours.has_momentum, ours.has_betas) == (
        entry["has_eps"],
        entry["has_momentum"],
        entry["has_betas"],
    )
    assert ours.defaults == entry["defaults"]
    signature = inspect.signature(ours.factory).parameters
    for arg, default in entry["signature"].items():
        if arg in _NOT_PROVIDED and not (arg == "decoupled_decay" and name == "rmsproptf"):
            continue
        if arg == "betas":
            assert (signature["b1"].default, signature["b2"].default) == tuple(default)
        else:
            assert signature[arg].default == default, (name, arg)


def test_create_optimizer_forwards_as_timm(monkeypatch):
    """momentum only where taken, eps/betas only where taken, the mask under each factory's
    own keyword; the class defaults otherwise."""
    calls = []

    def capture(learning_rate, **kwargs):
        calls.append(kwargs)
        return optax.identity()

    for name, info in list(optim._TIMM_OPTIMIZERS.items()):
        monkeypatch.setitem(optim._TIMM_OPTIMIZERS, name, info._replace(factory=capture))
    mask = optim.decay_kernels_only
    optim.create_optimizer("SGD", 0.1, weight_decay=1e-4, eps=1e-3, betas=(0.5, 0.6), mask=mask)
    optim.create_optimizer("momentum", 0.1, momentum=0.8)
    optim.create_optimizer("adamw", 1e-3, betas=(0.8, 0.9), mask=mask)
    optim.create_optimizer("lamb", 1e-3, weight_decay=0.02, eps=1e-8, momentum=0.5)
    optim.create_optimizer("lars", 1.0, betas=(0.5, 0.6))
    optim.create_optimizer("rmsproptf", 1e-2, eps=1e-3, alpha=0.95)
    assert calls == [
        dict(weight_decay=1e-4, nesterov=True, momentum=0.9, weight_decay_mask=mask),
        dict(weight_decay=0.0, nesterov=False, momentum=0.8),
        dict(weight_decay=0.0, b1=0.8, b2=0.9, weight_decay_mask=mask),
        dict(weight_decay=0.02, eps=1e-8),
        dict(weight_decay=0.0, momentum=0.9),
        dict(weight_decay=0.0, eps=1e-3, alpha=0.95, momentum=0.9),
    ]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: optim.create_optimizer("adam", 0.1), "unknown optimizer 'adam'; valid names: sgd"),
        (lambda: optim.create_optimizer("lamb", -0.1), "invalid learning rate -0.1"),
        (
            lambda: optim.create_optimizer("lamb", 0.1, betas=(0.9,)),  # type: ignore[arg-type]
            "betas must be a pair",
        ),
        (lambda: optim.lamb(1e-3, b2=1.0), r"invalid b2 1.0: must be \[0.0, 1.0\)"),
        (lambda: optim.lamb(1e-3, b1=-0.1), "invalid b1"),
        (lambda: optim.lamb(1e-3, eps=-1.0), "invalid eps -1.0"),
        (lambda: optim.lamb(1e-3, weight_decay=-1e-2), "invalid weight_decay"),
        (lambda: optim.lamb(1e-3, max_grad_norm=0.0), "invalid max_grad_norm 0.0"),
        (lambda: optim.lars(-1.0), "invalid learning rate"),
        (lambda: optim.lars(1.0, momentum=-0.9), "invalid momentum"),
        (lambda: optim.lars(1.0, nesterov=True), "Nesterov momentum requires a momentum"),
        (lambda: optim.lars(1.0, eps=-1e-8), "invalid eps"),
        (lambda: optim.rmsprop_tf(1e-2, alpha=1.5), "invalid alpha 1.5"),
        (lambda: optim.rmsprop_tf(1e-2, eps=-1e-10), "invalid eps"),
        (lambda: optim.rmsprop_tf(1e-2, weight_decay=-1.0), "invalid weight_decay"),
        (
            lambda: optim.clip_grad(1.0, "l2"),
            "unknown clip mode 'l2'; valid modes: norm, value, agc",
        ),
        (lambda: optim.clip_grad(-1.0, "norm"), "invalid clip value -1.0 for mode 'norm'"),
    ],
)
def test_bad_hyperparameters_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_parameters_are_required():
    params = {"w": jnp.ones((2, 3))}
    for opt in (optim.lamb(1e-3), optim.lars(1.0), optim.clip_grad(0.01, "agc")):
        with pytest.raises(ValueError, match="needs the parameters"):
            opt.update(params, opt.init(params))


def test_matches_live_timm():
    """The fixture is what the script records now, and other gradient draws match too."""
    pytest.importorskip("timm")
    record = RECORDER["record"]
    stored = _recorded()
    live = record()
    assert live.keys() == stored.keys()
    for key, value in live.items():
        scale = max(float(np.max(np.abs(stored[key]))), 1e-30)
        np.testing.assert_allclose(value, stored[key], rtol=0, atol=1e-6 * scale, err_msg=key)
    other = record(seed=1)
    for name, spec in _runs().items():
        path, err = _worst(_replay(other, spec, seed=1))
        assert err <= PARAM_RTOL, f"{name} (seed 1): {path} off timm by {err:.2e}"
