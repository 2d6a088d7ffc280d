"""timm's AutoAugment and RandAugment (``seres_jax.data.auto_augment``) against timm 1.0.31 on
real photographs.

Against the recorded fixture (``fixtures/record_timm_auto_augment.py``), replaying timm's own
random draws through our ``draw`` (a stand-in generator answers each call with the value timm
drew and checks it is the call timm made):

* every op of timm's ``NAME_TO_OP`` at magnitudes 0, 4.61, 5, 9, 10, 30 (clipped to 10) and 30
  under ``mmax30``, both signs of the signed ops, bilinear/nearest/random resampling for the
  geometric ones, on two 224x224 photo crops and a 131x97 one: the argument timm's level
  mapping gave equals our plan's, the output's sha256 equals timm's (stored pixels, compared
  level by level, for magnitude 9 on the odd-sized image);
* 16 policy strings (RandAugment with ``mstd``, ``inc``, ``n``, ``p``, ``mmax``, uniform
  ``mstd101``, ``tweights``/``t3aw``/``t3a``; AutoAugment ``original``, ``originalr``,
  ``v0``, ``v0r``, ``3a``, ``-mstd0.5``) x 8 runs: our resolved hparams and op tables equal
  timm's, the replayed draws consume exactly timm's, the outputs equal timm's.

The one deviation (``DataError``-free black image where Pillow >= 13 makes timm raise on
posterize bits < 1) is asserted as such. Then the statistics of our draws from a seeded
``Generator``, every refused policy string, and a live comparison where timm is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import pickle
from collections import Counter
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import pytest
from PIL import Image

from seres_jax.data import DataError
from seres_jax.data.auto_augment import (
    OP_NAMES,
    AugmentOp,
    AugmentParams,
    AugmentPlan,
    AutoAugment,
    AutoAugmentTransform,
    PlannedOp,
    RandAugment,
    apply_op,
    check_auto_augment,
    create_auto_augment,
)

FIXTURES = Path(__file__).parent / "fixtures"
MEAN = (0.485, 0.456, 0.406)


@cache
def _recorder() -> ModuleType:
    """The recorder module (its image specs and digest; timm only inside its functions)."""
    path = FIXTURES / "record_timm_auto_augment.py"
    spec = importlib.util.spec_from_file_location("record_timm_auto_augment", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _recorded() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(FIXTURES / "timm_auto_augment.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    return arrays, json.loads((FIXTURES / "timm_auto_augment.json").read_text())


def _digest(pixels: np.ndarray) -> str:
    assert pixels.dtype == np.uint8
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()


@cache
def _input(name: str) -> Image.Image:
    arrays, meta = _recorded()
    pixels = arrays[f"input/{name}"]
    assert _digest(pixels) == meta["inputs"][name]
    return Image.fromarray(pixels)


class Replay:
    """Stands in for ``np.random.Generator`` in ``draw``: answers each call with the value
    timm drew (from the recorded log) after checking it is the call timm made there."""

    def __init__(self, draws: list[list[Any]]) -> None:
        self.draws = draws
        self.pos = 0

    def _next(self, *kinds: str) -> list[Any]:
        assert self.pos < len(self.draws), f"draw {self.pos}: timm drew nothing more"
        entry = self.draws[self.pos]
        assert entry[0] in kinds, f"draw {self.pos}: ours {kinds}, timm's {entry}"
        self.pos += 1
        return entry

    def random(self) -> float:
        entry = self._next("random", "uniform")  # Python's uniform is a + (b - a) * random()
        return float(entry[1] if entry[0] == "random" else entry[3])

    def normal(self, loc: float, scale: float) -> float:
        _, mu, sigma, value = self._next("gauss")
        assert (loc, scale) == (mu, sigma), (loc, scale, mu, sigma)
        return float(value)

    def integers(self, high: int) -> np.int64:
        _, length, index = self._next("choice")
        assert high == length, (high, length)
        return np.int64(index)

    def choice(self, n: int, size: int, replace: bool, p: Any = None) -> np.ndarray:
        _, length, timm_size, timm_replace, weighted, indices = self._next("np_choice")
        assert (n, size, replace, p is not None) == (length, timm_size, timm_replace, weighted)
        return np.asarray(indices, dtype=np.int64)

    def generator(self) -> np.random.Generator:
        return cast(np.random.Generator, self)

    def check_done(self) -> None:
        assert self.pos == len(self.draws), f"timm drew {self.draws[self.pos :]} more"


def _calls(plan: AugmentPlan) -> list[list[Any]]:
    """Our plan as timm's aug_fn call log: applied ops with their level arguments."""
    return [[op.name, [] if op.arg is None else [op.arg]] for op in plan.ops if op.applied]


