"""The Flax NNX twins (``seres_jax.nnx``) of the linen models, module for module.

* **Paths.** Every registered architecture (reduced, plus full-size ``seresnet_tiny``,
  ``ecaresnet50d_pruned`` and ``legacy_seresnext26_32x4d``) builds the state its linen twin's
  ``init`` builds under the path rule (an index ``i`` after ``X`` reads ``X_i``;
  ``nnx.Param`` is ``params``, ``nnx.BatchStat`` ``batch_stats``): same paths, shapes and
  dtypes, nothing more, and the same parameter count. Abstract on both sides: nothing runs.
* **Numerics.** With the linen variables copied in by that rule, the NNX model computes the
  linen outputs bit for bit in eval and in train mode, and the same updated running statistics:
  ``SEResNetTiny`` (post- and pre-activation, SE and ECA, bfloat16 compute or weights), a
  reduced grouped ``SEResNet`` with stochastic depth, a reduced SENet-154.
* **Initialisation.** A fresh NNX model draws each parameter from its linen twin's initialiser
  (the same law, bounds and fans: with the draws made a fixed pattern, equal values).
* **Modes.** ``train()`` / ``eval()`` (and ``nnx.view``) flip every ``BatchNorm``, ``DropPath``
  and ``Dropout``; a ``DropPath`` draws one mask per sample from its own stream, a new one at
  each call (jitted too); widths and inputs the linen models refuse are refused in the same words.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict

import seres_jax.layers as linen_layers
import seres_jax.nnx.layers as nnx_layers
from seres_jax import models as linen_models
from seres_jax import resnet as linen_resnet
from seres_jax import senet as linen_senet
from seres_jax.layers import count_params
from seres_jax.nnx import models as nnx_models
from seres_jax.nnx import resnet as nnx_resnet
from seres_jax.nnx import senet as nnx_senet
from seres_jax.nnx.layers import BatchNorm, DropPath
from seres_jax.nnx.layers import count_params as nnx_count_params
from seres_jax.registry import MODELS, model_config

from .helpers import reduced_arguments

COLLECTIONS = {nnx.Param: "params", nnx.BatchStat: "batch_stats"}


def nnx_class(linen_cls: type) -> type[nnx.Module]:
    """The NNX namesake of a linen class: ``seres_jax.X.Name`` -> ``seres_jax.nnx.X.Name``."""
    module = importlib.import_module(
        linen_cls.__module__.replace("seres_jax.", "seres_jax.nnx.", 1)
    )
    return getattr(module, linen_cls.__name__)


def linen_path(path: tuple[Any, ...]) -> tuple[str, ...]:
    """An NNX state path under the path rule: ``("layer1", 0, "conv1")`` -> ``layer1_0/conv1``."""
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}_{part}"
        else:
            parts.append(str(part))
    return tuple(parts)


def weight_variables(model: nnx.Module) -> dict[tuple[str, ...], nnx.Variable[Any]]:
    """The model's ``Param`` and ``BatchStat`` variables by linen ``(collection, *path)``; RNG
    streams are not weights."""
    out = {}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        collection = COLLECTIONS.get(type(variable))
        if collection is None:
            assert isinstance(variable, nnx.RngState), (path, type(variable))
            continue
        out[(collection, *linen_path(path))] = variable
    return out


def signature(tree: dict[tuple[str, ...], Any]) -> dict[tuple[str, ...], tuple[Any, Any]]:
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in tree.items()}


def nnx_signature(model: nnx.Module) -> dict[tuple[str, ...], tuple[Any, Any]]:
    return signature({k: v.get_value() for k, v in weight_variables(model).items()})


@functools.cache
def _compare_abstract(linen_cls: type, arguments: tuple[tuple[str, Any], ...], channels: int):
    kwargs = dict(arguments)
    image = jnp.zeros((1, 16, 16, channels), jnp.float32)
    variables = jax.eval_shape(linen_cls(**kwargs).init, jax.random.key(0), image)
    model = nnx.eval_shape(lambda: nnx_class(linen_cls)(**kwargs, rngs=nnx.Rngs(0)))
    return (
        signature(flatten_dict(variables)),
        nnx_signature(model),
        count_params(variables),
        nnx_count_params(model),
    )


def assert_same_state(name: str, **overrides: Any) -> None:
    spec, arguments = model_config(name, **overrides)
    key = tuple(sorted(arguments.items()))  # reduced twins of several names are built once
    linen, ours, linen_count, our_count = _compare_abstract(
        spec.flax_cls, key, arguments[spec.in_channels_arg]
    )
    assert sorted(ours) == sorted(linen), sorted(set(ours) ^ set(linen))
    assert ours == linen, [k for k in linen if ours[k] != linen[k]]
    assert our_count == linen_count > 0


@pytest.mark.parametrize("name", list(MODELS))
def test_every_architecture_has_its_linen_state_paths(name):
    assert_same_state(name, **reduced_arguments(name))


@pytest.mark.parametrize(
    "name", ["seresnet_tiny", "ecaresnet50d_pruned", "legacy_seresnext26_32x4d"]
)
def test_full_size_models_have_their_linen_state_paths(name):
    assert_same_state(name)


def test_param_dtype_reaches_every_weight():
    model = nnx.eval_shape(
        lambda: nnx_resnet.create_model(
            "seresnet18", layers=(1, 1, 1, 1), param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)
        )
    )
    dtypes = {path: dtype for path, (_, dtype) in nnx_signature(model).items()}
    assert {d for p, d in dtypes.items() if p[-1] != "num_batches_tracked"} == {
        np.dtype(jnp.bfloat16)
    }
    assert {d for p, d in dtypes.items() if p[-1] == "num_batches_tracked"} == {np.dtype("int32")}


def test_create_model_mirrors_the_linen_zoos():
    assert nnx_resnet.ZOO is linen_resnet.ZOO and nnx_senet.LEGACY_ZOO is linen_senet.LEGACY_ZOO
    assert nnx_resnet.BLOCKS.keys() == linen_resnet.BLOCKS.keys()
    assert nnx_senet.BLOCKS.keys() == linen_senet.BLOCKS.keys()
    model = nnx.eval_shape(
        lambda: nnx_senet.create_model("legacy_seresnet18", num_classes=7, rngs=nnx.Rngs(0))
    )
    assert isinstance(model, nnx_senet.SENet) and model.num_classes == 7
    for create in (nnx_resnet.create_model, nnx_senet.create_model):
        with pytest.raises(ValueError, match="unknown model 'resnet9'"):
            create("resnet9", rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------- numerics


def random_variables(abstract: Any, seed: int) -> dict[tuple[str, ...], np.ndarray]:
    """Linen variables with nothing trivial in them: kernels of PyTorch's scale, BatchNorm's
    affine parameters and running statistics away from 1 and 0 (a zero-initialised last
    scale would hide its residual branch), a batch count of 3."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in flatten_dict(abstract).items():
        shape, name = leaf.shape, path[-1]
        if name == "num_batches_tracked":
            value = np.full(shape, 3)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("bias", "mean"):
            value = rng.normal(0.0, 0.2, shape)
        else:
            value = rng.normal(0.0, 1.0, shape) / np.sqrt(max(1, int(np.prod(shape[:-1]))))
        out[path] = value.astype(leaf.dtype)
    return out


