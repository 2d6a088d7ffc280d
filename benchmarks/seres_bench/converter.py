"""The converter benchmark: ``torch_to_flax`` and ``flax_to_state_dict`` on a ~50 M-parameter
state_dict, against a plain copy of the same bytes (``arr.copy()`` per tensor) and, for
reference, ``np.copyto`` into preallocated arrays."""

from __future__ import annotations

from typing import Any

from .measure import maxrss_mib, median_seconds


def convert_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from seres_jax.convert import flax_to_state_dict, torch_to_flax
    from seres_jax.registry import build_torch

    torch.manual_seed(0)
    model = build_torch(spec["arch"])
    params = sum(p.numel() for p in model.parameters())
    state_dict = model.state_dict()
    arrays = [t.detach().numpy() for t in state_dict.values()]  # views, no copy
    nbytes = sum(a.nbytes for a in arrays)
    variables = torch_to_flax(state_dict)  # numpy arrays: the reverse direction times no transfer
    repeats = spec["repeats"]

    # The converter allocates a fresh array per tensor and writes it (a transposed copy for
    # kernels), so the fair baseline allocates and copies too: arr.copy() per array.
    copy_s = median_seconds(lambda: [a.copy() for a in arrays], repeats)
    # For reference only: the same bytes into preallocated arrays (no allocation, no page
    # faults), an upper bound on what any copy can reach.
    targets = [np.empty_like(a) for a in arrays]

    def copy_into() -> None:
        for dst, src in zip(targets, arrays, strict=True):
            np.copyto(dst, src)

    copyto_s = median_seconds(copy_into, repeats)
    to_flax_s = median_seconds(lambda: torch_to_flax(state_dict), repeats)
    to_torch_s = median_seconds(lambda: flax_to_state_dict(variables), repeats)
    mb = nbytes / 1e6
    return {
        "arch": spec["arch"],
        "params": params,
        "tensors": len(arrays),
        "bytes": nbytes,
        "repeats": repeats,
        "seconds": {
            "torch_to_flax": to_flax_s,
            "flax_to_state_dict": to_torch_s,
            "copy": copy_s,
            "copyto_preallocated": copyto_s,
        },
        "mb_s": {
            "torch_to_flax": mb / to_flax_s,
            "flax_to_state_dict": mb / to_torch_s,
            "copy": mb / copy_s,
            "copyto_preallocated": mb / copyto_s,
        },
        "peak_rss_mib": maxrss_mib(),
    }
