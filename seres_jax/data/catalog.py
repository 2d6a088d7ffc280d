"""Datasets by name: ``DATASETS`` maps each to its loader and the defaults a run derives from it.

A loader returns ``Splits`` (``seres_jax.data.pipeline``) and owns its dataset's policy: input
channels and classes, image size, train and eval transforms, normalisation. The command line
holds none of it.

* ``digits``, ``cifar10``, ``synthetic``: in host memory (``seres_jax.data.arrays``); CIFAR-10
  trains with pad-crop-flip.
* ``imagefolder``: ``DATA_DIR/train/<class>/*`` and ``DATA_DIR/val/<class>/*`` (or
  ``valid/``, ``validation/``, ``eval/``, ``evaluation/``, as timm) image files;
  ``arrayrecord``: the shards ``seres data pack`` writes from such a folder. Both decode and
  preprocess with timm's transforms (``seres_jax.data.images``): the eval transform of the
  model's pretrained data config (``DataOptions.data_config``), the train transform
  ``RandomResizedCrop`` + flips (+ auto-augment, colour jitter, greyscale), timm's
  ``transforms_imagenet_train``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .arrays import (
    DataError,
    Dataset,
    load_cifar10,
    load_digits,
    load_synthetic,
)
from .auto_augment import create_auto_augment
from .folders import ImageFolderSource
from .images import DEFAULT_RATIO, DEFAULT_SCALE, DataConfig, EvalTransform, TrainTransform
from .pipeline import ArraySource, PadCropFlip, Splits
from .records import ArrayRecordSource

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DataOptions",
    "DatasetSpec",
    "dataset_spec",
    "load_dataset",
    "splits_from_arrays",
]

DataDir = str | os.PathLike[str] | None
# The validation split's directory names timm's image-folder reader accepts, in its order.
VAL_SPLIT_NAMES = ("val", "valid", "validation", "eval", "evaluation")


@dataclass(frozen=True)
class DataOptions:
    """What a run asks of a dataset beside its name: whether to augment, the preprocessing of
    image datasets (``data_config``: the model's pretrained config with the run's overrides),
    colour jitter, whether to skip unreadable image files (else they are an error), and the
    side of the ``synthetic`` dataset's square images (``synthetic_size``; ``None``: 32)."""

    augment: bool = True
    data_config: DataConfig = field(default_factory=DataConfig)
    # The validation split's preprocessing when it differs (another size or crop), e.g. the
    # weights' test size: timm's --val-image-size/--val-crop-pct. None: ``data_config``'s.
    val_config: DataConfig | None = None
    color_jitter: float = 0.0
    skip_bad_images: bool = False
    synthetic_size: int | None = None
    # timm's training transform beyond the crop (image datasets): RandAugment/AutoAugment,
    # the crop's scale, ratio and interpolation (None: data_config's), flips, the jitter's
    # and greyscale's probabilities.
    auto_augment: str | None = None
    scale: tuple[float, float] = DEFAULT_SCALE
    ratio: tuple[float, float] = DEFAULT_RATIO
    train_interpolation: str | None = None
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter_prob: float | None = None
    grayscale_prob: float = 0.0

    def train_transform(self) -> TrainTransform:
        """timm's ``transforms_imagenet_train`` for these options, up to ``ToTensor``: the
        auto-augment's hyper-parameters from the training size, mean and interpolation, and
        the colour jitter off under an auto-augment unless its string has ``3a``, as timm."""
        config = self.data_config
        interpolation = self.train_interpolation or config.interpolation
        policy = None
        if self.auto_augment:
            policy = create_auto_augment(
                self.auto_augment, config.input_size, config.mean, interpolation
            )
        return TrainTransform(
            config.input_size, interpolation, self.scale, self.ratio, self.hflip,
            self.color_jitter, vflip=self.vflip, color_jitter_prob=self.color_jitter_prob,
            grayscale_prob=self.grayscale_prob, auto_augment=policy,
            color_jitter_with_aa="3a" in (self.auto_augment or ""),
        )  # fmt: skip


def splits_from_arrays(dataset: Dataset, augment: bool = False) -> Splits:
    """An in-memory ``Dataset`` as ``Splits`` (pad-crop-flip on the training images if
    ``augment``)."""
    return Splits(
        name=dataset.name,
        train=ArraySource(dataset.train_images, dataset.train_labels),
        val=ArraySource(dataset.test_images, dataset.test_labels),
        num_classes=dataset.num_classes,
        image_shape=dataset.image_shape,
        train_transform=PadCropFlip() if augment else None,
    )


