"""timm's repeated augmentation (``--aug-repeats N``, ``timm.data.RepeatAugSampler``) as index
arithmetic and a grain dataset.

timm 1.0.31's sampler, per epoch, with ``L`` images, ``R`` replicas (in seres: the JAX
processes) and rank ``r``: a permutation of the ``L`` images, each index repeated ``N`` times in
place (``[a, a, a, b, b, b, ...]``, ``repeat_interleave``), that list read with wrap-around
(``list[i % (L * N)]``) at positions ``r, r + R, r + 2R, ...``, and cut after
``repeat_epoch_length(L, N, R)`` of them (timm's ``num_selected_samples``). So the ``N`` repeats
of an image sit at consecutive positions and land on different processes (when ``N <= R``),
each augmented by its own draws; the epoch keeps about ``L`` images in all, not ``L * N``: the
first ``~L / N`` of the permutation, each seen ``N`` times.

* ``repeat_epoch_length`` and ``repeated_indices`` are timm's rule as pure functions of the
  sizes and of a given permutation (``parity_tests/test_repeat_aug.py`` compares them with
  timm's sampler run on the same permutation).
* ``RepeatAugMapDataset`` is the endless global stream of the training records in that order,
  epoch after epoch, each epoch ``steps * global batch`` positions long (timm's loader drops
  each rank's last partial batch): process ``p`` reads positions ``p, p + R, ...``, i.e.
  ``stream[p::R]``. Epoch ``e``'s permutation is grain's own shuffle permutation
  (``index_shuffle``, as ``MapDataset.shuffle`` draws it) with seed ``(seed + e) mod 2**32``,
  computed per element: no epoch-sized array is held, and any position is read at random.

Only whole repeat counts (``N >= 1``): timm's float ``num_repeats`` (resampling the list to
``ceil(N * L)`` entries) is not supported. ``N = 1`` is timm's sampler without repeats (what
timm runs for ``--aug-repeats 1``); "off" (``--aug-repeats 0``) is the caller's plain shuffled
stream, not this module.
"""

from __future__ import annotations

import sys
from typing import Any

import grain.python as grain
import numpy as np
from grain.experimental import index_shuffle

from .arrays import DataError

__all__ = [
    "SELECTED_ROUND",
    "RepeatAugMapDataset",
    "epoch_permutation",
    "repeat_epoch_length",
    "repeat_epoch_steps",
    "repeated_indices",
]

# timm's RepeatAugSampler(selected_round=256): each epoch keeps a multiple of 256 images of the
# split (divided among the replicas), as the original DeiT RASampler did.
SELECTED_ROUND = 256
_SHUFFLE_ROUNDS = 4  # grain's MapDataset.shuffle


