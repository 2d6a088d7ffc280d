"""The training input pipeline at 224 (child side): images/s of seres' loader against a
``torch.utils.data.DataLoader`` doing the same PIL work, per worker count.

* **seres** (``impl="jax"``): what ``seres train`` runs on an image folder —
  ``load_dataset("imagefolder", ...)`` with the run's ``data_options()``, ``train_dataset``
  (shuffle, ``TrainTransform``: decode, ``RandomResizedCrop``, flip), then ``to_devices`` with
  ``workers`` grain processes, normalised on the device; each batch is waited for
  (``jax.block_until_ready``).
* **torch**: a ``Dataset`` over the same ``ImageFolderSource`` whose ``__getitem__`` calls the
  same functions (``decode_rgb``, ``train_crop``, ``normalize``, then CHW as ``ToTensor``
  gives it), a ``RandomSampler`` and ``DataLoader(num_workers=workers)``, the same batch.

The first batch (worker start-up included) is timed alone; after ``warmup`` batches the median
of ``repeats`` runs of ``batches`` batches gives the images/s. The parent's summary of the
answers is ``data_report``'s."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from .measure import maxrss_mib


def _training_options(spec: dict[str, Any], augment: bool) -> Any:
    """The data options ``seres train``/``eval`` derive for ``spec["arch"]`` on an image folder."""
    from seres_jax.train import TrainConfig

    config = TrainConfig(
        model=spec["arch"], dataset="imagefolder", data_dir=spec["root"], augment=augment
    )
    return config.data_options()


def _seres_batches(spec: dict[str, Any]) -> tuple[Iterator[Any], Callable[[], None]]:
    import jax

    from seres_jax.data import load_dataset, to_devices, train_dataset
    from seres_jax.train import compile_steps, make_mesh

    splits = load_dataset("imagefolder", spec["root"], spec["seed"], _training_options(spec, True))
    sharding = compile_steps(make_mesh()).batch
    batches = to_devices(
        train_dataset(splits, spec["batch"], spec["seed"]),
        sharding,
        workers=spec["workers"],
        mean=splits.mean,
        std=splits.std,
    )
    iterator = iter(batches)

    def next_batch() -> Any:
        images, labels = next(iterator)
        return jax.block_until_ready((images, labels))

    return _forever(next_batch), iterator.close


def _torch_batches(spec: dict[str, Any]) -> tuple[Iterator[Any], Callable[[], None]]:
    import numpy as np
    import torch

    from seres_jax.data import ImageFolderSource
    from seres_jax.data.images import decode_rgb, normalize, train_crop

    config = _training_options(spec, True).data_config
    source = ImageFolderSource(spec["root"], "train")

    class TrainImages(torch.utils.data.Dataset):
        """The same PIL work as seres' ``TrainTransform`` plus ``ToTensor`` + ``Normalize``."""

        def __init__(self) -> None:
            self.rng: np.random.Generator | None = None

        def __len__(self) -> int:
            return len(source)

        def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
            if self.rng is None:  # per worker: DataLoader seeds torch per worker
                self.rng = np.random.default_rng(torch.initial_seed())
            element = source[index]
            img = decode_rgb(element["image"], element["name"])
            pixels = train_crop(img, config.input_size, self.rng, config.interpolation)
            chw = normalize(pixels, config.mean, config.std).transpose(2, 0, 1)
            return torch.from_numpy(np.ascontiguousarray(chw)), element["label"]

    dataset = TrainImages()
    needed = spec["batch"] * (1 + spec["warmup"] + spec["repeats"] * spec["batches"] + 1)
    generator = torch.Generator().manual_seed(spec["seed"])
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=needed, generator=generator)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=spec["batch"],
        sampler=sampler,
        num_workers=spec["workers"],
        drop_last=True,
    )
    iterator = iter(loader)
    return _forever(lambda: next(iterator)), lambda: None


def _forever(next_batch: Callable[[], Any]) -> Iterator[Any]:
    while True:
        yield next_batch()


def pipeline_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One loader (``spec["impl"]``) with ``spec["workers"]`` workers: start-up, then the
    median images/s of ``repeats`` x ``batches`` batches after ``warmup``."""
    make = _seres_batches if spec["impl"] == "jax" else _torch_batches
    start = time.perf_counter()
    batches, close = make(spec)
    try:
        next(batches)
        startup = time.perf_counter() - start
        for _ in range(spec["warmup"]):
            next(batches)
        reps = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            for _ in range(spec["batches"]):
                next(batches)
            reps.append(time.perf_counter() - start)
    finally:
        close()
    return {
        "startup_s": startup,
        "rep_s": reps,
        "img_s": spec["batch"] * spec["batches"] / statistics.median(reps),
        "peak_rss_mib": maxrss_mib(),
    }
