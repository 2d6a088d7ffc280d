"""Tests for seres_jax.data: the in-memory loaders, the ``DATASETS`` table, and the grain
pipelines (training and eval batches, pad-crop-flip, batches onto the devices)."""

from __future__ import annotations

import itertools

import grain.python as grain
import jax
import numpy as np
import pytest

from seres_jax.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASETS,
    ArraySource,
    DataError,
    DataOptions,
    Dataset,
    PadCropFlip,
    eval_dataset,
    load_cifar10,
    load_dataset,
    load_digits,
    load_synthetic,
    splits_from_arrays,
    to_devices,
    train_dataset,
)
from seres_jax.train import make_mesh

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


# ---------------------------------------------------------------- the DATASETS table


def test_load_dataset_dispatch(tmp_path):
    _write_cifar(tmp_path)
    cifar = load_dataset("cifar10", tmp_path)
    assert isinstance(cifar.train, ArraySource)
    assert (len(cifar.train), len(cifar.val)) == (35, 5)
    np.testing.assert_array_equal(cifar.train.images, load_cifar10(tmp_path).train_images)
    synthetic, expected = load_dataset("synthetic", seed=3), load_synthetic(seed=3)
    np.testing.assert_array_equal(synthetic.train.images, expected.train_images)
    np.testing.assert_array_equal(synthetic.val.labels, expected.test_labels)
    np.testing.assert_array_equal(
        load_dataset("digits", seed=1).val.labels, load_digits(seed=1).test_labels
    )


def test_each_in_memory_dataset_spec_describes_what_its_loader_gives(tmp_path):
    """The defaults a run derives from a dataset's name (the model's input channels and
    classes, augmentation) match the data its loader gives."""
    _write_cifar(tmp_path)
    for name in ("digits", "cifar10", "synthetic"):
        spec = DATASETS[name]
        splits = load_dataset(name, tmp_path)
        assert splits.name == name
        assert (splits.image_shape[-1], splits.num_classes) == (spec.channels, spec.num_classes)
        assert splits.train.images.shape[1:] == splits.val.images.shape[1:] == splits.image_shape
        assert isinstance(splits.train_transform, PadCropFlip) == spec.augment
        # float32 and normalised already: nothing left to do on the way to the devices
        assert splits.eval_transform is None and splits.mean is None and splits.std is None
        plain = load_dataset(name, tmp_path, options=DataOptions(augment=False))
        assert plain.train_transform is None
    augmenting = [name for name, spec in DATASETS.items() if spec.augment]
    assert augmenting == ["cifar10", "imagefolder", "arrayrecord"]


@pytest.mark.parametrize("name", ["imagefolder", "arrayrecord"])
def test_image_datasets_take_their_classes_from_the_data_and_need_a_directory(name):
    spec = DATASETS[name]
    assert (spec.channels, spec.num_classes, spec.augment) == (3, None, True)
    with pytest.raises(DataError, match=rf"^{name}: --data-dir is required"):
        load_dataset(name)


def test_load_dataset_errors():
    with pytest.raises(
        DataError,
        match=r"unknown dataset 'imagenet'; valid names: digits, cifar10, synthetic, "
        r"imagefolder, arrayrecord$",
    ):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="cifar10: --data-dir is required"):
        load_dataset("cifar10")


def test_synthetic_dtypes_and_labels():
    ds = load_synthetic(num_train=64, num_test=16, num_classes=4)
    assert ds.train_images.dtype == np.float32
    assert ds.train_labels.dtype == np.int32
    assert set(np.unique(ds.train_labels)) <= {0, 1, 2, 3}
    assert ds.mean == (0.0, 0.0, 0.0) and ds.std == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------- pad-crop-flip


def _candidates(image, pad):
    """Every crop and crop+flip of the zero-padded image (brute force)."""
    height, width, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    for dy, dx in itertools.product(range(2 * pad + 1), repeat=2):
        crop = padded[dy : dy + height, dx : dx + width]
        yield crop
        yield crop[:, ::-1]


