"""``seres export --format stablehlo`` (``seres_jax.serving``): the artifact deserialised in a
fresh process that imports neither seres nor flax (JAX and NumPy only) gives the seres model's
logits within the fp32 gate for batches of 1, 7 and 32 preprocessed photographs; its
``model.json`` holds the run's architecture, input shape, validation preprocessing and classes
(read back by ``load_artifact``); the loader refuses a batch of another shape naming the one it
takes; a platform JAX cannot lower for is left out with a note (the CPU cannot be); a failed
check writes nothing; ``--force`` replaces an artifact whole and nothing else; each refusal is
one error line with nothing written. Sources: a work directory, a checkpoint file, a timm
directory, a digits run (no image preprocessing).

Slow: a reduced seresnet50 through the same fresh process.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from parity_tests.helpers import (
    one_error_line,
    reduced_arguments,
    run_json_script,
    run_record,
    snapshot,
)
from parity_tests.photos import CLASS_NAMES, make_image_folder, photo
from seres_cli.main import main
from seres_jax.data import DataConfig, DataError, eval_crop, normalize
from seres_jax.parity import FP32_TOL, relative_error
from seres_jax.registry import build_flax, format_arch, random_variables
from seres_jax.serving import (
    DEFAULT_PLATFORMS,
    MODEL_FILE,
    PLATFORMS,
    SPEC_FILE,
    ArtifactSpec,
    ServingError,
    export_inference,
    export_stablehlo,
    inference_function,
    load_artifact,
)
from seres_jax.train import TrainConfig

MODEL = "seresnet_tiny:base=8,n=1"
ARCH = f"{MODEL},num_classes=3"
SIZE = 32
BATCHES = (1, 7, 32)

# Run in a fresh interpreter: artifacts with JAX and NumPy alone. For each job (an artifact, a
# .npy of preprocessed images, batch sizes) it saves the logits of the first n images for each n
# and reports the module's platforms and shapes; then the seres and flax modules it finds
# imported (none).
FRESH = """
import json, sys
from pathlib import Path
import numpy as np
from jax import export

reports = []
for job in json.loads(Path(sys.argv[1]).read_text()):
    out, images = Path(job["artifact"]), np.load(job["images"])
    spec = json.loads((out / "model.json").read_text())
    model = export.deserialize(bytearray((out / "model.stablehlo").read_bytes()))
    np.savez(job["logits"], **{str(n): np.asarray(model.call(images[:n])) for n in job["batches"]})
    reports.append({"platforms": list(model.platforms), "in": str(model.in_avals[0]),
                    "out": str(model.out_avals[0]), "spec_input": spec["input"]["shape"]})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("seres", "seres_jax", "flax"))
print(json.dumps({"imported": loaded, "reports": reports}))
"""


def _quiet_main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def laid_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run/``: a work directory as ``seres train`` lays one out (``config.json``, an orbax
    checkpoint) for the small seresnet_tiny on the 3-class photo folder at 32 pixels;
    ``model.safetensors``: the same weights as a checkpoint file."""
    from seres_jax.convert import flax_to_state_dict
    from seres_jax.formats import save_state_dict, save_variables

    root = tmp_path_factory.mktemp("serving")
    folder = make_image_folder(root / "photos", classes=3, per_class=1, val_per_class=1)
    run = root / "run"
    run.mkdir()
    config = TrainConfig(model=MODEL, dataset="imagefolder", data_dir=str(folder), epochs=1,
                         batch_size=8, image_size=SIZE)  # fmt: skip
    (run / "config.json").write_text(json.dumps(run_record(config, ARCH), indent=2))
    variables = random_variables(ARCH)
    save_variables(variables, run / "checkpoints")
    save_state_dict(flax_to_state_dict(variables), root / "model.safetensors")
    return root


