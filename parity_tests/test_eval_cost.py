"""``seres eval`` costs what the images cost (issue 23): the last partial batch runs at its own
size (padded only to a multiple of the device count, every process in step), the compilation
is timed apart from the steady images/s, and the default batch keeps the CPU's activations
within a stated bound.

The metrics over a split are checked against a reference computed in numpy on the unpadded
split, on 1 and on 8 virtual devices; the structure of the timing (compiled before the first
batch, no compilation inside the pass) through a clock that compiling advances by 1000 s
and JAX's own compile log. The models here are a linear layer: no network is compiled by
default; the ``slow`` tests run ``seres eval`` end to end and check the memory bound against
XLA's memory analysis of the compiled eval step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import textwrap
import time
import types

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from seres_jax.data import (
    ArraySource,
    DataError,
    Dataset,
    Splits,
    eval_batch_sizes,
    eval_dataset,
    normalize,
    splits_from_arrays,
    to_devices,
)
from seres_jax.train import TrainState, compile_steps, evaluate, evaluate_variables, loop, make_mesh
from seres_jax.train.loop import (
    EVAL_ACTIVATION_BOUND,
    EVAL_BYTES_PER_INPUT_VALUE,
    default_eval_batch_size,
)

from .helpers import run_json_script

CLASSES = 10
SHAPE = (4, 4, 3)


class Linear(nn.Module):
    """Logits as one dense layer of the flattened image: cheap to compile, easy to mirror."""

    classes: int = CLASSES

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


def _data(num_val: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((num_val + 16, *SHAPE)).astype(np.float32)
    labels = rng.integers(0, CLASSES, num_val + 16).astype(np.int32)
    return Dataset("toy", images[:16], labels[:16], images[16:], labels[16:], CLASSES,
                   (0.0,) * 3, (1.0,) * 3)  # fmt: skip


def _variables() -> dict:
    return Linear().init(jax.random.key(1), np.zeros((1, *SHAPE), np.float32))


def _reference(data: Dataset, variables: dict) -> dict[str, float]:
    """Loss, top-1 and top-5 of the unpadded split, in float64 numpy."""
    return _reference_of(data.test_images, data.test_labels, variables)


def _reference_of(images: np.ndarray, y: np.ndarray, variables: dict) -> dict[str, float]:
    kernel = np.asarray(variables["params"]["Dense_0"]["kernel"], np.float64)
    bias = np.asarray(variables["params"]["Dense_0"]["bias"], np.float64)
    logits = images.reshape(len(y), -1).astype(np.float64) @ kernel + bias
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    top5 = np.argsort(-logits, 1)[:, :5]
    return {
        "loss": float(-log_probs[np.arange(len(y)), y].mean()),
        "acc": float((logits.argmax(1) == y).mean()),
        "acc5": float((top5 == y[:, None]).any(1).mean()),
        "count": float(len(y)),
    }


def _assert_metrics(result: dict[str, float], reference: dict[str, float]) -> None:
    assert result["count"] == reference["count"]
    assert result["acc"] == pytest.approx(reference["acc"], abs=1e-12)
    assert result["acc5"] == pytest.approx(reference["acc5"], abs=1e-12)
    assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)


# ---------------------------------------------------------------- the batches


@pytest.mark.parametrize(
    ("num_images", "batch", "multiple", "sizes"),
    [
        (23, 8, None, [8, 8, 8]),  # the former padding: one shape
        (23, 8, 1, [8, 8, 7]),
        (23, 8, 4, [8, 8, 8]),  # 7 rows round up to 8
        (20, 8, 4, [8, 8, 4]),
        (21, 8, 4, [8, 8, 8]),
        (15, 256, 1, [15]),  # the folder: 15 rows, not 256
        (15, 256, 8, [16]),
        (16, 8, 8, [8, 8]),  # a whole number of batches
        (0, 8, 1, []),
    ],
)
def test_eval_batch_sizes(num_images, batch, multiple, sizes):
    assert eval_batch_sizes(num_images, batch, multiple, num_processes=1) == sizes


def test_the_last_batch_holds_the_remainder_padded_to_the_multiple_only():
    splits = splits_from_arrays(_data(23))
    for multiple, last in ((1, 7), (2, 8), (4, 8), (8, 8)):
        batches = list(eval_dataset(splits, 8, last_batch_multiple=multiple))
        assert [len(y) for _, y, _ in batches] == [8, 8, last]
        for x, y, w in batches:
            assert len(x) == len(y) == len(w)
        x, y, w = (np.concatenate(a) for a in zip(*batches, strict=True))
        assert w.sum() == 23 and w[:23].all()  # padding only at the end, weighing 0
        np.testing.assert_array_equal(y[:23], splits.val.labels)
        np.testing.assert_array_equal(x[:23], splits.val.images)
        assert not x[23:].any()
    with pytest.raises(DataError, match="batch size 8 is not a multiple of 3"):
        eval_dataset(splits, 8, last_batch_multiple=3)
    with pytest.raises(DataError, match="last_batch_multiple must be an integer >= 1, got 0"):
        eval_dataset(splits, 8, last_batch_multiple=0)


@pytest.mark.parametrize(("num_images", "multiple", "last"), [(19, 2, 4), (17, 4, 4), (23, 2, 8)])
def test_every_process_runs_the_same_batch_shapes(monkeypatch, num_images, multiple, last):
    """Two processes (``multiple // 2`` devices each): the split is dealt out record by record;
    the last batch is each process's largest share rounded up to its devices, the same on
    both, and the weighted rows are the split once."""
    splits = splits_from_arrays(_data(num_images))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    shapes, seen = [], []
    for index in (0, 1):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        batches = list(eval_dataset(splits, 8, last_batch_multiple=multiple))
        shapes.append([x.shape for x, _, _ in batches])
        for _, y, w in batches:
            seen.extend(y[w == 1].tolist())
    assert shapes[0] == shapes[1]
    assert [s[0] * 2 for s in shapes[0]] == eval_batch_sizes(num_images, 8, multiple) == [
        8, 8, last]  # fmt: skip
    assert sorted(seen) == sorted(splits.val.labels.tolist())
    with pytest.raises(DataError, match="last_batch_multiple 1 is not divisible by the 2"):
        eval_dataset(splits, 8, last_batch_multiple=1)


# ---------------------------------------------------------------- evaluate


def test_evaluate_runs_the_last_batch_at_its_size_and_equals_the_unpadded_split():
    data, variables = _data(23), _variables()
    reference = _reference(data, variables)
    rows: list[int] = []
    for batch in (8, 256):
        rows.clear()
        splits, mesh = splits_from_arrays(data), make_mesh(jax.devices()[:1])
        result = evaluate_variables(Linear(), variables, splits, batch, mesh, on_batch=rows.append)
        _assert_metrics(result, reference)
        assert rows == eval_batch_sizes(23, batch, 1) and sum(rows) == 23
        assert result["compile_s"] >= 0 and result["images_per_s"] > 0


class _Clock:
    """``time.perf_counter`` that compiling advances by 1000 s."""

    def __init__(self) -> None:
        self.offset = 0.0

    def perf_counter(self) -> float:
        return time.perf_counter() + self.offset


class _CountingEval:
    """``steps.eval`` that records the batch sizes it is compiled for (moving ``clock`` on
    1000 s each time) and the sizes it is called with."""

    def __init__(self, jitted, clock: _Clock) -> None:
        self.jitted, self.clock = jitted, clock
        self.compiled: list[int] = []
        self.called: list[int] = []

    def lower(self, state, x, y, w):
        lowered = self.jitted.lower(state, x, y, w)
        outer = self

        class Lowered:
            def compile(self):
                outer.compiled.append(x.shape[0])
                outer.clock.offset += 1000.0
                return lowered.compile()

        return Lowered()

    def __call__(self, state, x, y, w):
        assert x.shape[0] in self.compiled, "called before its shape was compiled"
        self.called.append(x.shape[0])
        return self.jitted(state, x, y, w)


class _Compiles(logging.Handler):
    """The compilations JAX logs (``jax_log_compiles``), with the phase they fell in."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "compile"
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Compiling"):
            self.messages.append((self.phase, record.getMessage()))


def test_compile_s_is_timed_apart_and_the_pass_compiles_nothing(monkeypatch):
    """uint8 images normalised on the device, 21 in batches of 8: the eval step's and the
    normalisation's shapes are compiled before the pass (``compile_s`` holds the clock's
    1000 s a compile, ``images_per_s`` none of it), and the pass runs those executables: JAX
    logs no compilation of either while it reads and evaluates."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (21, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, 21).astype(np.int32)
    source = ArraySource(images, labels)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    splits = Splits("bytes", source, source, CLASSES, SHAPE, mean=mean, std=std)
    variables = _variables()
    steps = compile_steps(make_mesh(jax.devices()[:1]))
    clock, compiles = _Clock(), _Compiles()
    counting = _CountingEval(steps.eval, clock)
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))

    def reading(*args, **kwargs):
        compiles.phase = "pass"
        return to_devices(*args, **kwargs)

    monkeypatch.setattr(loop, "to_devices", reading)
    state = jax.device_put(TrainState.create(Linear().apply, variables, optax.identity()),
                           steps.replicated)  # fmt: skip
    logger, logging_compiles = logging.getLogger("jax"), jax.config.jax_log_compiles
    logger.addHandler(compiles)
    jax.config.update("jax_log_compiles", True)
    try:
        result = evaluate(dataclasses.replace(steps, eval=counting), state, splits, 8)
    finally:
        jax.config.update("jax_log_compiles", logging_compiles)
        logger.removeHandler(compiles)
    assert counting.compiled == [8, 5] and counting.called == [8, 8, 5]
    in_pass = [m for phase, m in compiles.messages if phase == "pass"]
    assert not [m for m in in_pass if "eval_step" in m or "normalize" in m], in_pass
    assert 2000 <= result["compile_s"] < 2100
    steady = result["count"] / result["images_per_s"]
    assert steady < 100, steady  # the pass's own seconds, without the 2000
    _assert_metrics(result, _reference_of(normalize(images, mean, std), labels, variables))


# ---------------------------------------------------------------- the default batch


def test_default_eval_batch_size():
    cpu = {"devices": 1, "platform": "cpu"}
    per_image = EVAL_BYTES_PER_INPUT_VALUE * 224 * 224 * 3
    expected = 2 ** int(np.log2(EVAL_ACTIVATION_BOUND // per_image))
    assert default_eval_batch_size((224, 224, 3), 1000, **cpu) == expected == 16
    assert expected * per_image <= EVAL_ACTIVATION_BOUND < 2 * expected * per_image
    assert default_eval_batch_size((32, 32, 3), 1000, **cpu) == 256  # at most 256
    assert default_eval_batch_size((224, 224, 3), 15, **cpu) == 15  # no more than the split
    assert default_eval_batch_size((32, 32, 3), 15, devices=8, platform="cpu") == 16
    assert default_eval_batch_size((224, 224, 3), 1000, devices=8, platform="cpu") == 16
    assert default_eval_batch_size((224, 224, 3), 1000, devices=32, platform="cpu") == 32
    assert default_eval_batch_size((32, 32, 3), 1000, devices=3, platform="cpu") == 255
    assert default_eval_batch_size((1024, 1024, 3), 1000, **cpu) == 1  # never 0
    for platform in ("gpu", "tpu"):
        assert default_eval_batch_size((224, 224, 3), 1000, 1, platform) == 256
        assert default_eval_batch_size((224, 224, 3), 15, 1, platform) == 15
        assert default_eval_batch_size((224, 224, 3), 15, 4, platform) == 16
    assert default_eval_batch_size((2, 2, 1), 3) % jax.device_count() == 0


# ---------------------------------------------------------------- 8 devices

EIGHT_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax
    from parity_tests.test_eval_cost import Linear, _data, _variables
    from seres_jax.data import eval_batch_sizes, splits_from_arrays
    from seres_jax.train import evaluate_variables

    data, rows = _data(int(sys.argv[1])), []
    result = evaluate_variables(Linear(), _variables(), splits_from_arrays(data),
                                int(sys.argv[2]), on_batch=rows.append)
    print(json.dumps({"devices": jax.device_count(), "rows": rows, **result}))
    """
)