def _pad_crop_flip(images, seed, pad=4):
    """``PadCropFlip`` over each image as grain applies it: a generator per record, from the
    seed and the record's index."""
    labels = np.arange(len(images), dtype=np.int32)
    ds = grain.MapDataset.source(ArraySource(images, labels)).seed(seed)
    ds = ds.random_map(PadCropFlip(pad))
    return np.stack([ds[i][0] for i in range(len(images))])


def test_pad_crop_flip_outputs_are_crops_of_the_padded_input():
    images = np.random.default_rng(0).standard_normal((16, 6, 5, 3)).astype(np.float32)
    out = _pad_crop_flip(images, 42, pad=2)
    assert out.shape == images.shape
    assert out.dtype == images.dtype
    for original, augmented in zip(images, out, strict=True):
        assert any(np.array_equal(augmented, c) for c in _candidates(original, 2))
    # Augmentation must actually move things: not all outputs are the identity.
    assert not np.array_equal(out, images)


def test_pad_crop_flip_draws_row_column_then_flip_and_keeps_the_label():
    image = np.random.default_rng(0).standard_normal((5, 4, 2)).astype(np.float32)
    out, label = PadCropFlip(pad=3).random_map((image, np.int32(7)), np.random.default_rng(5))
    rng = np.random.default_rng(5)
    top, left = rng.integers(0, 7, size=2)
    crop = np.pad(image, ((3, 3), (3, 3), (0, 0)))[top : top + 5, left : left + 4]
    np.testing.assert_array_equal(out, crop[:, ::-1] if rng.random() < 0.5 else crop)
    assert label == 7


def test_pad_crop_flip_is_seeded():
    images = np.random.default_rng(0).standard_normal((8, 8, 8, 3)).astype(np.float32)
    a, b, c = (_pad_crop_flip(images, seed) for seed in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pad_crop_flip_without_pad_only_flips():
    images = np.random.default_rng(0).standard_normal((64, 4, 4, 2)).astype(np.float32)
    out = _pad_crop_flip(images, 1, pad=0)
    same = np.all(out == images, axis=(1, 2, 3))
    flipped = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ flipped)
    assert 10 < flipped.sum() < 54  # p = 0.5 over 64 images


def test_pad_crop_flip_rejects_a_negative_pad():
    with pytest.raises(DataError, match="pad must be >= 0, got -1"):
        PadCropFlip(-1)


# ---------------------------------------------------------------- training batches


def _toy(num=23, num_val=7):
    """Image i is filled with i and labelled i: a batch shows which records it holds."""
    images = np.arange(num, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1))
    images, labels = images.astype(np.float32), np.arange(num, dtype=np.int32)
    return Dataset("toy", images, labels, images[:num_val], labels[:num_val], num, (0.0,), (1.0,))


def test_train_batches_see_every_example_once_per_epochs_worth_reshuffled():
    ds = train_dataset(splits_from_arrays(_toy()), 5, seed=0)
    # 23 records in batches of 5: the batches run on across each epoch's end.
    batches = [ds[i] for i in range(23)]  # 115 records: five epochs' worth
    for x, y in batches:
        assert x.shape == (5, 2, 2, 1) and x.dtype == np.float32 and y.dtype == np.int32
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)  # each image stays with its label
    epochs = np.concatenate([y for _, y in batches]).reshape(5, 23)
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(23))
    assert len({tuple(order) for order in epochs}) == 5  # a new order every epoch
    assert not np.array_equal(epochs[0], np.arange(23))


