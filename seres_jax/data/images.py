"""Image preprocessing with timm's semantics, on PIL images as timm and torchvision do it.

Owns decoding encoded files to RGB (``Image.open(f).convert("RGB")``, torchvision's
``ImageFolder`` loader), timm's evaluation transform (resize the shorter side to
``floor(size / crop_pct)``, centre crop), timm's training transform up to ``ToTensor`` (the
``RandomResizedCrop`` rule with a fixed or random interpolation, horizontal and vertical flips,
a place for auto-augment, colour jitter, random greyscale), ``ToTensor`` + ``Normalize`` as one
array function, the data configuration a model's weights expect (``DataConfig``), and the
grain transforms that turn a source element ``{"image": bytes, "label": int, "name": str}`` into
``(uint8 HWC RGB array, int32 label)``.

The pixels equal timm's: the same PIL calls with the same sizes and rounding (checked against
recorded timm/torchvision outputs in ``parity_tests/test_images.py`` and
``parity_tests/test_train_transforms.py``). Random draws come from a numpy ``Generator``, not
torch's RNG, so a seeded run is reproducible here but does not draw the same crops as a torch
run. EXIF orientation is not applied (torchvision does not).
"""

from __future__ import annotations

import io
import math
import numbers
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias, TypeVar

import grain.python as grain
import numpy as np
from PIL import Image, ImageEnhance

from .arrays import DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "RANDOM_INTERPOLATIONS",
    "AutoAugment",
    "DataConfig",
    "EvalTransform",
    "TrainTransform",
    "decode_rgb",
    "eval_crop",
    "normalize",
    "random_resized_crop_box",
    "resized_crop",
    "train_crop",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet's per-channel (RGB) mean on [0, 1] (timm's ``IMAGENET_DEFAULT_MEAN``): the
``DataConfig`` default, which most pretrained weights were trained with."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet's per-channel (RGB) standard deviation on [0, 1] (timm's
``IMAGENET_DEFAULT_STD``); see ``IMAGENET_MEAN``."""
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
"""timm's interpolation names, each with the PIL filter torchvision resizes with under it."""
RANDOM_INTERPOLATIONS = ("bilinear", "bicubic")
"""What timm's training interpolation ``"random"`` (its default ``--train-interpolation``)
draws from, with equal odds per image (timm's ``_RANDOM_INTERPOLATION``)."""
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
# What PIL raises on damaged or hostile input: its plugins use OSError (truncated data,
# unidentified format), SyntaxError (broken PNG chunks, GIF/TIFF headers), struct.error and
# IndexError (short headers), ValueError and EOFError.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
)

_Array = TypeVar("_Array")
AutoAugment: TypeAlias = Callable[[Image.Image, np.random.Generator], Image.Image]
"""An auto-augment policy (timm's RandAugment and kin) for ``train_crop``: the PIL image after
the flips and the image's generator in, the augmented image out; its draws come from the
generator, after the flips' and before the colour jitter's."""


def _resample(interpolation: str) -> Image.Resampling:
    if interpolation not in INTERPOLATIONS:
        raise DataError(
            f"unknown interpolation {interpolation!r}; known: {', '.join(INTERPOLATIONS)}"
        )
    return INTERPOLATIONS[interpolation]


def _check_size(size: int, what: str = "image size") -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"{what} must be a positive integer, got {size!r}")


def _check_crop_pct(crop_pct: float, what: str = "crop_pct") -> None:
    # Above 1 is allowed, as in timm: the resized image is then smaller than the crop and
    # the centre crop pads it with black.
    if not (isinstance(crop_pct, (int, float)) and math.isfinite(crop_pct) and crop_pct > 0):
        raise DataError(f"{what} must be a positive number, got {crop_pct!r}")


def _check_range(values: Sequence[float], what: str) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if not (0 < low <= high and math.isfinite(high)):
        raise DataError(f"{what} must be (low, high) with 0 < low <= high, got {tuple(values)}")
    return low, high


