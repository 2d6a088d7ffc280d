"""Bring a notebook-style PyTorch checkpoint into Flax, run it there, and take it back.

1. build the notebook's ``SEResNetTiny`` in PyTorch, give its BatchNorms some state (a few
   train-mode forwards) and save its ``state_dict`` with ``torch.save``;
2. load the file with ``weights_only=True`` and convert it strictly onto the Flax model;
3. run both models on the same batch (NCHW for PyTorch, NHWC for Flax) in eval mode and print
   the largest logit difference;
4. convert the Flax variables back and check the round trip is bit-exact.

Run: ``python examples/convert_notebook_checkpoint.py [--preact] [--out DIR]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

import seres_jax as sj
import seres_torch as st


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preact", action="store_true", help="pre-activation blocks")
    parser.add_argument("--out", type=Path, help="where to write the checkpoint (default: temp)")
    args = parser.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.manual_seed(0)

    torch_model = st.SEResNetTiny(preact=args.preact)
    with torch.no_grad():  # non-trivial running statistics, as a trained checkpoint has
        for _ in range(3):
            torch_model(torch.randn(16, 3, 32, 32))
    torch_model.eval()

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="seres-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "se_resnet_tiny.pt"
    torch.save(torch_model.state_dict(), path)

    state_dict = torch.load(path, weights_only=True)
    flax_model = sj.SEResNetTiny(preact=args.preact)
    template = jax.eval_shape(flax_model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    variables = sj.torch_to_flax(state_dict, template)
    print(f"converted {len(state_dict)} tensors, {sj.count_params(variables):,} parameters")

    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        logits_torch = torch_model(torch.from_numpy(x)).numpy()
    logits_flax = np.asarray(jax.jit(flax_model.apply)(variables, x.transpose(0, 2, 3, 1)))
    diff = float(np.max(np.abs(logits_flax - logits_torch)))
    print(f"largest logit difference (eval): {diff:.3e}")

    back = sj.flax_to_torch(variables, torch_model)
    exact = all(torch.equal(back[k], v) for k, v in state_dict.items())
    print(f"torch -> flax -> torch bit-exact: {exact}; checkpoint at {path}")
    if diff > 1e-4 or not exact:
        raise SystemExit("parity check failed")


if __name__ == "__main__":
    main()
