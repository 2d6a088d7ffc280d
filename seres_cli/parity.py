"""``seres parity``: the layer-by-layer parity report of PyTorch and JAX on one architecture;
exit status 1 when parity fails."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import Subcommands, UsageError, _int_at_least, _require_torch


def add_arguments(sub: Subcommands) -> None:
    parity = sub.add_parser("parity", help="layer-by-layer parity of PyTorch and JAX")
    parity.add_argument("checkpoint", nargs="?", type=Path,
                        help="weights for both sides (default: random, seeded)")  # fmt: skip
    parity.add_argument("--arch", required=True, help="e.g. seresnet_tiny:in_ch=1")
    parity.add_argument("--against", type=Path,
                        help="other weights for the JAX side, e.g. a converted file")  # fmt: skip
    parity.add_argument("--device", choices=("cpu", "gpu", "tpu"), help="JAX platform")
    parity.add_argument("--json", type=Path, help="also write the report as JSON here")
    parity.add_argument("--force", action="store_true", help="replace an existing --json file")
    parity.add_argument("--batch-size", type=_int_at_least(1), default=4,
                        help="images in the random input batch (default: %(default)s)")  # fmt: skip
    parity.add_argument("--image-size", type=_int_at_least(1), default=32,
                        help="height and width of the input (default: %(default)s)")  # fmt: skip
    parity.add_argument("--seed", type=_int_at_least(0), default=0,
                        help="seed of the random input and, without CHECKPOINT, of the weights "
                        "and BatchNorm statistics (default: %(default)s)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from seres_jax.convert import to_torch
    from seres_jax.formats import atomic_path, check_destination, load_checkpoint
    from seres_jax.parity import parity_report, randomize_batchnorm
    from seres_jax.registry import build_flax, build_torch, model_config, variables_template

    # Everything the user named is checked before any work, PyTorch's presence last.
    if args.json is not None:
        check_destination(args.json, force=args.force)
    spec, arguments = model_config(args.arch)
    try:
        device = jax.devices(args.device)[0] if args.device else None
    except RuntimeError:
        raise UsageError(f"JAX has no {args.device} device here") from None
    template = variables_template(args.arch)
    state = variables = None
    if args.checkpoint is not None:
        state = load_checkpoint(args.checkpoint, template=template).to_state_dict(template)
    if args.against is not None:
        variables = load_checkpoint(args.against, template=template).to_variables(template)
    torch = _require_torch("parity")
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    torch_model = build_torch(args.arch)
    if state is not None:
        torch_model.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
    else:
        randomize_batchnorm(torch_model, args.seed)
    shape = (args.batch_size, arguments[spec.in_channels_arg], args.image_size, args.image_size)
    x = np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)
    report = parity_report(
        torch_model, build_flax(args.arch), x, variables=variables, arch=args.arch,
        device=device, seed=args.seed,
    )  # fmt: skip
    print(report.format())
    if args.json is not None:
        with atomic_path(args.json, force=args.force) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return 0 if report.ok else 1