def _random_images(num=23):
    images = np.random.default_rng(0).standard_normal((num, 6, 6, 3)).astype(np.float32)
    labels = np.arange(num, dtype=np.int32)
    return Dataset("toy", images, labels, images[:4], labels[:4], num, (0.0,) * 3, (1.0,) * 3)


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "pad-crop-flip"])
def test_train_batches_depend_on_the_seed_and_the_step_alone(augment):
    """``ds[k]`` is step ``k``'s batch however it is reached (iterating, random access in any
    order, a fresh pipeline, a slice from ``k`` on: what a resumed run reads), augmentation
    draws included; another seed gives other batches."""
    data = _random_images()
    ds = train_dataset(splits_from_arrays(data, augment), 4, seed=3)
    iterated = list(itertools.islice(iter(ds), 12))
    fresh = train_dataset(splits_from_arrays(data, augment), 4, seed=3)
    for k in (11, 0, 7):
        for a, b, c in zip(iterated[k], ds[k], fresh[k], strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
    for a, b in zip(iterated[5], next(iter(ds[5:])), strict=True):
        np.testing.assert_array_equal(a, b)
    other = train_dataset(splits_from_arrays(data, augment), 4, seed=4)
    assert not np.array_equal(other[0][1], iterated[0][1])
    for x, y in iterated:
        for image, label in zip(x, y, strict=True):
            original = data.train_images[label]
            if augment:
                assert any(np.array_equal(image, c) for c in _candidates(original, 4))
            else:
                np.testing.assert_array_equal(image, original)
    if augment:  # the augmentation really ran
        assert not all(np.array_equal(x, data.train_images[y]) for x, y in iterated)


def test_train_batch_errors_are_eager():
    splits = splits_from_arrays(_toy(6, 2))
    with pytest.raises(DataError, match="batch size 7 exceeds the 6 training images of toy"):
        train_dataset(splits, 7, seed=0)
    assert len(train_dataset(splits, 6, seed=0)[0][1]) == 6
    with pytest.raises(DataError, match="6 images but labels have shape"):
        ArraySource(np.zeros((6, 2, 2, 1), np.float32), np.zeros(5, np.int32))


# ---------------------------------------------------------------- eval batches


def _eval(splits, batch_size, split="val"):
    """Every eval batch, and their arrays joined."""
    batches = list(eval_dataset(splits, batch_size, split))
    for x, y, w in batches:
        assert (len(x), len(y), len(w)) == (batch_size,) * 3
        assert (x.dtype, y.dtype, w.dtype) == (np.float32, np.int32, np.float32)
    return batches, [np.concatenate(arrays) for arrays in zip(*batches, strict=True)]


def test_eval_batches_read_the_split_once_in_order_padded_with_weight_zero():
    splits = splits_from_arrays(_toy(23, 7))
    batches, (images, labels, weights) = _eval(splits, 3)
    assert len(batches) == 3
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4, 5, 6, 0, 0])
    np.testing.assert_array_equal(weights, [1] * 7 + [0] * 2)
    np.testing.assert_array_equal(images[:, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6, 0, 0])
    batches, (images, labels, weights) = _eval(splits, 5, split="train")
    assert len(batches) == 5
    np.testing.assert_array_equal(labels[:23], np.arange(23))
    np.testing.assert_array_equal(weights, [1] * 23 + [0] * 2)
    np.testing.assert_array_equal(images[:23, 0, 0, 0], np.arange(23))
    batches, (_, labels, weights) = _eval(splits, 7)  # a whole number of batches: no padding
    assert len(batches) == 1 and weights.all()
    np.testing.assert_array_equal(labels, np.arange(7))


# ---------------------------------------------------------------- to the devices


def _sharding():
    mesh = make_mesh(jax.devices()[:1])  # the batches of these tests need not split evenly
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*mesh.axis_names))