def with_linen_variables(
    abstract: nnx.Module, flat: dict[tuple[str, ...], np.ndarray]
) -> nnx.Module:
    """The abstract ``model`` made concrete with linen variables, copied in by the path rule
    (every one must find its place), and fresh random streams. Building the model concretely
    instead would run (and compile) each initialiser shape by shape: seconds per model."""
    graph, state = nnx.split(abstract)
    placed = []
    for path, variable in nnx.to_flat_state(state):
        collection = COLLECTIONS.get(type(variable))
        if collection is None:
            is_key = isinstance(variable, nnx.RngKey)
            variable.set_value(jax.random.key(0) if is_key else jnp.zeros((), jnp.uint32))
            continue
        key = (collection, *linen_path(path))
        assert variable.get_value().shape == flat[key].shape, key
        variable.set_value(jnp.asarray(flat[key]))
        placed.append(key)
    assert sorted(placed) == sorted(flat)
    return nnx.merge(graph, state)


CASES = {
    "tiny_post_se": (linen_models.SEResNetTiny, dict(base=8, n=1), 12),
    # bfloat16 compute, float32 weights (the TPU setting)
    "tiny_preact_eca_bf16": (
        linen_models.SEResNetTiny,
        dict(base=8, n=1, preact=True, attn="eca", dtype=jnp.bfloat16),
        12,
    ),
    "tiny_post_eca": (linen_models.SEResNetTiny, dict(base=8, n=1, attn="eca"), 12),
    # bfloat16 weights and running statistics
    "tiny_preact_se_bf16_params": (
        linen_models.SEResNetTiny,
        dict(base=8, n=1, preact=True, param_dtype=jnp.bfloat16),
        12,
    ),
    # grouped bottlenecks, deep tiered stem, average-pool shortcuts, stochastic depth
    "seresnext26t_drop_path": (
        linen_resnet.SEResNet,
        {
            **linen_resnet.ZOO["seresnext26t_32x4d"],
            **reduced_arguments("seresnext26t_32x4d"),
            "drop_path_rate": 0.6,
        },
        16,
    ),
    "legacy_senet154": (
        linen_senet.SENet,
        {**linen_senet.LEGACY_ZOO["legacy_senet154"], **reduced_arguments("legacy_senet154")},
        16,
    ),
}
BOTH = ("eval", "train")
# (case, modes): both modes of the tiny models by default; the larger ones' train mode by
# default (the modes' wiring is the same modules', and ``train``/``eval`` reaching every one of
# them is test_train_and_eval_flip_every_batchnorm_and_dropout's), their eval mode behind slow.
NUMERIC_RUNS = [
    pytest.param(case, modes, id=f"{case}-{'+'.join(modes)}", marks=marks)
    for case, modes, marks in [
        ("tiny_post_se", BOTH, ()),
        ("tiny_preact_eca_bf16", BOTH, ()),
        ("seresnext26t_drop_path", ("train",), ()),
        ("legacy_senet154", ("train",), ()),
        ("seresnext26t_drop_path", ("eval",), pytest.mark.slow),
        ("legacy_senet154", ("eval",), pytest.mark.slow),
        ("tiny_post_eca", BOTH, pytest.mark.slow),
        ("tiny_preact_se_bf16_params", BOTH, pytest.mark.slow),
    ]
]


