"""timm's training transform options in ``seres_jax.data.images.train_crop`` /
``TrainTransform``: random interpolation, vertical flip, ``RandomApply`` colour jitter, random
greyscale, and the auto-augment slot.

Against timm 1.0.31 recorded by ``fixtures/record_timm_train_transforms.py``: timm's own
``create_transform(is_training=True, ...)`` pipeline for 4 configurations x 4 photographs x 6
seeds, its random sources replaced by a numpy generator drawing in seres's documented order, so
that both sides take the same decisions; the pixels must be equal, and the recorded draws show
that every branch (each interpolation, each flip, jitter applied and skipped, greyscale) was
taken. Live against timm and torchvision where they are installed. Then each step by hand from
the documented draws, with the PIL-level rule it must equal (greyscale: ITU-R 601-2 luma in
PIL's fixed point, as torchvision's ``rgb_to_grayscale`` on PIL computes it), and bad options.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from seres_jax.data import DataError
from seres_jax.data.images import (
    RANDOM_INTERPOLATIONS,
    TrainTransform,
    decode_rgb,
    random_resized_crop_box,
    resized_crop,
    train_crop,
)

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = FIXTURES / "timm_train_transforms"
_ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


@cache
def _recorded() -> tuple[Any, dict[str, Any]]:
    meta: dict[str, Any] = json.loads(RECORDED.with_suffix(".json").read_text())
    return np.load(RECORDED.with_suffix(".npz")), meta


@cache
def _input(name: str) -> Image.Image:
    """A photograph as ``record_timm_transforms.py`` recorded its file (sha256 checked there
    and in ``test_images.py``)."""
    arrays = np.load(FIXTURES / "timm_transforms.npz")
    return decode_rgb(arrays[f"input/{name}"].tobytes(), name)


def _options(args: dict[str, Any]) -> dict[str, Any]:
    """``create_transform``'s arguments as ``train_crop``'s."""
    options = dict(args)
    for key in ("scale", "ratio"):
        if key in options:
            options[key] = tuple(options[key])
    return options


def test_train_crop_matches_recorded_timm() -> None:
    arrays, meta = _recorded()
    assert meta["versions"]["timm"] == "1.0.31"
    taken: dict[str, int] = {}
    cases = 0
    for key, config in meta["configs"].items():
        options = _options(config["args"])
        for name in meta["files"]:
            img = _input(name)
            for seed in meta["seeds"]:
                case = f"{key}/{name}/{seed}"
                ours = train_crop(img, meta["size"], np.random.default_rng(seed), **options)
                np.testing.assert_array_equal(ours, arrays[case], err_msg=case)
                cases += 1
                for event in meta["draws"][case]:
                    branch = _branch(event, config["args"])
                    taken[branch] = taken.get(branch, 0) + 1
    assert cases == 96
    for branch in ("bilinear", "bicubic", "vflip", "no vflip", "jitter skipped", "jitter", "grey"):
        assert taken.get(branch, 0) > 0, (branch, taken)


def _branch(event: list[Any], args: dict[str, Any]) -> str:
    """What a recorded timm draw decided."""
    kind = event[0]
    if kind == "interpolation":
        return str(event[1])
    if kind == "RandomVerticalFlip":
        return "vflip" if event[1] < args.get("vflip", 0) else "no vflip"
    if kind == "RandomApply":  # torchvision: skipped when p < u
        return "jitter skipped" if args.get("color_jitter_prob", 1) < event[1] else "applied"
    if kind == "RandomGrayscale":
        return "grey" if event[1] < args.get("grayscale_prob", 0) else "colour"
    return "jitter" if kind == "ColorJitter" else kind


def _load_recorder() -> Any:
    path = FIXTURES / "record_timm_train_transforms.py"
    spec = importlib.util.spec_from_file_location("record_timm_train_transforms", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_crop_matches_live_timm() -> None:
    pytest.importorskip("timm")
    pytest.importorskip("torchvision")
    recorder = _load_recorder()
    arrays = np.load(FIXTURES / "timm_transforms.npz")
    for name in ("flower_alpha_RGBA.png", "china_97x131.jpg"):
        with Image.open(io.BytesIO(arrays[f"input/{name}"].tobytes())) as f:
            img = f.convert("RGB")
        for key, config in recorder.CONFIGS.items():
            for seed in (11, 12):
                expected, _ = recorder.timm_train_output(img, config, seed)
                ours = train_crop(img, recorder.SIZE, np.random.default_rng(seed), **config)
                np.testing.assert_array_equal(ours, expected, err_msg=f"{key} {name} {seed}")


# ---------------------------------------------------------------- each step by hand


def _plain(img: Image.Image, seed: int, **options: Any) -> np.ndarray:
    return train_crop(img, 40, np.random.default_rng(seed), hflip=0.0, **options)


def test_vertical_flip_is_drawn_after_the_horizontal_one() -> None:
    img = _input("china_full.jpg")
    # Nothing is drawn after the flips here, so the box and interpolation stay the same.
    plain = _plain(img, 3)
    np.testing.assert_array_equal(_plain(img, 3, vflip=1.0), plain[::-1])
    both = train_crop(img, 40, np.random.default_rng(3), hflip=1.0, vflip=1.0)
    np.testing.assert_array_equal(both, plain[::-1, ::-1])
    # The whole image at its own size: only the flip changes it.
    small = Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    rng = np.random.default_rng(0)
    flips = [
        np.array_equal(
            train_crop(small, 8, rng, scale=(1, 1), ratio=(1, 1), hflip=0.0, vflip=0.3),
            np.asarray(small)[::-1],
        )
        for _ in range(400)
    ]
    assert 0.22 < np.mean(flips) < 0.38


def test_random_interpolation_picks_bilinear_or_bicubic_after_the_box() -> None:
    img = _input("flower_500x375.jpg")
    picked = set()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        box = random_resized_crop_box(rng, img.width, img.height)
        name = RANDOM_INTERPOLATIONS[int(rng.integers(2))]
        picked.add(name)
        expected = resized_crop(img, box, 40, name)
        np.testing.assert_array_equal(_plain(img, seed, interpolation="random"), expected)
    assert picked == {"bilinear", "bicubic"}
    # The two really differ on a photograph: the choice matters.
    box = (50, 60, 200, 170)
    assert not np.array_equal(
        resized_crop(img, box, 40, "bilinear"), resized_crop(img, box, 40, "bicubic")
    )


def test_grayscale_is_pils_luma_in_three_channels() -> None:
    img = _input("china_full.jpg")
    colour = _plain(img, 5).astype(np.int64)
    grey = _plain(img, 5, grayscale_prob=1.0)
    # PIL's "L" conversion (what torchvision's rgb_to_grayscale calls on a PIL image):
    # L = R * 299/1000 + G * 587/1000 + B * 114/1000 in 16-bit fixed point, rounded.
    luma = (colour @ np.array([19595, 38470, 7471]) + 0x8000) >> 16
    np.testing.assert_array_equal(grey, np.repeat(luma[..., None], 3, axis=-1).astype(np.uint8))
    assert np.abs(colour - luma[..., None]).max() > 20  # a colour photograph, really greyed
    np.testing.assert_array_equal(_plain(img, 5, grayscale_prob=1e-9), colour)


def test_all_options_follow_the_documented_draws() -> None:
    img = _input("flower_500x375.jpg")
    options: dict[str, Any] = {
        "interpolation": "random",
        "vflip": 0.5,
        "color_jitter": 0.4,
        "color_jitter_prob": 0.8,
        "grayscale_prob": 0.5,
    }
    decided = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        box = random_resized_crop_box(rng, img.width, img.height)
        name = RANDOM_INTERPOLATIONS[int(rng.integers(2))]
        out = Image.fromarray(resized_crop(img, box, 40, name))
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if rng.random() <= 0.8:  # torchvision's RandomApply: skipped when p < u
            order, factors = rng.permutation(3), rng.uniform(0.6, 1.4, 3)
            for index in order:
                out = _ENHANCERS[index](out).enhance(float(factors[index]))
            decided.add("jitter")
        if rng.random() < 0.5:
            out = out.convert("L").convert("RGB")
            decided.add("grey")
        ours = train_crop(img, 40, np.random.default_rng(seed), **options)
        np.testing.assert_array_equal(ours, np.asarray(out))
    assert decided == {"jitter", "grey"}


class _Invert:
    """A stand-in auto-augment: records what it got, draws once, inverts."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        self.seen.append(np.asarray(img).copy())
        rng.random()
        return ImageOps.invert(img)