@pytest.fixture(scope="module")
def artifact(laid_out: Path) -> tuple[Path, str]:
    """The run exported by the command line (default platforms, checked); what it printed."""
    out = laid_out / "served"
    code, said = _quiet_main(["export", str(laid_out / "run"), str(out), "--format", "stablehlo"])
    assert code == 0
    return out, said


TIMM_HUB = Path(__file__).parent / "fixtures" / "timm_hub"
HUB_NAME = "hf-hub:timm/seresnet18_photos"


@pytest.fixture(scope="module")
def hub_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hf-hub:timm/seresnet18_photos`` (a reduced seresnet18 timm trained on 6 photo classes
    and saved itself, ``fixtures/record_timm_hub.py``) exported from a hub cache on disk,
    offline."""
    from parity_tests.hub_cache import hub_env, make_hub_cache

    root = tmp_path_factory.mktemp("hub")
    saved = TIMM_HUB / "seresnet18_photos"
    files = {name: saved / name for name in ("config.json", "model.safetensors")}
    make_hub_cache(root / "cache", "timm/seresnet18_photos", files)
    out = root / "served"
    with pytest.MonkeyPatch.context() as monkeypatch:
        hub_env(monkeypatch, root / "cache")
        argv = ["export", HUB_NAME, str(out), "--format", "stablehlo", "--no-check"]
        assert _quiet_main(argv)[0] == 0
    return out


@pytest.fixture(scope="module")
def fresh(
    artifact: tuple[Path, str], hub_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Both artifacts run in one fresh process: the run's on 32 photographs preprocessed as its
    ``model.json`` says (batches of 1, 7, 32), timm's on the 8 inputs timm preprocessed itself
    (batches of 1, 8)."""
    out, _ = artifact
    images = _preprocessed(json.loads((out / SPEC_FILE).read_text()), max(BATCHES))
    timm_inputs = np.load(TIMM_HUB / "seresnet18_photos_inputs.npz")["inputs"].transpose(0, 2, 3, 1)
    jobs = [(out, images, BATCHES), (hub_artifact, timm_inputs, (1, len(timm_inputs)))]
    (run, hub), report = _fresh_logits(jobs, tmp_path_factory.mktemp("fresh"))
    return {"images": images, "run": run, "hub": hub, "report": report}


def _preprocessed(spec: dict[str, Any], count: int, seed: int = 0) -> np.ndarray:
    """``count`` crops of the two photographs, preprocessed as ``model.json`` says."""
    pre = spec["preprocessing"]
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        img = photo(("china.jpg", "flower.jpg")[i % 2])
        w, h = rng.integers(60, 300, 2)
        x, y = rng.integers(0, img.width - w), rng.integers(0, img.height - h)
        pixels = eval_crop(img.crop((x, y, x + w, y + h)), pre["input_size"], pre["crop_pct"],
                           pre["interpolation"])  # fmt: skip
        images.append(normalize(pixels, pre["mean"], pre["std"]))
    return np.stack(images)


def _fresh_logits(
    jobs: list[tuple[Path, np.ndarray, tuple[int, ...]]], tmp_path: Path
) -> tuple[list[dict[int, np.ndarray]], dict[str, Any]]:
    """Each ``(artifact, images, batch sizes)`` run in one fresh JAX-and-NumPy process: the
    logits of the first n images for each n, per job, and the process's report."""
    listed = []
    for i, (out, images, batches) in enumerate(jobs):
        np.save(tmp_path / f"images{i}.npy", images)
        listed.append({
            "artifact": str(out), "images": str(tmp_path / f"images{i}.npy"),
            "logits": str(tmp_path / f"logits{i}.npz"), "batches": list(batches),
        })  # fmt: skip
    (tmp_path / "jobs.json").write_text(json.dumps(listed))
    report = run_json_script(FRESH, str(tmp_path / "jobs.json"), devices=1, timeout=300)
    logits = []
    for job in listed:
        with np.load(job["logits"]) as saved:
            logits.append({int(n): saved[n] for n in saved.files})
    return logits, report


