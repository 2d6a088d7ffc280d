"""timm's repeated augmentation (``--aug-repeats``, ``RepeatAugSampler``) in seres's grain
pipeline (``seres_jax.data.repeat_aug``, ``train_dataset(..., aug_repeats=N)``).

Against timm 1.0.31 recorded by ``fixtures/record_timm_repeat_aug.py`` (its ``torch.randperm``
replaced by a given permutation, since seres draws its orders with grain): every rank's index
list for 7 dataset sizes x 3 repeat counts x 1, 2 and 8 replicas, and the epoch length over a
grid of 468 (size, repeats, replicas) up to ImageNet's size; live against timm where it is
installed. Then the grain stream itself, with two simulated processes: each reads exactly its
timm list of each epoch's permutation, the repeats of an image are different draws on different
processes, a step's global batch does not depend on the process count, and a restored iterator
goes on with the same batches.
"""

from __future__ import annotations

import collections
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import grain.python as grain
import jax
import numpy as np
import pytest

from seres_jax.data import (
    ArraySource,
    DataError,
    PadCropFlip,
    Splits,
    repeat_epoch_length,
    repeated_indices,
    steps_per_epoch,
    stream_seed,
    train_dataset,
)
from seres_jax.data.repeat_aug import RepeatAugMapDataset, epoch_permutation

FIXTURES = Path(__file__).parent / "fixtures"


@cache
def _recorded() -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads((FIXTURES / "timm_repeat_aug.json").read_text())
    return fixture


# ---------------------------------------------------------------- timm's index lists


def test_index_lists_match_recorded_timm() -> None:
    recorded = _recorded()
    assert recorded["versions"]["timm"] == "1.0.31" and recorded["selected_round"] == 256
    checked = 0
    for case in recorded["lists"]:
        order = np.array(recorded["permutations"][str(case["size"])])
        for rank, expected in enumerate(case["ranks"]):
            ours = repeated_indices(order, case["repeats"], case["replicas"], rank)
            assert ours.tolist() == expected, (case["size"], case["repeats"], case["replicas"])
            checked += len(expected)
    assert len(recorded["lists"]) == 63 and checked > 10_000


def test_epoch_lengths_match_recorded_timm() -> None:
    empty = 0
    for size, repeats, replicas, length in _recorded()["lengths"]:
        if length == 0:  # timm's epoch would be empty: refused, naming the sizes
            empty += 1
            with pytest.raises(
                DataError,
                match=rf"aug_repeats {repeats}: a split of {size} images over {replicas} "
                "processes leaves no image",
            ):
                repeat_epoch_length(size, repeats, replicas)
        else:
            assert repeat_epoch_length(size, repeats, replicas) == length, (size, repeats)
    assert empty > 0


