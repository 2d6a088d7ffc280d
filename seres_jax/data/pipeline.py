"""grain input pipelines: a dataset's splits as shuffled, transformed, sharded device batches.

* **Sources.** A split is a grain random-access source (``__len__``, ``__getitem__``): an
  ``ArraySource`` over in-memory arrays, or an image folder or ArrayRecord shards
  (``seres_jax.data.folders``, ``seres_jax.data.records``). ``Splits`` holds a dataset's train
  and validation sources with the grain transforms that turn an element into
  ``(image, label)``.
* **Training** (``train_dataset``) reads an endless stream of batches, a ``grain.MapDataset``
  whose element ``i`` is the batch of step ``i``: the records shuffled anew each epoch (grain's
  ``shuffle`` before ``repeat``), transformed (a random transform draws from a generator that
  grain seeds with the run's seed and the record's position in the stream, so the draws depend
  on neither the worker count nor timing), and batched; each process reads only its own block
  of ``batch_size // process_count`` records of every global batch, so the global batches are
  those of a one-process run. An epoch is ``len(train) // batch_size`` steps; batches run on
  across an epoch's end, so each record is seen once per epoch's worth of records.
  With ``aug_repeats=N`` the order is timm's ``RepeatAugSampler`` instead
  (``seres_jax.data.repeat_aug``): each epoch a permutation, each record repeated ``N`` times,
  the repeats dealt to different processes, each process's share cut to timm's epoch length and
  batched with its last partial batch dropped (``steps_per_epoch`` steps).
* **Evaluation** (``eval_dataset``) reads a split once, in order, as ``(images, labels,
  weights)``: the last batch padded with weight-0 rows (to the full batch, or with
  ``last_batch_multiple`` only to a multiple of the device count: a split's remainder costs
  what its images cost), and every process given the same number of batches of the same
  shapes (``eval_batch_sizes``).
* **To the devices** (``to_devices``): worker processes (``workers``, grain's ``mp_prefetch``),
  then each batch becomes one global array laid out by a sharding
  (``jax.make_array_from_process_local_data``: each process contributes its share) in a grain
  prefetch thread, so host work overlaps device compute. uint8 images are normalised there, on
  the device (``(x / 255 - mean) / std``, timm's ``ToTensor`` + ``Normalize``): a quarter of
  the bytes cross to the device. The iterator is grain's: ``get_state()`` / ``set_state()``
  save and restore its position (``seres_jax.train.checkpoints`` keeps it in each checkpoint).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import grain.python as grain
import jax
import numpy as np
from grain.experimental import ThreadPrefetchIterDataset

from .arrays import DataError
from .images import normalize
from .repeat_aug import (
    RepeatAugMapDataset,
    repeat_epoch_length,
    repeat_epoch_steps,
    repeated_indices,
)

__all__ = [
    "ArraySource",
    "PadCropFlip",
    "Source",
    "Splits",
    "device_normalizer",
    "eval_batch_sizes",
    "eval_dataset",
    "repeat_epoch_length",
    "repeat_epoch_steps",
    "repeated_indices",
    "steps_per_epoch",
    "stream_seed",
    "to_devices",
    "train_dataset",
]


class Source(Protocol):
    """A grain random-access data source."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class ArraySource:
    """In-memory images and labels as a grain source of ``(image, label)`` pairs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if labels.shape != images.shape[:1]:
            raise DataError(f"{images.shape[0]} images but labels have shape {labels.shape}")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        return self.images[index], np.int32(self.labels[index])

    def __repr__(self) -> str:
        return f"ArraySource({len(self)} images of {self.images.shape[1:]})"


class PadCropFlip(grain.RandomMapTransform):
    """The CIFAR augmentation of one image: zero-pad by ``pad`` (zero is the mean once
    normalised), crop back at an offset drawn uniformly from ``[0, 2 * pad]`` per axis, then
    mirror left-right with probability 0.5 (draws: row, column, flip)."""

    def __init__(self, pad: int = 4) -> None:
        if pad < 0:
            raise DataError(f"PadCropFlip: pad must be >= 0, got {pad}")
        self.pad = pad

    def random_map(self, element: tuple[np.ndarray, Any], rng: np.random.Generator) -> Any:
        """One ``(HWC image, label)`` augmented with draws from ``rng``; the label passes
        through."""
        image, label = element
        height, width = image.shape[:2]
        pad = self.pad
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
        top, left = rng.integers(0, 2 * pad + 1, size=2)
        crop = padded[top : top + height, left : left + width]
        return (crop[:, ::-1] if rng.random() < 0.5 else crop), label


Transform: TypeAlias = grain.MapTransform | grain.RandomMapTransform


@dataclass(frozen=True)
class Splits:
    """A dataset as the training loop reads it.

    ``train`` and ``val`` are grain sources; ``train_transform`` / ``eval_transform`` (``None``:
    elements are ``(image, label)`` already) turn an element into ``(image, label)``, images of
    ``image_shape`` (H, W, C). ``mean`` / ``std``: uint8 images are normalised with them on the
    device; ``None``: the images are float32 and normalised already. ``classes``: the class
    names, where the dataset has them.
    """

    name: str
    train: Source
    val: Source
    num_classes: int
    image_shape: tuple[int, int, int]
    train_transform: Transform | None = None
    eval_transform: Transform | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: Sequence[str] | None = None


def stream_seed(seed: int) -> int:
    """A run's seed (any size in ``[0, 2**63)``) as grain's 32-bit one."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