DROP_PATH = linen_layers.drop_path
# Both sides' programs are compiled alike, without XLA's backend optimisations: the comparison
# is of the two programs, and the compile takes 40 % less time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture
def on_cpu() -> Any:
    """Bit for bit needs deterministic kernels, the CPU's (a GPU's may pick another algorithm
    or reduction order from one compilation to the next)."""
    with jax.default_device(jax.devices("cpu")[0]):
        yield


def compiled(fn: Any, *args: Any) -> Any:
    """``fn`` jitted and compiled for ``args`` with ``FAST_COMPILE``, applied to them."""
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def _fixed_key_drop_path(x, key, drop_prob, scale_by_keep=True):
    # Linen draws a DropPath's key from its module path, NNX from the layer's stream: with the
    # key fixed, both draw the same masks and the comparison sees the rest of the arithmetic.
    return DROP_PATH(x, jax.random.key(7), drop_prob, scale_by_keep)


@pytest.mark.parametrize(("case", "modes"), NUMERIC_RUNS)
@pytest.mark.usefixtures("on_cpu")
def test_nnx_computes_the_linen_model_bit_for_bit(case, modes, monkeypatch):
    linen_cls, kwargs, side = CASES[case]
    linen = linen_cls(**kwargs)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, side, side, 3)), jnp.float32)
    abstract = jax.eval_shape(linen.init, jax.random.key(0), x)
    flat = random_variables(abstract, seed=2)
    variables = jax.tree.map(jnp.asarray, {"params": {}, **unflatten_dict(flat)})

    abstract_model = nnx.eval_shape(lambda: nnx_class(linen_cls)(**kwargs, rngs=nnx.Rngs(0)))
    model = with_linen_variables(abstract_model, flat)
    monkeypatch.setattr(linen_layers, "drop_path", _fixed_key_drop_path)
    monkeypatch.setattr(nnx_layers, "drop_path", _fixed_key_drop_path)
    graphs = {}
    for mode in modes:
        getattr(model, mode)()  # model.eval() / model.train()
        graphs[mode], state = nnx.split(model)

    def run_linen(variables: Any, x: jax.Array) -> Any:
        out = {}
        if "eval" in modes:
            out["eval"] = linen.apply(variables, x)
        if "train" in modes:
            out["train"], updates = linen.apply(
                variables, x, train=True, mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(0)},
            )  # fmt: skip
            out["stats"] = updates["batch_stats"]
        return out

    def run_nnx(state: Any, x: jax.Array) -> Any:
        out = {}
        for mode, graph in graphs.items():
            model = nnx.merge(graph, state)
            out[mode] = model(x)
            if mode == "train":
                out["stats"] = nnx.state(model, nnx.BatchStat)
        return out

    theirs = compiled(run_linen, variables, x)
    ours = compiled(run_nnx, state, x)
    # The compute dtype, else the inputs' and weights' (as every layer's).
    dtype = kwargs.get("dtype") or jnp.result_type(x, kwargs.get("param_dtype", jnp.float32))
    for mode in modes:
        assert ours[mode].dtype == theirs[mode].dtype == dtype
        assert np.array_equal(ours[mode], theirs[mode]), mode
    if "eval" in modes and "train" in modes:
        assert not np.array_equal(theirs["train"], theirs["eval"])
    if "train" not in modes:
        return
    updated = {
        ("batch_stats", *linen_path(p)): v.get_value() for p, v in nnx.to_flat_state(ours["stats"])
    }
    expected = {("batch_stats", *k): v for k, v in flatten_dict(theirs["stats"]).items()}
    assert sorted(updated) == sorted(expected)
    for key, value in expected.items():
        assert np.array_equal(updated[key], value), key
        if key[-1] != "num_batches_tracked":
            assert not np.array_equal(value, flat[key]), key  # they did move
    assert {int(v) for k, v in updated.items() if k[-1] == "num_batches_tracked"} == {4}
    if kwargs.get("drop_path_rate"):
        # The fixed key drops samples at these rates: the masks were not all ones.
        rates = linen_resnet.drop_path_rates(kwargs["drop_path_rate"], kwargs["layers"])
        kept = [
            jax.random.bernoulli(jax.random.key(7), 1 - r, (2, 1, 1, 1)) for r in rates if r > 0
        ]
        assert not all(bool(k.all()) for k in kept)