def _assert_model_logits(arch: str, variables: Any, images: np.ndarray, got: Any) -> float:
    """The seres model's logits on the first 1, 7 and 32 ``images``, each batch compiled at its
    own size as the artifact's is (XLA picks its convolution algorithms per shape), against the
    artifact's; returns the worst relative error."""
    model = build_flax(arch)
    apply = jax.jit(lambda x: model.apply(variables, x, train=False))
    errors = {n: relative_error(got[n], np.asarray(apply(images[:n]))) for n in BATCHES}
    print(f"{arch}: artifact in a fresh process against seres, relative logit error {errors}")
    assert all(e <= FP32_TOL.output for e in errors.values()), errors
    return max(errors.values())


def test_the_artifact_in_a_fresh_process_gives_the_models_logits(laid_out, artifact, fresh):
    out, said = artifact
    assert said.startswith(f"{laid_out / 'run'} -> {out} (stablehlo): {ARCH}, the trained")
    assert "float32[batch, 32, 32, 3] -> logits[batch, 3], for cpu, cuda, tpu" in said
    assert "checked on the CPU: largest logit difference" in said
    # JAX and NumPy alone: nothing of seres or flax in the process.
    assert fresh["report"]["imported"] == []
    assert fresh["report"]["reports"][0] == {
        "platforms": ["cpu", "cuda", "tpu"], "in": "float32[batch,32,32,3]",
        "out": "float32[batch,3]", "spec_input": ["batch", 32, 32, 3],
    }  # fmt: skip
    got, images = fresh["run"], fresh["images"]
    assert {n: v.shape for n, v in got.items()} == {n: (n, 3) for n in BATCHES}
    _assert_model_logits(ARCH, random_variables(ARCH), images, got)
    # seres' loader runs the same module.
    loaded = load_artifact(out)
    assert relative_error(loaded(images[:7]), got[7]) <= 1e-6


def test_timms_model_from_the_hub_serves_timms_logits(hub_artifact, fresh):
    recorded = json.loads((TIMM_HUB / "seresnet18_photos.json").read_text())
    data = json.loads((hub_artifact / SPEC_FILE).read_text())
    assert data["arch"] == "seresnet18:num_classes=6,channels=8-16-32-64"
    assert data["class_names"] == list(CLASS_NAMES) and data["notes"] == []
    assert data["source"] == HUB_NAME and data["input"]["shape"] == ["batch", 32, 32, 3]
    pre = data["preprocessing"]
    timm_eval = recorded["eval"]["config"]  # timm's resolve_data_config for the weights
    keys = ("interpolation", "crop_pct", "crop_mode", "mean", "std")
    assert [pre[k] for k in keys] == [timm_eval[k] for k in keys]
    assert pre["input_size"] == timm_eval["input_size"][1]
    # timm's own logits on the images timm preprocessed, from the artifact in a process with
    # neither seres nor flax: relative to each image's largest logit, as test_hub measures.
    expected = np.asarray(recorded["eval"]["logits"], np.float32)
    for n, logits in fresh["hub"].items():
        error = np.abs(logits - expected[:n]).max(1) / np.abs(expected[:n]).max(1)
        print(f"artifact of {HUB_NAME}, batch {n}: worst relative logit error against timm "
              f"{error.max():.2e}")  # fmt: skip
        assert error.max() < 1e-4
        assert (logits.argmax(1) == recorded["eval"]["predictions"][:n]).all()