def _typed(calls: list[list[Any]]) -> list[Any]:
    # 1 == 1.0 in Python: compare the types too (posterize takes int bits).
    return [(name, [(a, type(a).__name__) for a in args]) for name, args in calls]


def _op_params(case: dict[str, Any]) -> AugmentParams:
    resample = {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "random": None,
    }[case["interpolation"]]
    return AugmentParams(
        translate_const=100, fill=(124, 116, 104), resample=resample, magnitude_max=case["mmax"]
    )


def _run_op_case(case: dict[str, Any]) -> tuple[PlannedOp, Image.Image]:
    """Our op at the case's magnitude with timm's draws replayed."""
    replay = Replay(case["draws"])
    op = AugmentOp(case["op"], 1.0, case["magnitude"], _op_params(case))
    planned = op.draw(replay.generator())
    replay.check_done()
    plan = AugmentPlan((), (planned,))
    assert _typed(_calls(plan)) == _typed(case["calls"]), case
    return planned, apply_op(_input(case["image"]), planned, (124, 116, 104))


def _check_op_cases(cases: list[dict[str, Any]]) -> tuple[int, int]:
    """Returns (cases equal to timm's output, cases where timm raised); asserts no other."""
    equal, timm_raised, differ = 0, 0, []
    for case in cases:
        planned, out = _run_op_case(case)
        pixels = np.asarray(out)
        if case["error"] is not None:
            # Pillow >= 13 refuses posterize bits < 1; timm's result on Pillow <= 12 (black)
            # is ours.
            assert "bits must be between" in case["error"], case
            assert planned.arg is not None and planned.arg < 1, planned
            assert case["op"].startswith("Posterize") and not pixels.any(), case
            timm_raised += 1
        elif _digest(pixels) == case["sha256"]:
            equal += 1
        else:
            differ.append((case["id"], case["op"], case["magnitude"], case["image"]))
    assert not differ, f"{len(differ)} of {len(cases)} op cases differ from timm: {differ[:10]}"
    return equal, timm_raised


def test_inputs_are_the_photographs() -> None:
    if importlib.util.find_spec("sklearn") is None:  # not imported: a second of start-up
        pytest.skip("the photographs come with scikit-learn")
    arrays, meta = _recorded()
    for name, pixels in _recorder().input_images().items():
        assert np.array_equal(arrays[f"input/{name}"], pixels), name
        assert _digest(pixels) == meta["inputs"][name]
    assert meta["versions"]["timm"] == "1.0.31"


def test_every_timm_op_is_recorded() -> None:
    _, meta = _recorded()
    recorded = {case["op"] for case in meta["op_cases"]}
    assert recorded == set(OP_NAMES)
    assert len(OP_NAMES) == 27


def test_ops_match_recorded_timm_on_the_odd_sized_photo() -> None:
    _, meta = _recorded()
    cases = [c for c in meta["op_cases"] if c["image"] == "china_131x97"]
    equal, timm_raised = _check_op_cases(cases)
    assert (equal, timm_raised) == (len(cases) - 4, 4)


@pytest.mark.parametrize("image", ["china_224", "flower_224"])
def test_ops_match_recorded_timm_on_224_photos(image: str) -> None:
    _, meta = _recorded()
    cases = [c for c in meta["op_cases"] if c["image"] == image]
    equal, timm_raised = _check_op_cases(cases)
    assert (equal, timm_raised) == (len(cases) - 4, 4)


def test_stored_op_pixels_level_by_level() -> None:
    arrays, meta = _recorded()
    stored = [c for c in meta["op_cases"] if c["stored"]]
    assert {c["op"] for c in stored} == set(OP_NAMES)
    for case in stored:
        _, out = _run_op_case(case)
        timm = arrays[f"op/{case['id']}"]
        ours = np.asarray(out)
        assert ours.shape == timm.shape
        differing = int(np.count_nonzero(ours != timm))
        worst = int(np.abs(ours.astype(np.int16) - timm).max(initial=0))
        assert (differing, worst) == (0, 0), (case["op"], differing, worst)


