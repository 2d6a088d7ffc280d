"""Tests for seres_jax.data: loaders, augmentation, batching and device prefetch."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from seres_jax.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASETS,
    DataError,
    Dataset,
    iterate_batches,
    load_cifar10,
    load_dataset,
    load_digits,
    load_synthetic,
    prefetch_to_device,
    random_crop_flip,
)

from .helpers import RECORD, TRAIN_FILES
from .helpers import cifar_records as _records
from .helpers import write_cifar10 as _write_cifar

# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits(seed=0)


def test_digits_shapes_and_dtypes(digits):
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert digits.image_shape == (8, 8, 1)
    assert len(digits.train_images) + len(digits.test_images) == 1797
    assert digits.train_images.dtype == np.float32
    assert digits.test_images.dtype == np.float32
    assert digits.train_labels.dtype == np.int32
    assert digits.test_labels.dtype == np.int32
    assert digits.train_images.shape == (len(digits.train_labels), 8, 8, 1)
    assert digits.test_images.shape == (len(digits.test_labels), 8, 8, 1)
    assert len(digits.mean) == len(digits.std) == 1


def test_digits_split_is_stratified_and_partitions_the_data(digits):
    from sklearn.datasets import load_digits as sklearn_load_digits

    raw = sklearn_load_digits()
    counts = np.bincount(raw.target, minlength=10)
    assert np.array_equal(
        np.bincount(digits.test_labels, minlength=10), np.round(0.2 * counts).astype(int)
    )

    # Undo the normalisation: every image must be a 0..16 integer image from sklearn,
    # and train + test together must be exactly sklearn's multiset of (image, label).
    def raw_rows(images, labels):
        pixels = (images[..., 0] * digits.std[0] + digits.mean[0]) * 16.0
        assert np.allclose(pixels, np.round(pixels), atol=1e-4)
        rows = np.round(pixels).astype(np.int64).reshape(len(images), -1)
        return np.column_stack([rows, labels])

    ours = np.concatenate(
        [
            raw_rows(digits.train_images, digits.train_labels),
            raw_rows(digits.test_images, digits.test_labels),
        ]
    )
    theirs = np.column_stack([raw.images.reshape(1797, -1).astype(np.int64), raw.target])
    assert np.array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])


def test_digits_normalised_with_train_statistics(digits):
    assert abs(float(digits.train_images.mean())) < 1e-5
    assert abs(float(digits.train_images.std()) - 1.0) < 1e-5
    assert abs(float(digits.test_images.mean())) < 0.1
    assert abs(float(digits.test_images.std()) - 1.0) < 0.1


def test_digits_split_depends_only_on_seed(digits):
    again = load_digits(seed=0)
    np.testing.assert_array_equal(again.train_images, digits.train_images)
    np.testing.assert_array_equal(again.test_labels, digits.test_labels)
    other = load_digits(seed=1)
    assert len(other.test_labels) == len(digits.test_labels)
    assert not np.array_equal(other.test_images, digits.test_images)


def test_digits_rejects_bad_fraction():
    with pytest.raises(DataError, match="test_fraction"):
        load_digits(test_fraction=1.0)


# ---------------------------------------------------------------- cifar10


def _expected(records):
    chw = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    nhwc = chw.transpose(0, 2, 3, 1)
    return (nhwc - np.asarray(CIFAR10_MEAN)) / np.asarray(CIFAR10_STD)


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "cifar-10-batches-bin"])
def test_cifar10_reads_binary_layout(tmp_path, nested):
    bin_dir = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    written = _write_cifar(bin_dir)
    ds = load_cifar10(tmp_path)

    assert ds.name == "cifar10"
    assert ds.num_classes == 10
    assert ds.image_shape == (32, 32, 3)
    assert ds.train_images.shape == (35, 32, 32, 3)
    assert ds.test_images.shape == (5, 32, 32, 3)
    assert ds.train_images.dtype == ds.test_images.dtype == np.float32
    assert ds.train_labels.dtype == ds.test_labels.dtype == np.int32
    assert ds.mean == CIFAR10_MEAN
    assert ds.std == CIFAR10_STD

    train = np.concatenate([written[name] for name in TRAIN_FILES])
    np.testing.assert_array_equal(ds.train_labels, train[:, 0])
    np.testing.assert_array_equal(ds.test_labels, written["test_batch.bin"][:, 0])
    np.testing.assert_allclose(ds.train_images, _expected(train), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        ds.test_images, _expected(written["test_batch.bin"]), rtol=1e-6, atol=1e-6
    )
    # Landmark: train index 7 (file 1) + 3, NHWC (row 5, col 7, channel 2).
    landmark = (200 / 255 - CIFAR10_MEAN[2]) / CIFAR10_STD[2]
    assert ds.train_images[10, 5, 7, 2] == pytest.approx(landmark, abs=1e-6)


def test_cifar10_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope"):
        load_cifar10(missing)


def test_cifar10_missing_file(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_4\.bin"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize("size", [0, RECORD - 1, 2 * RECORD + 1])
def test_cifar10_bad_file_size(tmp_path, size):
    _write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(bytes(size))
    with pytest.raises(DataError, match=r"test_batch\.bin.*multiple of the 3073") as info:
        load_cifar10(tmp_path)
    assert "\n" not in str(info.value)


def test_cifar10_bad_label(tmp_path):
    _write_cifar(tmp_path)
    labels = np.array([0, 1, 10, 3, 4, 5, 6])
    _records(np.random.default_rng(1), 7, labels).tofile(tmp_path / "data_batch_3.bin")
    with pytest.raises(DataError, match=r"data_batch_3\.bin record 2 has label byte 10"):
        load_cifar10(tmp_path)


# ---------------------------------------------------------------- dispatch


def test_load_dataset_dispatch(tmp_path):
    _write_cifar(tmp_path)
    assert load_dataset("cifar10", data_dir=tmp_path).train_images.shape[0] == 35
    synthetic = load_dataset("synthetic", seed=3, num_train=8, num_test=4, image_shape=(6, 5, 2))
    assert synthetic.image_shape == (6, 5, 2)
    assert synthetic.train_images.shape == (8, 6, 5, 2)
    assert synthetic.test_labels.shape == (4,)
    np.testing.assert_array_equal(
        synthetic.train_images,
        load_synthetic(num_train=8, num_test=4, image_shape=(6, 5, 2), seed=3).train_images,
    )
    assert load_dataset("digits", seed=0, test_fraction=0.5).test_images.shape[0] > 800


def test_each_dataset_spec_describes_what_its_loader_gives(tmp_path):
    """The defaults a run derives from a dataset's name (the model's input channels and
    classes, augmentation) match the data, and only CIFAR-10 augments by default."""
    _write_cifar(tmp_path)
    for name, spec in DATASETS.items():
        data = load_dataset(name, data_dir=tmp_path)
        assert (data.image_shape[-1], data.num_classes) == (spec.channels, spec.num_classes)
    assert [name for name, spec in DATASETS.items() if spec.augment] == ["cifar10"]


def test_load_dataset_errors():
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet'.*digits, cifar10, synthetic"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="data_dir"):
        load_dataset("cifar10")


def test_synthetic_dtypes_and_labels():
    ds = load_synthetic(num_train=64, num_test=16, num_classes=4)
    assert ds.train_images.dtype == np.float32
    assert ds.train_labels.dtype == np.int32
    assert set(np.unique(ds.train_labels)) <= {0, 1, 2, 3}
    assert ds.mean == (0.0, 0.0, 0.0) and ds.std == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------- augmentation


def _candidates(image, pad):
    """Every crop and crop+flip of the zero-padded image (brute force)."""
    height, width, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    for dy, dx in itertools.product(range(2 * pad + 1), repeat=2):
        crop = padded[dy : dy + height, dx : dx + width]
        yield crop
        yield crop[:, ::-1]


def test_random_crop_flip_outputs_are_crops_of_padded_input():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((16, 6, 5, 3)).astype(np.float32)
    out = random_crop_flip(images, np.random.default_rng(42), pad=2)
    assert out.shape == images.shape
    assert out.dtype == images.dtype
    for original, augmented in zip(images, out, strict=True):
        assert any(np.array_equal(augmented, c) for c in _candidates(original, 2))
    # Augmentation must actually move things: not all outputs are the identity.
    assert not np.array_equal(out, images)


def test_random_crop_flip_is_seeded():
    images = np.random.default_rng(0).standard_normal((8, 8, 8, 3)).astype(np.float32)
    a = random_crop_flip(images, np.random.default_rng(7))
    b = random_crop_flip(images, np.random.default_rng(7))
    c = random_crop_flip(images, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_crop_flip_without_pad_only_flips():
    images = np.random.default_rng(0).standard_normal((64, 4, 4, 2)).astype(np.float32)
    out = random_crop_flip(images, np.random.default_rng(1), pad=0)
    same = np.all(out == images, axis=(1, 2, 3))
    flipped = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ flipped)
    assert 10 < flipped.sum() < 54  # p = 0.5 over 64 images


def test_random_crop_flip_rejects_non_batch():
    with pytest.raises(DataError, match="NHWC"):
        random_crop_flip(np.zeros((4, 4, 3)), np.random.default_rng(0))


# ---------------------------------------------------------------- batching


def _toy(num=23):
    images = np.arange(num, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1))
    return images.astype(np.float32), np.arange(num, dtype=np.int32)


def test_iterate_batches_covers_every_example_once():
    images, labels = _toy()
    batches = list(iterate_batches(images, labels, 5, shuffle=True, seed=0, drop_remainder=False))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    seen = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(np.sort(seen), labels)
    assert not np.array_equal(seen, labels)
    for x, y in batches:
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)


def test_iterate_batches_drop_remainder_and_no_shuffle():
    images, labels = _toy()
    batches = list(iterate_batches(images, labels, 5, shuffle=False, seed=0))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels[:20])


def _epoch(images, labels, epoch, augment=None):
    return list(
        iterate_batches(images, labels, 4, shuffle=True, seed=3, epoch=epoch, augment=augment)
    )


def test_iterate_batches_reproducible_per_epoch():
    images = np.random.default_rng(0).standard_normal((23, 6, 6, 3)).astype(np.float32)
    labels = np.arange(23, dtype=np.int32)
    for augment in (None, random_crop_flip):
        first = _epoch(images, labels, 2, augment)
        resumed = _epoch(images, labels, 2, augment)
        for (xa, ya), (xb, yb) in zip(first, resumed, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    order = [np.concatenate([y for _, y in _epoch(images, labels, e)]) for e in (0, 1)]
    assert not np.array_equal(order[0], order[1])


def test_iterate_batches_augment_receives_batches():
    images, labels = _toy(10)
    calls = []

    def augment(batch, rng):
        calls.append(len(batch))
        assert isinstance(rng, np.random.Generator)
        return -batch

    batches = list(iterate_batches(images, labels, 4, shuffle=False, seed=0, augment=augment))
    assert calls == [4, 4]
    np.testing.assert_array_equal(batches[0][0], -images[:4])


def test_iterate_batches_errors_are_eager():
    images, labels = _toy(6)
    with pytest.raises(DataError, match="batch_size 7 exceeds the 6"):
        iterate_batches(images, labels, 7, shuffle=True, seed=0)
    assert (
        len(list(iterate_batches(images, labels, 7, shuffle=True, seed=0, drop_remainder=False)))
        == 1
    )
    with pytest.raises(DataError, match="labels"):
        iterate_batches(images, labels[:5], 2, shuffle=True, seed=0)


# ---------------------------------------------------------------- prefetch


def test_prefetch_to_device_yields_inputs_in_order():
    rng = np.random.default_rng(0)
    batches = [
        (rng.standard_normal((4, 3)).astype(np.float32), np.arange(4, dtype=np.int32) + i)
        for i in range(5)
    ]
    for size in (1, 2, 8):
        out = list(prefetch_to_device(iter(batches), size=size))
        assert len(out) == len(batches)
        for (x, y), (dx, dy) in zip(batches, out, strict=True):
            assert isinstance(dx, jax.Array) and isinstance(dy, jax.Array)
            np.testing.assert_array_equal(np.asarray(dx), x)
            np.testing.assert_array_equal(np.asarray(dy), y)


def test_prefetch_to_device_respects_sharding():
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    batches = [(np.ones((2, 2), np.float32),)]
    ((x,),) = list(prefetch_to_device(batches, sharding=sharding))
    assert x.sharding == sharding
    assert list(prefetch_to_device([])) == []
    with pytest.raises(DataError, match="size"):
        prefetch_to_device(batches, size=0)