def test_auto_augment_runs_after_the_flips_and_turns_the_jitter_off() -> None:
    img = _input("china_full.jpg")
    aa = _Invert()
    out = _plain(img, 7, vflip=1.0, auto_augment=aa)
    flipped = _plain(img, 7, vflip=1.0)
    np.testing.assert_array_equal(aa.seen[0], flipped)  # after the flips
    np.testing.assert_array_equal(out, 255 - flipped)
    # timm leaves colour jitter out with auto-augment: no effect, no draws ...
    np.testing.assert_array_equal(
        _plain(img, 7, auto_augment=aa, color_jitter=0.4), 255 - _plain(img, 7)
    )
    np.testing.assert_array_equal(
        _plain(img, 7, auto_augment=aa, color_jitter=0.4, grayscale_prob=0.5),
        _plain(img, 7, auto_augment=aa, grayscale_prob=0.5),
    )
    # ... unless kept (--force-color-jitter, or a '3a' policy): then it draws after the policy.
    kept = _plain(img, 7, auto_augment=aa, color_jitter=0.4, color_jitter_with_aa=True)
    rng = np.random.default_rng(7)
    box = random_resized_crop_box(rng, img.width, img.height)
    rng.random()  # the horizontal flip
    rng.random()  # the policy's draw
    expected = ImageOps.invert(Image.fromarray(resized_crop(img, box, 40, "bicubic")))
    order, factors = rng.permutation(3), rng.uniform(0.6, 1.4, 3)
    for index in order:
        expected = _ENHANCERS[index](expected).enhance(float(factors[index]))
    np.testing.assert_array_equal(kept, np.asarray(expected))