def _digits(data_dir: DataDir, seed: int, options: DataOptions) -> Splits:
    return splits_from_arrays(load_digits(seed=seed), options.augment)


def _synthetic(data_dir: DataDir, seed: int, options: DataOptions) -> Splits:
    size = options.synthetic_size or 32
    images = load_synthetic(image_shape=(size, size, 3), seed=seed)
    return splits_from_arrays(images, options.augment)


def _cifar10(data_dir: DataDir, seed: int, options: DataOptions) -> Splits:
    del seed  # a fixed split
    if data_dir is None:
        raise DataError("cifar10: --data-dir is required (a directory holding "
                        "cifar-10-batches-bin or its .bin files)")  # fmt: skip
    return splits_from_arrays(load_cifar10(data_dir), options.augment)


def _image_splits(
    name: str, train: ImageFolderSource | ArrayRecordSource,
    val: ImageFolderSource | ArrayRecordSource, options: DataOptions,
) -> Splits:  # fmt: skip
    config = options.data_config
    size = config.input_size
    eval_transform = EvalTransform(size, config.crop_pct, config.interpolation)
    train_transform = options.train_transform() if options.augment else eval_transform
    if options.val_config is not None:
        at = options.val_config
        eval_transform = EvalTransform(at.input_size, at.crop_pct, at.interpolation)
    return Splits(
        name=name, train=train, val=val, num_classes=len(train.classes),
        image_shape=(size, size, 3), train_transform=train_transform,
        eval_transform=eval_transform, mean=config.mean, std=config.std, classes=train.classes,
    )  # fmt: skip


def _require_dir(name: str, data_dir: DataDir) -> str | os.PathLike[str]:
    if data_dir is None:
        raise DataError(f"{name}: --data-dir is required")
    return data_dir


def _imagefolder(data_dir: DataDir, seed: int, options: DataOptions) -> Splits:
    root = _require_dir("imagefolder", data_dir)
    skip = options.skip_bad_images
    train = ImageFolderSource(root, "train", skip_bad_images=skip)
    # Each source reports the files it skipped (a warning of seres_jax.data.folders).
    # timm's folder reader finds the validation split under any of these names.
    split = next((n for n in VAL_SPLIT_NAMES if (Path(root) / n).is_dir()), "val")
    val = ImageFolderSource(root, split, classes=train.classes, skip_bad_images=skip)
    return _image_splits("imagefolder", train, val, options)


def _arrayrecord(data_dir: DataDir, seed: int, options: DataOptions) -> Splits:
    root = _require_dir("arrayrecord", data_dir)
    train, val = ArrayRecordSource(root, "train"), ArrayRecordSource(root, "val")
    if list(val.classes) != list(train.classes):
        raise DataError(f"arrayrecord: {root}'s train and val splits name different classes")
    return _image_splits("arrayrecord", train, val, options)


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: ``load(data_dir, seed, options) -> Splits``, the model's input
    ``channels``, ``num_classes`` (``None``: as many as the data has) and whether a run
    augments by default."""

    load: Callable[[DataDir, int, DataOptions], Splits]
    channels: int
    num_classes: int | None
    augment: bool


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(_digits, channels=1, num_classes=10, augment=False),
    "cifar10": DatasetSpec(_cifar10, channels=3, num_classes=10, augment=True),
    "synthetic": DatasetSpec(_synthetic, channels=3, num_classes=10, augment=False),
    "imagefolder": DatasetSpec(_imagefolder, channels=3, num_classes=None, augment=True),
    "arrayrecord": DatasetSpec(_arrayrecord, channels=3, num_classes=None, augment=True),
}
"""Every dataset a run can name (``TrainConfig.dataset``, ``seres train --dataset``), with
its loader and defaults; ``imagefolder`` and ``arrayrecord`` read ``data_dir``, and take
their classes from it."""
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
"""The names of ``DATASETS``, in its order (what errors and ``--help`` list)."""


def dataset_spec(name: str) -> DatasetSpec:
    """The ``DATASETS`` entry of ``name``; a ``DataError`` naming the known ones otherwise."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return DATASETS[name]


def load_dataset(
    name: str, data_dir: DataDir = None, seed: int = 0, options: DataOptions | None = None
) -> Splits:
    """The dataset ``name`` (one of ``DATASET_NAMES``) as ``Splits``. ``seed`` feeds the
    digits split and the synthetic generator; ``options`` default to the dataset's own
    (augmenting if it does by default)."""
    spec = dataset_spec(name)
    return spec.load(data_dir, seed, options or DataOptions(augment=spec.augment))
