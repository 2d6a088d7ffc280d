"""``seres eval``'s speed against ``seres_torch`` on the same image folder's validation split,
one child process per framework, both at the model's eval preprocessing (the run's
``data_options()``: resize, centre crop, normalise).

* **End to end** (decode, crop, model): JAX is ``seres_jax.train.evaluate_variables``, what
  ``seres eval`` runs (grain's ``eval_dataset`` + ``to_devices`` with ``workers``, the compiled
  ``eval_step``), whose own images/s is reported; its first call (compilation included) is
  timed apart. PyTorch is ``model.eval()`` under ``torch.inference_mode()`` over a
  ``DataLoader(num_workers=workers)`` whose ``Dataset`` calls the same PIL functions
  (``decode_rgb``, ``eval_crop``, ``normalize``).
* **Model only**: the same decoded, cropped and normalised batches (``eval_dataset``, read once
  before timing) through ``compile_steps(mesh).eval`` / the PyTorch model.

Both: one untimed pass, then the median of ``repeats`` passes over the split."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from .input_pipeline import _training_options
from .measure import maxrss_mib


def _median_pass_s(run_pass: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_pass()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _jax_eval(spec: dict[str, Any], splits: Any) -> dict[str, Any]:
    import jax
    import optax

    from seres_jax.data import eval_dataset
    from seres_jax.data.images import normalize
    from seres_jax.registry import build_flax
    from seres_jax.train import (
        TrainState,
        compile_steps,
        evaluate_variables,
        init_variables,
        make_mesh,
    )

    model = build_flax(spec["arch"])
    variables = init_variables(model, splits.image_shape, spec["seed"])
    batch = spec["batch"]

    def seres_eval() -> dict[str, float]:
        return evaluate_variables(model, variables, splits, batch, workers=spec["workers"])

    start = time.perf_counter()
    seres_eval()
    first_s = time.perf_counter() - start
    end_to_end = statistics.median(seres_eval()["images_per_s"] for _ in range(spec["repeats"]))

    steps = compile_steps(make_mesh())
    state = jax.device_put(TrainState.create(model.apply, variables, optax.identity()),
                           steps.replicated)  # fmt: skip
    batches = [
        jax.device_put((normalize(x, splits.mean, splits.std), y, w), steps.batch)
        for x, y, w in eval_dataset(splits, batch)
    ]

    def model_pass() -> None:
        jax.block_until_ready([steps.eval(state, *b) for b in batches])

    model_pass()
    model_s = _median_pass_s(model_pass, spec["repeats"])
    return {"first_call_s": first_s, "end_to_end_img_s": end_to_end, "model_s": model_s}


def _torch_eval(spec: dict[str, Any], splits: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    from seres_jax.data import eval_dataset
    from seres_jax.data.images import decode_rgb, eval_crop, normalize
    from seres_jax.registry import build_torch

    torch.manual_seed(spec["seed"])
    model = build_torch(spec["arch"]).eval()
    config, source = _training_options(spec, augment=False).data_config, splits.val

    def pixels(index: int) -> tuple[torch.Tensor, int]:
        element = source[index]
        img = decode_rgb(element["image"], element["name"])
        crop = eval_crop(img, config.input_size, config.crop_pct, config.interpolation)
        chw = normalize(crop, config.mean, config.std).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw)), element["label"]

    class EvalImages(torch.utils.data.Dataset):
        """The same PIL work as seres' ``EvalTransform`` plus ``ToTensor`` + ``Normalize``."""

        def __len__(self) -> int:
            return len(source)

        def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
            return pixels(index)

    loader = torch.utils.data.DataLoader(
        EvalImages(), batch_size=spec["batch"], num_workers=spec["workers"]
    )

    @torch.inference_mode()
    def end_to_end_pass() -> None:
        for images, _ in loader:
            model(images)

    batches = [
        torch.from_numpy(np.ascontiguousarray(
            normalize(x, splits.mean, splits.std).transpose(0, 3, 1, 2)))
        for x, _, _ in eval_dataset(splits, spec["batch"])
    ]  # fmt: skip

    @torch.inference_mode()
    def model_pass() -> None:
        for images in batches:
            model(images)

    end_to_end_pass()
    end_to_end_s = _median_pass_s(end_to_end_pass, spec["repeats"])
    model_pass()
    model_s = _median_pass_s(model_pass, spec["repeats"])
    return {"end_to_end_img_s": len(source) / end_to_end_s, "model_s": model_s,
            "num_threads": torch.get_num_threads()}  # fmt: skip


def eval_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One framework's (``spec["impl"]``) evaluation speed on ``spec["root"]``'s val split."""
    from seres_jax.data import load_dataset

    options = _training_options(spec, augment=False)
    splits = load_dataset("imagefolder", spec["root"], spec["seed"], options)
    run = _jax_eval if spec["impl"] == "jax" else _torch_eval
    result = run(spec, splits)
    images = len(splits.val)
    model_img_s = images / result.pop("model_s")
    return {**result, "images": images, "model_img_s": model_img_s, "peak_rss_mib": maxrss_mib()}
