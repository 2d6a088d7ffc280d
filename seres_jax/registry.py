"""Named model configurations, shared by ``seres train --model`` and ``seres convert --arch``.

An architecture string is a registered name, optionally followed by keyword overrides of the
model's constructor arguments: ``seresnet_tiny``, ``seresnet_tiny_preact``,
``seresnet_tiny:in_ch=1,base=16``. The same string builds the Flax model and its PyTorch twin.

An entry names both classes by import path (``"seres_jax.resnet:SEResNet"``,
``"seres_torch.resnet:SEResNet"``, as entry points do), resolved with importlib when used:
``seres_torch`` is imported only when the torch model is asked for. The Flax NNX class is
the linen class's namesake in the mirrored module of ``seres_jax.nnx`` (``ModelSpec.nnx_path``).
A new architecture is a linen class, its NNX and PyTorch twins (same constructor arguments and
defaults) and one entry in ``MODELS``; ``parity_tests/test_registry.py`` then tests it.
"""

from __future__ import annotations

import dataclasses
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import flax.linen as nn

from .layers import ATTENTIONS
from .resnet import AA_LAYERS, BLOCKS, STEM_TYPES, ZOO
from .senet import BLOCKS as LEGACY_BLOCKS
from .senet import LEGACY_ZOO

if TYPE_CHECKING:
    import torch
    from flax import nnx

    from .data.images import DataConfig

# Fields of a Flax module that are not constructor arguments of the PyTorch twin.
_FLAX_ONLY = frozenset({"dtype", "param_dtype", "parent", "name"})
# String arguments with a closed set of values; every integer argument counts something
# (channels, classes, blocks, groups), so it must be positive.
_CHOICES = {"attn": ATTENTIONS, "stem_type": STEM_TYPES, "aa_layer": AA_LAYERS}
# Probabilities of dropping something (dropout, stochastic depth): a rate of 1 would drop
# everything (and divide by zero keeping the expected value), so at least 0 and below 1.
_RATES = frozenset({"drop_rate", "drop_path_rate"})


