"""What the benchmark measures: the model configurations, the implementations, the training
recipe both frameworks run, and the converter's model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ``jax`` is the linen model, ``jax_nnx`` its Flax NNX twin (``seres_jax.nnx``).
IMPLS: tuple[str, ...] = ("jax", "jax_nnx", "torch_eager", "torch_compile")
# All of them. jax_nnx is cheap enough to keep in every run: 16 s for tiny and 19 s for wide on
# 2 CPU cores (~5 % of the default run), and each run then checks NNX against linen (the goal:
# NNX_GOAL), on the accelerators too, where NNX's larger host work per call could show.
DEFAULT_IMPLS: tuple[str, ...] = IMPLS
# The implementations that run JAX (their settings are JAX's, their device is JAX's platform).
JAX_IMPLS: tuple[str, ...] = ("jax", "jax_nnx")
DEVICES: tuple[str, ...] = ("cpu", "gpu", "tpu")

# The training recipe both frameworks run (seres' default SGD recipe, every leaf decayed as
# torch.optim.SGD does, so the two do the same arithmetic).
LR, MOMENTUM, WEIGHT_DECAY, NESTEROV = 0.1, 0.9, 5e-4, True

# ~50 M parameters: SEResNetTiny(base=272) has 50,445,096 (50,466,328 state_dict entries).
CONVERT_ARCH = "seresnet_tiny:base=272"


@dataclass(frozen=True)
class BenchConfig:
    """A model configuration to measure: a ``seres_jax.registry`` architecture string (the same
    string builds the Flax model and its PyTorch twin), its input and its default step count."""

    arch: str
    image_size: int
    batch: int
    steps: int  # timed steps per repetition unless --steps says otherwise
    description: str = ""


# Step counts keep the default run (all configurations, all implementations, 5 repetitions)
# well under 10 minutes on 2 CPU cores, where a JAX training step takes ~2 s (tiny) and ~5 s
# (wide); on an accelerator, where a step takes milliseconds, pass a larger --steps.
CONFIGS: dict[str, BenchConfig] = {
    "tiny": BenchConfig("seresnet_tiny", 32, 128, 2, "SEResNetTiny() defaults: base 32, n 2"),
    "wide": BenchConfig("seresnet_tiny:base=64,n=3", 32, 64, 1, "SEResNetTiny(base=64, n=3)"),
    # ImageNet-sized; ~12 GFLOP per training image, so opt-in on a CPU (--configs seresnet50).
    "seresnet50": BenchConfig("seresnet50", 224, 16, 1, "timm's seresnet50 (28.1 M params)"),
}
DEFAULT_CONFIGS = ("tiny", "wide")

QUICK = {"repeats": 1, "steps": 2, "warmup": 1, "batch": 8}

# The data benchmarks, on an image folder of ~500x375 JPEGs (``photo_folder``): the training
# loader at each worker count against a torch DataLoader, the JAX training step it feeds
# (synthetic data, as the configurations above), and ``seres eval`` against seres_torch with one
# loader worker each. Sized for ~5 minutes on 2 CPU cores.
DATA: dict[str, Any] = {
    "arch": "seresnet18",
    "image_size": 224,
    "train_images": 256,
    "val_images": 128,
    "loader_workers": (1, 2),
    "loader_batch": 32,
    "loader_warmup": 2,
    "loader_batches": 8,
    "step_batch": 16,
    "step_steps": 2,
    "eval_batch": 32,
    "eval_workers": 1,
}
# --quick: the same measurements, tiny.
DATA_QUICK: dict[str, Any] = DATA | {
    "train_images": 32,
    "val_images": 16,
    "loader_batch": 8,
    "loader_warmup": 1,
    "loader_batches": 2,
    "step_batch": 8,
    "step_steps": 1,
    "eval_batch": 8,
}

# The augmented input-pipeline section (``augment_pipeline``, opt-in): seres' loader with
# timm's RandAugment and random erasing against a DataLoader running timm's create_transform.
# The augmentation is timm train.py's ``--aa rand-m9-mstd0.5-inc1 --reprob 0.25 --remode
# pixel`` with its other defaults (``--train-interpolation random``, ``--color-jitter 0.4``,
# which RandAugment switches off on both sides); ImageNet's mean and std, as seresnet18's data
# config has them. Sized for ~5 minutes on 2 CPU cores.
AUGMENT: dict[str, Any] = {
    "arch": "seresnet18",
    "image_size": 224,
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "re_prob": 0.25,
    "re_mode": "pixel",
    "re_count": 1,
    "interpolation": "random",
    "color_jitter": 0.4,
    "train_images": 256,
    "val_images": 4,  # the folder needs a validation split; it is not read
    "workers": (1, 2),
    "batch": 32,
    # Per worker, so that a run spans the same stretch of every worker's stream. seres'
    # `to_devices` runs 16 threads in each grain worker, each computing a whole batch: the
    # first 16 batches of a worker arrive together and later ones in bursts of up to 16, so the
    # warm-up drains the first burst and a run spans one burst period (runs of 8 batches read
    # ~800 or ~200 img/s by their phase alone).
    "warmup_per_worker": 16,
    "batches_per_worker": 16,
    "device_warmup": 2,
    "device_steps": 10,
}
AUGMENT_QUICK: dict[str, Any] = AUGMENT | {
    "train_images": 32,
    "batch": 8,
    "warmup_per_worker": 1,
    "batches_per_worker": 2,
    "device_warmup": 1,
    "device_steps": 2,
}
AUGMENT_ROUNDS = 2
# The target: seres (host + device) at least as fast as timm's DataLoader per worker
# count.
AUGMENT_GOAL = 1.0

# The recipe-overhead section (``recipe_overhead``): timm's recipe pieces in the JAX training
# step, each against the same step with all of them off. EMA as timm's ``--model-ema
# --model-ema-decay 0.9998 --model-ema-warmup``; stochastic depth at timm's usual rate for a
# ResNet-50; accumulation over 2 micro-batches of the same global batch.
RECIPE_EMA: dict[str, Any] = {"decay": 0.9998, "use_warmup": True}
RECIPE_DROP_PATH_RATE = 0.05
RECIPE_ACCUM = 2
# The targets, in % of step time over the baseline.
RECIPE_GOALS_PCT: dict[str, float] = {"ema": 3.0, "drop_path": 5.0}


@dataclass(frozen=True)
class RecipeVariant:
    """One training-step variant: which recipe pieces are on."""

    label: str
    ema: bool = False
    drop_path: bool = False
    grad_accum_steps: int = 1


RECIPE_VARIANTS: dict[str, RecipeVariant] = {
    "baseline": RecipeVariant("baseline (all off)"),
    "ema": RecipeVariant("EMA", ema=True),
    "drop_path": RecipeVariant(f"drop path {RECIPE_DROP_PATH_RATE}", drop_path=True),
    "accum2": RecipeVariant(f"accumulation {RECIPE_ACCUM}", grad_accum_steps=RECIPE_ACCUM),
    "all": RecipeVariant("all three", ema=True, drop_path=True, grad_accum_steps=RECIPE_ACCUM),
}


@dataclass(frozen=True)
class RecipeModel:
    """A model of the recipe-overhead section. ``image_size`` is the CPU's (reduced where the
    full size would take too long on 2 cores), ``accel_image_size`` the accelerators'.
    ``drop_path``: the architecture has ``drop_path_rate`` (``SEResNetTiny`` has not)."""

    arch: str
    image_size: int
    batch: int
    steps: int
    bf16: bool
    drop_path: bool
    description: str
    accel_image_size: int | None = None


RECIPE_MODELS: dict[str, RecipeModel] = {
    "seresnet50": RecipeModel(
        "seresnet50", 96, 16, 2, True, True,
        "timm's seresnet50 (28.1 M params), bf16 compute; 96×96 on the CPU (224 on an "
        "accelerator) so a run takes minutes on 2 cores",
        accel_image_size=224,
    ),
    "tiny": RecipeModel(
        "seresnet_tiny", 32, 128, 2, False, False,
        "SEResNetTiny() as the `tiny` configuration (0.70 M params, 196 MFLOP/img forward); "
        "it has no stochastic depth, see tiny_zoo",
    ),
    # A zoo SE-ResNet (which has DropPath) of the tiny model's size and cost: 0.73 M params,
    # 154 MFLOP per image forward at 128×128 (XLA's cost analysis), 32×32 would be 10×
    # cheaper because the ImageNet stem divides the image by 4 at once.
    "tiny_zoo": RecipeModel(
        "seresnet18:channels=16-32-64-128,stem_width=16,num_classes=10", 128, 128, 2, False,
        True,
        "timm's seresnet18 narrowed to the tiny model's cost (0.73 M params, 154 MFLOP/img "
        "forward at 128×128): the drop-path stand-in for tiny",
    ),
}  # fmt: skip


# The NNX design section (``nnx_design``, opt-in: ``--only nnx-design``): the ways to jit the
# NNX training step against the linen step, every variant in one child per model, its steps
# interleaved with the others' (``rounds`` rounds of one synchronised step each). seresnet50 at
# 64×64, batch 8, so that a round of six variants takes seconds on 2 cores.
@dataclass(frozen=True)
class DesignModel:
    """A model of the NNX design section: architecture, input, and rounds of timed steps."""

    arch: str
    image_size: int
    batch: int
    rounds: int
    description: str


NNX_DESIGN_MODELS: dict[str, DesignModel] = {
    "tiny": DesignModel(
        "seresnet_tiny", 32, 128, 8, "SEResNetTiny() as the `tiny` configuration (CIFAR 32×32)"
    ),
    "seresnet50": DesignModel(
        "seresnet50", 64, 8, 8, "timm's seresnet50 (28.1 M params) at 64×64, batch 8"
    ),
}


@dataclass(frozen=True)
class DesignVariant:
    """One way to jit a training step: its label, the API (``linen`` or ``nnx``), how it is
    jitted, and whether it compiles with seres' XLA options (``seres_jax.compiler``)."""

    label: str
    api: str
    jit: str  # "compile_steps", "nnx.jit", "cached_partial"
    seres_options: bool


NNX_DESIGN_VARIANTS: dict[str, DesignVariant] = {
    "linen": DesignVariant(
        "linen: `seres_jax.train.compile_steps`", "linen", "compile_steps", True
    ),
    "nnx_graph": DesignVariant(
        "(a) `nnx.jit(train_step, donate_argnums=(0, 1))`", "nnx", "nnx.jit", False
    ),
    "nnx_cached": DesignVariant(
        "(b) `nnx.cached_partial((a), model, optimizer)`", "nnx", "cached_partial", False
    ),
    "nnx_tree": DesignVariant(
        "(c) `seres_jax.nnx.train.compile_steps`", "nnx", "compile_steps", True
    ),
    "nnx_tree_xla_defaults": DesignVariant(
        "(d) (c) with XLA's defaults", "nnx", "compile_steps", False
    ),
    "linen_xla_defaults": DesignVariant(
        "linen with XLA's defaults", "linen", "compile_steps", False
    ),
}
# The target: NNX's training and inference throughput at least 0.97× linen's.
NNX_GOAL = 0.97