def _policies() -> list[dict[str, Any]]:
    return _recorded()[1]["policies"]


def _policy_ids() -> list[str]:
    return [f"{p['config']}-{p['interpolation']}" for p in _policies()]


def _ours(policy: dict[str, Any]) -> AutoAugmentTransform:
    _, meta = _recorded()
    return create_auto_augment(
        policy["config"], meta["image_size"], meta["mean"], policy["interpolation"]
    )


@pytest.mark.parametrize("policy", _policies(), ids=_policy_ids())
def test_policy_tables_match_timm(policy: dict[str, Any]) -> None:
    ours, timm = _ours(policy), policy["timm"]
    params, hparams = ours.params, timm["hparams"]
    resample = hparams["resample"]
    assert (params.translate_const, params.translate_pct, list(params.fill)) == (
        hparams["translate_const"],
        hparams["translate_pct"],
        hparams["img_mean"],
    )
    assert params.resample == (None if isinstance(resample, list) else resample)
    assert params.magnitude_std == hparams["magnitude_std"]
    assert params.magnitude_max == hparams["magnitude_max"]
    if timm["kind"] == "rand":
        assert isinstance(ours, RandAugment)
        assert [[op.name, op.prob, op.magnitude] for op in ours.ops] == timm["ops"]
        assert ours.num_layers == timm["num_layers"]
        weights = None if ours.choice_weights is None else ours.choice_weights.tolist()
        assert weights == timm["choice_weights"]
    else:
        assert isinstance(ours, AutoAugment)
        table = [[[op.name, op.prob, op.magnitude] for op in sub] for sub in ours.policy]
        assert table == timm["policy"]
    assert all(op.params == params for op in _all_ops(ours))


def _all_ops(transform: AutoAugmentTransform) -> list[AugmentOp]:
    if isinstance(transform, RandAugment):
        return list(transform.ops)
    assert isinstance(transform, AutoAugment)
    return [op for sub in transform.policy for op in sub]


@pytest.mark.parametrize("policy", _policies(), ids=_policy_ids())
def test_policy_outputs_match_timm(policy: dict[str, Any]) -> None:
    ours = _ours(policy)
    assert len(policy["runs"]) == 8
    for run in policy["runs"]:
        replay = Replay(run["draws"])
        plan = ours.draw(replay.generator())
        replay.check_done()
        assert _typed(_calls(plan)) == _typed(run["calls"]), run["seed"]
        out = np.asarray(ours.apply(_input(run["image"]), plan))
        assert _digest(out) == run["sha256"], (policy["config"], run["seed"], plan)


def test_recorded_policies_cover_the_issue() -> None:
    configs = {p["config"] for p in _policies()}
    assert {
        "rand-m9-mstd0.5-inc1",
        "rand-m7-mstd0.5-inc1",
        "rand-m6-mstd0.5-inc1",
        "rand-m9-n3-mstd0.5-tweights",
        "rand-m15-mmax20-mstd1-inc1",
        "original",
        "originalr",
        "v0",
        "v0r",
    } <= configs
    # The runs applied ops (the policies did something): most outputs differ from the input.
    changed = sum(
        _digest(np.asarray(_input(run["image"]))) != run["sha256"]
        for p in _policies()
        for run in p["runs"]
    )
    assert changed >= 80  # 90 of the 128


# --- the statistics of our draws (no timm) -------------------------------------------------


def _plans(config: str, count: int, interpolation: str = "random") -> list[AugmentPlan]:
    transform = create_auto_augment(config, 224, MEAN, interpolation)
    rng = np.random.default_rng(0)
    return [transform.draw(rng) for _ in range(count)]


