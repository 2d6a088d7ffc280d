"""timm's image preprocessing (``seres_jax.data.images``) on real photographs.

Against the recorded timm/torchvision outputs (``fixtures/record_timm_transforms.py``): the
eval transform for seven configurations (the zoo's defaults, a test size, bilinear, lanczos,
nearest with padding) on 23 files of every PIL mode, ``F.resized_crop`` for fixed boxes, and
``RandomResizedCrop.get_params`` replayed from the uniforms torchvision drew. Live against
timm and torchvision where they are installed. Property checks of the crop-box rule, decoding
errors, the training transform's draws, ``normalize`` under ``jit``, ``DataConfig`` and the
zoo's pretrained data configs (``seres_jax.pretrained``).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from PIL import Image, ImageEnhance

from seres_jax.data import DataError
from seres_jax.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataConfig,
    EvalTransform,
    TrainTransform,
    decode_rgb,
    eval_crop,
    normalize,
    random_resized_crop_box,
    resized_crop,
    train_crop,
)
from seres_jax.pretrained import pretrained_config

from .photos import CLASS_NAMES, make_image_folder, photo_variants

FIXTURES = Path(__file__).parent / "fixtures"


@cache
def _recorded() -> tuple[Any, dict[str, Any]]:
    arrays = np.load(FIXTURES / "timm_transforms.npz")
    return arrays, json.loads((FIXTURES / "timm_transforms.json").read_text())


def _recorded_input(name: str) -> bytes:
    arrays, meta = _recorded()
    data = arrays[f"input/{name}"].tobytes()
    assert hashlib.sha256(data).hexdigest() == meta["inputs"][name]
    return data


def _levels_apart(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b).max(initial=0))


@pytest.mark.parametrize("config", sorted(_recorded()[1]["configs"]))
def test_eval_crop_matches_recorded_timm(config: str) -> None:
    arrays, meta = _recorded()
    resolved = meta["configs"][config]["resolved"]
    size = resolved["input_size"][1]
    for name in meta["configs"][config]["files"]:
        img = decode_rgb(_recorded_input(name), name)
        ours = eval_crop(img, size, resolved["crop_pct"], resolved["interpolation"])
        # The bar is one 8-bit level; the same PIL calls give none.
        assert _levels_apart(ours, arrays[f"eval/{config}/{name}"]) == 0, (config, name)


def test_resized_crop_matches_recorded_torchvision() -> None:
    arrays, meta = _recorded()
    for i, crop in enumerate(meta["crops"]):
        img = decode_rgb(_recorded_input(crop["file"]), crop["file"])
        ours = resized_crop(img, tuple(crop["box"]), crop["size"], crop["interpolation"])
        assert _levels_apart(ours, arrays[f"crop/{i}"]) == 0, crop


class _Replay:
    """A stand-in generator giving back the numbers torchvision drew, in order."""

    def __init__(self, uniforms: list[float], integers: list[int]) -> None:
        self.uniforms, self.ints = list(uniforms), list(integers)

    def uniform(self, low: float, high: float) -> float:
        return self.uniforms.pop(0)

    def integers(self, low: int, high: int) -> int:
        value = self.ints.pop(0)
        assert low <= value < high
        return value


@pytest.mark.parametrize("kind", ["get_params_fallback", "get_params_draws"])
def test_crop_box_replays_torchvision_get_params(kind: str) -> None:
    """Fed the uniforms and integers torchvision's ``get_params`` drew, the box is its box;
    the degenerate sizes exhaust all 10 attempts and land on the central fallback."""
    for record in _recorded()[1][kind]:
        rng: Any = _Replay(record["uniforms"], record["integers"])
        box = random_resized_crop_box(rng, *record["size"])
        assert list(box) == record["box"], record
        assert not rng.uniforms and not rng.ints


class _Counting:
    def __init__(self, seed: int) -> None:
        self.rng, self.uniforms, self.ints = np.random.default_rng(seed), 0, 0

    def uniform(self, low: float, high: float) -> float:
        self.uniforms += 1
        return float(self.rng.uniform(low, high))

    def integers(self, low: int, high: int) -> int:
        self.ints += 1
        return int(self.rng.integers(low, high))


@settings(max_examples=300, deadline=None)
@given(
    width=hs.integers(1, 3000),
    height=hs.integers(1, 3000),
    seed=hs.integers(0, 2**32 - 1),
    scale_low=hs.floats(0.01, 1.0),
    ratio_low=hs.floats(0.2, 1.0),
    ratio_span=hs.floats(1.0, 5.0),
)
def test_crop_box_rule(
    width: int, height: int, seed: int, scale_low: float, ratio_low: float, ratio_span: float
) -> None:
    scale, ratio = (scale_low, 1.0), (ratio_low, ratio_low * ratio_span)
    rng: Any = _Counting(seed)
    top, left, h, w = random_resized_crop_box(rng, width, height, scale, ratio)
    assert top >= 0 and top + h <= height and left >= 0 and left + w <= width
    if rng.ints:  # an attempt fitted: its area and aspect ratio, up to rounding to pixels
        assert rng.ints == 2 and w > 0 and h > 0
        area = width * height
        assert (w - 0.5) * (h - 0.5) <= area * scale[1] + 1e-9
        assert (w + 0.5) * (h + 0.5) >= area * scale[0] - 1e-9
        assert (w - 0.5) / (h + 0.5) <= ratio[1] + 1e-9
        assert (w + 0.5) / (h - 0.5) >= ratio[0] - 1e-9
    else:  # all 10 attempts failed: the central crop of the widest box in the ratio range
        assert rng.uniforms == 20
        w_fb, h_fb = width, height
        if width / height < ratio[0]:
            h_fb = round(width / ratio[0])
        elif width / height > ratio[1]:
            w_fb = round(height * ratio[1])
        assert (top, left, h, w) == ((height - h_fb) // 2, (width - w_fb) // 2, h_fb, w_fb)


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return photo_variants(tmp_path_factory.mktemp("variants"))


def test_decode_rgb_converts_like_pil(variants: list[Path]) -> None:
    modes = set()
    for path in variants:
        with Image.open(path) as reference:
            modes.add(reference.mode)
            expected = np.asarray(reference.convert("RGB"))
        img = decode_rgb(path.read_bytes(), path.name)
        assert img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), expected, err_msg=path.name)
    assert {"RGB", "L", "P", "RGBA", "LA", "CMYK", "I;16", "1"} <= modes


def _damaged(data: bytes, rng: np.random.Generator) -> list[bytes]:
    cut = [data[: int(n)] for n in rng.integers(1, len(data), 6)]
    flips = []
    for position in rng.integers(0, min(len(data), 400), 6):
        mutated = bytearray(data)
        mutated[int(position)] ^= 0xFF
        flips.append(bytes(mutated))
    return [*cut, *flips]


def test_damaged_files_raise_data_error_naming_the_file(variants: list[Path]) -> None:
    for data in (b"", b"not an image at all\n", bytes(range(256)) * 4):
        with pytest.raises(DataError, match=r"dir/bad\.jpg"):
            decode_rgb(data, "dir/bad.jpg")
    jpeg = next(p for p in variants if p.suffix == ".jpg").read_bytes()
    with pytest.raises(DataError, match=r"half\.jpg: not a readable image"):
        decode_rgb(jpeg[: len(jpeg) // 2], "half.jpg")
    # A seeded corpus of truncations and bit flips in every format: a DataError or an image.
    rng = np.random.default_rng(0)
    for path in variants[:6]:
        for data in _damaged(path.read_bytes(), rng):
            try:
                img = decode_rgb(data, path.name)
            except DataError as e:
                assert path.name in str(e)
            else:
                assert img.mode == "RGB"


def test_decompression_bomb_is_a_data_error(
    variants: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 640x427 is over twice that
    with pytest.raises(DataError, match=r"china_full\.jpg: refused as a decompression bomb"):
        decode_rgb(variants[0].read_bytes(), "china_full.jpg")


def _element(path: Path, label: int = 3) -> dict[str, Any]:
    return {"image": path.read_bytes(), "label": label, "name": path.name}


def test_eval_transform_output(variants: list[Path]) -> None:
    transform = EvalTransform(96, 0.9, "bilinear")
    for path in variants:
        pixels, label = transform.map(_element(path))
        assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
        assert label.dtype == np.int32 and label == 3
    with pytest.raises(DataError, match=r"broken\.png"):
        transform.map({"image": b"\x89PNG", "label": 0, "name": "broken.png"})


def test_train_transform_is_seeded(variants: list[Path]) -> None:
    transform = TrainTransform(48, color_jitter=0.4)
    element = _element(variants[1])
    first, label = transform.random_map(element, np.random.default_rng(7))
    again, _ = transform.random_map(element, np.random.default_rng(7))
    other, _ = transform.random_map(element, np.random.default_rng(8))
    assert first.shape == (48, 48, 3) and first.dtype == np.uint8 and label.dtype == np.int32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_flip_and_jitter_follow_the_documented_draws(variants: list[Path]) -> None:
    img = decode_rgb(variants[0].read_bytes(), "china_full.jpg")
    plain = train_crop(img, 64, np.random.default_rng(3), hflip=0.0)
    # The flip uniform is drawn either way, so the same seed gives the same box.
    flipped = train_crop(img, 64, np.random.default_rng(3), hflip=1.0)
    np.testing.assert_array_equal(flipped, plain[:, ::-1])
    jittered = train_crop(img, 64, np.random.default_rng(3), hflip=0.0, color_jitter=0.4)
    assert _levels_apart(jittered, plain) > 10
    # By hand: box, flip uniform, permutation of (brightness, contrast, saturation), factors.
    rng = np.random.default_rng(3)
    box = random_resized_crop_box(rng, img.width, img.height)
    rng.random()  # the flip
    order, factors = rng.permutation(3), rng.uniform(0.6, 1.4, 3)
    expected = Image.fromarray(resized_crop(img, box, 64, "bicubic"))
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for index in order:
        expected = enhancers[index](expected).enhance(float(factors[index]))
    np.testing.assert_array_equal(jittered, np.asarray(expected))


def test_flip_probability() -> None:
    img = Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    rng = np.random.default_rng(0)
    # The whole image at its own size: only the flip changes it.
    flips = [
        bool(np.array_equal(train_crop(img, 8, rng, scale=(1, 1), ratio=(1, 1))[:, ::-1], img))
        for _ in range(400)
    ]
    assert 0.4 < np.mean(flips) < 0.6


def test_normalize_matches_to_tensor_normalize_and_runs_under_jit() -> None:
    levels = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    ours = normalize(levels, IMAGENET_MEAN, IMAGENET_STD)
    assert ours.dtype == np.float32
    # torchvision: to_tensor divides by 255, then normalize subtracts and divides, in float32.
    by_hand = (levels.astype(np.float32) / np.float32(255) - np.float32(IMAGENET_MEAN)) / (
        np.float32(IMAGENET_STD)
    )
    np.testing.assert_array_equal(ours, by_hand)
    on_device = jax.jit(lambda x: normalize(x, IMAGENET_MEAN, IMAGENET_STD))(jnp.asarray(levels))
    assert on_device.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(on_device), ours, rtol=0, atol=1e-6)


def test_data_config_resolves_like_timm() -> None:
    cfg = DataConfig(**(pretrained_config("seresnext50_32x4d") or {}))
    assert cfg.for_eval() == DataConfig(224, 0.875)
    assert cfg.for_eval(use_test_size=True) == DataConfig(288, 0.95)
    assert cfg.for_eval(image_size=256) == DataConfig(256, 0.875)
    assert cfg.for_eval(image_size=320, use_test_size=True).crop_pct == 0.95
    assert cfg.for_eval(crop_pct=1.0, interpolation="bilinear") == DataConfig(224, 1.0, "bilinear")
    assert DataConfig().for_eval(use_test_size=True) == DataConfig()
    assert DataConfig(mean=[0.5, 0.5, 0.5]).mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_size": 0}, "input_size"),
        ({"crop_pct": 0.0}, "crop_pct"),
        ({"interpolation": "cubic"}, "unknown interpolation 'cubic'"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"mean": (0.5,)}, "3 values"),
        ({"test_crop_pct": -1.0}, "test_crop_pct"),
    ],
)
def test_data_config_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        DataConfig(**kwargs)


def test_transform_arguments_are_checked() -> None:
    with pytest.raises(DataError, match="scale"):
        TrainTransform(32, scale=(0.5, 0.1))
    with pytest.raises(DataError, match="hflip"):
        TrainTransform(32, hflip=1.5)
    with pytest.raises(DataError, match="image size"):
        EvalTransform(0, 0.875, "bicubic")


def test_data_configs_are_timm_pretrained_configs() -> None:
    """Every weight tag of every recorded model: seres_jax/pretrained.json says what timm's
    pretrained_cfg says, and builds a DataConfig."""
    recorded = json.loads((FIXTURES / "timm_data_configs.json").read_text())["models"]
    for name, entry in recorded.items():
        tags = {None: entry["config"], **entry["pretrained_tags"]}
        for tag, config in tags.items():
            expected = {k: v for k, v in config.items() if v is not None}
            assert expected.pop("crop_mode", "center") == "center"  # the mode eval_crop does
            expected.pop("num_classes", None)
            ours = pretrained_config(name, tag)
            assert ours is not None, name
            assert {k: list(v) if isinstance(v, tuple) else v for k, v in ours.items()} == {
                k: v
                for k, v in expected.items()
                if k in ours or k in DataConfig.__dataclass_fields__
            }, (name, tag)
            DataConfig(**ours)


def test_image_folder_helper(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "a")
    again = make_image_folder(tmp_path / "b")
    for split, count in (("train", 4), ("val", 2)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == list(CLASS_NAMES[:3])
        for cls in classes:
            files = sorted((root / split / cls).iterdir())
            assert len(files) == count
            for f in files:
                assert f.read_bytes() == (again / split / cls / f.name).read_bytes()
    modes = {Image.open(f).mode for f in root.rglob("*.*")}
    assert {"RGB", "L", "RGBA", "CMYK"} <= modes


# Live: the same files through timm and torchvision, where they are installed.


def test_eval_matches_live_timm(variants: list[Path]) -> None:
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("seresnet50", pretrained=False)
    for use_test_size in (False, True):
        resolved = resolve_data_config({}, model=model, use_test_size=use_test_size)
        transform = create_transform(**resolved)
        cfg = DataConfig(**(pretrained_config("seresnet50") or {})).for_eval(
            use_test_size=use_test_size
        )
        for path in variants[::3]:
            with Image.open(path) as f:
                expected = transform(f.convert("RGB")).permute(1, 2, 0).numpy()
            pixels = eval_crop(
                decode_rgb(path.read_bytes(), path.name),
                cfg.input_size,
                cfg.crop_pct,
                cfg.interpolation,
            )
            np.testing.assert_array_equal(normalize(pixels, cfg.mean, cfg.std), expected)


def test_resized_crop_and_jitter_match_live_torchvision(variants: list[Path]) -> None:
    pytest.importorskip("torchvision")
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    img = decode_rgb(variants[4].read_bytes(), variants[4].name)
    for box in ((0, 0, 375, 500), (37, 101, 211, 157), (300, 400, 100, 150)):
        expected = tvf.resized_crop(img, *box, [72, 72], InterpolationMode.BICUBIC)
        np.testing.assert_array_equal(resized_crop(img, box, 72, "bicubic"), np.asarray(expected))
    adjust = (tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation)
    rng = np.random.default_rng(5)
    box = random_resized_crop_box(rng, img.width, img.height)
    rng.random()  # the flip
    order, factors = rng.permutation(3), rng.uniform(0.7, 1.3, 3)
    expected = tvf.resized_crop(img, *box, [40, 40], InterpolationMode.BICUBIC)
    for index in order:
        expected = adjust[index](expected, float(factors[index]))
    ours = train_crop(img, 40, np.random.default_rng(5), hflip=0.0, color_jitter=0.3)
    np.testing.assert_array_equal(ours, np.asarray(expected))


def test_photo_sizes_cover_the_crop_edges(variants: list[Path]) -> None:
    """The variants include an image smaller than every crop and extreme aspect ratios."""
    sizes = [Image.open(p).size for p in variants]
    assert min(min(s) for s in sizes) < 32
    assert max(max(w / h, h / w) for w, h in sizes) > 7
