"""Real-photograph test images, built without downloads from scikit-learn's two sample photos
(``china.jpg`` and ``flower.jpg``, 640x427 RGB).

``photo_variants`` writes crops and rescales at odd sizes in the formats and PIL modes an image
folder meets in practice (JPEG/PNG/WebP; L, P, RGBA, LA, CMYK, I;16, a tiny one);
``make_image_folder`` writes a small ``train/`` + ``val/`` class-per-folder tree whose classes
differ visibly (own photo region and tint). Both are deterministic: the same call writes the
same bytes, so a fixture recorded from them (``fixtures/record_timm_transforms.py``) stays
valid. Pure PIL + numpy + scikit-learn, importable from the scratch timm venv too.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("china.jpg", "flower.jpg")
CLASS_NAMES = ("c0_pagoda", "c1_flower", "c2_sky", "c3_petals", "c4_roof", "c5_leaves")
# Per-class (region of the photo as fractions x0, y0, x1, y1; RGB tint): classes stay apart.
_CLASS_LOOKS = (
    ((0.30, 0.10, 0.75, 0.90), (1.00, 0.85, 0.70)),
    ((0.10, 0.05, 0.90, 0.95), (0.80, 1.00, 0.80)),
    ((0.00, 0.00, 1.00, 0.30), (0.75, 0.85, 1.00)),
    ((0.40, 0.30, 1.00, 1.00), (1.00, 0.75, 1.00)),
    ((0.00, 0.50, 0.50, 1.00), (1.00, 1.00, 0.70)),
    ((0.00, 0.00, 0.40, 0.60), (0.70, 1.00, 1.00)),
)
_FORMATS = ((".jpg", "JPEG"), (".png", "PNG"), (".webp", "WEBP"))


@functools.cache
def photo(name: str) -> Image.Image:
    """One of scikit-learn's sample photographs as an RGB PIL image (cached; do not mutate).

    Read from the package's data folder as ``sklearn.datasets.load_sample_image`` does, without
    importing scikit-learn (most of a second)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("the test photographs come with scikit-learn; install it")
    with Image.open(Path(spec.origin).parent / "datasets" / "images" / name) as img:
        # Pixels only: the JPEG's metadata (ICC profile, dpi) would be copied into every file.
        return Image.fromarray(np.asarray(img.convert("RGB")))


def _save(img: Image.Image, path: Path) -> Path:
    fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix]
    options = {"JPEG": {"quality": 90}, "WEBP": {"quality": 90}, "PNG": {}}[fmt]
    img.save(path, fmt, **options)
    return path


