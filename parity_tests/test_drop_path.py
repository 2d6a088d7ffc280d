"""Stochastic depth (``DropPath``, ``drop_path_rate``) and the classifier's dropout
(``drop_rate``) of the timm zoo, in both frameworks.

* Every zoo model's per-block rates are timm's, read off both module trees without running
  them, against ``fixtures/timm_drop_path.json`` (``fixtures/record_timm_drop_path.py``).
* With the same masks, both frameworks compute the same outputs, input gradient, parameter
  gradients and running statistics in train mode: JAX draws the masks from a key, and
  PyTorch's draws (``Tensor.bernoulli_`` in ``drop_path``, ``F.dropout``) are replaced by them.
* The Flax ``DropPath`` keeps ``1 - rate`` of the samples, preserves the expected value, and is
  the identity in eval mode and at rate 0.
* Architecture strings take both rates and refuse those outside [0, 1); the legacy SENets,
  like timm's, have no stochastic depth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seres_jax import resnet as jr
from seres_jax.layers import DropPath, count_params
from seres_jax.parity import compare_modules, kink_free_input, randomize_batchnorm
from seres_jax.registry import RegistryError, build_flax, model_config, variables_template

from .helpers import (
    HAVE_TORCH,
    assert_parity,
    image_shape,
    reduced_arguments,
    run_json_script,
)

if HAVE_TORCH:
    import torch

    from seres_jax.registry import build_torch
    from seres_torch import resnet as tr
    from seres_torch.layers import DropPath as TorchDropPath

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "timm_drop_path.json").read_text())
TIMM = FIXTURE["models"]
STAGES = ("layer1", "layer2", "layer3", "layer4")


def _flax_rates(model: Any) -> list[list[Any]]:
    """``[block, drop_path]`` of every block of a Flax ``SEResNet``, from its module tree
    (``bind`` runs ``setup`` only: nothing is initialised or computed)."""
    bound = model.bind({})
    return [
        [f"{stage}.{index}", block.drop_path]
        for stage in STAGES
        for index, block in enumerate(getattr(bound, stage))
    ]


def test_the_fixture_covers_the_zoo():
    assert set(TIMM) == set(jr.ZOO)
    assert TIMM["seresnet18"]["drop_path"]["0.1"][1] == ["layer1.1", 0.1 * 1 / 7]


@pytest.mark.parametrize("name", sorted(jr.ZOO))
def test_flax_per_block_rates_are_timms(name):
    for rate, blocks in TIMM[name]["drop_path"].items():
        model = jr.create_model(name, drop_path_rate=float(rate), drop_rate=FIXTURE["drop_rate"])
        assert _flax_rates(model) == blocks  # exact: timm's floats, bit for bit
        assert model.drop_rate == TIMM[name]["drop_rate"]
    assert all(rate == 0.0 for _, rate in _flax_rates(jr.create_model(name)))


def test_a_flax_block_drops_its_path_at_its_own_rate():
    """Each block's ``DropPath`` is built from its rate; none at rate 0, as in timm."""
    bound = jr.create_model("seresnet18", drop_path_rate=0.1).bind({})
    blocks = [block for stage in STAGES for block in getattr(bound, stage)]
    assert blocks[0].drop_path_layer is None
    for block in blocks[1:]:
        assert isinstance(block.drop_path_layer, DropPath)
        assert block.drop_path_layer.drop_prob == block.drop_path > 0


@pytest.fixture
def structure_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """PyTorch builds on the meta device without running its initialisers (slow there)."""
    for init in ("kaiming_normal_", "kaiming_uniform_", "uniform_", "zeros_"):
        monkeypatch.setattr(torch.nn.init, init, lambda tensor, *args, **kwargs: tensor)
    with torch.device("meta"):
        yield


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", sorted(jr.ZOO))
def test_torch_per_block_rates_are_timms(name, structure_only):
    plain = tr.create_model(name)
    for rate, blocks in TIMM[name]["drop_path"].items():
        model = tr.create_model(name, drop_path_rate=float(rate), drop_rate=FIXTURE["drop_rate"])
        ours = [
            [f"{stage}.{i}", 0.0 if b.drop_path is None else b.drop_path.drop_prob]
            for stage in STAGES
            for i, b in enumerate(getattr(model, stage))
        ]
        assert ours == blocks
        assert all(isinstance(b.drop_path, TorchDropPath) for b in model.modules()
                   if isinstance(b, tr.BasicBlock | tr.Bottleneck) and b.drop_path)  # fmt: skip
        assert model.drop_rate == TIMM[name]["drop_rate"]
        # No parameter, no buffer: every checkpoint loads as before.
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert shapes == {k: v.shape for k, v in plain.state_dict().items()}
    assert plain.drop_rate == 0.0
    assert all(getattr(m, "drop_path", None) is None for m in plain.modules())