def test_to_devices_yields_the_batches_in_order_laid_out_by_the_sharding():
    sharding = _sharding()
    source = eval_dataset(splits_from_arrays(_toy(23, 7)), 3)
    for prefetch in (1, 2, 8):
        out = list(to_devices(source, sharding, prefetch=prefetch))
        assert len(out) == len(source)
        for host, device in zip(source, out, strict=True):
            assert len(device) == 3
            for a, d in zip(host, device, strict=True):
                assert isinstance(d, jax.Array) and d.sharding == sharding
                np.testing.assert_array_equal(np.asarray(d), a)
    stream = train_dataset(splits_from_arrays(_toy()), 5, seed=0)
    iterator = iter(to_devices(stream, sharding))
    try:
        for k in range(6):  # endless: past the first epoch's end
            for a, d in zip(stream[k], next(iterator), strict=True):
                np.testing.assert_array_equal(np.asarray(d), a)
    finally:
        iterator.close()
    with pytest.raises(DataError, match="workers must be >= 0, got -1"):
        to_devices(source, sharding, workers=-1)


def test_to_devices_normalises_uint8_images_on_the_devices():
    rng = np.random.default_rng(0)
    batches = [
        (rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8), np.arange(4, dtype=np.int32) + i)
        for i in range(3)
    ]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    sharding, ds = _sharding(), grain.MapDataset.source(batches)
    out = list(to_devices(ds, sharding, mean=mean, std=std))
    assert len(out) == len(batches)
    for (x, y), (dx, dy) in zip(batches, out, strict=True):
        assert dx.dtype == np.float32 and dx.sharding == sharding
        expected = (x / 255.0 - np.asarray(mean)) / np.asarray(std)
        np.testing.assert_allclose(np.asarray(dx), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(dy), y)  # the images only
    raw = list(to_devices(ds, sharding))  # no mean and std: the bytes as they are
    assert raw[0][0].dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(raw[0][0]), batches[0][0])


# ---------------------------------------------------------------- several processes


@pytest.fixture
def as_process(monkeypatch):
    """``as_process(p)``: from then on this is process ``p`` of two (for the pipelines, which
    ask ``jax.process_index()`` and ``jax.process_count()`` when they are built)."""

    def become(index: int) -> None:
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda: index)

    return become


def test_the_process_shares_of_a_step_are_the_one_process_batch(as_process):
    """Each of two processes reads half of step i's batch; joined in process order (as
    ``to_devices`` assembles the global array) they are the batch one process reads, records,
    order and augmentation draws alike: the trajectory does not depend on the process count."""
    data = _random_images()
    one = train_dataset(splits_from_arrays(data, True), 8, seed=3)
    steps = [one[i] for i in range(8)]  # 64 records of 23: across two epochs' ends
    shares = []
    for index in (0, 1):
        as_process(index)
        ds = train_dataset(splits_from_arrays(data, True), 8, seed=3)
        shares.append([ds[i] for i in range(8)])
    for i, (x, y) in enumerate(steps):
        assert [len(share[i][1]) for share in shares] == [4, 4]
        np.testing.assert_array_equal(np.concatenate([share[i][1] for share in shares]), y)
        np.testing.assert_array_equal(np.concatenate([share[i][0] for share in shares]), x)


def test_the_processes_evaluate_the_split_once_in_as_many_batches(as_process):
    splits = splits_from_arrays(_toy(23, 7))
    for batch_size, per_process in ((4, 2), (8, 1)):
        seen, counts = [], []
        for index in (0, 1):
            as_process(index)
            batches = list(eval_dataset(splits, batch_size))
            counts.append(len(batches))
            for _, y, w in batches:
                assert len(y) == len(w) == batch_size // 2
                seen.extend(y[w == 1].tolist())
        assert counts == [per_process, per_process]  # the collectives stay in step
        assert sorted(seen) == list(range(7))


def test_a_batch_the_processes_cannot_share_is_refused(as_process):
    as_process(0)
    splits = splits_from_arrays(_toy())
    for build in (lambda: train_dataset(splits, 5, seed=0), lambda: eval_dataset(splits, 5)):
        with pytest.raises(DataError, match="batch size 5 is not divisible by the 2 processes"):
            build()