def _shard(ds: grain.MapDataset) -> grain.MapDataset:
    count = jax.process_count()
    return ds[jax.process_index() :: count] if count > 1 else ds


def _local_batch(batch_size: int, count: int | None = None) -> int:
    count = jax.process_count() if count is None else count
    if batch_size % count:
        raise DataError(f"batch size {batch_size} is not divisible by the {count} processes")
    return batch_size // count


def _with_transform(ds: grain.MapDataset, transform: Transform | None) -> grain.MapDataset:
    if transform is None:
        return ds
    if isinstance(transform, grain.RandomMapTransform):
        return ds.random_map(transform)
    return ds.map(transform)


def _check_aug_repeats(aug_repeats: int) -> int:
    if isinstance(aug_repeats, bool) or not isinstance(aug_repeats, int) or aug_repeats < 0:
        raise DataError(f"aug_repeats must be an integer >= 0 (0: off), got {aug_repeats!r}")
    return aug_repeats


def steps_per_epoch(
    num_images: int, batch_size: int, aug_repeats: int = 0, num_processes: int | None = None
) -> int:
    """Steps of one epoch of ``train_dataset(splits, batch_size, seed, aug_repeats)`` over
    ``num_images`` training images, on ``num_processes`` processes (default: this run's).

    Without repeats (``aug_repeats=0``) ``num_images // batch_size``, as
    ``TrainConfig.steps`` counts it. With repeats, timm's: each process's
    ``repeat_epoch_length`` records in batches of ``batch_size // num_processes``, the last
    partial one dropped (``DataError`` where no step is left); for splits of at least 256
    images that is ``num_images // 256 * 256 // batch_size`` whatever the process count."""
    if _check_aug_repeats(aug_repeats) == 0:
        return num_images // max(batch_size, 1)
    count = jax.process_count() if num_processes is None else num_processes
    return repeat_epoch_steps(num_images, aug_repeats, count, _local_batch(batch_size, count))