def test_train_transform_passes_the_options_and_pickles() -> None:
    arrays = np.load(FIXTURES / "timm_transforms.npz")
    data = arrays["input/china_97x131.jpg"].tobytes()
    element = {"image": data, "label": 4, "name": "china_97x131.jpg"}
    options: dict[str, Any] = {
        "interpolation": "random",
        "vflip": 0.5,
        "color_jitter": 0.3,
        "color_jitter_prob": 0.5,
        "grayscale_prob": 0.3,
        "auto_augment": _Invert(),
        "color_jitter_with_aa": True,
    }
    transform = pickle.loads(pickle.dumps(TrainTransform(32, **options)))  # as grain's workers
    img = decode_rgb(data, "china_97x131.jpg")
    for seed in range(4):
        pixels, label = transform.random_map(element, np.random.default_rng(seed))
        np.testing.assert_array_equal(
            pixels, train_crop(img, 32, np.random.default_rng(seed), **options)
        )
        assert label == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"vflip": 1.5}, r"vflip must be a probability in \[0, 1\], got 1.5"),
        ({"vflip": -0.1}, "vflip must be a probability"),
        ({"hflip": float("nan")}, "hflip must be a probability"),
        ({"color_jitter_prob": 2.0}, "color_jitter_prob must be a probability"),
        ({"color_jitter_prob": "0.5"}, "color_jitter_prob must be a probability.*'0.5'"),
        ({"grayscale_prob": True}, "grayscale_prob must be a probability.*True"),
        ({"grayscale_prob": float("nan")}, "grayscale_prob must be a probability"),
        ({"color_jitter": -0.4}, "color_jitter must be >= 0"),
        ({"interpolation": "cubic"}, "unknown interpolation 'cubic'; known: .*, random"),
        ({"auto_augment": "rand-m9-mstd0.5"}, "auto_augment must be a callable"),
        ({"color_jitter_with_aa": "yes"}, "color_jitter_with_aa must be True or False, got 'yes'"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    img = Image.new("RGB", (8, 8))
    with pytest.raises(DataError, match=message):
        train_crop(img, 4, np.random.default_rng(0), **options)
    with pytest.raises(DataError, match=message):
        TrainTransform(4, **options)