def test_recorded_lists_have_timms_properties() -> None:
    """What the sampler is for, read off timm's own lists: the ranks' lists together are a
    prefix of the repeated permutation (each image ``N`` times, bar the last, and the
    wrap-around when the epoch outlasts ``L * N``); with ``N <= R`` the copies of an image go
    to ``N`` different ranks."""
    recorded = _recorded()
    spread = 0
    for case in recorded["lists"]:
        size, repeats, replicas = case["size"], case["repeats"], case["replicas"]
        order = recorded["permutations"][str(size)]
        count = len(case["ranks"][0])
        stream = [case["ranks"][i % replicas][i // replicas] for i in range(count * replicas)]
        repeated = np.repeat(order, repeats)
        wrapped = repeated[np.arange(len(stream)) % len(repeated)]
        assert stream == wrapped.tolist()
        if repeats <= replicas and len(stream) <= len(repeated):
            ranks: dict[int, set[int]] = collections.defaultdict(set)
            for position, index in enumerate(stream):
                ranks[index].add(position % replicas)
            copies = collections.Counter(stream)
            assert all(len(ranks[i]) == copies[i] for i in copies)
            spread += repeats > 1
    assert spread > 0


def _load_recorder() -> Any:
    path = FIXTURES / "record_timm_repeat_aug.py"
    spec = importlib.util.spec_from_file_location("record_timm_repeat_aug", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_lists_match_live_timm() -> None:
    pytest.importorskip("timm")
    recorder = _load_recorder()
    rng = np.random.default_rng(0)
    for size, repeats, replicas in ((1000, 4, 3), (777, 2, 5), (40, 3, 16), (2600, 3, 8)):
        order = rng.permutation(size).tolist()
        for rank, expected in enumerate(recorder.sampler_lists(order, repeats, replicas)):
            assert repeated_indices(np.array(order), repeats, replicas, rank).tolist() == expected
        assert recorder.sampler_length(size, repeats, replicas) == repeat_epoch_length(
            size, repeats, replicas
        )


def test_steps_per_epoch_is_timms_drop_last_count() -> None:
    for size, repeats, replicas, length in _recorded()["lengths"]:
        for local in (1, 4, 32):
            if length >= local:
                assert steps_per_epoch(size, local * replicas, repeats, replicas) == length // local
            else:
                message = "leaves no image" if length == 0 else f"fewer than its batch of {local}"
                with pytest.raises(DataError, match=message):
                    steps_per_epoch(size, local * replicas, repeats, replicas)
    # From 256 images on the count does not depend on the process count.
    for replicas in (1, 2, 4, 8):
        assert steps_per_epoch(1_281_167, 1024, 3, replicas) == 1_281_024 // 1024
    # Without repeats: TrainConfig.steps's count, whatever the processes.
    assert steps_per_epoch(1000, 64) == steps_per_epoch(1000, 64, 0, 8) == 15


def test_bad_arguments_are_refused() -> None:
    order = np.arange(300)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(DataError, match=r"aug_repeats must be an integer >= 1, got"):
            repeated_indices(order, bad, 2, 0)  # type: ignore[arg-type]
    for bad in (-1, 2.0, True):
        with pytest.raises(DataError, match=r"aug_repeats must be an integer >= 0 \(0: off\), got"):
            steps_per_epoch(300, 8, bad)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="process_index 2 is not below the 2 processes"):
        repeated_indices(order, 2, 2, 2)
    with pytest.raises(DataError, match="process count must be an integer >= 1, got 0"):
        repeat_epoch_length(300, 2, 0)
    with pytest.raises(DataError, match="number of training images must be an integer >= 1"):
        repeat_epoch_length(0, 2, 1)
    with pytest.raises(DataError, match=r"1-D integer array, got float64 of shape \(300,\)"):
        repeated_indices(order.astype(float), 2, 1, 0)
    with pytest.raises(DataError, match="batch size 9 is not divisible by the 2 processes"):
        steps_per_epoch(300, 9, 2, 2)
    with pytest.raises(
        DataError,
        match="aug_repeats 3: a split of 100 images over 2 processes gives each 50 images per "
        "epoch, fewer than its batch of 64",
    ):
        steps_per_epoch(100, 128, 3, 2)


# ---------------------------------------------------------------- the grain stream


def _splits(num: int, augment: bool = False) -> Splits:
    """Image ``i`` is labelled ``i`` (random pixels: the pad-crop-flip draws show)."""
    images = np.random.default_rng(0).standard_normal((num, 4, 4, 1)).astype(np.float32)
    source = ArraySource(images, np.arange(num, dtype=np.int32))
    transform = PadCropFlip(pad=2) if augment else None
    return Splits("toy", source, source, num, (4, 4, 1), train_transform=transform)


@pytest.fixture
def as_process(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``as_process(p, n)``: from then on this is process ``p`` of ``n``."""

    def become(index: int, count: int) -> None:
        monkeypatch.setattr(jax, "process_count", lambda: count)
        monkeypatch.setattr(jax, "process_index", lambda: index)

    return become


def test_each_process_reads_its_timm_list_of_each_epochs_permutation(as_process: Any) -> None:
    size, repeats, batch, seed = 300, 2, 8, 5
    splits = _splits(size)
    steps = steps_per_epoch(size, batch, repeats, 2)
    assert steps == 32  # 256 of 300 images kept, in global batches of 8
    per_process = []
    for index in (0, 1):
        as_process(index, 2)
        ds = train_dataset(splits, batch, seed, aug_repeats=repeats)
        labels = np.concatenate([ds[i][1] for i in range(2 * steps)]).reshape(2, -1)
        per_process.append(labels)
        for epoch in (0, 1):
            order = epoch_permutation(stream_seed(seed), epoch, size)
            expected = repeated_indices(order, repeats, 2, index)[: steps * batch // 2]
            np.testing.assert_array_equal(labels[epoch], expected)
    for epoch in (0, 1):
        # Both processes: the first 128 images of the permutation, each twice, the two copies
        # on different processes.
        counts = collections.Counter(np.concatenate([p[epoch] for p in per_process]).tolist())
        assert len(counts) == 128 and set(counts.values()) == {2}
        assert not set(per_process[0][epoch]) ^ set(per_process[1][epoch])
    assert set(per_process[0][0]) != set(per_process[0][1])  # a new order each epoch
    assert sorted(epoch_permutation(stream_seed(seed), 0, size)) == list(range(size))


def test_repeats_are_different_draws_and_the_global_batch_does_not_depend_on_the_processes(
    as_process: Any,
) -> None:
    """A step's global batch (the processes' shares joined) holds the same records with the
    same augmentation draws on one, two or four processes, in another order; the copies of an
    image are augmented differently."""
    size, batch, seed = 260, 8, 1
    splits = _splits(size, augment=True)

    def global_steps(count: int) -> list[list[tuple[int, bytes]]]:
        shares = []
        for index in range(count):
            as_process(index, count)
            ds = train_dataset(splits, batch, seed, aug_repeats=3)
            shares.append([ds[i] for i in range(34)])  # past the 32-step epoch's end
        return [
            sorted(
                (int(y), x.tobytes())
                for images, labels in (share[step] for share in shares)
                for x, y in zip(images, labels, strict=True)
            )
            for step in range(34)
        ]

    one = global_steps(1)
    assert global_steps(2) == one and global_steps(4) == one
    copies = collections.defaultdict(set)
    for rows in one[:32]:
        for label, pixels in rows:
            copies[label].add(pixels)
    # 256 positions: 85 images three times, the 86th once; three copies, three crops
    # (pad-crop-flip has 50 outcomes, so a few coincide by chance).
    assert sorted(collections.Counter(len(c) for c in copies.values()).items())[-1][0] == 3
    assert sum(len(c) == 3 for c in copies.values()) > 70


def test_a_restored_iterator_goes_on_with_the_same_batches(as_process: Any) -> None:
    as_process(1, 2)
    splits = _splits(300, augment=True)
    ds = train_dataset(splits, 8, 2, aug_repeats=3)
    iterator = iter(ds.to_iter_dataset())
    for _ in range(29):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(7)]  # across the epoch's end (32 steps)
    restored = iter(train_dataset(splits, 8, 2, aug_repeats=3).to_iter_dataset())
    restored.set_state(state)
    for (x, y), (rx, ry) in zip(expected, (next(restored) for _ in range(7)), strict=True):
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(x, rx)
    for step, (x, _) in enumerate(expected, start=29):  # random access agrees
        np.testing.assert_array_equal(ds[step][0], x)


def test_the_stream_refuses_what_timm_cannot_batch(as_process: Any) -> None:
    as_process(0, 2)
    with pytest.raises(
        DataError,
        match="aug_repeats 2: a split of 300 images over 2 processes gives each 128 images per "
        "epoch, fewer than its batch of 130",
    ):
        train_dataset(_splits(300), 260, 0, aug_repeats=2)
    with pytest.raises(DataError, match=r"aug_repeats must be an integer >= 0 \(0: off\), got -2"):
        train_dataset(_splits(40), 8, 0, aug_repeats=-2)
    with pytest.raises(DataError, match="batch size 5 is not divisible by the 2 processes"):
        train_dataset(_splits(40), 5, 0, aug_repeats=2)
    source = grain.MapDataset.source(_splits(300).train)
    with pytest.raises(DataError, match="per-process batch size must be an integer >= 1"):
        RepeatAugMapDataset(source, repeats=2, num_processes=2, local_batch=0, seed=0)