def _crop_resize(name: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    return photo(name).crop(box).resize(size, Image.Resampling.BICUBIC)


def photo_variants(directory: Path) -> list[Path]:
    """Writes 14 real-photo files of odd sizes, formats and PIL modes into ``directory``;
    returns their paths in a fixed order."""
    directory.mkdir(parents=True, exist_ok=True)
    china, flower = photo("china.jpg"), photo("flower.jpg")
    # A vertical alpha ramp over the picture: RGBA/LA files whose alpha differs per row.
    ramp = np.linspace(40, 255, 150, dtype=np.float32)[:, None].repeat(203, 1).astype(np.uint8)
    alpha = Image.fromarray(ramp)
    rgba = flower.resize((203, 150), Image.Resampling.BILINEAR).convert("RGBA")
    rgba.putalpha(alpha)
    la = china.resize((203, 150), Image.Resampling.BILINEAR).convert("LA")
    la.putalpha(alpha)
    grey16 = np.asarray(china.convert("L").crop((100, 50, 400, 350)).resize((170, 170)), np.uint16)
    grey16 = grey16 * 257 + np.arange(170, dtype=np.uint16)  # low byte varies too
    variants: list[tuple[str, Image.Image]] = [
        ("china_full.jpg", china),
        ("china_97x131.jpg", _crop_resize("china.jpg", (200, 60, 420, 360), (97, 131))),
        ("flower_333x250.png", _crop_resize("flower.jpg", (20, 10, 620, 420), (333, 250))),
        ("china_64x480.webp", _crop_resize("china.jpg", (250, 0, 330, 427), (64, 480))),
        ("flower_500x375.jpg", _crop_resize("flower.jpg", (0, 0, 640, 427), (500, 375))),
        ("flower_480x64.png", _crop_resize("flower.jpg", (0, 180, 640, 260), (480, 64))),
        (
            "china_grey_L.jpg",
            _crop_resize("china.jpg", (50, 40, 450, 340), (260, 195)).convert("L"),
        ),
        ("flower_palette_P.png", flower.resize((211, 300)).convert("P", palette=1, colors=64)),
        ("flower_alpha_RGBA.png", rgba),
        ("china_alpha_LA.png", la),
        (
            "flower_cmyk_CMYK.jpg",
            _crop_resize("flower.jpg", (100, 0, 540, 427), (290, 281)).convert("CMYK"),
        ),
        ("china_16bit_I16.png", Image.fromarray(grey16).convert("I;16")),
        ("flower_bilevel_1.png", flower.resize((150, 113)).convert("1")),
        ("china_tiny_20x30.png", _crop_resize("china.jpg", (300, 100, 400, 250), (20, 30))),
    ]
    return [_save(img, directory / name) for name, img in variants]


def _tinted(img: Image.Image, tint: tuple[float, float, float]) -> Image.Image:
    pixels = np.asarray(img, np.float32) * np.asarray(tint, np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _class_image(rng: np.random.Generator, label: int, size_range: tuple[int, int]) -> Image.Image:
    """A random crop of class ``label``'s photo region, rescaled to a random size, tinted."""
    name = PHOTOS[label % 2]
    (fx0, fy0, fx1, fy1), tint = _CLASS_LOOKS[label % len(_CLASS_LOOKS)]
    full_w, full_h = photo(name).size
    x0, y0, x1, y1 = int(fx0 * full_w), int(fy0 * full_h), int(fx1 * full_w), int(fy1 * full_h)
    crop_w = int(rng.integers((x1 - x0) // 2, x1 - x0 + 1))
    crop_h = int(rng.integers((y1 - y0) // 2, y1 - y0 + 1))
    left = x0 + int(rng.integers(0, x1 - x0 - crop_w + 1))
    top = y0 + int(rng.integers(0, y1 - y0 - crop_h + 1))
    low, high = size_range
    size = (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1)))
    crop = photo(name).crop((left, top, left + crop_w, top + crop_h))
    return _tinted(crop.resize(size, Image.Resampling.BILINEAR), tint)


def make_image_folder(
    root: Path,
    classes: int = 3,
    per_class: int = 4,
    val_per_class: int = 2,
    size_range: tuple[int, int] = (40, 90),
    seed: int = 0,
) -> Path:
    """Writes ``root/train/<class>/*`` and ``root/val/<class>/*`` (class ``k`` is
    ``CLASS_NAMES[k]``; sorted order is label order) of seeded random photo crops, mixing
    JPEG/PNG/WebP with one greyscale, one RGBA and one CMYK file; returns ``root``."""
    if not 1 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be in [1, {len(CLASS_NAMES)}]")
    rng = np.random.default_rng(seed)
    # (split, label, index) -> mode the file is written in, where not RGB.
    odd_modes = {("train", 0, 1): "L", ("train", 1 % classes, 2): "RGBA", ("val", 0, 0): "CMYK"}
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label in range(classes):
            folder = root / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                img = _class_image(rng, label, size_range)
                mode = odd_modes.get((split, label, index))
                suffix, _ = _FORMATS[(label + index) % len(_FORMATS)]
                if mode == "CMYK":
                    suffix = ".jpg"  # PNG and WebP do not store CMYK
                elif mode == "RGBA" and suffix == ".jpg":
                    suffix = ".png"
                if mode is not None:
                    img = img.convert(mode)
                _save(img, folder / f"{split}_{label}_{index:03d}{suffix}")
    return root