def test_model_json_holds_what_a_server_needs(laid_out, artifact):
    out, _ = artifact
    data = json.loads((out / SPEC_FILE).read_text())
    config = TrainConfig.from_record(json.loads((laid_out / "run" / "config.json").read_text())
                                     ["config"])  # fmt: skip
    options = config.data_options()
    val = options.val_config or options.data_config
    assert (val.input_size, val.crop_pct, val.interpolation) == (32, 0.875, "bicubic")
    assert data["preprocessing"] == {
        "input_size": 32, "resize": 36, "resize_mode": "shorter side", "interpolation": "bicubic",
        "crop_pct": 0.875, "crop_mode": "center", "pixel_scale": 255, "mean": list(val.mean),
        "std": list(val.std), "color": "RGB",
    }  # fmt: skip
    assert data["class_names"] == list(CLASS_NAMES[:3])
    assert data["input"] == {"layout": "NHWC", "shape": ["batch", 32, 32, 3], "dtype": "float32"}
    assert data["output"] == {"kind": "logits", "shape": ["batch", 3], "dtype": "float32"}
    assert (data["format"], data["format_version"], data["model_file"]) == (
        "seres-stablehlo", 1, MODEL_FILE)  # fmt: skip
    assert (data["arch"], data["num_classes"], data["weights"]) == (ARCH, 3, "trained")
    assert data["platforms"] == list(DEFAULT_PLATFORMS) == ["cpu", "cuda", "tpu"]
    assert data["versions"]["jax"] == jax.__version__
    assert data["check"]["max_relative_error"] <= FP32_TOL.output
    assert data["name"] == "served" and data["notes"] == []
    assert sorted(p.name for p in out.iterdir()) == [SPEC_FILE, MODEL_FILE]
    # Read back whole, and the preprocessing as the DataConfig it came from.
    spec = load_artifact(out).spec
    assert spec.to_json() == data
    assert spec.preprocessing == val
    assert ArtifactSpec.from_json(data) == spec


def test_the_loader_names_the_shape_it_takes(artifact):
    out, _ = artifact
    model = load_artifact(out)
    for bad in (np.zeros((2, 48, 48, 3), np.float32), np.zeros((32, 32, 3), np.float32),
                np.zeros((0, 32, 32, 3), np.float32)):  # fmt: skip
        with pytest.raises(DataError, match=r"takes preprocessed float32 NHWC batches of shape "
                           r"\(N, 32, 32, 3\), N >= 1; got"):  # fmt: skip
            model(bad)
    with pytest.raises(DataError, match="got uint8"):
        model(np.zeros((2, 32, 32, 3), np.uint8))
    # Not an artifact: each said in one line.
    broken = out.parent / "broken"
    shutil.copytree(out, broken)
    (broken / MODEL_FILE).write_bytes(b"\0" * 64)
    with pytest.raises(ServingError, match=r"not a jax\.export artifact"):
        load_artifact(broken)
    (broken / SPEC_FILE).write_text(json.dumps({"format": "seres-stablehlo", "format_version": 9}))
    with pytest.raises(ServingError, match="format_version 9 is not one this seres reads"):
        load_artifact(broken)
    (broken / MODEL_FILE).unlink()
    with pytest.raises(ServingError, match=r"has no model\.stablehlo"):
        load_artifact(broken)


