"""The datasets that fit in host memory as one array: scikit-learn's bundled 8x8 digits, the
CIFAR-10 binary release and synthetic noise for benchmarks, normalised per channel. Plain
NumPy: ``seres_jax.data.pipeline`` reads them through grain like any other source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DataError",
    "Dataset",
    "load_cifar10",
    "load_digits",
    "load_synthetic",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""The per-channel (RGB) mean of CIFAR-10's training pixels on [0, 1], the usual constant:
``load_cifar10`` normalises with it and ``CIFAR10_STD``."""
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
"""The per-channel (RGB) standard deviation of CIFAR-10's training pixels on [0, 1] (over all
pixels, not the mean of per-image deviations); see ``CIFAR10_MEAN``."""

_CIFAR_SUBDIR = "cifar-10-batches-bin"
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_SIDE = 32
_CIFAR_CHANNELS = 3
_CIFAR_CLASSES = 10
_CIFAR_PIXELS = _CIFAR_CHANNELS * _CIFAR_SIDE * _CIFAR_SIDE
_CIFAR_RECORD = 1 + _CIFAR_PIXELS


class DataError(ValueError):
    """A dataset could not be loaded or a data-pipeline argument is invalid."""


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on ndarrays is ambiguous
class Dataset:
    """A normalised image-classification dataset split into train and test.

    Images are float32 NHWC, already normalised with ``(x - mean) / std`` per channel;
    labels are int32 class indices in ``[0, num_classes)``.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if images.ndim != 4 or labels.shape != images.shape[:1]:
                raise DataError(
                    f"{self.name}: {split} images {images.shape} and labels {labels.shape} "
                    "must be (N, H, W, C) and (N,)"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"{self.name}: train image shape {self.train_images.shape[1:]} differs from "
                f"test image shape {self.test_images.shape[1:]}"
            )
        channels = self.train_images.shape[-1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"{self.name}: mean/std have {len(self.mean)}/{len(self.std)} entries "
                f"but images have {channels} channels"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        height, width, channels = self.train_images.shape[1:]
        return height, width, channels


def _normalise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    # Explicit float32 constants keep NumPy from promoting the whole array to float64.
    mean_arr = np.asarray(mean, dtype=np.float32)
    std_arr = np.asarray(std, dtype=np.float32)
    return ((images - mean_arr) / std_arr).astype(np.float32, copy=False)


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

    The split is stratified and seeded: within each class the images are permuted with
    ``np.random.default_rng(seed)`` and the first ``round(test_fraction * class_count)``
    go to the test split. Both splits keep the original dataset order. Pixels (0..16)
    are scaled to [0, 1] and normalised with the train split's mean and std, so the
    test split never informs the normalisation. Images are (N, 8, 8, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:
        raise DataError(
            "digits: the digits dataset needs scikit-learn; install it with "
            "`pip install scikit-learn`"
        ) from err

    bunch = sklearn_load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int32)

    rng = np.random.default_rng(seed)
    test_mask = np.zeros(labels.shape[0], dtype=bool)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_mask[members[: round(test_fraction * members.size)]] = True
    if test_mask.all() or not test_mask.any():
        raise DataError(f"digits: test_fraction={test_fraction} leaves one split empty")

    train_raw = images[~test_mask]
    mean = tuple(float(m) for m in train_raw.mean(axis=(0, 1, 2), dtype=np.float64))
    std = tuple(float(s) for s in train_raw.std(axis=(0, 1, 2), dtype=np.float64))
    return Dataset(
        name="digits",
        train_images=_normalise(train_raw, mean, std),
        train_labels=labels[~test_mask],
        test_images=_normalise(images[test_mask], mean, std),
        test_labels=labels[test_mask],
        num_classes=10,
        mean=mean,
        std=std,
    )


def _resolve_cifar_dir(data_dir: str | os.PathLike[str]) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"cifar10: data directory not found: {root}")
    nested = root / _CIFAR_SUBDIR
    return nested if nested.is_dir() else root


def _read_cifar_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 binary batch into uint8 NHWC images and int32 labels."""
    if not path.is_file():
        raise DataError(
            f"cifar10: missing file {path} (expected the binary release "
            f"'{_CIFAR_SUBDIR}' with {', '.join(_CIFAR_TRAIN_FILES)} and {_CIFAR_TEST_FILE})"
        )
    size = path.stat().st_size
    if size == 0 or size % _CIFAR_RECORD:
        raise DataError(
            f"cifar10: {path} is {size} bytes, not a positive multiple of the "
            f"{_CIFAR_RECORD}-byte record (1 label + {_CIFAR_PIXELS} pixels); "
            "the file is truncated or not the binary CIFAR-10 release"
        )
    try:
        records = np.fromfile(path, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    except OSError as err:
        raise DataError(f"cifar10: cannot read {path}: {err}") from err

    labels = records[:, 0]
    bad = np.flatnonzero(labels >= _CIFAR_CLASSES)
    if bad.size:
        raise DataError(
            f"cifar10: {path} record {bad[0]} has label byte {labels[bad[0]]}, "
            f"expected 0..{_CIFAR_CLASSES - 1} ({bad.size} bad records in total)"
        )
    # Each record stores the R, G and B planes one after another (CHW).
    images = records[:, 1:].reshape(-1, _CIFAR_CHANNELS, _CIFAR_SIDE, _CIFAR_SIDE)
    return images.transpose(0, 2, 3, 1), labels.astype(np.int32)


def _cifar_to_float(images: np.ndarray) -> np.ndarray:
    return _normalise(images.astype(np.float32) / np.float32(255.0), CIFAR10_MEAN, CIFAR10_STD)


def load_cifar10(data_dir: str | os.PathLike[str]) -> Dataset:
    """CIFAR-10 from its binary release (``cifar-10-batches-bin``), no pickle involved.

    ``data_dir`` may hold the ``.bin`` files directly or contain the
    ``cifar-10-batches-bin`` directory. Images are (N, 32, 32, 3) float32, scaled to
    [0, 1] and normalised with the standard CIFAR-10 per-channel mean and std.
    """
    directory = _resolve_cifar_dir(data_dir)
    train = [_read_cifar_file(directory / name) for name in _CIFAR_TRAIN_FILES]
    test_images, test_labels = _read_cifar_file(directory / _CIFAR_TEST_FILE)
    return Dataset(
        name="cifar10",
        train_images=_cifar_to_float(np.concatenate([images for images, _ in train])),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=_cifar_to_float(test_images),
        test_labels=test_labels,
        num_classes=_CIFAR_CLASSES,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


def load_synthetic(
    num_train: int = 1024,
    num_test: int = 256,
    image_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    seed: int = 0,
) -> Dataset:
    """Standard-normal images with uniform random labels, for benchmarks and smoke tests.

    The images are already zero-mean/unit-variance, so mean and std are 0 and 1.
    """
    if num_train < 1 or num_test < 1 or num_classes < 1 or min(image_shape) < 1:
        raise DataError(
            f"synthetic: sizes must be positive, got num_train={num_train}, "
            f"num_test={num_test}, image_shape={image_shape}, num_classes={num_classes}"
        )
    rng = np.random.default_rng(seed)
    channels = image_shape[-1]
    return Dataset(
        name="synthetic",
        train_images=rng.standard_normal((num_train, *image_shape), dtype=np.float32),
        train_labels=rng.integers(0, num_classes, num_train, dtype=np.int32),
        test_images=rng.standard_normal((num_test, *image_shape), dtype=np.float32),
        test_labels=rng.integers(0, num_classes, num_test, dtype=np.int32),
        num_classes=num_classes,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )
