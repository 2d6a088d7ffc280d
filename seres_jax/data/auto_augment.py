"""timm's AutoAugment and RandAugment (timm 1.0.31, ``timm/data/auto_augment.py``) on PIL
images, for the host side of the training pipeline (grain worker processes).

Owns the ``--aa`` policy strings (``rand-m9-mstd0.5-inc1``, ``original``, ``v0r-mstd0.5``, ...):
checking them (``check_auto_augment``), resolving timm's hyper-parameters from the image size,
mean and interpolation as ``transforms_imagenet_train`` does (``create_auto_augment``), every op
of timm's ``NAME_TO_OP`` with its ``LEVEL_TO_ARG`` magnitude mapping, and the two policies.
The PIL calls and their arguments are timm's, so the pixels are timm's
(``parity_tests/test_auto_augment.py`` proves it op by op and policy by policy on real
photographs).

Randomness is kept apart from pixels: ``draw(rng)`` makes every random choice timm makes, in
timm's order, from grain's per-element numpy ``Generator`` (not Python's ``random``) into an
explicit ``AugmentPlan``; ``apply(img, plan)`` only moves pixels. A test can thus replay timm's
own draws.

Where this differs from timm 1.0.31: policy strings that timm ignores silently or fails on
later (a section without a number, ``rand-m40`` past ``mmax``, an unknown ``t`` set, the ``w``
section timm removed) are refused up front with ``DataError``; and posterize with fewer than
one bit (``Posterize`` below magnitude 2.5, ``PosterizeIncreasing`` at 10 or past it) gives a
black image, what timm computes on Pillow <= 12, where on Pillow >= 13 timm raises
``ValueError`` (Pillow now refuses ``bits < 1``). AugMix is not ported.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from .arrays import DataError

__all__ = [
    "AUTO_AUGMENT_POLICIES",
    "LEVEL_DENOM",
    "OP_NAMES",
    "AugmentOp",
    "AugmentParams",
    "AugmentPlan",
    "AutoAugment",
    "AutoAugmentTransform",
    "PlannedOp",
    "RandAugment",
    "apply_op",
    "check_auto_augment",
    "create_auto_augment",
    "op_argument",
]

# timm's _LEVEL_DENOM: magnitude m maps to the fraction m / 10 of each op's range.
LEVEL_DENOM = 10.0
_FILL = (128, 128, 128)
# timm's _RANDOM_INTERPOLATION: an op picks one per call when no interpolation is set.
_RANDOM_RESAMPLE = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)
# The filters PIL's affine transform and rotate accept (others raise ValueError there).
_AFFINE_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
_OTHER_INTERPOLATIONS = ("box", "hamming", "lanczos")

# Ops whose argument timm's _randomly_negate flips with probability 1/2.
_SIGNED_OPS = frozenset(
    {
        "Rotate",
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
        "TranslateXRel",
        "TranslateYRel",
        "ColorIncreasing",
        "ContrastIncreasing",
        "BrightnessIncreasing",
        "SharpnessIncreasing",
    }
)
# Ops that resample (timm's _check_args_tf draws the filter for these when it is random).
_GEOMETRIC_OPS = frozenset(
    {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel"}
)

# timm's RandAugment op lists and weight tables (_RAND_TRANSFORMS, _RAND_INCREASING_TRANSFORMS,
# _RAND_3A, _RAND_WEIGHTED_0, _RAND_WEIGHTED_3A), in timm's order: the order fixes which op an
# index drawn by the generator means.
_RAND_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
_RAND_INCREASING_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
_RAND_3A = ("SolarizeIncreasing", "Desaturate", "GaussianBlur")
_RAND_WEIGHTED_0: dict[str, float] = {
    "Rotate": 3,
    "ShearX": 2,
    "ShearY": 2,
    "TranslateXRel": 1,
    "TranslateYRel": 1,
    "ColorIncreasing": 0.25,
    "SharpnessIncreasing": 0.25,
    "AutoContrast": 0.25,
    "SolarizeIncreasing": 0.05,
    "SolarizeAdd": 0.05,
    "ContrastIncreasing": 0.05,
    "BrightnessIncreasing": 0.05,
    "Equalize": 0.05,
    "PosterizeIncreasing": 0.05,
    "Invert": 0.05,
}
_RAND_WEIGHTED_3A: dict[str, float] = {
    "SolarizeIncreasing": 6,
    "Desaturate": 6,
    "GaussianBlur": 6,
    "Rotate": 3,
    "ShearX": 2,
    "ShearY": 2,
    "PosterizeIncreasing": 1,
    "AutoContrast": 1,
    "ColorIncreasing": 1,
    "SharpnessIncreasing": 1,
    "ContrastIncreasing": 1,
    "BrightnessIncreasing": 1,
    "Equalize": 1,
    "Invert": 1,
}
# The ``t<name>`` sets of rand_augment_choices.
_TRANSFORM_SETS: dict[str, tuple[str, ...] | dict[str, float]] = {
    "weights": _RAND_WEIGHTED_0,
    "3aw": _RAND_WEIGHTED_3A,
    "3a": _RAND_3A,
}

_Policy = tuple[tuple[tuple[str, float, int], ...], ...]
# ImageNet v0 policy of the TPU EfficientNet code (timm's auto_augment_policy_v0).
_POLICY_V0: _Policy = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateYRel", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)
# ImageNet policy of the AutoAugment paper (timm's auto_augment_policy_original).
_POLICY_ORIGINAL: _Policy = (
    (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)
_POLICY_3A: _Policy = (
    (("Solarize", 1.0, 5),),
    (("Desaturate", 1.0, 10),),
    (("GaussianBlurRand", 1.0, 10),),
)


def _renamed(policy: _Policy, old: str, new: str) -> _Policy:
    return tuple(tuple((new if n == old else n, p, m) for n, p, m in sub) for sub in policy)


# The 'r' variants swap in the posterize whose severity grows with magnitude.
AUTO_AUGMENT_POLICIES: Mapping[str, _Policy] = {
    "original": _POLICY_ORIGINAL,
    "originalr": _renamed(_POLICY_ORIGINAL, "PosterizeOriginal", "PosterizeIncreasing"),
    "v0": _POLICY_V0,
    "v0r": _renamed(_POLICY_V0, "Posterize", "PosterizeIncreasing"),
    "3a": _POLICY_3A,
}


@dataclass(frozen=True)
class AugmentParams:
    """timm's ``hparams`` of the ops, resolved.

    ``resample`` None means timm's random choice of bilinear or bicubic per geometric op;
    ``magnitude_std`` ``inf`` means a uniform magnitude in ``[0, m]``; ``magnitude_max`` None
    means timm's default bound ``LEVEL_DENOM``.
    """

    translate_const: int = 250
    translate_pct: float = 0.45
    fill: tuple[int, int, int] = _FILL
    resample: Image.Resampling | None = None
    magnitude_std: float = 0.0
    magnitude_max: int | None = None


@dataclass(frozen=True)
class PlannedOp:
    """One op of a drawn plan: everything random already decided.

    ``magnitude`` is after the noise and the clip to ``[0, mmax]``; ``negate`` the sign drawn
    for the signed ops; ``arg`` the op's argument after timm's level mapping (degrees, factor,
    bits, threshold, pixels); ``resample`` the filter of a geometric op; ``radius`` the blur
    radius ``GaussianBlurRand`` drew. A skipped op (its probability said no) keeps only
    ``name``.
    """

    name: str
    applied: bool
    magnitude: float | None = None
    negate: bool = False
    arg: float | None = None
    resample: Image.Resampling | None = None
    radius: float | None = None


@dataclass(frozen=True)
class AugmentPlan:
    """The draws for one image: ``choice`` is RandAugment's op indices or AutoAugment's
    sub-policy index (a 1-tuple); ``ops`` the planned ops in the order they apply."""

    choice: tuple[int, ...]
    ops: tuple[PlannedOp, ...]


def op_argument(name: str, magnitude: float, negate: bool, params: AugmentParams) -> float | None:
    """timm's ``LEVEL_TO_ARG[name]`` at ``magnitude`` (already clipped), with the sign
    ``_randomly_negate`` drew given as ``negate``; None for the ops that take no argument.
    Written as timm's expressions, operation for operation, so the floats are the same."""
    if name not in _OPS:
        raise DataError(f"unknown augmentation op {name!r}; known: {', '.join(OP_NAMES)}")
    level: float
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        level = (magnitude / LEVEL_DENOM) * 30.0
    elif name in ("ShearX", "ShearY"):
        level = (magnitude / LEVEL_DENOM) * 0.3
    elif name in ("TranslateX", "TranslateY"):
        level = (magnitude / LEVEL_DENOM) * float(params.translate_const)
    elif name in ("TranslateXRel", "TranslateYRel"):
        level = (magnitude / LEVEL_DENOM) * params.translate_pct
    elif name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (magnitude / LEVEL_DENOM) * 1.8 + 0.1
    elif name.endswith("Increasing") and not name.startswith(("Posterize", "Solarize")):
        level = (magnitude / LEVEL_DENOM) * 0.9
        return max(0.1, 1.0 + (-level if negate else level))  # no enhance factor below 0.1
    elif name == "Posterize":
        return int((magnitude / LEVEL_DENOM) * 4)
    elif name == "PosterizeIncreasing":
        return 4 - int((magnitude / LEVEL_DENOM) * 4)
    elif name == "PosterizeOriginal":
        return int((magnitude / LEVEL_DENOM) * 4) + 4
    elif name == "Solarize":
        return min(256, int((magnitude / LEVEL_DENOM) * 256))
    elif name == "SolarizeIncreasing":
        return 256 - min(256, int((magnitude / LEVEL_DENOM) * 256))
    elif name == "SolarizeAdd":
        return min(128, int((magnitude / LEVEL_DENOM) * 110))
    else:  # Desaturate, GaussianBlur, GaussianBlurRand: timm's _minmax_level_to_arg
        low, high = {"Desaturate": (0.5, 1.0), "GaussianBlur": (0.1, 2.0)}.get(name, (0.0, 1.0))
        level = magnitude / LEVEL_DENOM
        level = low + (high - low) * level
        return max(low, min(high, level))
    return -level if negate else level