# --------------------------------------------------------------------------- the layer


def test_flax_drop_path_keeps_1_minus_rate_and_the_expected_value():
    rate, draws = 0.3, 256
    keep = 1 - rate
    x = jnp.ones((4096, 1, 1, 2))
    layer = DropPath(rate)

    @jax.jit
    def outputs(keys: jax.Array) -> jax.Array:
        return jax.vmap(lambda k: layer.apply({}, x, train=True, rngs={"dropout": k}))(keys)

    keys = jax.random.split(jax.random.key(0), draws)
    out = np.asarray(outputs(keys))
    kept = out[..., 0] != 0
    # One draw per sample: its whole tensor is kept (scaled by 1 / keep) or zeroed.
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    assert set(np.unique(out).tolist()) == {0.0, float(np.float32(1) / np.float32(keep))}
    measured = kept.mean()  # over 4096 * 256 = 1,048,576 samples
    print(f"keep rate {measured:.5f} (1 - rate = {keep})")
    assert abs(measured - keep) <= 0.01 * keep
    assert abs(out.mean() - 1.0) <= 0.01  # expected value preserved
    assert not np.array_equal(kept[0], kept[1])  # each key its own mask, the same each time
    np.testing.assert_array_equal(outputs(keys[:2]), out[:2])


def test_flax_drop_path_is_the_identity_in_eval_mode_and_at_rate_0():
    x = np.random.default_rng(1).standard_normal((8, 3, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(DropPath(0.5).apply({}, x), x)  # eval: no RNG needed
    np.testing.assert_array_equal(DropPath(0.0).apply({}, x, train=True), x)
    zeroed = DropPath(1.0).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    np.testing.assert_array_equal(zeroed, np.zeros_like(x))  # timm: no scaling at keep 0


def test_flax_drop_path_in_bfloat16_keeps_its_dtype():
    x = jnp.ones((64, 2, 2, 3), jnp.bfloat16)
    out = DropPath(0.3).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    assert out.dtype == jnp.bfloat16
    # The scale rounded once from float32, as PyTorch's bfloat16 div_ rounds it.
    assert set(np.unique(out.astype(np.float32)).tolist()) == {
        0.0, float(jnp.asarray(np.float32(1) / np.float32(0.7)).astype(jnp.bfloat16)),
    }  # fmt: skip
    # The draw does not depend on the dtype: the same samples as in float32.
    out32 = DropPath(0.3).apply({}, x.astype(jnp.float32), train=True,
                                rngs={"dropout": jax.random.key(0)})  # fmt: skip
    np.testing.assert_array_equal(np.asarray(out) != 0, np.asarray(out32) != 0)


SHARDED = """
import json, jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from seres_jax.layers import DropPath

mesh = Mesh(np.array(jax.devices()), ("data",))
x = np.random.default_rng(0).standard_normal((16, 3, 3, 4)).astype(np.float32)
apply = jax.jit(lambda x, key: DropPath(0.4).apply({}, x, train=True, rngs={"dropout": key}))
sharded = apply(jax.device_put(x, NamedSharding(mesh, PartitionSpec("data"))), jax.random.key(0))
alone = apply(x, jax.random.key(0))  # on one device
print(json.dumps({"devices": len(jax.devices()),
                  "batch_sharded": sharded.sharding.spec == PartitionSpec("data"),
                  "equal": bool(np.array_equal(sharded, alone))}))
"""


@pytest.mark.slow
def test_flax_drop_path_shards_along_the_batch():
    """On a batch-sharded input (4 simulated devices) the masks stay sharded with it and are
    the ones one device draws: a run's masks do not depend on the device count."""
    result = run_json_script(SHARDED, devices=4, timeout=120)
    assert result == {"devices": 4, "batch_sharded": True, "equal": True}


# --------------------------------------------------------------------------- same masks


def _flax_masks(
    model: Any, batch: int, features: int, key: jax.Array
) -> tuple[dict[float, np.ndarray], np.ndarray]:
    """The masks ``model.apply(..., train=True, rngs={"dropout": key})`` draws: each block's
    ``DropPath`` mask by its keep probability, and the head dropout's. Each layer is called
    once on ones inside an ``apply`` with that key: Flax derives a module's RNG from the key
    and the module's path (and the module's own count of draws), not from what else runs, so
    these are the full forward pass's masks (and the parity below holds with no others)."""

    def draw(m: Any) -> tuple[dict[float, jax.Array], jax.Array]:
        paths = {}
        for block in (*m.layer1, *m.layer2, *m.layer3, *m.layer4):
            if (layer := block.drop_path_layer) is not None:
                paths[1 - layer.drop_prob] = layer(jnp.ones((batch, 1, 1, 1)), train=True) != 0
        head = m.dropout(jnp.ones((batch, features)), deterministic=False) != 0
        return paths, head

    paths, head = model.apply({}, method=draw, rngs={"dropout": key})
    return {keep: np.array(mask) for keep, mask in paths.items()}, np.array(head)


class _WithDropoutKey:
    """``model`` as ``compare_modules`` sees it (``apply`` and a ``train`` argument), applied
    with ``rngs={"dropout": key}``: compare_modules passes no RNGs of its own."""

    def __init__(self, model: Any, key: jax.Array) -> None:
        self.model, self.key = model, key

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:  # read for its signature
        raise NotImplementedError

    def apply(self, variables: Any, *args: Any, **kwargs: Any) -> Any:
        return self.model.apply(variables, *args, rngs={"dropout": self.key}, **kwargs)


def _use_these_masks_in_torch(
    monkeypatch: pytest.MonkeyPatch, paths: dict[float, np.ndarray], head: np.ndarray, keep: float
) -> None:
    """PyTorch draws the given masks: each ``DropPath``'s ``bernoulli_(keep)`` the mask JAX drew
    at that keep probability (each block's rate is its own), ``F.dropout`` the head's mask,
    applied as at::native's CPU dropout does (``input * noise.bernoulli_(1 - p).div_(1 - p)``).
    The rest of ``drop_path`` (the division by ``keep``, the product) is the production code."""

    def bernoulli_(self: torch.Tensor, p: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.copy_(torch.from_numpy(paths[p]).reshape(self.shape))

    def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True,
                inplace: bool = False) -> torch.Tensor:  # fmt: skip
        if not training:
            return x
        assert not inplace and 1 - p == keep
        return x * torch.from_numpy(head).to(x.dtype).div_(1 - p)

    monkeypatch.setattr(torch.Tensor, "bernoulli_", bernoulli_)
    monkeypatch.setattr(torch.nn.functional, "dropout", dropout)


# (name, layers): the basic block at the registry's reduced size (four blocks, so three
# DropPaths at three rates), and behind -m slow a grouped bottleneck with an avg-pool shortcut
# and an identity-shortcut block (five blocks).
SAME_MASK_CASES = [
    ("seresnet18", (1, 1, 1, 1)),
    pytest.param("seresnext26d_32x4d", (2, 1, 1, 1), marks=pytest.mark.slow),
]


@pytest.mark.requires_torch
@pytest.mark.parametrize(("name", "layers"), SAME_MASK_CASES)
def test_same_masks_give_the_same_outputs_and_gradients(name, layers, jax_device, monkeypatch):
    kwargs = {**reduced_arguments(name), "layers": layers, "drop_path_rate": 0.3,
              "drop_rate": 0.2}  # fmt: skip
    torch.manual_seed(0)
    tm = randomize_batchnorm(build_torch(name, **kwargs), seed=5)
    fm = build_flax(name, **kwargs)
    shape = image_shape(name, 4, **kwargs)
    key = jax.random.key(9)
    with jax.default_device(jax_device):
        paths, head = _flax_masks(fm, shape[0], tm.fc.in_features, key)
    rates = tr.drop_path_rates(0.3, layers)
    assert sorted(paths) == sorted(1 - r for r in rates if r > 0)  # one mask per DropPath
    # This key makes three DropPaths drop some samples' branches and keep the others'. The
    # fourth (seresnext26d's layer1.1, on an identity shortcut) keeps all: a branch dropped
    # there hands act3 the previous ReLU's exact zeros, which kink_free_input cannot tell from
    # values at the kink (they are harmless: exactly 0, gradient 0, in both frameworks).
    assert sum(0 < mask.sum() < mask.size for mask in paths.values()) == 3
    assert 0 < head.mean() < 1
    _use_these_masks_in_torch(monkeypatch, paths, head, 1 - 0.2)
    x = kink_free_input(tm, shape)  # kink-free under these very masks
    result = compare_modules(tm, _WithDropoutKey(fm, key), x, train=True, device=jax_device)
    worst = max(result.param_grads, key=result.param_grads.__getitem__)
    print(f"{name}: {result.worst()}, worst parameter gradient {worst}")
    assert_parity(result, label="fp32 with drop path and dropout")


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", ["seresnet18", "seresnext26d_32x4d"])
def test_seres_torch_draws_timms_masks_from_the_same_seed(name):
    """Live against timm where it is importable: timm's weights in seres_torch, train mode
    with stochastic depth and dropout, from the same torch seed: the same masks in the same
    order, so the same outputs bit for bit."""
    timm = pytest.importorskip("timm", reason="timm is not installed (see docs/zoo.md)")
    kwargs = dict(channels=(16, 32, 64, 128), stem_width=8, num_classes=10, layers=(2, 1, 1, 1),
                  drop_path_rate=0.3, drop_rate=0.2)  # fmt: skip
    if tr.ZOO[name].get("cardinality", 1) > 1:
        kwargs["cardinality"] = 4
    reference = timm.create_model(name, pretrained=False, **kwargs).train()
    ours = tr.create_model(name, **kwargs).train()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(8, 3, 35, 35)
    outputs = []
    for model, seed in ((reference, 1), (ours, 1), (ours, 2)):
        torch.manual_seed(seed)
        outputs.append(model(x.clone()))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[1], outputs[2])  # the masks do depend on the seed


# --------------------------------------------------------------------------- arch strings


def test_arch_strings_take_both_rates():
    arch = "seresnet50:drop_path_rate=0.05,drop_rate=0.2"
    _, arguments = model_config(arch)
    assert arguments["drop_path_rate"] == 0.05 and arguments["drop_rate"] == 0.2
    model = build_flax(arch)
    assert (model.drop_path_rate, model.drop_rate) == (0.05, 0.2)
    assert _flax_rates(model) == TIMM["seresnet50"]["drop_path"]["0.05"]
    # No parameters added: the count of timm's seresnet50.
    assert count_params(variables_template(arch)) == count_params(variables_template("seresnet50"))
    assert model_config("legacy_seresnet50:drop_rate=0")[1]["drop_rate"] == 0


@pytest.mark.requires_torch
def test_arch_strings_build_the_torch_twin_with_both_rates():
    model = build_torch("seresnet18:drop_path_rate=0.1,drop_rate=0.2,layers=1-1-1-1")
    assert model.drop_rate == 0.2
    assert [
        b.drop_path and b.drop_path.drop_prob
        for b in model.modules()
        if isinstance(b, tr.BasicBlock)
    ] == [None, 0.1 * 1 / 3, 0.1 * 2 / 3, 0.1 * 3 / 3]
    # timm's order of operations: the last block's rate is 0.30000000000000004 / 3, not 0.1.
    assert 0.1 * 3 / 3 != 0.1


BAD_RATES = [
    ("seresnet50:drop_path_rate=1", "drop_path_rate must be a rate in [0, 1), got 1"),
    ("seresnet50:drop_path_rate=1.5", "drop_path_rate must be a rate in [0, 1), got 1.5"),
    ("seresnet50:drop_rate=-0.1", "drop_rate must be a rate in [0, 1), got -0.1"),
    ("seresnet50:drop_rate=nan", "drop_rate must be a rate in [0, 1), got nan"),
    ("seresnet50:drop_path_rate=x", "drop_path_rate must be a number, got 'x'"),
    ("legacy_seresnet50:drop_rate=1", "drop_rate must be a rate in [0, 1), got 1"),
    (
        "legacy_seresnet18:drop_path_rate=0.1",
        "legacy_seresnet18 has no argument drop_path_rate: timm's legacy SENet has no "
        "stochastic depth",
    ),
]


@pytest.mark.parametrize(("arch", "message"), BAD_RATES)
def test_bad_rates_are_refused_in_one_line(arch, message):
    with pytest.raises(RegistryError, match=re.escape(message)) as info:
        model_config(arch)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_seres_train_draws_the_masks_from_its_key(tmp_path):
    """``seres train`` gives the zoo's DropPaths and dropout the step's dropout key: two runs
    agree bit for bit, and differ from one without stochastic depth and dropout."""
    from seres_cli.main import main
    from seres_jax.formats import load_checkpoint

    arch = "seresnet18:channels=16-32-64-128,layers=1-1-1-1"
    argv = ["train", "--dataset", "synthetic", "--batch-size", "8", "--max-steps", "2",
            "--no-progress", "--model"]  # fmt: skip
    regularised = f"{arch},drop_path_rate=0.3,drop_rate=0.2"
    weights = {}
    for run, model in {"a": regularised, "b": regularised, "plain": arch}.items():
        assert main([*argv, model, "--workdir", str(tmp_path / run)]) == 0
        weights[run] = load_checkpoint(tmp_path / run / "checkpoints").to_variables()
    jax.tree.map(np.testing.assert_array_equal, weights["a"], weights["b"])
    leaves = zip(jax.tree.leaves(weights["a"]), jax.tree.leaves(weights["plain"]), strict=True)
    assert any(not np.array_equal(a, b) for a, b in leaves)