class RegistryError(ValueError):
    """An unknown architecture name or keyword, or a malformed architecture string."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its Flax and PyTorch classes by import path
    (``"module:Class"``), the arguments it fixes, and its image-channels argument."""

    flax_path: str
    torch_path: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    in_channels_arg: str = "in_ch"
    # The closed sets of string arguments of this class (beside the shared ``_CHOICES``).
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Arguments someone may expect (timm's namesakes elsewhere take them) that this class
    # lacks, as timm's does, with the reason the refusal gives.
    lacks: Mapping[str, str] = field(default_factory=dict)

    @property
    def flax_cls(self) -> type[nn.Module]:
        """The Flax linen class (imported on first use)."""
        return pkgutil.resolve_name(self.flax_path)

    @property
    def nnx_path(self) -> str:
        """The Flax NNX twin's import path: the linen class's, in ``seres_jax.nnx``."""
        return self.flax_path.replace("seres_jax.", "seres_jax.nnx.", 1)

    @property
    def nnx_cls(self) -> type[nnx.Module]:
        """The Flax NNX class (imported on first use)."""
        return pkgutil.resolve_name(self.nnx_path)

    @property
    def torch_cls(self) -> type[torch.nn.Module]:
        """Imports torch: ask only when the PyTorch model is wanted."""
        return pkgutil.resolve_name(self.torch_path)

    def arguments(self) -> dict[str, Any]:
        """Constructor arguments with their defaults (those the arch string may override)."""
        return {
            f.name: self.defaults.get(f.name, f.default)
            for f in dataclasses.fields(self.flax_cls)
            if f.init and f.name not in _FLAX_ONLY
        }


_TINY = ("seres_jax.models:SEResNetTiny", "seres_torch.models:SEResNetTiny")
_ZOO = ("seres_jax.resnet:SEResNet", "seres_torch.resnet:SEResNet")
_LEGACY = ("seres_jax.senet:SENet", "seres_torch.senet:SENet")
_NO_DROP_PATH = {
    "drop_path_rate": "timm's legacy SENet has no stochastic depth (timm.create_model refuses "
    "it too); its regulariser is drop_rate"
}
MODELS: dict[str, ModelSpec] = {
    "seresnet_tiny": ModelSpec(*_TINY, {}, "the notebook's CIFAR-sized SE-ResNet, post-activation"),
    "seresnet_tiny_preact": ModelSpec(
        *_TINY, {"preact": True}, "the same with pre-activation blocks"
    ),
    **{
        name: ModelSpec(*_ZOO, defaults, f"timm's {name}", "in_chans", {"block": tuple(BLOCKS)})
        for name, defaults in ZOO.items()
    },
    **{
        name: ModelSpec(
            *_LEGACY,
            defaults,
            f"timm's {name} (the SENet authors')",
            "in_chans",
            {"block": tuple(LEGACY_BLOCKS)},
            _NO_DROP_PATH,
        )
        for name, defaults in LEGACY_ZOO.items()
    },
}
"""Every architecture an architecture string may name: the notebook's tiny models, timm's
SE and ECA ResNets (``seres_jax.resnet.ZOO``) and its legacy SENets
(``seres_jax.senet.LEGACY_ZOO``), by timm's names."""


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    parts = text.split("-")  # a sequence: layers=2-2-2-2, channels=16-32-64-128
    if len(parts) > 1 and all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return text


def parse_arch(arch: str) -> tuple[str, dict[str, Any]]:
    """``"name[.tag]:k=v,k=v"`` -> ``(name, {k: v})`` with ints, floats, booleans and sequences
    of ints (``channels=16-32-64-128``) parsed. A timm weight tag after the name
    (``seresnet50.ra2_in1k``) chooses the preprocessing (``data_config``), not the network."""
    head, _, rest = arch.partition(":")
    name, _, tag = head.partition(".")
    if name not in MODELS:
        raise RegistryError(f"unknown architecture {name!r}; known: {', '.join(MODELS)}")
    if tag:
        _check_tag(name, tag)
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RegistryError(f"malformed override {item!r} in {arch!r}; expected key=value")
        overrides[key.strip()] = _parse_value(value.strip())
    return name, overrides


def _check_tag(name: str, tag: str) -> None:
    from .pretrained import default_tag, weight_tags

    tags = weight_tags(name)
    if tag not in tags and tag != default_tag(name):
        known = ", ".join(tags) or "none (no published weights)"
        raise RegistryError(f"{name} has no weight tag {tag!r}; timm publishes: {known}")


def weight_tag(arch: str) -> str | None:
    """The timm weight tag ``arch`` names (``"seresnet50.ra2_in1k:..."`` -> ``"ra2_in1k"``)."""
    tag = arch.partition(":")[0].partition(".")[2]
    return tag or None


def format_arch(name: str, arguments: Mapping[str, Any]) -> str:
    """The architecture string ``parse_arch`` reads back as ``(name, arguments)``."""

    def text(value: Any) -> str:
        return "-".join(map(str, value)) if isinstance(value, tuple | list) else str(value)

    return f"{name}:" + ",".join(f"{k}={text(v)}" for k, v in arguments.items())


def model_config(arch: str, **overrides: Any) -> tuple[ModelSpec, dict[str, Any]]:
    """The spec and the full constructor arguments of ``arch``; ``overrides`` win over both
    the registry's defaults and the arch string's keywords."""
    name, from_string = parse_arch(arch)
    spec = MODELS[name]
    arguments = spec.arguments()
    unknown = sorted((set(from_string) | set(overrides)) - set(arguments))
    for key in unknown:
        if key in spec.lacks:
            raise RegistryError(f"{name} has no argument {key}: {spec.lacks[key]}")
    if unknown:
        raise RegistryError(
            f"{name} has no argument(s) {', '.join(unknown)}; valid: {', '.join(arguments)}"
        )
    choices = {**_CHOICES, **spec.choices}
    for key, value in from_string.items():
        _check_argument(key, value, arguments[key], choices.get(key))
    return spec, {**arguments, **from_string, **overrides}


def _check_argument(
    key: str, value: Any, default: Any, choices: tuple[str, ...] | None = None
) -> None:
    """Refuse an arch-string value the constructor would only fail on deep inside ``init``."""
    if choices is not None:
        if value not in choices:
            named = ", ".join(c or "'' (none)" for c in choices)
            raise RegistryError(f"{key} must be one of {named}, got {value!r}")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise RegistryError(f"{key} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise RegistryError(f"{key} must be an integer, got {value!r}")
        if value < 1:
            raise RegistryError(f"{key} must be a positive integer, got {value!r}")
    elif isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RegistryError(f"{key} must be a number, got {value!r}")
        if key in _RATES and not 0 <= value < 1:
            raise RegistryError(f"{key} must be a rate in [0, 1), got {value!r}")
    elif isinstance(default, tuple | list) and all(isinstance(d, int) for d in default):
        if not isinstance(value, tuple) or len(value) != len(default) or min(value) < 1:
            example = "-".join(map(str, default))
            raise RegistryError(f"{key} must be {len(default)} positive integers joined by "
                                f"'-', e.g. {example}, got {value!r}")  # fmt: skip
    elif not isinstance(default, str | None):
        raise RegistryError(f"{key} cannot be set in an architecture string")


def build_flax(arch: str, dtype: Any = None, **overrides: Any) -> nn.Module:
    """The Flax model named by ``arch`` (compute ``dtype``: None means from the inputs)."""
    spec, arguments = model_config(arch, **overrides)
    return spec.flax_cls(**arguments, dtype=dtype)


def build_torch(arch: str, **overrides: Any) -> torch.nn.Module:
    """The ``seres_torch`` twin of ``build_flax(arch, **overrides)``."""
    spec, arguments = model_config(arch, **overrides)
    try:
        return spec.torch_cls(**arguments)
    except ValueError as err:  # widths the arch string's numbers make impossible
        raise RegistryError(f"{arch} cannot be built: {err}") from None


def variables_template(arch: str, param_dtype: Any = None, **overrides: Any) -> Any:
    """The abstract Flax variables (shapes and dtypes, nothing computed) of ``arch``: the
    template that makes a conversion strict."""
    import jax
    import jax.numpy as jnp

    spec, arguments = model_config(arch, **overrides)
    extra = {"param_dtype": param_dtype} if param_dtype is not None else {}
    model = spec.flax_cls(**arguments, **extra)
    image = jnp.zeros((1, 16, 16, arguments[spec.in_channels_arg]), jnp.float32)
    try:
        return jax.eval_shape(model.init, jax.random.key(0), image)
    except ValueError as err:  # widths the arch string's numbers make impossible
        raise RegistryError(f"{arch} cannot be built: {err}") from None


def random_variables(arch: str, seed: int = 0, **overrides: Any) -> Any:
    """``arch``'s Flax variables drawn on the host from ``seed``, without compiling an
    initialisation (seconds saved per architecture in tests and benchmarks): kernels at He
    scale over their fan-in, BatchNorm scales and running variances near 1, other floats small,
    counters zero, so activations keep their scale and the logits are finite and of a few units.
    Not the models' own initialisation (``seres_jax.train.init_variables`` is): a stand-in for
    trained weights."""
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def fill(path: Any, spec: Any) -> Any:
        name = str(path[-1].key)
        if np.issubdtype(spec.dtype, np.integer):
            return np.zeros(spec.shape, spec.dtype)
        if name == "kernel":
            fan_in = int(np.prod(spec.shape[:-1]))
            return (rng.standard_normal(spec.shape) * np.sqrt(2 / fan_in)).astype(spec.dtype)
        if name in ("scale", "var"):
            return (1 + 0.1 * rng.standard_normal(spec.shape)).astype(spec.dtype) ** 2
        return (0.1 * rng.standard_normal(spec.shape)).astype(spec.dtype)

    return jax.tree_util.tree_map_with_path(fill, variables_template(arch, **overrides))


def data_config(arch: str | None) -> DataConfig:
    """The preprocessing ``arch``'s weights expect: timm's pretrained data config of the weight
    tag it names (``seresnet50.ra2_in1k``), else of the model's default tag
    (``seres_jax.pretrained``); timm's defaults for other models (224 pixels, crop 0.875,
    bicubic, ImageNet mean and std)."""
    from .data.images import DataConfig
    from .pretrained import pretrained_config

    if arch is None:
        return DataConfig()
    name = parse_arch(arch)[0]
    return DataConfig(**(pretrained_config(name, weight_tag(arch)) or {}))