def _check_probability(value: Any, what: str) -> None:
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (number and 0.0 <= value <= 1.0):
        raise DataError(f"{what} must be a probability in [0, 1], got {value!r}")


def _train_resamples(interpolation: str) -> tuple[Image.Resampling, ...]:
    """The PIL filters a training crop picks from: one, or timm's two for ``"random"``."""
    if interpolation == "random":
        return tuple(INTERPOLATIONS[name] for name in RANDOM_INTERPOLATIONS)
    if interpolation not in INTERPOLATIONS:
        raise DataError(
            f"unknown interpolation {interpolation!r}; known: {', '.join(INTERPOLATIONS)}, random"
        )
    return (INTERPOLATIONS[interpolation],)


def _check_train_args(
    size: int,
    interpolation: str,
    scale: Sequence[float],
    ratio: Sequence[float],
    hflip: float,
    color_jitter: float,
    vflip: float,
    color_jitter_prob: float | None,
    grayscale_prob: float,
    auto_augment: AutoAugment | None,
    color_jitter_with_aa: bool,
) -> tuple[Image.Resampling, ...]:
    """Validates ``train_crop``'s arguments; returns the PIL filters to pick from."""
    _check_size(size)
    _check_range(scale, "scale")
    _check_range(ratio, "ratio")
    _check_probability(hflip, "hflip")
    _check_probability(vflip, "vflip")
    if not (isinstance(color_jitter, numbers.Real) and color_jitter >= 0):
        raise DataError(f"color_jitter must be >= 0, got {color_jitter!r}")
    if color_jitter_prob is not None:
        _check_probability(color_jitter_prob, "color_jitter_prob")
    _check_probability(grayscale_prob, "grayscale_prob")
    if not isinstance(color_jitter_with_aa, bool):
        raise DataError(f"color_jitter_with_aa must be True or False, got {color_jitter_with_aa!r}")
    if auto_augment is not None and not callable(auto_augment):
        raise DataError(
            f"auto_augment must be a callable (image, rng) -> image, got {auto_augment!r}"
        )
    return _train_resamples(interpolation)


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


