"""``seres_jax.random_erasing`` against timm 1.0.31's ``RandomErasing``.

Given timm's draws (recorded with the outputs on real photographs in
``fixtures/timm_random_erasing.npz`` by ``fixtures/record_timm_random_erasing.py``), ``erase``
paints timm's boxes with timm's fills: the outputs are equal bit for bit. Without timm: the
``jax.random`` draws keep every box within timm's bounds and follow its distributions,
probability 0 and the clean split leave images untouched, odd sizes work, and a batch sharded
over 8 devices gives the unsharded result with no collective.
"""

from __future__ import annotations

import functools
import hashlib
import json
import runpy
import textwrap
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seres_jax.data import DataError
from seres_jax.data.images import normalize
from seres_jax.random_erasing import (
    ATTEMPTS,
    ErasingDraws,
    RandomErasing,
    draw_erasing,
    erase,
    erasing_boxes,
    random_erasing,
)

from .helpers import run_json_script

FIXTURE = Path(__file__).parent / "fixtures" / "timm_random_erasing.npz"
SIDECAR = FIXTURE.with_suffix(".json")
SCRIPT = FIXTURE.with_name("record_timm_random_erasing.py")

MODES = ("const", "rand", "pixel")
# The replay's boxes per image: every case's max_count, padded with boxes that are off (the
# count is in the draws), so that cases of one size, mode and split share one batch.
K = 3


def _digest(nhwc: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(nhwc, np.float32).tobytes()).hexdigest()


@functools.cache
def _recorded() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(FIXTURE) as npz:
        arrays = dict(npz)
    return arrays, json.loads(SIDECAR.read_text())