def _check_count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def repeat_epoch_length(num_images: int, repeats: int, num_processes: int) -> int:
    """Positions each process reads per epoch: timm's ``num_selected_samples``
    (``selected_round=256``, ``selected_ratio`` = the process count).

    ``floor(L // 256 * 256 / R)`` for a split of ``L >= 256`` images, ``ceil(L / R)`` for a
    smaller one, and never more than the ``ceil(L * N / R)`` a process's share of the repeated
    list holds. Raises ``DataError`` where that is 0 (more processes than the rounded split
    has images), where timm's epoch would be empty."""
    num_images = _check_count(num_images, "the number of training images", 1)
    repeats = _check_count(repeats, "aug_repeats", 1)
    num_processes = _check_count(num_processes, "the process count", 1)
    num_samples = -(-num_images * repeats // num_processes)
    if num_images >= SELECTED_ROUND:
        selected = num_images // SELECTED_ROUND * SELECTED_ROUND // num_processes
    else:
        selected = -(-num_images // num_processes)
    selected = min(selected, num_samples)
    if selected == 0:
        raise DataError(
            f"aug_repeats {repeats}: a split of {num_images} images over {num_processes} "
            f"processes leaves no image per process per epoch (timm keeps "
            f"floor({num_images} // {SELECTED_ROUND} * {SELECTED_ROUND} / {num_processes}) = 0)"
        )
    return selected


def repeat_epoch_steps(num_images: int, repeats: int, num_processes: int, local_batch: int) -> int:
    """Steps per epoch: each process's ``repeat_epoch_length`` records in batches of
    ``local_batch``, the last partial batch dropped (timm's training loader,
    ``drop_last=True``). Raises ``DataError`` where that leaves no step."""
    local_batch = _check_count(local_batch, "the per-process batch size", 1)
    selected = repeat_epoch_length(num_images, repeats, num_processes)
    if selected < local_batch:
        raise DataError(
            f"aug_repeats {repeats}: a split of {num_images} images over {num_processes} "
            f"processes gives each {selected} images per epoch, fewer than its batch of "
            f"{local_batch}"
        )
    return selected // local_batch


def _list_positions(
    positions: Any, num_images: int, repeats: int, num_processes: int, process_index: int
) -> Any:
    """Where process ``process_index``'s ``positions``-th entries sit in the permutation:
    ``(p + R * k) mod (L * N)``, then ``// N`` undoes the repeating."""
    return (process_index + num_processes * positions) % (num_images * repeats) // repeats


def repeated_indices(
    permutation: np.ndarray, repeats: int, num_processes: int, process_index: int
) -> np.ndarray:
    """One epoch's record indices for process ``process_index`` of ``num_processes``, as timm's
    ``RepeatAugSampler.__iter__`` lists them for rank ``process_index`` when its
    ``torch.randperm`` gives ``permutation`` (any 1-D integer array: the epoch's order of the
    ``len(permutation)`` images); ``repeat_epoch_length`` entries."""
    order = np.asarray(permutation)
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        raise DataError(
            f"permutation must be a 1-D integer array, got {order.dtype} of shape {order.shape}"
        )
    num_images = len(order)
    count = repeat_epoch_length(num_images, repeats, num_processes)
    process_index = _check_count(process_index, "process_index", 0)
    if process_index >= num_processes:
        raise DataError(f"process_index {process_index} is not below the {num_processes} processes")
    positions = np.arange(count, dtype=np.int64)
    return order[_list_positions(positions, num_images, repeats, num_processes, process_index)]


def _epoch_seed(seed: int, epoch: int) -> int:
    # grain's shuffle: a new index_shuffle seed each epoch.
    return (seed + epoch) % 2**32


def epoch_permutation(seed: int, epoch: int, num_images: int) -> np.ndarray:
    """Epoch ``epoch``'s order of ``num_images`` records in ``RepeatAugMapDataset`` with
    ``seed`` (a 32-bit grain seed): ``order[i]`` is the record at place ``i``."""
    num_images = _check_count(num_images, "the number of images", 1)
    epoch_seed = _epoch_seed(seed, epoch)
    return np.array(
        [
            index_shuffle(i, max_index=num_images - 1, seed=epoch_seed, rounds=_SHUFFLE_ROUNDS)
            for i in range(num_images)
        ],
        np.int64,
    )


class RepeatAugMapDataset(grain.MapDataset):
    """The endless global stream of ``parent``'s records in timm's repeated-augmentation
    order: position ``g`` of epoch ``e = g // per_epoch`` holds the record at place
    ``((g mod per_epoch) mod (L * N)) // N`` of ``epoch_permutation(seed, e, L)``.

    ``per_epoch = num_processes * steps_per_epoch * local_batch``, where ``steps_per_epoch =
    repeat_epoch_length(L, N, R) // local_batch`` (each rank's loader drops its last partial
    batch), so process ``p``'s records are ``self[p::num_processes]``, and every
    ``local_batch`` of them one step's share, epochs never sharing a batch. A random transform
    after this dataset draws from the global position ``g``: the same record and draws
    whatever the process count, for splits of at least 256 images (the epoch's length
    depends on the count only below that)."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(
        self,
        parent: grain.MapDataset,
        *,
        repeats: int,
        num_processes: int,
        local_batch: int,
        seed: int,
    ) -> None:
        super().__init__(parent)
        num_images = len(parent)
        self.steps_per_epoch = repeat_epoch_steps(num_images, repeats, num_processes, local_batch)
        self.num_images, self.repeats, self.num_processes = num_images, repeats, num_processes
        self.per_epoch = num_processes * self.steps_per_epoch * local_batch
        self.seed = _check_count(seed, "seed", 0)

    def __len__(self) -> int:
        return sys.maxsize

    def __str__(self) -> str:
        return (
            f"RepeatAugMapDataset(repeats={self.repeats}, num_processes={self.num_processes}, "
            f"per_epoch={self.per_epoch})"
        )

    def source_index(self, position: int) -> int:
        """The parent record at global stream position ``position``."""
        epoch, offset = divmod(position, self.per_epoch)
        place = offset % (self.num_images * self.repeats) // self.repeats
        return int(
            index_shuffle(
                place,
                max_index=self.num_images - 1,
                seed=_epoch_seed(self.seed, epoch),
                rounds=_SHUFFLE_ROUNDS,
            )
        )

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self.source_index(index)]
