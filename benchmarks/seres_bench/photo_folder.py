"""The image folder the data benchmarks read: ImageNet-like JPEGs (~500x375, quality 90) cut
from scikit-learn's two sample photographs (``china.jpg``, ``flower.jpg``, 640x427), written
once by the parent into a temporary directory as ``root/train/<class>/*.jpg`` and
``root/val/<class>/*.jpg``. Deterministic; PIL and numpy only, no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("china.jpg", "flower.jpg")
# ImageNet's typical landscape file; every fourth image is portrait, as some of ImageNet's are.
LANDSCAPE = (500, 375)


def _photos() -> list[Image.Image]:
    # Read from scikit-learn's data folder, as load_sample_images() does, without importing
    # scikit-learn into the parent.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("the benchmark's photographs come with scikit-learn; install it")
    folder = Path(spec.origin).parent / "datasets" / "images"
    images = []
    for name in PHOTOS:
        with Image.open(folder / name) as img:
            images.append(img.convert("RGB"))
    return images


def make_photo_folder(root: Path, train: int, val: int, classes: int = 4, seed: int = 0) -> Path:
    """Writes ``train`` and ``val`` JPEGs spread over ``classes`` class directories per split:
    random crops (half to all of a photo's width and height) resized to 500x375 or 375x500;
    returns ``root``."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            label = index % classes
            photo = photos[label % len(photos)]
            width, height = photo.size
            crop_w = int(rng.integers(width // 2, width + 1))
            crop_h = int(rng.integers(height // 2, height + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            size = LANDSCAPE if index % 4 else LANDSCAPE[::-1]
            crop = photo.crop((left, top, left + crop_w, top + crop_h))
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            crop.resize(size, Image.Resampling.BICUBIC).save(
                folder / f"{split}_{index:04d}.jpg", "JPEG", quality=90
            )
    return root