def test_a_platform_jax_cannot_lower_is_left_out(monkeypatch):
    fn = inference_function(ARCH, random_variables(ARCH))
    lower = jax.export.export

    def no_tpu(fun: Any, *, platforms: Any, **kwargs: Any) -> Any:
        if "tpu" in platforms:
            raise NotImplementedError("no lowering rule for tpu\nmore")
        return lower(fun, platforms=platforms, **kwargs)

    monkeypatch.setattr(jax.export, "export", no_tpu)
    exported, notes = export_inference(fn, (SIZE, SIZE, 3), ("tpu", "cuda"))
    assert exported.platforms == ("cpu", "cuda")
    assert notes == (f"tpu left out: JAX {jax.__version__} cannot lower the model for it here "
                     "(NotImplementedError: no lowering rule for tpu)",)  # fmt: skip
    monkeypatch.setattr(jax.export, "export", lambda *a, **k: 1 / 0)
    with pytest.raises(ServingError, match="cannot export the model for the CPU: "
                       "ZeroDivisionError"):  # fmt: skip
        export_inference(fn, (SIZE, SIZE, 3), ("cpu",))
    with pytest.raises(ServingError, match="unknown platform 'gpu'; valid names: cpu, cuda, "
                       "rocm, tpu"):  # fmt: skip
        export_inference(fn, (SIZE, SIZE, 3), ("gpu",))


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    import seres_jax.serving as serving

    monkeypatch.setattr(serving, "check_serialized", lambda *a, **k: 3e-3)
    with pytest.raises(ServingError, match=r"differ from .* by 0\.003 .* nothing written"):
        export_stablehlo(random_variables(ARCH), ARCH, tmp_path / "new" / "out",
                         preprocessing=DataConfig(SIZE), platforms=("cpu",))  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_artifact_whole(laid_out, artifact, tmp_path):
    out, _ = artifact
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    argv = ["export", str(laid_out / "run"), str(copy), "--format", "stablehlo", "--no-check",
            "--platforms", "cpu", "--image-size", "40", "--force"]  # fmt: skip
    code, said = _quiet_main(argv)
    assert code == 0 and said.endswith("not checked (--no-check)\n")
    data = json.loads((copy / SPEC_FILE).read_text())
    assert data["input"]["shape"] == ["batch", 40, 40, 3] and data["platforms"] == ["cpu"]
    assert data["preprocessing"]["resize"] == 45 and data["check"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no staging left behind
    assert sorted(p.name for p in copy.iterdir()) == [SPEC_FILE, MODEL_FILE]


def test_refusals_are_one_error_line_and_write_nothing(laid_out, artifact, tmp_path, capsys):
    run, src = laid_out / "run", laid_out / "model.safetensors"
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    empty = tmp_path / "empty"
    empty.mkdir()
    timm_dir = tmp_path / "timm"
    timm_dir.mkdir()
    (timm_dir / "config.json").write_text(json.dumps({"architecture": "seresnet18"}))
    stablehlo = ["--format", "stablehlo"]
    cases = {
        "empty exists; pass --force to replace it": [str(run), str(empty)],
        "holds files other than a StableHLO artifact's (keep.txt); refusing to replace it":
            [str(run), str(user), "--force"],
        "argument --platforms: unknown platform 'gpu'; valid names: cpu, cuda, rocm, tpu":
            [str(run), str(tmp_path / "o1"), "--platforms", "cpu,gpu"],
        "no such file or directory": [str(tmp_path / "missing"), str(tmp_path / "o2")],
        "--arch is needed": [str(src), str(tmp_path / "o3")],
        "lies in the source": [str(run), str(run / "checkpoints" / "x")],
        "holds the source": [str(run), str(run), "--force"],
        "names its architecture in its config.json": [str(timm_dir), str(tmp_path / "o4"),
                                                      "--arch", ARCH],
    }  # fmt: skip
    before, run_before = snapshot(tmp_path), snapshot(laid_out)
    for said, argv in cases.items():
        line = one_error_line(capsys, main(["export", *argv, *stablehlo]))
        assert said in line, (said, line)
    # The stablehlo options with timm's format.
    for flags in (["--platforms", "cpu"], ["--image-size", "64"], ["--no-check"]):
        line = one_error_line(capsys, main(["export", str(run), str(tmp_path / "o5"), *flags]))
        assert f"{flags[0]} is for --format stablehlo" in line, line
    assert snapshot(tmp_path) == before and snapshot(laid_out) == run_before


def test_the_command_lines_platforms_are_the_librarys():
    from seres_cli.export import _serving_names

    assert _serving_names() == (PLATFORMS, DEFAULT_PLATFORMS)


def test_other_sources_a_checkpoint_a_timm_directory_a_digits_run(laid_out, tmp_path):
    from seres_jax.export import export_timm
    from seres_jax.formats import save_variables

    # A checkpoint file: the architecture named, the preprocessing of its weights (timm's
    # defaults for seresnet_tiny) at the size asked for, no classes.
    out = tmp_path / "file"
    argv = ["export", str(laid_out / "model.safetensors"), str(out), "--format", "stablehlo",
            "--arch", ARCH, "--platforms", "cpu", "--no-check", "--image-size", "48"]  # fmt: skip
    assert _quiet_main(argv)[0] == 0
    data = json.loads((out / SPEC_FILE).read_text())
    assert data["preprocessing"]["input_size"] == 48 and data["class_names"] is None
    assert data["preprocessing"]["crop_pct"] == 0.875
    assert data["notes"] == ["class_names: null: a checkpoint outside a run names no classes"]
    # A timm directory: its architecture, label names and preprocessing at its test size.
    timm_arch = "seresnet18:channels=8-16-32-64,layers=1-1-1-1,num_classes=3"
    timm_dir = tmp_path / "timm"
    export_timm(random_variables(timm_arch), timm_arch, timm_dir,
                data_config=DataConfig(32, 0.9, "bilinear", (0.5,) * 3, (0.25,) * 3),
                val_config=DataConfig(40, 1.0, "bilinear", (0.5,) * 3, (0.25,) * 3),
                label_names=["a", "b", "c"])  # fmt: skip
    out = tmp_path / "from_timm"
    argv = ["export", str(timm_dir), str(out), "--format", "stablehlo", "--platforms", "cpu",
            "--no-check"]  # fmt: skip
    assert _quiet_main(argv)[0] == 0
    data = json.loads((out / SPEC_FILE).read_text())
    assert data["arch"] == "seresnet18:num_classes=3,layers=1-1-1-1,channels=8-16-32-64"
    assert data["class_names"] == ["a", "b", "c"]
    assert data["input"]["shape"] == ["batch", 40, 40, 3]
    assert (data["preprocessing"]["crop_pct"], data["preprocessing"]["mean"]) == (1.0, [0.5] * 3)
    # A digits run: arrays of the run's loader, no image preprocessing; 8x8 grey inputs.
    digits_arch = "seresnet_tiny:base=8,n=1,in_ch=1,num_classes=10"
    run = tmp_path / "digits"
    run.mkdir()
    config = TrainConfig(model="seresnet_tiny:base=8,n=1", dataset="digits")
    (run / "config.json").write_text(json.dumps(run_record(config, digits_arch)))
    save_variables(random_variables(digits_arch), run / "checkpoints")
    out = tmp_path / "from_digits"
    argv = ["export", str(run), str(out), "--format", "stablehlo", "--platforms", "cpu",
            "--no-check"]  # fmt: skip
    assert _quiet_main(argv)[0] == 0
    data = json.loads((out / SPEC_FILE).read_text())
    assert data["preprocessing"] is None and data["input"]["shape"] == ["batch", 8, 8, 1]
    assert data["notes"] == ["preprocessing: null: the digits run's inputs are arrays its "
                             "loader normalises, not image files"]  # fmt: skip
    assert data["class_names"] == list("0123456789")


@pytest.mark.slow
def test_a_reduced_seresnet50_in_a_fresh_process(tmp_path):
    arch = format_arch("seresnet50", reduced_arguments("seresnet50"))
    variables = random_variables(arch, seed=1)
    out = tmp_path / "r50"
    report = export_stablehlo(variables, arch, out, preprocessing=DataConfig(64))
    assert report.check_error is not None and report.check_error <= FP32_TOL.output
    spec = json.loads((out / SPEC_FILE).read_text())
    images = _preprocessed(spec, max(BATCHES), seed=1)
    (got,), report = _fresh_logits([(out, images, BATCHES)], tmp_path)
    assert report["imported"] == [] and report["reports"][0]["platforms"] == ["cpu", "cuda", "tpu"]
    _assert_model_logits(arch, variables, images, got)