def _padded(case: dict[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    """The case's arrays with ``K`` boxes per image."""
    out = dict(case)
    extra = K - case["boxes"].shape[1]
    for name, value in (("area", 0.5), ("aspect", 0.5), ("top", 0), ("left", 0), ("boxes", 0)):
        out[name] = np.pad(case[name], ((0, 0), (0, extra), (0, 0)), constant_values=value)
    if mode == "rand":
        out["fill"] = np.pad(case["fill"], ((0, 0), (0, extra), (0, 0)))
    return out


def _pixel_field(case: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """``pixel``'s per-box fill tensors laid into one field in image coordinates, in box order
    (later boxes cover earlier ones, as in timm); NaN where timm drew none, so a stray pixel
    shows."""
    field = np.full(shape, np.nan, np.float32)
    for b, k in zip(*np.nonzero(case["boxes"][..., 0]), strict=True):
        _, top, left, h, w = case["boxes"][b, k]
        field[b, top : top + h, left : left + w] = case[f"fills/{b}/{k}"].transpose(1, 2, 0)
    return field


def _painted(x: np.ndarray, case: dict[str, np.ndarray], mode: str) -> np.ndarray:
    """timm's output, from its input, boxes and fills (the recorder checked it is)."""
    out = x.copy()
    for b, k in zip(*np.nonzero(case["boxes"][..., 0]), strict=True):
        _, top, left, h, w = case["boxes"][b, k]
        if mode == "pixel":
            fill = case[f"fills/{b}/{k}"].transpose(1, 2, 0)
        else:
            fill = case["fill"][b, k] if mode == "rand" else 0.0
        out[b, top : top + h, left : left + w] = fill
    return out


def _timm_draws(case: dict[str, np.ndarray], mode: str, shape: tuple[int, ...]) -> ErasingDraws:
    """``ErasingDraws`` holding timm's recorded draws (``float32`` uniforms)."""
    fill = case["fill"] if mode == "rand" else None
    if mode == "pixel":
        fill = _pixel_field(case, shape)
    return ErasingDraws(
        apply=np.float32(case["apply"]),
        counts=case["counts"],
        area=np.float32(case["area"]),
        aspect=np.float32(case["aspect"]),
        top=case["top"],
        left=case["left"],
        fill=fill,
    )


@functools.partial(jax.jit, static_argnums=0)
def _replay(configs: tuple[RandomErasing, ...], batches: Any) -> Any:
    """``erase`` and ``erasing_boxes`` on each ``(images, draws, probability)`` batch."""
    return [
        (erase(x, draws, config, p), erasing_boxes(draws, *x.shape[1:3], config, p))
        for config, (x, draws, p) in zip(configs, batches, strict=True)
    ]


def _overlaps(boxes: np.ndarray) -> int:
    """Pairs of painted boxes that overlap, per image, summed; ``boxes``: (B, K, 5)."""
    pairs = 0
    for rows in boxes:
        rows = rows[rows[:, 0] == 1, 1:].tolist()
        for j, (t1, l1, h1, w1) in enumerate(rows):
            for t2, l2, h2, w2 in rows[j + 1 :]:
                pairs += t1 < t2 + h2 and t2 < t1 + h1 and l1 < l2 + w2 and l2 < l1 + w1
    return pairs


def _check_recorded(arrays: dict[str, np.ndarray], sidecar: dict[str, Any]) -> dict[str, Any]:
    """Replays every recorded case; asserts timm's boxes and outputs; returns counts."""
    inputs = {}
    for name, digest in sidecar["input_sha256"].items():
        levels = arrays[f"inputs/{name}"]
        inputs[name] = np.asarray(normalize(levels, sidecar["mean"], sidecar["std"]))
        assert _digest(inputs[name]) == digest, f"normalised {name} is not timm's input"
    stats = dict.fromkeys(("cases", "boxes", "overlaps", "clean", "skipped", "rejected"), 0)
    stats["given_up"] = 0
    # Cases of one config (but the counts and probability) and image size go in one batch:
    # (mode, size, split, other arguments) ->
    # [(case index, images, draws, probabilities, timm's boxes, timm's output)].
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for i, meta in enumerate(sidecar["cases"]):
        case = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"cases/{i}/")}
        mode, splits = meta["mode"], 0 if meta["single"] else meta["num_splits"]
        x = inputs[meta["batch"]][: meta["images"]]
        case = _padded(case, mode)
        expected = _painted(x, case, mode)
        assert _digest(expected) == meta["output_sha256"], f"case {i}: fixture is not timm's"
        p = np.full(len(x), meta["probability"], np.float32)
        extra = tuple(sorted(meta["extra"].items()))
        group = groups.setdefault((mode, meta["batch"], splits, extra), [])
        group.append((i, x, _timm_draws(case, mode, x.shape), p, case["boxes"], expected))
        stats["cases"] += 1
        stats["boxes"] += int(case["boxes"][..., 0].sum())
        stats["overlaps"] += _overlaps(case["boxes"])
        stats["clean"] += RandomErasing(num_splits=splits).clean_images(len(x))
        stats["skipped"] += int((case["apply"] > p).sum())
        on = case["boxes"][..., 0] == 1
        tries = np.pad(case["tries"], ((0, 0), (0, K - case["tries"].shape[1])))
        stats["rejected"] += int((tries - on).sum())
        stats["given_up"] += int(((tries == ATTEMPTS) & ~on).sum())
    configs = tuple(
        RandomErasing(mode=mode, max_count=K, num_splits=s, **dict(extra))
        for mode, _, s, extra in groups
    )
    batches = [
        jax.tree.map(lambda *a: np.concatenate(a), *[(x, d, p) for _, x, d, p, _, _ in group])
        for group in groups.values()
    ]
    results = jax.device_get(_replay(configs, batches))
    max_abs = 0.0
    for group, (out, boxes) in zip(groups.values(), results, strict=True):
        at = 0
        for i, x, _, _, theirs, expected in group:
            cut = slice(at, at + len(x))
            at += len(x)
            on = theirs[..., 0] == 1
            np.testing.assert_array_equal(boxes.on[cut], on, err_msg=f"case {i}")
            ours = np.stack([boxes.top, boxes.left, boxes.height, boxes.width], -1)[cut]
            np.testing.assert_array_equal(ours[on], theirs[on][:, 1:], err_msg=f"case {i}")
            max_abs = max(max_abs, float(np.abs(out[cut] - expected).max()))
            np.testing.assert_array_equal(out[cut], expected, err_msg=f"case {i}")
    return {**stats, "groups": len(groups), "max_abs": max_abs}


def test_matches_recorded_timm():
    stats = _check_recorded(*_recorded())
    print(stats)
    assert stats["max_abs"] == 0.0
    # The fixture covers what it claims: every mode, overlapping boxes (the later one wins
    # in 'rand'), clean splits, images the probability skips, attempts that do not fit and
    # boxes that none of their attempts fit.
    assert stats["cases"] == 34 and stats["boxes"] >= 100, stats
    assert stats["overlaps"] >= 3 and stats["clean"] >= 4 and stats["skipped"] >= 5, stats
    assert stats["rejected"] >= 20 and stats["given_up"] >= 2, stats


def test_matches_live_timm():
    """The fixture is what the recorder records now."""
    pytest.importorskip("timm")
    arrays, sidecar = runpy.run_path(str(SCRIPT))["record"]()
    stored, stored_sidecar = _recorded()
    assert arrays.keys() == stored.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(value, stored[key], err_msg=key)
    assert {**sidecar, "versions": None} == {**stored_sidecar, "versions": None}


# --------------------------------------------------------------------------- jax.random draws

# The property tests' batch: 256 images at the recorded odd size (enough boxes for the
# statistics), numpy's normals (never equal to a fill that jax.random draws).
MAIN = (256, 45, 67, 3)
SPLIT = RandomErasing(mode="const", max_count=3, num_splits=3)
# One box of the image's area: it fits only below (H - 1/2) x (W - 1/2) pixels, never.
NEVER_FITS = RandomErasing(mode="const", min_area=1.0, max_area=1.0, max_count=3)


def _all_modes(key: jax.Array, images: jax.Array, p: Any) -> Any:
    """``random_erasing`` in each mode (up to 3 boxes), and the draws and boxes it took."""
    config = RandomErasing(max_count=3)
    draws = draw_erasing(key, images.shape, config)
    outs = {m: random_erasing(key, images, RandomErasing(mode=m, max_count=3), p) for m in MODES}
    return draws, erasing_boxes(draws, *images.shape[1:3], config, p), outs


@jax.jit
def _properties(key: jax.Array, images: jax.Array, p: Any) -> Any:
    """Everything the default property tests look at, in one program (compiling costs)."""
    draws, boxes, outs = _all_modes(key, images, p)
    # The const mode's draws: the configs below differ from it only in what erase reads.
    outs["split"] = erase(images, draws, SPLIT, p)
    one = draws._replace(counts=jnp.ones_like(draws.counts))
    outs["never_fits"] = erase(images, one, NEVER_FITS, p)
    return draws, boxes, outs


@functools.cache
def _images(shape: tuple[int, ...] = MAIN, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)


@functools.cache
def _run(seed: int, p: float) -> Any:
    return jax.device_get(_properties(jax.random.key(seed), _images(), np.float32(p)))


def _painted_mask(boxes: Any, shape: tuple[int, ...]) -> np.ndarray:
    painted = np.zeros(shape[:3], bool)
    for b, k in zip(*np.nonzero(boxes.on), strict=True):
        top, left, h, w = (int(a[b, k]) for a in boxes[1:])
        painted[b, top : top + h, left : left + w] = True
    return painted


def test_draws_stay_within_timms_bounds():
    config = RandomErasing(mode="const", max_count=3)
    _, height, width, _ = MAIN
    draws, boxes, _ = _run(0, 1.0)
    assert boxes.on[:, 0].mean() > 0.99  # a box rarely fails all its attempts
    assert set(np.unique(draws.counts)) == {1, 2, 3} and abs(draws.counts.mean() - 2) < 0.15
    on = boxes.on
    assert not (on & (np.arange(3) >= draws.counts[:, None])).any()
    top, left, h, w = boxes.top[on], boxes.left[on], boxes.height[on], boxes.width[on]
    assert (h < height).all() and (w < width).all() and (h >= 1).all() and (w >= 1).all()
    assert (top >= 0).all() and (top + h <= height).all()
    assert (left >= 0).all() and (left + w <= width).all()
    # The corner is uniform over its range: mean 1/2 of it, both ends reached.
    assert abs((top / np.maximum(height - h, 1)).mean() - 0.5) < 0.05
    assert abs((left / np.maximum(width - w, 1)).mean() - 0.5) < 0.05
    assert (top == 0).any() and (top + h == height).any() and (left + w == width).any()
    # h = round(sqrt(t * r)), w = round(sqrt(t / r)) for a target area t in
    # [min_area, max_area] * H * W / count and an aspect r in [min_aspect, max_aspect]:
    # with the rounding, t lies within h * w -/+ ((h + w) / 2 + 3/4) and r between
    # (h -/+ 1/2) / (w +/- 1/2).
    per_box = height * width / np.broadcast_to(draws.counts[:, None], on.shape)[on]
    low, high = config.min_area * per_box, config.max_area * per_box
    slack = (h + w) / 2 + 0.75
    assert (h * w + slack >= low).all() and (h * w - slack <= high).all()
    assert ((h - 0.5) / (w + 0.5) <= 1 / 0.3 + 1e-6).all()
    assert ((h + 0.5) / (w - 0.5) >= 0.3 - 1e-6).all()
    # ...and the boxes span that range: small and large, tall and wide.
    assert (h * w < 2 * low).any() and (h * w > 0.8 * high).any()
    assert (h > 2 * w).any() and (w > 2 * h).any()


def test_probability_is_traced_and_zero_changes_nothing():
    images = _images()
    for seed in range(2):
        _, boxes, outs = _run(seed, 0.0)
        assert not boxes.on.any()
        for name, out in outs.items():
            np.testing.assert_array_equal(out, images, err_msg=name)
    # A static 0 draws nothing at all.
    for mode in MODES:
        assert random_erasing(jax.random.key(0), images, RandomErasing(0.0, mode=mode)) is images
    # The probability is traced: other values take the same program.
    draws, boxes, _ = _run(0, 0.4)
    assert _properties._cache_size() == 1
    erased = boxes.on.any(1)
    assert not (erased & (draws.apply >= np.float32(0.4))).any()
    assert abs(erased.mean() - 0.4) < 0.1


def test_boxes_are_all_that_changes():
    """At probability 1 the pixels that change are the boxes' in every mode (``const``: to
    0), later boxes covering earlier ones (``rand``: the last box's colour)."""
    images = _images()
    _, boxes, outs = _run(1, 1.0)
    painted = _painted_mask(boxes, images.shape)
    for mode in MODES:
        out = outs[mode]
        assert out.shape == images.shape and out.dtype == images.dtype
        np.testing.assert_array_equal((out != images).any(-1), painted, err_msg=mode)
    assert (outs["const"][painted] == 0).all()
    b, k = np.argwhere(boxes.on[:, 2])[0][0], 2  # an image with a third box
    top, left, bottom = boxes.top[b, k], boxes.left[b, k], boxes.top[b, k] + boxes.height[b, k]
    assert (outs["rand"][b, top, left] == outs["rand"][b, bottom - 1, left]).all()


def test_num_splits_leaves_the_first_images_clean():
    # timm: batch // num_splits clean images when num_splits > 1.
    for splits, batch, clean in ((0, 8, 0), (1, 8, 0), (2, 8, 4), (3, 8, 2), (2, 7, 3), (9, 8, 0)):
        assert RandomErasing(num_splits=splits).clean_images(batch) == clean
    images, (_, _, outs) = _images(), _run(0, 1.0)
    clean = MAIN[0] // 3
    np.testing.assert_array_equal(outs["split"][:clean], images[:clean])
    np.testing.assert_array_equal(outs["split"][clean:], outs["const"][clean:])
    assert (outs["const"][:clean] != images[:clean]).any(-1).mean() > 0.05


def test_boxes_that_never_fit_erase_nothing():
    np.testing.assert_array_equal(_run(0, 1.0)[2]["never_fits"], _images())


@pytest.mark.slow
def test_batch_one_odd_sizes_and_dtypes():
    shapes = ((1, 224, 224, 3), (3, 1, 1, 3), (5, 7, 2, 1), (2, 9, 10, 3))
    dtypes = (np.float32, np.float32, np.float32, jnp.bfloat16)
    images = [_images(s, d) for s, d in zip(shapes, dtypes, strict=True)]
    many = jax.jit(lambda key, xs: [_all_modes(key, x, 1.0) for x in xs])
    results = jax.device_get(many(jax.random.key(5), images))
    for x, (_, boxes, outs) in zip(images, results, strict=True):
        painted = _painted_mask(boxes, x.shape)
        for mode, out in outs.items():
            assert out.shape == x.shape and out.dtype == x.dtype
            np.testing.assert_array_equal((out != x).any(-1), painted, err_msg=f"{mode} {x.shape}")
    # 1x1 images take only empty boxes (h and w round to 0 to fit): nothing changes.
    assert results[1][1].on.any() and not _painted_mask(results[1][1], shapes[1]).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probability": 1.5}, "probability must be in \\[0, 1\\], got 1.5"),
        ({"probability": -0.1}, "got -0.1"),
        ({"mode": "normal"}, "mode must be one of .* got 'normal'"),
        ({"min_area": 0.0}, "min_area=0.0"),
        ({"min_area": 0.5, "max_area": 0.4}, "min_area=0.5, max_area=0.4"),
        ({"max_area": 1.2}, "max_area=1.2"),
        ({"min_aspect": 0.0}, "min_aspect=0.0"),
        ({"min_aspect": 2.0, "max_aspect": 1.0}, "min_aspect=2.0, max_aspect=1.0"),
        ({"min_count": 0}, "min_count=0"),
        ({"min_count": 3, "max_count": 2}, "min_count=3, max_count=2"),
        ({"num_splits": -1}, "num_splits must be >= 0, got -1"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(DataError, match=message):
        RandomErasing(**kwargs)


def test_config_follows_timms_defaults():
    config = RandomErasing(mode="PIXEL", max_count=3)
    assert config.mode == "pixel" and config.count_range == (1, 3)
    assert config.aspect_range == (0.3, 1 / 0.3)
    assert RandomErasing(mode="").mode == "const"
    assert RandomErasing().count_range == (1, 1) and RandomErasing().probability == 0.5
    with pytest.raises(DataError, match="NHWC images, got shape \\(4, 5, 3\\)"):
        random_erasing(jax.random.key(0), jnp.zeros((4, 5, 3)), RandomErasing())
    tries = np.zeros((2, 2, ATTEMPTS), np.float32)
    draws = ErasingDraws(tries[:, 0, 0], np.ones(2, np.int32), tries, tries, tries, tries, None)
    with pytest.raises(DataError, match="2 boxes x 10 attempts per image"):
        erase(jnp.zeros((2, 4, 4, 3)), draws, RandomErasing(max_count=3))
    with pytest.raises(DataError, match="draws are for 2 images, the batch has 3"):
        erase(jnp.zeros((3, 4, 4, 3)), draws, RandomErasing(max_count=2))


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from seres_jax.random_erasing import RandomErasing, random_erasing
    from seres_jax.train import DATA_AXIS, make_mesh

    assert len(jax.devices()) == 8, jax.devices()
    images = np.random.default_rng(0).standard_normal((16, 9, 6, 3)).astype(np.float32)
    modes = ("const", "rand", "pixel")

    def all_modes(key, x, p):
        return [random_erasing(key, x, RandomErasing(mode=m, max_count=3), p) for m in modes]

    report = {"max_diff": 0.0, "collectives": 0, "changed": 0}
    runs = {}
    for n in (1, 8):
        batch = NamedSharding(make_mesh(jax.devices()[:n]), PartitionSpec(DATA_AXIS))
        args = (jax.random.key(3), jax.device_put(images, batch), np.float32(0.7))
        compiled = jax.jit(all_modes).lower(*args).compile()
        text = compiled.as_text()
        report["collectives"] += sum(text.count(c) for c in
            ("all-gather", "all-reduce", "all-to-all", "collective-permute"))
        outs = compiled(*args)
        assert all(out.sharding.num_devices == n for out in outs)
        runs[n] = [np.asarray(out) for out in outs]
    for one, eight in zip(runs[1], runs[8]):
        report["max_diff"] = max(report["max_diff"], float(np.abs(one - eight).max()))
        report["changed"] += int((eight != images).any((1, 2, 3)).sum())
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_eight_devices_match_one_device():
    report = run_json_script(SHARDED_SCRIPT, devices=8, timeout=300)
    assert report["max_diff"] == 0.0 and report["collectives"] == 0, report
    assert report["changed"] >= 16, report  # about 70 % of 3 x 16 images were erased