# --------------------------------------------------------------------------- initialisation


def _patterned_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``uniform`` and ``normal`` draws a fixed pattern of the shape and the law's
    arguments: the two APIs hand their initialisers different keys, and with the key out of the
    picture, equal parameters mean equal laws (kind, bounds, fan-in or fan-out, scale)."""

    def pattern(shape: tuple[int, ...]) -> np.ndarray:
        return (np.arange(int(np.prod(shape))) * 0.618034 % 1.0).reshape(shape)

    def uniform(key, shape=(), dtype=jnp.float32, minval=0.0, maxval=1.0, **_):
        return jnp.asarray(minval + (maxval - minval) * pattern(shape), dtype)

    def normal(key, shape=(), dtype=jnp.float32, **_):
        return jnp.asarray(4.0 * pattern(shape) - 2.0, dtype)

    # Flax's variance_scaling calls jax._src.random's, seres' torch_uniform jax.random's.
    for module in (jax.random, jax._src.random):
        monkeypatch.setattr(module, "uniform", uniform)
        monkeypatch.setattr(module, "normal", normal)


@pytest.mark.parametrize(
    ("linen_cls", "kwargs"),
    [
        pytest.param(linen_models.SEResNetTiny, dict(base=8, n=1), id="tiny"),
        pytest.param(linen_models.SEResNetTiny, CASES["tiny_preact_eca_bf16"][1],
                     id="tiny_preact_eca", marks=pytest.mark.slow),
        pytest.param(linen_resnet.SEResNet, CASES["seresnext26t_drop_path"][1], id="seresnext26t"),
        pytest.param(linen_resnet.SEResNet, dict(CASES["seresnext26t_drop_path"][1],
                                                 zero_init_last=False, attn="eca", drop_rate=0.5),
                     id="ecaresnext26t_no_zero_init", marks=pytest.mark.slow),
        pytest.param(linen_senet.SENet, CASES["legacy_senet154"][1], id="senet154",
                     marks=pytest.mark.slow),
    ],
)  # fmt: skip
@pytest.mark.usefixtures("on_cpu")
def test_a_fresh_nnx_model_is_initialised_as_the_linen_one(linen_cls, kwargs, monkeypatch):
    _patterned_draws(monkeypatch)
    x = jnp.zeros((2, 16, 16, 3), jnp.float32)
    linen = flatten_dict(compiled(linen_cls(**kwargs).init, jax.random.key(0), x))
    # Jitted (built eagerly, each initialiser would compile its arithmetic shape by shape).
    model = nnx.jit(lambda: nnx_class(linen_cls)(**kwargs, rngs=nnx.Rngs(1)))()
    fresh = {k: v.get_value() for k, v in weight_variables(model).items()}
    assert sorted(fresh) == sorted(linen)
    for key, value in fresh.items():
        assert np.array_equal(value, linen[key]), key
    # Not vacuous: He-normal, PyTorch-uniform and constant leaves all occur.
    assert len({np.asarray(v).std() for v in fresh.values()}) > 5


# --------------------------------------------------------------------------- modes


def _modes(model: nnx.Module) -> dict[str, set[bool]]:
    seen: dict[str, set[bool]] = {"bn": set(), "drop": set()}
    counts = {"BatchNorm": 0, "DropPath": 0, "Dropout": 0}
    for _, module in nnx.iter_modules(model):
        if isinstance(module, BatchNorm):
            seen["bn"].add(module.use_running_average)
        elif isinstance(module, DropPath | nnx.Dropout):
            seen["drop"].add(bool(module.deterministic))
        counts[type(module).__name__] = counts.get(type(module).__name__, 0) + 1
    assert counts["BatchNorm"] > 0 and counts["DropPath"] + counts["Dropout"] > 0
    return seen


def test_train_and_eval_flip_every_batchnorm_and_dropout():
    for build in (
        lambda: nnx_resnet.create_model(
            "seresnet18", layers=(2, 1, 1, 1), drop_rate=0.3, drop_path_rate=0.2,
            rngs=nnx.Rngs(0),
        ),
        lambda: nnx_senet.create_model("legacy_seresnet18", layers=(1, 1, 1, 1), rngs=nnx.Rngs(0)),
    ):  # fmt: skip
        model = nnx.eval_shape(build)
        assert _modes(model) == {"bn": {False}, "drop": {False}}  # built in train mode
        model.eval()
        assert _modes(model) == {"bn": {True}, "drop": {True}}
        model.train()
        assert _modes(model) == {"bn": {False}, "drop": {False}}
        view = nnx.view(model, use_running_average=True, deterministic=True)
        assert _modes(view) == {"bn": {True}, "drop": {True}}
        assert _modes(model) == {"bn": {False}, "drop": {False}}


def test_rate_zero_regularisers_hold_no_module_or_stream():
    model = nnx.eval_shape(
        lambda: nnx_resnet.create_model("seresnet18", layers=(1, 1, 1, 1), rngs=nnx.Rngs(0))
    )
    assert all(block.drop_path_layer is None for block in model.layer1)
    assert not nnx.state(model, nnx.RngState)
    assert not nnx.state(DropPath(0.0, rngs=nnx.Rngs(0)))
    rated = nnx.eval_shape(
        lambda: nnx_resnet.create_model(
            "seresnet18", layers=(1, 1, 1, 1), drop_path_rate=0.3, rngs=nnx.Rngs(0)
        )
    )
    # drop_path_rates: the first block's rate is 0, so it has no DropPath either.
    assert [b.drop_path_layer is None for b in (*rated.layer1, *rated.layer4)] == [True, False]


def test_drop_path_draws_per_sample_from_its_own_advancing_stream():
    x = jnp.ones((64, 2, 2, 3), jnp.float32)
    layer = DropPath(0.5, rngs=nnx.Rngs(dropout=3))
    twin = DropPath(0.5, rngs=nnx.Rngs(dropout=3))
    first, second = layer(x), layer(x)
    for out in (first, second):
        per_sample = np.asarray(out).reshape(64, -1)
        assert set(np.unique(per_sample)) == {0.0, 2.0}  # dropped or kept, scaled by 1 / keep
        assert (per_sample == per_sample[:, :1]).all()  # one draw per sample
    assert not np.array_equal(first, second)  # the stream advanced
    # The draws are the shared function's on the stream's successive keys.
    assert np.array_equal(first, linen_layers.drop_path(x, twin.rngs(), 0.5))
    assert np.array_equal(second, linen_layers.drop_path(x, twin.rngs(), 0.5))
    # Jitted, the stream's count comes back out: each step draws anew.
    step = nnx.jit(lambda m, x: m(x))
    third, fourth = step(layer, x), step(layer, x)
    assert not np.array_equal(third, fourth)
    assert np.array_equal(third, linen_layers.drop_path(x, twin.rngs(), 0.5))
    layer.eval()
    assert np.array_equal(layer(x), x)
    with pytest.raises(ValueError, match=r"DropPath\(0.5\) in train mode needs a random stream"):
        DropPath(0.5)(x)


def test_batchnorm_counts_batches_and_respects_param_dtype():
    bn = BatchNorm(3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 2, 2, 3)), jnp.float32)
    y = bn(x)
    assert y.dtype == jnp.float32 and bn.mean[...].dtype == jnp.bfloat16
    assert int(bn.num_batches_tracked[...]) == 1
    bn.eval()
    bn(x)
    assert int(bn.num_batches_tracked[...]) == 1
    with pytest.raises(ValueError, match="needs more than 1 value per channel"):
        BatchNorm(3, rngs=nnx.Rngs(0))(x[:1, :1, :1])


# --------------------------------------------------------------------------- refusals


def _linen_error(linen_cls: type, kwargs: dict[str, Any]) -> str:
    image = jnp.zeros((1, 16, 16, 3), jnp.float32)
    with pytest.raises(ValueError) as info:
        jax.eval_shape(linen_cls(**kwargs).init, jax.random.key(0), image)
    return str(info.value)


@pytest.mark.parametrize(
    ("linen_cls", "kwargs"),
    [
        # an SE squeeze of 8 // 16 = 0 channels
        (linen_senet.SENet, dict(linen_senet.LEGACY_ZOO["legacy_seresnet18"],
                                 channels=(8, 16, 32, 64))),
        # floor(8 * 4 / 64) = 0 channels per group
        (linen_resnet.SEResNet, dict(linen_resnet.ZOO["seresnext26d_32x4d"],
                                     channels=(8, 16, 32, 64))),
        # 32 channels in 64 groups
        (linen_senet.SENet, dict(linen_senet.LEGACY_ZOO["legacy_senet154"],
                                 channels=(16, 32, 64, 128))),
        (linen_resnet.SEResNet, dict(block="basic", cardinality=2)),
        (linen_resnet.SEResNet, dict(stem_type="tiered")),
        (linen_resnet.SEResNet, dict(block_widths=((8, 8, 32),))),
        (linen_resnet.SEResNet, dict(aa_layer="blur", layers=(1, 1, 1, 1))),
        (linen_models.SEResNetTiny, dict(attn="cbam")),
    ],
    ids=["se-squeeze", "zero-group", "groups", "basic-groups", "stem", "widths", "aa", "attn"],
)  # fmt: skip
def test_what_linen_refuses_nnx_refuses_in_the_same_words(linen_cls, kwargs):
    message = _linen_error(linen_cls, kwargs)
    with pytest.raises(ValueError) as info:
        nnx.eval_shape(lambda: nnx_class(linen_cls)(**kwargs, rngs=nnx.Rngs(0)))
    assert str(info.value) == message


def test_tiny_refuses_what_is_not_nhwc_in_the_same_words():
    # Abstract: the check comes before any arithmetic.
    model = nnx.eval_shape(lambda: nnx_models.SEResNetTiny(base=8, n=1, rngs=nnx.Rngs(0)))
    variables = {"params": {}}
    for shape in ((2, 3, 12, 12), (2, 12, 12)):
        x = jnp.zeros(shape, jnp.float32)
        with pytest.raises(ValueError) as info:
            linen_models.SEResNetTiny(base=8, n=1).apply(variables, x)
        with pytest.raises(ValueError, match="SEResNetTiny expects NHWC input") as ours:
            model(x)
        assert str(ours.value) == str(info.value)
