"""Fine-tune a timm-layout SE-ResNet-50 checkpoint in JAX with a new 10-class head, and export it
back to a PyTorch checkpoint with timm's keys.

1. a timm-layout ``seresnet50`` ``state_dict`` is saved as ``.pth`` (randomly initialised here,
   since nothing can be downloaded; ``timm.create_model("seresnet50", pretrained=True)
   .state_dict()`` is the same layout);
2. it is loaded with ``weights_only=True`` and converted strictly onto the Flax model;
3. the 1000-class ``fc`` is replaced by a freshly initialised 10-class head;
4. a few SGD steps fine-tune everything on scikit-learn's digits (upsampled to 32×32 RGB);
5. the result is written as ``.pth`` and loaded back into ``seres_torch`` with ``strict=True``,
   and both frameworks' logits are compared.

Run: ``python examples/finetune_timm_seresnet50.py [--steps N] [--small] [--out DIR]``
(``--small`` shrinks the widths for a quick check; the structure stays SE-ResNet-50's).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

from seres_jax import compiler, optim
from seres_jax import resnet as jr
from seres_jax.convert import flax_to_state_dict
from seres_jax.data import Dataset, load_digits, splits_from_arrays, train_dataset
from seres_jax.formats import load_checkpoint, save_state_dict
from seres_jax.train import TrainState, train_step
from seres_torch import resnet as tr

SMALL = dict(channels=(16, 32, 64, 128), stem_width=8, layers=(1, 1, 1, 1))


def digits_rgb32() -> Dataset:
    """Digits, each pixel repeated 4×4 and over 3 channels: a 32×32 RGB stand-in."""
    data = load_digits()

    def grow(images: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(np.repeat(images, 4, axis=1), 4, axis=2), 3, axis=3)

    return dataclasses.replace(
        data, train_images=grow(data.train_images), test_images=grow(data.test_images),
        mean=data.mean * 3, std=data.std * 3,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--small", action="store_true", help="reduced widths, for a smoke test")
    parser.add_argument("--out", type=Path, help="where to write the checkpoints (default: temp)")
    args = parser.parse_args()
    sizes = SMALL if args.small else {}
    out = args.out or Path(tempfile.mkdtemp(prefix="seres-finetune-"))
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    pretrained = out / "seresnet50_timm_layout.pth"
    torch.save(tr.create_model("seresnet50", **sizes).state_dict(), pretrained)

    backbone = jr.create_model("seresnet50", **sizes)  # 1000 classes, as the checkpoint
    template = jax.eval_shape(backbone.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    variables = load_checkpoint(pretrained).to_variables(template)  # strict
    print(f"loaded {pretrained.name}: {len(flax_to_state_dict(variables))} tensors")

    model = jr.create_model("seresnet50", num_classes=10, **sizes)
    features = variables["params"]["fc"]["kernel"].shape[0]
    head_init = jax.jit(functools.partial(model.init, train=False))
    head = head_init(jax.random.key(1, impl="rbg"), jnp.zeros((1, 32, 32, 3)))["params"]["fc"]
    assert head["kernel"].shape == (features, 10)
    variables["params"]["fc"] = head  # the new head; every other weight is the checkpoint's

    tx = optim.sgd(optim.warmup_cosine(0.02, args.steps), momentum=0.9, weight_decay=1e-4)
    state = TrainState.create(model.apply, variables, tx)
    # seres' XLA options (on the CPU, convolutions stay out of YNNPACK; see seres_jax.compiler).
    step = compiler.jit(train_step, donate_argnums=0)
    data = digits_rgb32()
    # A grain dataset of batches: element i is step i's, reshuffled each epoch, endless.
    batches = train_dataset(splits_from_arrays(data), 32, seed=0)
    for i in range(args.steps):
        x, y = batches[i]
        state, metrics = step(state, x, y)
    print(f"fine-tuned {args.steps} steps, last batch loss {float(metrics['loss_sum']) / 32:.4f}")

    exported = out / "seresnet50_digits.pth"
    save_state_dict(flax_to_state_dict(jax.device_get(state.variables)), exported, force=True)
    torch_model = tr.create_model("seresnet50", num_classes=10, **sizes)
    torch_model.load_state_dict(torch.load(exported, weights_only=True), strict=True)
    torch_model.eval()
    sample = data.test_images[:64]
    logits_jax = np.asarray(jax.jit(model.apply)(state.variables, sample))
    with torch.no_grad():
        logits_torch = torch_model(torch.from_numpy(sample.transpose(0, 3, 1, 2))).numpy()
    diff = float(np.max(np.abs(logits_jax - logits_torch)))
    scale = float(np.max(np.abs(logits_torch)))
    acc = float(np.mean(logits_torch.argmax(-1) == data.test_labels[:64]))
    print(f"exported {exported.name}; PyTorch loads it strictly; accuracy on 64 test images "
          f"{acc:.2%}; largest logit difference {diff:.2e} (of {scale:.2e})")  # fmt: skip
    if not diff <= 1e-4 * max(scale, 1.0):
        raise SystemExit("JAX and PyTorch disagree on the exported weights")


if __name__ == "__main__":
    main()
