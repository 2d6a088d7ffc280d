"""What the benchmark measures: the model configurations, the implementations, the training
recipe both frameworks run, and the converter's model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMPLS: tuple[str, ...] = ("jax", "torch_eager", "torch_compile")
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