def train_dataset(
    splits: Splits, batch_size: int, seed: int, aug_repeats: int = 0
) -> grain.MapDataset:
    """The endless stream of this process's training batches: element ``i`` is its share of
    step ``i``'s global batch of ``batch_size``, as ``(images, labels)``.

    ``aug_repeats=0``: the stream is shuffled, repeated and transformed as a whole, then cut
    into blocks of ``batch_size // process_count`` and dealt out in turn: process ``p`` reads
    block ``i * process_count + p``, records no other process reads, and the processes' shares
    of a step, joined in process order, are the one-process batch (augmentation draws
    included).

    ``aug_repeats=N >= 1``: timm's repeated augmentation (``RepeatAugMapDataset``): epoch
    after epoch, process ``p`` reads its ``repeated_indices`` of the epoch's permutation in
    batches of ``batch_size // process_count``, ``steps_per_epoch`` steps an epoch. The random
    transform draws from the record's position in the global stream, so the ``N`` repeats of
    an image are augmented differently, and (for splits of at least 256 images) a step's
    global batch holds the same records and draws whatever the process count, in another
    order within the batch."""
    count = jax.process_count()
    local = _local_batch(batch_size, count)
    if len(splits.train) < batch_size:
        raise DataError(
            f"batch size {batch_size} exceeds the {len(splits.train)} training images of "
            f"{splits.name}"
        )
    source = grain.MapDataset.source(splits.train).seed(stream_seed(seed))
    if _check_aug_repeats(aug_repeats):
        stream = RepeatAugMapDataset(
            source,
            repeats=aug_repeats,
            num_processes=count,
            local_batch=local,
            seed=stream_seed(seed),
        )
        mine = _with_transform(stream, splits.train_transform)
        mine = mine[jax.process_index() :: count] if count > 1 else mine
        return mine.batch(local, drop_remainder=True)
    ds = source.shuffle().repeat()
    blocks = _with_transform(ds, splits.train_transform).batch(local, drop_remainder=True)
    return blocks[jax.process_index() :: count] if count > 1 else blocks


def eval_batch_sizes(
    num_images: int,
    batch_size: int,
    last_batch_multiple: int | None = None,
    num_processes: int | None = None,
) -> list[int]:
    """The global sizes of ``eval_dataset(splits, batch_size, split, last_batch_multiple)``'s
    batches over a split of ``num_images``, on ``num_processes`` processes (default: this
    run's): full batches of ``batch_size``, then the last one. ``last_batch_multiple=None``:
    the last is padded to ``batch_size`` too (one shape for every batch); ``m`` (the device
    count): the last holds the split's remainder, padded up to a multiple of ``m`` only, and
    no more rows than ``batch_size``. With several processes, the split is dealt out
    record by record and each process pads its share of the last batch to the largest share
    (process 0's), so every process runs the same batches of the same shapes."""
    count = jax.process_count() if num_processes is None else num_processes
    local = _local_batch(batch_size, count)
    if last_batch_multiple is not None:
        _check_multiple(batch_size, last_batch_multiple, count)
    per_process = math.ceil(num_images / count)
    num_batches = math.ceil(per_process / local)
    if num_batches == 0:
        return []
    return [batch_size] * (num_batches - 1) + [
        _last_local(per_process, local, last_batch_multiple, count) * count
    ]


def _check_multiple(batch_size: int, multiple: int, count: int) -> None:
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise DataError(f"last_batch_multiple must be an integer >= 1, got {multiple!r}")
    if multiple % count:
        raise DataError(f"last_batch_multiple {multiple} is not divisible by the {count} processes")
    if batch_size % multiple:
        raise DataError(f"batch size {batch_size} is not a multiple of {multiple}")


def _last_local(per_process: int, local: int, multiple: int | None, count: int) -> int:
    """Rows of each process's share of the last batch: process 0's records (it holds the
    most), padded up to a multiple of its devices' share of ``multiple``."""
    if multiple is None:
        return local
    remainder = per_process - (math.ceil(per_process / local) - 1) * local
    step = multiple // count
    return min(local, math.ceil(remainder / step) * step)