def _resample(op: PlannedOp) -> Image.Resampling:
    if op.resample is None:
        raise DataError(f"planned op {op.name} has no resample filter")
    return op.resample


def _affine(
    img: Image.Image, matrix: tuple[float, ...], op: PlannedOp, fill: tuple[int, int, int]
) -> Image.Image:
    return img.transform(
        img.size, Image.Transform.AFFINE, matrix, resample=_resample(op), fillcolor=fill
    )


def _arg(op: PlannedOp) -> float:
    if op.arg is None:
        raise DataError(f"planned op {op.name} has no argument")
    return op.arg


def _radius(op: PlannedOp) -> float:
    if op.radius is None:
        raise DataError(f"planned op {op.name} has no drawn blur radius")
    return op.radius


def _posterize(img: Image.Image, bits: int) -> Image.Image:
    if bits >= 8:
        return img
    if bits < 1:
        # Pillow >= 13 refuses bits < 1; up to 12 its mask ~(2 ** (8 - bits) - 1) kept no bit.
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits)


def _solarize_add(img: Image.Image, add: int, thresh: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    if img.mode == "RGB":
        return img.point(lut * 3)
    return img.point(lut) if img.mode == "L" else img


def _desaturate(img: Image.Image, factor: float) -> Image.Image:
    factor = min(1.0, max(0.0, 1.0 - factor))  # enhance factor 0 is greyscale, 1 no change
    return ImageEnhance.Color(img).enhance(factor)


_Fill = tuple[int, int, int]
# The pixel side of timm's NAME_TO_OP: (image, planned op, fill colour) -> image.
_OPS: dict[str, Callable[[Image.Image, PlannedOp, _Fill], Image.Image]] = {
    "AutoContrast": lambda img, op, fill: ImageOps.autocontrast(img),
    "Equalize": lambda img, op, fill: ImageOps.equalize(img),
    "Invert": lambda img, op, fill: ImageOps.invert(img),
    "Rotate": lambda img, op, fill: img.rotate(_arg(op), resample=_resample(op), fillcolor=fill),
    "Posterize": lambda img, op, fill: _posterize(img, int(_arg(op))),
    "PosterizeIncreasing": lambda img, op, fill: _posterize(img, int(_arg(op))),
    "PosterizeOriginal": lambda img, op, fill: _posterize(img, int(_arg(op))),
    "Solarize": lambda img, op, fill: ImageOps.solarize(img, int(_arg(op))),
    "SolarizeIncreasing": lambda img, op, fill: ImageOps.solarize(img, int(_arg(op))),
    "SolarizeAdd": lambda img, op, fill: _solarize_add(img, int(_arg(op))),
    "Color": lambda img, op, fill: ImageEnhance.Color(img).enhance(_arg(op)),
    "ColorIncreasing": lambda img, op, fill: ImageEnhance.Color(img).enhance(_arg(op)),
    "Contrast": lambda img, op, fill: ImageEnhance.Contrast(img).enhance(_arg(op)),
    "ContrastIncreasing": lambda img, op, fill: ImageEnhance.Contrast(img).enhance(_arg(op)),
    "Brightness": lambda img, op, fill: ImageEnhance.Brightness(img).enhance(_arg(op)),
    "BrightnessIncreasing": lambda img, op, fill: ImageEnhance.Brightness(img).enhance(_arg(op)),
    "Sharpness": lambda img, op, fill: ImageEnhance.Sharpness(img).enhance(_arg(op)),
    "SharpnessIncreasing": lambda img, op, fill: ImageEnhance.Sharpness(img).enhance(_arg(op)),
    "ShearX": lambda img, op, fill: _affine(img, (1, _arg(op), 0, 0, 1, 0), op, fill),
    "ShearY": lambda img, op, fill: _affine(img, (1, 0, 0, _arg(op), 1, 0), op, fill),
    "TranslateX": lambda img, op, fill: _affine(img, (1, 0, _arg(op), 0, 1, 0), op, fill),
    "TranslateY": lambda img, op, fill: _affine(img, (1, 0, 0, 0, 1, _arg(op)), op, fill),
    # timm scales the fraction by the size of the image the op sees.
    "TranslateXRel": lambda img, op, fill: _affine(
        img, (1, 0, _arg(op) * img.size[0], 0, 1, 0), op, fill
    ),
    "TranslateYRel": lambda img, op, fill: _affine(
        img, (1, 0, 0, 0, 1, _arg(op) * img.size[1]), op, fill
    ),
    "Desaturate": lambda img, op, fill: _desaturate(img, _arg(op)),
    "GaussianBlur": lambda img, op, fill: img.filter(ImageFilter.GaussianBlur(radius=_arg(op))),
    "GaussianBlurRand": lambda img, op, fill: img.filter(ImageFilter.GaussianBlur(_radius(op))),
}
OP_NAMES: tuple[str, ...] = tuple(_OPS)


def apply_op(img: Image.Image, op: PlannedOp, fill: tuple[int, int, int] = _FILL) -> Image.Image:
    """The pixels of one planned op (timm's ``NAME_TO_OP[op.name]`` with the drawn argument);
    ``fill`` is the colour geometric ops bring in at the borders (timm's ``img_mean``)."""
    if not op.applied:
        return img
    if op.name not in _OPS:
        raise DataError(f"unknown augmentation op {op.name!r}; known: {', '.join(OP_NAMES)}")
    return _OPS[op.name](img, op, fill)


@dataclass(frozen=True)
class AugmentOp:
    """timm's ``AugmentOp``: an op applied with probability ``prob`` at ``magnitude`` (0..10 on
    timm's scale, up to ``params.magnitude_max``)."""

    name: str
    prob: float = 0.5
    magnitude: float = 10
    params: AugmentParams = field(default_factory=AugmentParams)

    def __post_init__(self) -> None:
        if self.name not in _OPS:
            raise DataError(f"unknown augmentation op {self.name!r}; known: {', '.join(OP_NAMES)}")

    def draw(self, rng: np.random.Generator) -> PlannedOp:
        """timm's ``AugmentOp.__call__`` draws, in its order: apply or not, magnitude noise,
        sign, resample filter, blur radius."""
        if self.prob < 1.0 and rng.random() > self.prob:
            return PlannedOp(self.name, applied=False)
        magnitude = self.magnitude
        std = self.params.magnitude_std
        if std == math.inf:
            magnitude = 0 + (magnitude - 0) * float(rng.random())  # Python's random.uniform
        elif std > 0:
            magnitude = float(rng.normal(magnitude, std))
        # max(0., min(...)) as timm writes it: the clip's float/int types follow timm's.
        magnitude = max(0.0, min(magnitude, self.params.magnitude_max or LEVEL_DENOM))
        negate = bool(rng.random() > 0.5) if self.name in _SIGNED_OPS else False
        arg = op_argument(self.name, magnitude, negate, self.params)
        resample = None
        if self.name in _GEOMETRIC_OPS:
            resample = self.params.resample
            if resample is None:
                resample = _RANDOM_RESAMPLE[int(rng.integers(len(_RANDOM_RESAMPLE)))]
        radius = None
        if self.name == "GaussianBlurRand" and arg is not None:
            # random.uniform(0.1, 2.0 * factor): the bounds may be reversed, numpy's uniform
            # refuses that, Python's formula does not.
            radius = 0.1 + (2.0 * arg - 0.1) * float(rng.random())
        return PlannedOp(self.name, True, magnitude, negate, arg, resample, radius)


class AutoAugmentTransform(ABC):
    """A policy: ``draw`` the random choices for one image, ``apply`` them; ``__call__`` does
    both. Takes and returns RGB PIL images."""

    params: AugmentParams

    @abstractmethod
    def draw(self, rng: np.random.Generator) -> AugmentPlan:
        """Every random choice for one image, from ``rng``, in timm's order."""

    def apply(self, img: Image.Image, plan: AugmentPlan) -> Image.Image:
        """The planned ops, in order (no randomness)."""
        if img.mode != "RGB":
            raise DataError(f"auto-augment takes RGB images, got PIL mode {img.mode!r}")
        for op in plan.ops:
            img = apply_op(img, op, self.params.fill)
        return img

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return self.apply(img, self.draw(rng))


class RandAugment(AutoAugmentTransform):
    """timm's ``RandAugment``: ``num_layers`` ops drawn per image, uniformly with replacement,
    or by ``choice_weights`` without replacement (numpy's ``choice`` either way)."""

    def __init__(
        self,
        ops: Sequence[AugmentOp],
        num_layers: int = 2,
        choice_weights: Sequence[float] | None = None,
        params: AugmentParams | None = None,
    ) -> None:
        if num_layers < 0:
            raise DataError(f"RandAugment needs num_layers >= 0, got {num_layers}")
        if not ops:
            raise DataError("RandAugment needs at least one op")
        self.ops = tuple(ops)
        self.num_layers = num_layers
        self.choice_weights = None
        if choice_weights is not None:
            weights = np.asarray(choice_weights, dtype=np.float64)
            if weights.shape != (len(self.ops),) or not np.all(weights >= 0):
                raise DataError(f"choice_weights must be {len(self.ops)} weights >= 0")
            if np.count_nonzero(weights) < num_layers:
                raise DataError(
                    f"RandAugment draws {num_layers} distinct weighted ops but only "
                    f"{np.count_nonzero(weights)} have a weight"
                )
            self.choice_weights = weights / np.sum(weights)
        self.params = params if params is not None else self.ops[0].params

    def draw(self, rng: np.random.Generator) -> AugmentPlan:
        indices = rng.choice(
            len(self.ops),
            self.num_layers,
            replace=self.choice_weights is None,
            p=self.choice_weights,
        )
        choice = tuple(int(i) for i in indices)
        return AugmentPlan(choice, tuple(self.ops[i].draw(rng) for i in choice))

    def __repr__(self) -> str:
        names = ", ".join(op.name for op in self.ops)
        weighted = "" if self.choice_weights is None else ", weighted"
        op = self.ops[0]
        return (
            f"RandAugment(n={self.num_layers}, m={op.magnitude}, p={op.prob}{weighted}, "
            f"{self.params}, ops=[{names}])"
        )


class AutoAugment(AutoAugmentTransform):
    """timm's ``AutoAugment``: one sub-policy drawn uniformly per image, its ops in order."""

    def __init__(
        self, policy: Sequence[Sequence[AugmentOp]], params: AugmentParams | None = None
    ) -> None:
        if not policy or not all(policy):
            raise DataError("AutoAugment needs non-empty sub-policies")
        self.policy = tuple(tuple(sub) for sub in policy)
        self.params = params if params is not None else self.policy[0][0].params

    def draw(self, rng: np.random.Generator) -> AugmentPlan:
        index = int(rng.integers(len(self.policy)))
        return AugmentPlan((index,), tuple(op.draw(rng) for op in self.policy[index]))

    def __repr__(self) -> str:
        return f"AutoAugment({len(self.policy)} sub-policies, {self.params})"


@dataclass(frozen=True)
class _Spec:
    """A parsed policy string."""

    kind: Literal["rand", "auto"]
    policy: str
    magnitude: int = 10
    num_layers: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: int | None = None
    increasing: bool = False
    transforms: str | None = None


_RAND_KEYS = ("m", "n", "p", "mstd", "mmax", "inc")
_EXAMPLES = "e.g. 'rand-m9-mstd0.5-inc1' or 'original', 'originalr', 'v0', 'v0r', '3a'"


def _number(config_str: str, section: str, value: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(value)
    except ValueError:
        raise DataError(
            f"auto-augment {config_str!r}: malformed number {value!r} in section {section!r}"
        ) from None


def _parse(config_str: str) -> _Spec:
    """The policy string as timm's ``rand_augment_transform`` / ``auto_augment_transform``
    read it, refusing what they would ignore, assert on or fail on later."""
    if not isinstance(config_str, str) or not config_str:
        raise DataError(f"auto-augment policy must be a non-empty string, got {config_str!r}")
    if config_str.startswith("augmix"):
        raise DataError(
            f"auto-augment {config_str!r}: AugMix is not supported by seres; use RandAugment "
            f"or AutoAugment ({_EXAMPLES})"
        )
    head, *sections = config_str.split("-")
    if head != "rand" and head not in AUTO_AUGMENT_POLICIES:
        raise DataError(f"unknown auto-augment policy {config_str!r}; {_EXAMPLES}")
    kind: Literal["rand", "auto"] = "rand" if head == "rand" else "auto"
    values: dict[str, float | str] = {}
    for section in sections:
        value: float | str
        if not section:
            raise DataError(f"auto-augment {config_str!r}: empty section (two '-' in a row?)")
        if kind == "rand" and section.startswith("t"):
            key, value = "t", section[1:]
            if value not in _TRANSFORM_SETS:
                raise DataError(
                    f"auto-augment {config_str!r}: unknown transform set {section!r}; known: "
                    + ", ".join(f"t{name}" for name in _TRANSFORM_SETS)
                )
        else:
            match = re.fullmatch(r"(\D*)(\d.*)", section)
            if match is None:
                raise DataError(
                    f"auto-augment {config_str!r}: section {section!r} has no number "
                    "(timm would ignore it)"
                )
            key, text = match.groups()
            known = _RAND_KEYS if kind == "rand" else ("mstd",)
            if key == "w" and kind == "rand":
                raise DataError(
                    f"auto-augment {config_str!r}: timm 1.0.31 removed the weight-index section "
                    f"{section!r}; weighted op choice is 'tweights' (or 't3aw')"
                )
            if key not in known:
                raise DataError(
                    f"auto-augment {config_str!r}: unknown section {section!r} (key {key!r}); "
                    f"known keys: {', '.join(known)}"
                )
            value = _number(config_str, section, text, float if key in ("p", "mstd") else int)
        if key in values:
            raise DataError(f"auto-augment {config_str!r}: section {key!r} given twice")
        values[key] = value

    def get(key: str, default: float) -> float:
        value = values.get(key, default)
        assert not isinstance(value, str)
        return value

    magnitude_std = get("mstd", 0.0)
    if kind == "auto":
        return _Spec("auto", head, magnitude_std=magnitude_std)
    if magnitude_std > 100:  # timm: uniform magnitudes in [0, m]
        magnitude_std = math.inf
    magnitude, num_layers, prob = int(get("m", 10)), int(get("n", 2)), get("p", 0.5)
    magnitude_max = int(values["mmax"]) if "mmax" in values else None
    increasing = get("inc", 0)
    if num_layers < 0:
        raise DataError(f"auto-augment {config_str!r}: n must be >= 0, got {num_layers}")
    if not 0.0 <= prob <= 1.0:
        raise DataError(f"auto-augment {config_str!r}: p must be in [0, 1], got {prob}")
    if increasing not in (0, 1):
        raise DataError(f"auto-augment {config_str!r}: inc must be 0 or 1, got {increasing:g}")
    if magnitude_max is not None and magnitude_max < 1:
        raise DataError(
            f"auto-augment {config_str!r}: mmax must be >= 1, got {magnitude_max} "
            "(timm reads mmax0 as the default bound 10)"
        )
    bound = magnitude_max or int(LEVEL_DENOM)
    if magnitude > bound:
        raise DataError(
            f"auto-augment {config_str!r}: magnitude m{magnitude} is beyond mmax {bound} "
            f"(timm would clip it to {bound}); lower m or add -mmax{magnitude}"
        )
    transforms = values.get("t")
    assert transforms is None or isinstance(transforms, str)
    table = _TRANSFORM_SETS.get(transforms or "")
    if isinstance(table, dict):
        weighted = sum(1 for w in table.values() if w > 0)
        if num_layers > weighted:
            raise DataError(
                f"auto-augment {config_str!r}: n{num_layers} distinct weighted ops asked of "
                f"t{transforms}, which has {weighted}"
            )
    return _Spec(
        "rand",
        head,
        magnitude,
        num_layers,
        prob,
        magnitude_std,
        magnitude_max,
        bool(increasing),
        transforms,
    )


def check_auto_augment(config_str: str) -> None:
    """Raises ``DataError`` (one line naming the bad part) unless ``config_str`` is a
    RandAugment (``rand-...``) or AutoAugment (``original``, ``originalr``, ``v0``, ``v0r``,
    ``3a``, with ``-mstd<x>``) string that ``create_auto_augment`` builds."""
    _parse(config_str)


def _resolve_params(
    img_size: int | Sequence[int], mean: Sequence[float], interpolation: str
) -> AugmentParams:
    sizes = (img_size,) if isinstance(img_size, int) else tuple(img_size)
    if not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise DataError(f"auto-augment image size must be positive integers, got {img_size!r}")
    if len(mean) != 3 or not all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in mean):
        raise DataError(f"auto-augment mean must be 3 fractions in [0, 1], got {tuple(mean)}")
    if interpolation == "random":
        resample = None
    elif interpolation in _AFFINE_RESAMPLE:
        resample = _AFFINE_RESAMPLE[interpolation]
    elif interpolation in _OTHER_INTERPOLATIONS:
        raise DataError(
            f"auto-augment cannot use interpolation {interpolation!r}: PIL's rotate and affine "
            "transforms take only nearest, bilinear or bicubic (timm would fail at the first "
            "geometric op); use one of those or 'random'"
        )
    else:
        raise DataError(
            f"unknown interpolation {interpolation!r} for auto-augment; known: "
            f"{', '.join(_AFFINE_RESAMPLE)}, random"
        )
    r, g, b = (min(255, round(255 * x)) for x in mean)
    return AugmentParams(translate_const=int(min(sizes) * 0.45), fill=(r, g, b), resample=resample)


def create_auto_augment(
    config_str: str,
    img_size: int | Sequence[int],
    mean: Sequence[float],
    interpolation: str,
) -> AutoAugmentTransform:
    """The transform timm's ``transforms_imagenet_train`` builds for ``auto_augment=config_str``:
    ``translate_const = int(min(img_size) * 0.45)``, fill ``round(255 * mean)``, the training
    interpolation for geometric ops (``'random'``: bilinear or bicubic drawn per op)."""
    spec = _parse(config_str)
    params = _resolve_params(img_size, mean, interpolation)
    params = AugmentParams(
        translate_const=params.translate_const,
        fill=params.fill,
        resample=params.resample,
        magnitude_std=spec.magnitude_std,
        magnitude_max=spec.magnitude_max,
    )
    if spec.kind == "auto":
        policy = [
            [AugmentOp(name, prob, magnitude, params) for name, prob, magnitude in sub]
            for sub in AUTO_AUGMENT_POLICIES[spec.policy]
        ]
        return AutoAugment(policy, params)
    table: tuple[str, ...] | dict[str, float]
    if spec.transforms is not None:
        table = _TRANSFORM_SETS[spec.transforms]
    else:
        table = _RAND_INCREASING_TRANSFORMS if spec.increasing else _RAND_TRANSFORMS
    names = tuple(table)
    weights = [table[n] for n in names] if isinstance(table, dict) else None
    ops = [AugmentOp(name, spec.prob, spec.magnitude, params) for name in names]
    return RandAugment(ops, spec.num_layers, weights, params)