@dataclass(frozen=True)
class DataConfig:
    """The preprocessing a model's weights were trained and evaluated with (timm's
    ``pretrained_cfg`` subset that matters for a centre-crop evaluation).

    ``input_size`` and ``crop_pct`` are the training resolution and the evaluation crop at
    it; ``test_input_size``/``test_crop_pct`` (if the weights have them) a larger resolution
    they evaluate better at. ``for_eval`` resolves which one an evaluation uses.
    """

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    test_input_size: int | None = None
    test_crop_pct: float | None = None

    def __post_init__(self) -> None:
        _check_size(self.input_size, "input_size")
        _check_crop_pct(self.crop_pct)
        _resample(self.interpolation)
        if self.test_input_size is not None:
            _check_size(self.test_input_size, "test_input_size")
        if self.test_crop_pct is not None:
            _check_crop_pct(self.test_crop_pct, "test_crop_pct")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise DataError(f"mean and std need 3 values (RGB), got {self.mean}, {self.std}")
        if not all(s > 0 for s in self.std):
            raise DataError(f"std values must be positive, got {self.std}")
        # Tuples whatever the caller passed (a JSON list), so that configs compare and hash.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def for_eval(
        self,
        image_size: int | None = None,
        crop_pct: float | None = None,
        interpolation: str | None = None,
        use_test_size: bool = False,
    ) -> DataConfig:
        """The configuration an evaluation uses, as timm's ``resolve_data_config`` resolves it:
        an explicit argument wins; otherwise ``use_test_size=True`` picks
        ``test_input_size``/``test_crop_pct`` where the weights have them, and the default
        (timm's too: ``resolve_data_config({}, model=m)``) picks ``input_size``/``crop_pct``.
        The size and the crop resolve independently, as in timm. The result has no test
        fields left."""
        test_size = self.test_input_size if use_test_size else None
        test_crop = self.test_crop_pct if use_test_size else None
        return replace(
            self,
            input_size=_first(image_size, test_size, self.input_size),
            crop_pct=_first(crop_pct, test_crop, self.crop_pct),
            interpolation=_first(interpolation, self.interpolation),
            test_input_size=None,
            test_crop_pct=None,
        )


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """Decodes an encoded image file completely and converts it to RGB exactly as
    ``Image.open(f).convert("RGB")`` does (alpha dropped, palettes expanded, CMYK and 16-bit
    greyscale converted by PIL's rules; the first frame of an animation).

    Damaged, truncated, empty or non-image bytes, and images over PIL's decompression-bomb
    limit (``Image.MAX_IMAGE_PIXELS``, twice it refused outright), raise ``DataError`` naming
    ``name``."""
    if not data:
        raise DataError(f"{name}: empty file, not an image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as e:
        raise DataError(f"{name}: refused as a decompression bomb ({e})") from e
    except _DECODE_ERRORS as e:
        raise DataError(f"{name}: not a readable image ({type(e).__name__}: {e})") from e


def _resize_shorter(img: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """torchvision's ``Resize(size)`` on a PIL image: the shorter side becomes ``size``, the
    longer ``int(size * long / short)`` (truncated); an image already that size is kept."""
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new = (size, new_long) if width <= height else (new_long, size)
    return img if new == img.size else img.resize(new, resample)


def _centre_offset(extent: int, crop: int) -> int:
    """torchvision's ``center_crop`` start along one axis: ``round`` (half to even) of the
    margin's half; an axis shorter than the crop is padded by ``(crop - extent) // 2`` first,
    which PIL's ``crop`` reproduces by filling outside the image with black."""
    if crop > extent:
        return -((crop - extent) // 2)
    return round((extent - crop) / 2.0)


def eval_crop(img: Image.Image, size: int, crop_pct: float, interpolation: str) -> np.ndarray:
    """timm's ``transforms_imagenet_eval`` (crop mode ``"center"``) up to ``ToTensor``: resize
    the shorter side to ``floor(size / crop_pct)``, centre-crop ``size`` x ``size``; returns
    uint8 ``(size, size, 3)``."""
    _check_size(size)
    _check_crop_pct(crop_pct)
    resized = _resize_shorter(img, math.floor(size / crop_pct), _resample(interpolation))
    left = _centre_offset(resized.width, size)
    top = _centre_offset(resized.height, size)
    return np.array(resized.crop((left, top, left + size, top + size)))


def random_resized_crop_box(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: Sequence[float] = DEFAULT_SCALE,
    ratio: Sequence[float] = DEFAULT_RATIO,
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: the crop box ``(top, left, height,
    width)``, drawn from ``rng`` (a numpy generator; torch's RNG would draw other numbers).

    Up to 10 attempts, each drawing ``uniform(scale)`` (area fraction) then
    ``uniform(log(ratio))`` (log aspect ratio, w/h); a box that fits draws ``top`` then
    ``left`` (uniform integers) and is returned. If none fits, the central crop of the
    largest box with an aspect ratio in ``ratio``, drawing nothing more."""
    scale_low, scale_high = _check_range(scale, "scale")
    ratio_low, ratio_high = _check_range(ratio, "ratio")
    area = width * height
    log_low, log_high = math.log(ratio_low), math.log(ratio_high)
    for _ in range(10):
        target_area = area * rng.uniform(scale_low, scale_high)
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio_low:
        w, h = width, round(width / ratio_low)
    elif in_ratio > ratio_high:
        w, h = round(height * ratio_high), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _resized_crop_image(
    img: Image.Image, box: tuple[int, int, int, int], size: int, resample: Image.Resampling
) -> Image.Image:
    top, left, h, w = box
    crop = img.crop((left, top, left + w, top + h))
    return crop if crop.size == (size, size) else crop.resize((size, size), resample)


def resized_crop(
    img: Image.Image, box: tuple[int, int, int, int], size: int, interpolation: str
) -> np.ndarray:
    """torchvision's ``F.resized_crop`` on a PIL image: crop ``box`` = ``(top, left, height,
    width)`` (outside the image is black), resize to ``size`` x ``size``; uint8 HWC."""
    _check_size(size)
    return np.array(_resized_crop_image(img, box, size, _resample(interpolation)))


# torchvision's ColorJitter on PIL: brightness, contrast, saturation through ImageEnhance.
_JITTERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


def train_crop(
    img: Image.Image,
    size: int,
    rng: np.random.Generator,
    interpolation: str = "bicubic",
    scale: Sequence[float] = DEFAULT_SCALE,
    ratio: Sequence[float] = DEFAULT_RATIO,
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    *,
    vflip: float = 0.0,
    color_jitter_prob: float | None = None,
    grayscale_prob: float = 0.0,
    auto_augment: AutoAugment | None = None,
    color_jitter_with_aa: bool = False,
) -> np.ndarray:
    """timm's training transform (``transforms_imagenet_train``, crop mode ``"rrc"``) up to
    ``ToTensor``; uint8 ``(size, size, 3)``. In timm's order:

    1. ``RandomResizedCropAndInterpolation(size, scale, ratio, interpolation)``:
       ``interpolation="random"`` resizes each crop with bilinear or bicubic, drawn with equal
       odds (``RANDOM_INTERPOLATIONS``), as timm's default ``--train-interpolation``;
    2. ``RandomHorizontalFlip(hflip)``, then ``RandomVerticalFlip(vflip)`` if ``vflip > 0``;
    3. ``auto_augment(image, rng)`` if given (timm's ``--aa``: the policy, built by the caller);
    4. with ``color_jitter > 0``: torchvision's ``ColorJitter(c, c, c)`` (brightness, contrast,
       saturation factors uniform in ``[max(0, 1 - c), 1 + c]``, applied in a random order),
       inside ``RandomApply(p=color_jitter_prob)`` when that is given. With ``auto_augment``
       timm leaves the jitter out unless told otherwise (``--force-color-jitter``, or a
       ``'3a'`` policy): ``color_jitter_with_aa=True`` keeps it;
    5. ``RandomGrayscale(grayscale_prob)`` if ``grayscale_prob > 0``: torchvision's
       ``rgb_to_grayscale`` on PIL, ``convert("L")`` as three equal channels.

    Draws from ``rng``, in this order: the crop box (``random_resized_crop_box``); with
    ``"random"`` one integer in ``[0, 2)`` for the interpolation; one uniform for the
    horizontal flip (always drawn, even for ``hflip=0``); with ``vflip > 0`` one uniform for
    the vertical flip; the auto-augment's own draws; with jitter, the ``RandomApply`` uniform
    if ``color_jitter_prob`` is given (applied unless ``color_jitter_prob <`` it, as
    torchvision compares), then if applied a permutation of the three adjustments and their
    three factors (brightness, contrast, saturation); with ``grayscale_prob > 0`` one uniform.
    A step whose option is off draws nothing, so the defaults draw as ``train_crop`` always
    has: box, flip, jitter."""
    resamples = _check_train_args(
        size,
        interpolation,
        scale,
        ratio,
        hflip,
        color_jitter,
        vflip,
        color_jitter_prob,
        grayscale_prob,
        auto_augment,
        color_jitter_with_aa,
    )
    box = random_resized_crop_box(rng, img.width, img.height, scale, ratio)
    resample = resamples[int(rng.integers(len(resamples)))] if len(resamples) > 1 else resamples[0]
    out = _resized_crop_image(img, box, size, resample)
    if rng.random() < hflip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if vflip > 0 and rng.random() < vflip:
        out = out.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if auto_augment is not None:
        out = auto_augment(out, rng)
    jitter = color_jitter > 0 and (auto_augment is None or color_jitter_with_aa)
    if jitter and color_jitter_prob is not None:
        # torchvision's RandomApply skips when p < u: u == p applies (p = 1 always does).
        jitter = not color_jitter_prob < rng.random()
    if jitter:
        order = rng.permutation(len(_JITTERS))
        factors = rng.uniform(max(0.0, 1.0 - color_jitter), 1.0 + color_jitter, len(_JITTERS))
        for index in order:
            out = _JITTERS[index](out).enhance(float(factors[index]))
    if grayscale_prob > 0 and rng.random() < grayscale_prob:
        out = out.convert("L").convert("RGB")
    return np.array(out)


def normalize(images: _Array, mean: Sequence[float], std: Sequence[float]) -> _Array:
    """``ToTensor`` + ``Normalize`` on uint8 HWC (or NHWC) RGB: ``(x / 255 - mean) / std`` per
    channel in float32, the same float32 operations in the same order as torchvision.

    Works on numpy and on jax arrays (also under ``jit``): it uses only ``astype`` and
    arithmetic with numpy float32 constants, which a jax array takes over."""
    pixels: Any = images
    mean32 = np.asarray(mean, np.float32)
    std32 = np.asarray(std, np.float32)
    result: _Array = (pixels.astype(np.float32) / np.float32(255) - mean32) / std32
    return result


class EvalTransform(grain.MapTransform):
    """grain transform: source element -> ``(eval_crop uint8 (size, size, 3), int32 label)``."""

    def __init__(self, size: int, crop_pct: float, interpolation: str) -> None:
        _check_size(size)
        _check_crop_pct(crop_pct)
        _resample(interpolation)
        self.size, self.crop_pct, self.interpolation = size, crop_pct, interpolation

    def map(self, element: dict[str, Any]) -> tuple[np.ndarray, np.int32]:
        """One source element, decoded (``decode_rgb``: a ``DataError`` naming a bad file) and
        ``eval_crop``'ed."""
        img = decode_rgb(element["image"], element["name"])
        pixels = eval_crop(img, self.size, self.crop_pct, self.interpolation)
        return pixels, np.int32(element["label"])


class TrainTransform(grain.RandomMapTransform):
    """grain transform: source element and grain's per-element generator ->
    ``(train_crop uint8 (size, size, 3), int32 label)``, with ``train_crop``'s options. Workers
    receive it pickled: an ``auto_augment`` must pickle (a module-level function or an
    object, not a lambda)."""

    def __init__(
        self,
        size: int,
        interpolation: str = "bicubic",
        scale: Sequence[float] = DEFAULT_SCALE,
        ratio: Sequence[float] = DEFAULT_RATIO,
        hflip: float = 0.5,
        color_jitter: float = 0.0,
        *,
        vflip: float = 0.0,
        color_jitter_prob: float | None = None,
        grayscale_prob: float = 0.0,
        auto_augment: AutoAugment | None = None,
        color_jitter_with_aa: bool = False,
    ) -> None:
        self.size = size
        # train_crop's keyword arguments, validated once here (and again per image there).
        self.options: dict[str, Any] = dict(
            interpolation=interpolation, scale=tuple(scale), ratio=tuple(ratio), hflip=hflip,
            color_jitter=color_jitter, vflip=vflip, color_jitter_prob=color_jitter_prob,
            grayscale_prob=grayscale_prob, auto_augment=auto_augment,
            color_jitter_with_aa=color_jitter_with_aa,
        )  # fmt: skip
        _check_train_args(size, **self.options)

    def random_map(
        self, element: dict[str, Any], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.int32]:
        """One source element, decoded (``decode_rgb``: a ``DataError`` naming a bad file) and
        ``train_crop``'ed with this transform's options, drawing from ``rng``."""
        img = decode_rgb(element["image"], element["name"])
        pixels = train_crop(img, self.size, rng, **self.options)
        return pixels, np.int32(element["label"])