def eval_dataset(
    splits: Splits,
    batch_size: int,
    split: str = "val",
    last_batch_multiple: int | None = None,
) -> grain.MapDataset:
    """The ``split`` (``"val"`` or ``"train"``), once and in order, as this process's shares of
    global batches of ``batch_size``: ``(images, labels, weights)``, the padding rows weighing
    0. ``last_batch_multiple=None`` pads the last batch to ``batch_size``; ``m`` (pass the
    device count) pads it only to a multiple of ``m``, so the split's remainder costs what
    its images cost, at the price of a second batch shape (``eval_batch_sizes`` lists them).
    Every process gets the same number of batches of the same shapes."""
    count = jax.process_count()
    local = _local_batch(batch_size, count)
    source = {"val": splits.val, "train": splits.train}[split]
    sizes = eval_batch_sizes(len(source), batch_size, last_batch_multiple, count)
    ds = _with_transform(_shard(grain.MapDataset.source(source)), splits.eval_transform)
    batched = ds.batch(local, drop_remainder=False)
    shape, dtype = splits.image_shape, np.uint8 if splits.mean is not None else np.float32

    def padded(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if index < len(batched):
            images, labels = batched[index]
        else:  # this process has run out: a batch of padding keeps the collectives in step
            images, labels = np.zeros((0, *shape), dtype), np.zeros(0, np.int32)
        pad = sizes[index] // count - len(labels)
        weights = np.concatenate([np.ones(len(labels), np.float32), np.zeros(pad, np.float32)])
        images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
        return images, labels.astype(np.int32), weights

    return grain.MapDataset.range(len(sizes)).map(padded)


def to_devices(
    ds: grain.MapDataset,
    sharding: jax.sharding.Sharding,
    *,
    workers: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    threads: int = 16,
    prefetch: int = 2,
) -> grain.IterDataset:
    """``ds``'s batches as global device arrays laid out by ``sharding``, each process giving
    its share; ``workers`` processes run the transforms (0: ``threads`` threads of this
    process), ``prefetch`` batches are put on the devices ahead. With ``mean`` and ``std`` the
    first array (uint8 images) is normalised on the devices."""
    if workers < 0:
        raise DataError(f"workers must be >= 0, got {workers}")
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=64))
    if workers:
        _allow_worker_flags()
        options = grain.MultiprocessingOptions(num_workers=workers)
        die_with_parent = functools.partial(_die_with_parent, os.getpid())
        it = it.mp_prefetch(options, worker_init_fn=die_with_parent)
    scale: Callable[[jax.Array], jax.Array] | None = None
    if mean is not None and std is not None:
        scale = device_normalizer(mean, std, sharding)

    def put(batch: tuple[np.ndarray, ...]) -> tuple[jax.Array, ...]:
        arrays = [jax.make_array_from_process_local_data(sharding, a) for a in batch]
        if scale is not None:
            arrays[0] = scale(arrays[0])
        return tuple(arrays)

    return ThreadPrefetchIterDataset(it.map(put), prefetch_buffer_size=prefetch)


def device_normalizer(
    mean: Sequence[float], std: Sequence[float], sharding: jax.sharding.Sharding
) -> Any:
    """The jitted ``normalize`` ``to_devices`` applies to uint8 image batches laid out by
    ``sharding``: one function per ``(mean, std, sharding)``, so its compiled shapes are
    kept across passes (and can be compiled ahead, as ``evaluate`` does)."""
    return _device_normalizer(tuple(map(float, mean)), tuple(map(float, std)), sharding)


@functools.cache
def _device_normalizer(
    mean: tuple[float, ...], std: tuple[float, ...], sharding: jax.sharding.Sharding
) -> Any:
    return jax.jit(functools.partial(normalize, mean=mean, std=std), out_shardings=sharding)


def _die_with_parent(parent: int, index: int, count: int) -> None:
    """In each grain worker: end with the training process, even a SIGKILLed one (which
    cannot stop its workers), instead of living on as an orphan holding its pipes."""
    del index, count
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _allow_worker_flags() -> None:
    # grain's worker processes read absl flags, which a program not started by absl.app has
    # not parsed: their defaults are what we want.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