def test_eight_devices_pad_to_a_device_multiple_and_agree_with_one():
    """23 images in batches of 16 on 8 virtual devices: the last batch is 8 rows (7 and one of
    padding), and the metrics are the unpadded split's, as on one device."""
    eight = run_json_script(EIGHT_DEVICES, "23", "16", devices=8, timeout=300)
    assert eight["devices"] == 8 and eight["rows"] == [16, 8]
    data, variables = _data(23), _variables()
    one = evaluate_variables(Linear(), variables, splits_from_arrays(data), 16,
                             mesh=make_mesh(jax.devices()[:1]))  # fmt: skip
    _assert_metrics(eight, _reference(data, variables))
    for key in ("count", "acc", "acc5"):
        assert eight[key] == one[key]
    assert eight["loss"] == pytest.approx(one["loss"], rel=1e-6)


# ---------------------------------------------------------------- slow: the real models


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), [("seresnet_tiny", 32), ("seresnet50", 224)])
def test_the_default_batch_keeps_activations_within_the_bound(arch, size):
    """XLA's memory analysis of the compiled eval step at the default CPU batch: its temporary
    buffers (the activations) stay within ``EVAL_ACTIVATION_BOUND``, and per image within
    the estimate the rule uses."""
    from seres_jax.registry import build_flax
    from seres_jax.train import init_variables

    model = build_flax(arch)
    shape = (size, size, 3)
    batch = default_eval_batch_size(shape, 10_000, devices=1, platform="cpu")
    mesh = make_mesh(jax.devices("cpu")[:1])
    steps = compile_steps(mesh)
    variables = init_variables(model, shape, 0)
    state = jax.device_put(TrainState.create(model.apply, variables, optax.identity()),
                           steps.replicated)  # fmt: skip
    specs = [jax.ShapeDtypeStruct(s, d, sharding=steps.batch)
             for s, d in (((batch, *shape), np.float32), ((batch,), np.int32),
                          ((batch,), np.float32))]  # fmt: skip
    compiled = steps.eval.lower(state, *specs).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    print(f"{arch}@{size}: batch {batch}, activations {temp / 2**20:.1f} MiB, "
          f"{temp / batch / 2**20:.2f} MiB per image")  # fmt: skip
    assert temp <= EVAL_ACTIVATION_BOUND
    assert temp / batch <= EVAL_BYTES_PER_INPUT_VALUE * size * size * 3


