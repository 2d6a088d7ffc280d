"""``seres_jax.compiler``: which XLA options seres compiles with, when, and that they take effect.

Their numerics are covered where they are used: the trajectory and training tests compile with
them (``compiler.jit``, ``compile_steps``), the module and gradient tests with XLA's defaults.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seres_jax import compiler


def _library_fused_ops(compiled_text: str) -> set[str]:
    """The HLO opcodes inside every fusion XLA hands to YNNPACK (``__ynn_fusion``)."""
    bodies = dict(re.findall(r"\n%(\S+) [^\n]*\{\n(.*?)\n\}", compiled_text, re.S))
    ops: set[str] = set()
    for name in re.findall(r"calls=%([^,\s]+),[^\n]*__ynn_fusion", compiled_text):
        ops |= set(re.findall(r"= \S+ ([a-z][\w-]*)\(", bodies[name]))
    return ops


def _conv_train_step(x: jax.Array, w: jax.Array) -> tuple[jax.Array, ...]:
    def loss(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
        mean = y.mean((0, 1, 2))  # a BatchNorm-like reduction
        return jnp.sum(jnp.square(y - mean) @ jnp.ones((y.shape[-1], 4)))

    return jax.grad(loss, argnums=(0, 1))(x, w)


def test_cpu_options_keep_convolutions_out_of_ynnpack():
    options = compiler.compiler_options("cpu")
    if options is None:
        pytest.skip("this jaxlib does not take seres' CPU options (or they are disabled)")
    x = np.ones((16, 16, 16, 32), np.float32)
    w = np.ones((3, 3, 32, 32), np.float32)
    text = compiler.jit(_conv_train_step, platform="cpu").lower(x, w).compile().as_text()
    assert "convolution" in text
    assert "convolution" not in _library_fused_ops(text)


def test_options_only_for_the_cpu_and_never_over_the_users_choice(monkeypatch):
    monkeypatch.delenv(compiler.DISABLE_ENV, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert compiler.compiler_options("gpu") is None
    assert compiler.compiler_options("tpu") is None
    if compiler.compiler_options("cpu") is None:
        pytest.skip("this jaxlib does not take seres' CPU options")
    assert compiler.compiler_options("cpu") == compiler.CPU_OPTIONS
    monkeypatch.setenv(compiler.DISABLE_ENV, "0")
    assert compiler.compiler_options("cpu") is None
    monkeypatch.delenv(compiler.DISABLE_ENV)
    monkeypatch.setenv("XLA_FLAGS", f"--{compiler.YNN_FUSION_FLAG}=")
    assert compiler.compiler_options("cpu") is None


def test_a_jaxlib_that_rejects_the_options_gets_xla_defaults(monkeypatch):
    monkeypatch.delenv(compiler.DISABLE_ENV, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(compiler, "CPU_OPTIONS", {compiler.YNN_FUSION_FLAG: "NO_SUCH_FUSION"})
    compiler._cpu_options_supported.cache_clear()
    try:
        assert compiler.compiler_options("cpu") is None
        compiler.jit(lambda x: x * 2, platform="cpu")(np.ones(3, np.float32))  # still compiles
    finally:
        monkeypatch.undo()
        compiler._cpu_options_supported.cache_clear()


def test_compiled_with_options_matches_xla_defaults():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 15, 15, 16), dtype=np.float32)
    w = rng.standard_normal((3, 3, 16, 16), dtype=np.float32) * 0.1
    tuned = compiler.jit(_conv_train_step, platform="cpu")(x, w)
    default = jax.jit(_conv_train_step)(x, w)
    for a, b in zip(tuned, default, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
