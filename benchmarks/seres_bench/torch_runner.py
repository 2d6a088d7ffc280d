"""The PyTorch implementations: ``seres_torch``'s model eager, or under ``torch.compile``, with
``torch.optim.SGD`` and the loss, backward and optimizer step run eagerly around it."""

from __future__ import annotations

import contextlib
from typing import Any

from .configs import LR, MOMENTUM, NESTEROV, WEIGHT_DECAY
from .measure import MIB, Runners, synthetic_batch


def torch_runners(spec: dict[str, Any], compiled: bool) -> Runners:
    import torch
    import torch.nn.functional as F

    from seres_jax.registry import build_torch, model_config

    if spec["device"] == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("--device gpu: this torch build sees no CUDA device")
        dev = torch.device("cuda")
    else:
        dev = torch.device("cpu")
    cuda = dev.type == "cuda"
    arch_spec, arguments = model_config(spec["arch"])
    in_ch = arguments[arch_spec.in_channels_arg]
    images, labels = synthetic_batch(spec, in_ch, arguments["num_classes"])
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dev)  # NHWC -> NCHW
    y = torch.from_numpy(labels.astype("int64")).to(dev)
    torch.manual_seed(spec["seed"])
    model = build_torch(spec["arch"]).to(dev)
    if spec.get("channels_last"):  # NHWC in memory: what cuDNN's bf16 convolutions prefer
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV
    )
    # torch.compile is lazy: a failure shows at the first call, inside the timed phase.
    net = torch.compile(model) if compiled else model
    # bf16 uses autocast, on CUDA only: CPU autocast is a different code path with its own
    # op coverage, so on the CPU torch runs float32 and says so (precision="fp32").
    use_autocast = spec["bf16"] and cuda

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if use_autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def train(n: int) -> None:
        model.train()
        for _ in range(n):
            with autocast():
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()

    def infer(n: int) -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            for _ in range(n):
                net(x)
        sync()

    def device_peak_mib() -> float | None:
        return torch.cuda.max_memory_allocated() / MIB if cuda else None

    info = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if cuda else None,
        "channels_last": bool(spec.get("channels_last")),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
    }
    precision = "bf16" if use_autocast else "fp32"
    return Runners(train, infer, device_peak_mib, params, precision, info)