def _chi_square(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(np.sum((counts - expected) ** 2 / expected))


def test_rand_augment_draw_statistics() -> None:
    plans = _plans("rand-m5-mstd0.5-inc1", 6000)
    picks = np.asarray([i for plan in plans for i in plan.choice])
    assert picks.size == 12000
    # Uniform over the 15 ops with replacement; chi-square critical value at p = 0.001, 14 dof.
    counts = np.bincount(picks, minlength=15)
    assert _chi_square(counts, np.full(15, picks.size / 15)) < 36.12
    ops = [op for plan in plans for op in plan.ops]
    applied = [op for op in ops if op.applied]
    assert abs(len(applied) / len(ops) - 0.5) < 4 * math.sqrt(0.25 / len(ops))
    magnitudes = np.asarray([op.magnitude for op in applied])
    # N(5, 0.5) noise, nowhere near the clip at [0, 10].
    assert abs(magnitudes.mean() - 5) < 4 * 0.5 / math.sqrt(magnitudes.size)
    assert abs(magnitudes.std() - 0.5) < 0.02
    signed = [op.negate for op in applied if op.name in ("Rotate", "ShearX", "ColorIncreasing")]
    assert abs(np.mean(signed) - 0.5) < 4 * math.sqrt(0.25 / len(signed))
    filters = [op.resample for op in applied if op.resample is not None]
    assert set(filters) == {Image.Resampling.BILINEAR, Image.Resampling.BICUBIC}
    bicubic = np.mean([f == Image.Resampling.BICUBIC for f in filters])
    assert abs(bicubic - 0.5) < 4 * math.sqrt(0.25 / len(filters))
    assert all(op.resample is None for op in applied if op.name == "Equalize")


def test_rand_augment_clips_and_uniform_magnitudes() -> None:
    noisy = [op.magnitude for p in _plans("rand-m9-mstd2", 3000) for op in p.ops if op.applied]
    clipped = np.asarray(noisy, dtype=np.float64)
    # N(9, 2) clipped into [0, 10]: P(> 10) = 0.3085, P(< 0) ~ 3e-6.
    assert clipped.min() > 0 and clipped.max() == 10.0
    assert abs(np.mean(clipped == 10.0) - 0.3085) < 4 * math.sqrt(0.3085 * 0.6915 / clipped.size)
    uniform = [op.magnitude for p in _plans("rand-m9-mstd101", 3000) for op in p.ops if op.applied]
    values = np.asarray(uniform, dtype=np.float64)
    assert values.min() >= 0 and values.max() <= 9
    assert abs(values.mean() - 4.5) < 4 * 9 / math.sqrt(12 * values.size)
    assert abs(np.mean(values < 2.25) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / values.size)
    fixed = {op.magnitude for p in _plans("rand-m7", 500) for op in p.ops if op.applied}
    assert fixed == {7}


def test_weighted_rand_augment_draws_by_timms_weights() -> None:
    transform = create_auto_augment("rand-m9-n3-mstd0.5-tweights", 224, MEAN, "bicubic")
    assert isinstance(transform, RandAugment) and transform.choice_weights is not None
    plans = _plans("rand-m9-n3-mstd0.5-tweights", 6000)
    assert all(len(set(plan.choice)) == 3 for plan in plans)  # without replacement
    # The first of the three is drawn by the weights themselves.
    first = np.bincount([plan.choice[0] for plan in plans], minlength=15)
    assert _chi_square(first, transform.choice_weights * len(plans)) < 36.12
    names = Counter(transform.ops[i].name for plan in plans for i in plan.choice)
    assert names.most_common(1)[0][0] == "Rotate"


def test_auto_augment_draw_statistics() -> None:
    transform = create_auto_augment("original", 224, MEAN, "bicubic")
    assert isinstance(transform, AutoAugment)
    plans = _plans("original", 10000, "bicubic")
    counts = np.bincount([plan.choice[0] for plan in plans], minlength=25)
    assert _chi_square(counts, np.full(25, len(plans) / 25)) < 51.18  # p = 0.001, 24 dof
    for plan in plans:
        sub = transform.policy[plan.choice[0]]
        assert [op.name for op in plan.ops] == [op.name for op in sub]
        assert all(op.magnitude in (None, s.magnitude) for op, s in zip(plan.ops, sub, strict=True))
    # Each op applies with its own probability: aggregated over the 50 (sub-policy, slot)s.
    applied = Counter(
        (plan.choice[0], k) for plan in plans for k, op in enumerate(plan.ops) if op.applied
    )
    for (s, k), n in Counter((plan.choice[0], k) for plan in plans for k in range(2)).items():
        prob = transform.policy[s][k].prob
        assert abs(applied[(s, k)] / n - prob) <= 4 * math.sqrt(prob * (1 - prob) / n) + 1e-9


def test_draw_is_reproducible_and_pickles() -> None:
    transform = create_auto_augment("rand-m9-mstd0.5-inc1", 224, MEAN, "random")
    img = _input("flower_224")
    once = transform(img, np.random.default_rng(7))
    again = pickle.loads(pickle.dumps(transform))(img, np.random.default_rng(7))
    assert np.array_equal(np.asarray(once), np.asarray(again))
    assert transform.draw(np.random.default_rng(3)) == transform.draw(np.random.default_rng(3))


def test_zero_layers_and_skipped_ops_leave_the_image() -> None:
    img = _input("china_131x97")
    transform = create_auto_augment("rand-n0", 224, MEAN, "bicubic")
    plan = transform.draw(np.random.default_rng(0))
    assert plan == AugmentPlan((), ())
    assert transform.apply(img, plan) is img
    skipped = PlannedOp("Rotate", applied=False)
    assert apply_op(img, skipped) is img


@pytest.mark.parametrize(
    ("step", "images"),
    [
        (1.5, ("china_131x97",)),
        pytest.param(0.25, ("china_224", "flower_224", "china_131x97"), marks=pytest.mark.slow),
    ],
)
def test_every_op_runs_over_the_whole_magnitude_range(step: float, images: tuple[str]) -> None:
    """No op fails anywhere in [0, 30] (mmax30), either sign, drawn filters: timm on
    Pillow >= 13 fails at posterize bits < 1, ours gives black there."""
    params = AugmentParams(translate_const=100, fill=(124, 116, 104), magnitude_max=30)
    rng = np.random.default_rng(0)
    black = 0
    for name in OP_NAMES:
        for magnitude in np.arange(0.0, 30.0 + step / 2, step):
            op = AugmentOp(name, 1.0, float(magnitude), params)
            for image in images:
                img = _input(image)
                planned = op.draw(rng)
                out = apply_op(img, planned, params.fill)
                assert (out.mode, out.size) == ("RGB", img.size), (name, magnitude)
                if name.startswith("Posterize") and planned.arg is not None and planned.arg < 1:
                    assert not np.asarray(out).any(), (name, magnitude)
                    black += 1
    assert black > 0


# --- refused input ------------------------------------------------------------------------

BAD_STRINGS = [
    ("", "non-empty"),
    ("foo", "unknown auto-augment policy 'foo'"),
    ("randaug-m9", "unknown auto-augment policy"),
    ("v1", "unknown auto-augment policy"),
    ("augmix-m5-w4", "AugMix is not supported"),
    ("rand-x3", "unknown section 'x3'"),
    ("rand-m9-w0", "removed the weight-index section 'w0'"),
    ("rand-m9-n3-mstd0.5-w1", "removed the weight-index section 'w1'"),
    ("rand-m40", "m40 is beyond mmax 10"),
    ("rand-m25-mmax20", "m25 is beyond mmax 20"),
    ("rand-m9x", "malformed number '9x'"),
    ("rand-m9.5", "malformed number '9.5'"),
    ("rand-mstd0.5.1", "malformed number '0.5.1'"),
    ("rand-n-1", "section 'n' has no number"),
    ("rand-m9-foo", "section 'foo' has no number"),
    ("rand--m9", "empty section"),
    ("rand-p1.5", "p must be in [0, 1]"),
    ("rand-inc2", "inc must be 0 or 1"),
    ("rand-mmax0", "mmax must be >= 1"),
    ("rand-tfoo", "unknown transform set 'tfoo'"),
    ("rand-m9-m8", "'m' given twice"),
    ("rand-n16-tweights", "n16 distinct weighted ops"),
    ("original-m9", "unknown section 'm9'"),
    ("original-mstd", "section 'mstd' has no number"),
    ("v0-tweights", "section 'tweights' has no number"),
    ("v0-mstd0.5-inc1", "unknown section 'inc1' (key 'inc'); known keys: mstd"),
]


@pytest.mark.parametrize(("config", "message"), BAD_STRINGS, ids=[b[0] for b in BAD_STRINGS])
def test_bad_policy_strings_are_refused(config: str, message: str) -> None:
    with pytest.raises(DataError) as raised:
        check_auto_augment(config)
    text = str(raised.value)
    assert message in text and "\n" not in text, text
    with pytest.raises(DataError) as again:
        create_auto_augment(config, 224, MEAN, "bicubic")
    assert str(again.value) == text


@pytest.mark.parametrize(
    "config",
    ["rand-m30-mmax30", "rand-n0", "v0r-mstd1", "rand-mstd1-tweights", "rand-m10-n3-p1.0-inc0"],
)
def test_good_policy_strings_pass(config: str) -> None:
    check_auto_augment(config)
    assert isinstance(create_auto_augment(config, 224, MEAN, "random"), AutoAugmentTransform)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interpolation": "lanczos"}, "cannot use interpolation 'lanczos'"),
        ({"interpolation": "cubic"}, "unknown interpolation 'cubic'"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 fractions"),
        ({"mean": (0.5, 0.5, 1.5)}, "mean must be 3 fractions"),
        ({"img_size": 0}, "image size must be positive"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"img_size": 224, "mean": MEAN, "interpolation": "bicubic"}
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        create_auto_augment("rand-m9", **{**args, **kwargs})


def test_bad_ops_and_images_are_refused() -> None:
    with pytest.raises(DataError, match="unknown augmentation op 'Cutout'"):
        AugmentOp("Cutout")
    op = AugmentOp("Rotate", 1.0, 9)
    with pytest.raises(DataError, match="num_layers >= 0"):
        RandAugment([op], num_layers=-1)
    with pytest.raises(DataError, match="no resample filter"):
        apply_op(_input("china_131x97"), PlannedOp("Rotate", True, 9, False, 27.0))
    transform = create_auto_augment("rand-m9", 224, MEAN, "bicubic")
    with pytest.raises(DataError, match="RGB images, got PIL mode 'L'"):
        transform(_input("china_131x97").convert("L"), np.random.default_rng(0))


# --- live against timm -------------------------------------------------------------------


def test_live_against_timm() -> None:
    """Fresh seeds and cases against an installed timm, pixels compared directly."""
    pytest.importorskip("timm")
    recorder = _recorder()
    inputs = recorder.input_images()
    for name in OP_NAMES:
        for magnitude, u, index in ((7.3, 0.8, 0), (2.2, 0.1, 1)):
            interpolation, script = "bicubic", ()
            if name in recorder.GEOMETRIC:
                interpolation, script = "random", (u, index)
            elif name in recorder.SIGNED or name == "GaussianBlurRand":
                script = (u,)
            result = recorder.run_op(
                inputs["flower_224"], name, magnitude, None, interpolation, script
            )
            case = {**result["record"], "image": "flower_224"}
            _, out = _run_op_case(case)
            if result["pixels"] is None:
                assert not np.asarray(out).any()
            else:
                assert np.array_equal(np.asarray(out), result["pixels"]), (name, magnitude)
    for config, interpolation in recorder.POLICIES:
        timm_policy = recorder.timm_policy(config, interpolation)
        ours = create_auto_augment(config, 224, MEAN, interpolation)
        for seed in range(100, 106):
            result = recorder.run_policy(timm_policy, inputs["china_224"], seed)
            if result["pixels"] is None:
                continue  # timm raised (posterize bits < 1 on Pillow >= 13)
            replay = Replay(result["record"]["draws"])
            plan = ours.draw(replay.generator())
            replay.check_done()
            out = np.asarray(ours.apply(Image.fromarray(inputs["china_224"]), plan))
            assert np.array_equal(out, result["pixels"]), (config, seed)


@pytest.mark.slow
def test_policies_many_seeds_live() -> None:
    """More seeds per policy, on all three photographs (live; slow)."""
    pytest.importorskip("timm")
    recorder = _recorder()
    inputs = recorder.input_images()
    compared = 0
    for config, interpolation in recorder.POLICIES:
        timm_policy = recorder.timm_policy(config, interpolation)
        ours = create_auto_augment(config, 224, MEAN, interpolation)
        for seed in range(200, 300):
            image = list(inputs)[seed % 3]
            result = recorder.run_policy(timm_policy, inputs[image], seed)
            if result["pixels"] is None:
                continue
            replay = Replay(result["record"]["draws"])
            plan = ours.draw(replay.generator())
            replay.check_done()
            out = np.asarray(ours.apply(Image.fromarray(inputs[image]), plan))
            assert np.array_equal(out, result["pixels"]), (config, seed, image)
            compared += 1
    assert compared > 1400