@pytest.mark.slow
def test_seres_eval_of_a_small_folder_runs_its_own_size(tmp_path, capsys):
    """``seres eval`` on 15 photographs (a reduced network): one batch of 15 by default, the
    steady images/s and the compilation apart in the output and the JSON; ``--torch`` on the
    same unpadded batch agrees."""
    pytest.importorskip("torch")
    from seres_cli.main import main
    from seres_jax.convert import flax_to_state_dict
    from seres_jax.formats import save_state_dict
    from seres_jax.registry import build_flax
    from seres_jax.train import init_variables

    from .photos import make_image_folder

    folder = make_image_folder(tmp_path / "photos", classes=3, per_class=1, val_per_class=5)
    arch = "seresnet18:num_classes=3,channels=8-16-32-64,layers=1-1-1-1"
    weights = tmp_path / "model.safetensors"
    variables = init_variables(build_flax(arch), (32, 32, 3), 0)
    save_state_dict(flax_to_state_dict(variables), weights)
    report = tmp_path / "eval.json"
    argv = ["eval", str(weights), "--arch", arch, "--dataset", "imagefolder", "--data-dir",
            str(folder), "--image-size", "32", "--json", str(report), "--no-progress",
            "--torch"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "images/s in batches of 15, after" in out and "s compiling" in out, out
    result = json.loads(report.read_text())
    assert result["batch_size"] == 15 and result["jax"]["count"] == 15
    assert result["jax"]["compile_s"] > 0 and result["jax"]["images_per_s"] > 0
    assert result["torch"]["count"] == 15 and result["torch"]["agreement"] == 1.0
    assert result["torch"]["jax_top1"] == pytest.approx(result["jax"]["acc"])


# ---------------------------------------------------------------- the benchmark's measurement


def test_the_benchmark_reads_wall_time_and_peak_memory(monkeypatch, tmp_path):
    """``eval_cost.timed`` reports a child's exit status, wall time and peak RSS, through
    ``/usr/bin/time -v`` and without it (``wait4``); the table shows before and after."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from seres_bench import eval_cost

    argv = [sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(0.2)"]
    time_binary = eval_cost.TIME
    readers = [time_binary, str(tmp_path / "absent")]
    if not Path(eval_cost.TIME).exists():
        readers = readers[1:]
    for reader in readers:
        monkeypatch.setattr(eval_cost, "TIME", reader)
        result = eval_cost.timed(argv, {})
        assert result["status"] == 0 and result["wall_s"] >= 0.2
        assert result["peak_rss_mib"] > 64
        if reader == time_binary:  # time's own child: not this (large) process's peak
            assert result["peak_rss_mib"] < 1024
    assert eval_cost.timed([sys.executable, "-c", "raise SystemExit(3)"], {})["status"] == 3
    assert eval_cost._clock_s("1:02:03.5") == 3723.5 and eval_cost._clock_s("0:07.25") == 7.25
    case = eval_cost.Case(15, None, False)
    jax_result = {"images_per_s": 10.6, "compile_s": 2.2}
    after = {**dataclasses.asdict(case), "name": case.name, "status": 0, "wall_s": 4.6,
             "peak_rss_mib": 892.0, "report": {"batch_size": 15, "jax": jax_result}}  # fmt: skip
    before = {**after, "wall_s": 21.3, "peak_rss_mib": 4815.0,
              "report": {"jax": {"images_per_s": 0.8}}}  # fmt: skip
    assert eval_cost.markdown([before], [after]).splitlines()[-1] == (
        "| 15 | default | no | 21.3 s, 4.70 GiB, 0.8 img/s | 4.6 s, 0.87 GiB, 10.6 img/s "
        "(compile 2.2 s, batch 15) |"
    )
