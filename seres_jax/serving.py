"""A model for serving without seres: the inference function (a preprocessed NHWC float32 batch
-> logits) serialised with ``jax.export``, for any batch size and the platforms named.

**The artifact** is a directory of two files:

* ``model.stablehlo``: ``jax.export.Exported.serialize()``'s bytes: the StableHLO module with the
  weights in it as constants, its input ``float32[batch, H, W, C]`` (``batch`` a symbolic
  dimension: any size >= 1 runs, each new size compiled once), its output
  ``float32[batch, num_classes]``, the logits; lowered for each of ``platforms`` (``cpu``
  always; by default ``cuda`` and ``tpu`` too, which JAX lowers on a CPU-only machine).
* ``model.json`` (``ArtifactSpec``): what a server needs beside it: ``input`` (``layout``
  ``NHWC``, ``shape`` ``["batch", H, W, C]``, ``dtype`` ``float32``), ``output``,
  ``symbolic_dims``, ``num_classes``, ``class_names`` (``null`` where the source names none),
  ``preprocessing`` (the evaluation transform of the run's record, else of the pretrained
  config: resize the shorter side to ``resize`` = floor(input_size / crop_pct) with
  ``interpolation``, centre-crop ``input_size``, ``(pixels / 255 - mean) / std`` per RGB channel;
  ``null`` for a run on arrays that are no image files: digits, synthetic), ``platforms``,
  ``matmul_precision`` (the one baked in: ``default`` lets a GPU use TF32 and a TPU bfloat16
  passes), ``versions`` (seres, jax, jaxlib, jax.export's calling convention), ``check`` (the
  largest relative logit error of the serialised bytes against the seres model, measured on the
  CPU before anything was written), the source and its weights (``EMA`` or ``trained``).

Consuming it needs JAX and NumPy only (no seres, no flax)::

    from jax import export
    model = export.deserialize(bytearray(open("OUT/model.stablehlo", "rb").read()))
    logits = model.call(images)  # float32 (N, H, W, C), preprocessed as model.json says

``load_artifact`` does the same in seres, checking each batch's shape and dtype first (one
``DataError`` naming the shape the artifact takes). ``jax.export`` guarantees that a JAX up to
six months newer than the writer's (``model.json``'s ``versions``) still runs it.

**Writing** (``write_artifact``): a new directory appears complete or not at all; an existing one
is refused unless ``force``, and then it is replaced in one step (``seres_jax.atomic``) only if
it holds nothing but an artifact's two files. Everything is lowered, serialised and checked
before anything is written. ``export_stablehlo`` exports Flax variables, ``export_source`` a
``seres train`` work directory (the EMA weights where the run kept one), a checkpoint file, or a
timm directory / ``hf-hub:`` name, resolved as ``seres export --format timm`` and ``seres eval``
resolve them. Imports no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from . import atomic
from .convert import check_variables
from .data.arrays import DataError
from .data.images import DataConfig
from .export import ExportError
from .registry import build_flax, model_config, variables_template

if TYPE_CHECKING:
    from .train import TrainConfig

__all__ = [
    "BATCH",
    "DEFAULT_PLATFORMS",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "PLATFORMS",
    "SPEC_FILE",
    "Artifact",
    "ArtifactSpec",
    "ServingError",
    "ServingReport",
    "check_artifact_dir",
    "check_platforms",
    "check_serialized",
    "export_inference",
    "export_source",
    "export_stablehlo",
    "inference_function",
    "load_artifact",
    "serialize",
    "write_artifact",
]

MODEL_FILE = "model.stablehlo"
"""The artifact's serialised program: ``jax.export.Exported.serialize()``'s bytes."""
SPEC_FILE = "model.json"
"""The artifact's description, ``ArtifactSpec`` as JSON."""
FORMAT = "seres-stablehlo"
"""The ``format`` a ``model.json`` declares; a reader refuses any other."""
FORMAT_VERSION = 1
"""The version of the artifact's layout written into ``model.json``; a reader takes any up to
its own and refuses a newer one."""
BATCH = "batch"
"""The name of the symbolic batch dimension, in the exported program and in ``model.json``."""
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
"""The ``jax.export`` platforms an artifact may be lowered for; ``cpu`` is always among them,
since the artifact is checked on the CPU before it is written."""
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
"""The platforms lowered for unless told otherwise (``seres export --platforms``)."""
# The bytes written are checked against the model on the CPU within the fp32 parity gate
# (seres_jax.parity.FP32_TOL.output); the same program on the same platform gives ~0.
CHECK_GATE, CHECK_IMAGES = 1e-5, 2
_MAX_SPEC_BYTES = 16 << 20  # model.json: class names for a few hundred thousand classes


class ServingError(ExportError):
    """A model that cannot be exported for serving, an artifact that cannot be read, or a
    destination refused; the message says why."""


# --------------------------------------------------------------------------- the function


def inference_function(arch: str, variables: Any) -> Callable[[jax.Array], jax.Array]:
    """``arch``'s network in evaluation mode with ``variables`` (exactly ``arch``'s, else a
    ``ConversionError`` listing every difference) as float32 constants: a preprocessed
    float32 NHWC batch -> float32 logits ``(batch, num_classes)``."""
    check_variables(variables, variables_template(arch))
    model = build_flax(arch)
    constants = jax.tree.map(_float32, jax.device_get(variables))

    def logits(images: jax.Array) -> jax.Array:
        out: Any = model.apply(constants, images, train=False)
        return jnp.asarray(out, jnp.float32)

    return logits


def _float32(value: Any) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def check_platforms(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as ``jax.export`` takes them: known (``PLATFORMS``, else ``ServingError``
    naming the unknown one), each once, ``cpu`` first and always there."""
    unknown = [name for name in names if name not in PLATFORMS]
    if unknown:
        raise ServingError(f"unknown platform {unknown[0]!r}; valid names: {', '.join(PLATFORMS)}")
    return tuple(dict.fromkeys(["cpu", *names]))


def export_inference(
    fn: Callable[[jax.Array], jax.Array],
    input_shape: tuple[int, int, int],
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> tuple[jax.export.Exported, tuple[str, ...]]:
    """``jax.export`` of ``fn`` over float32 ``(batch, *input_shape)`` batches, ``batch``
    symbolic, lowered for ``platforms`` (``check_platforms``). A platform JAX cannot lower
    ``fn`` for here is left out, with a note saying why (the CPU cannot be: ``ServingError``).
    Returns the export and the notes."""
    platforms = check_platforms(platforms)
    (batch,) = jax.export.symbolic_shape(BATCH)
    spec = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    jitted = jax.jit(fn)
    try:
        return jax.export.export(jitted, platforms=platforms)(spec), ()
    except Exception:  # which platform's lowering failed is found below
        pass
    failures: dict[str, str] = {}
    for platform in platforms:
        try:
            jax.export.export(jitted, platforms=(platform,))(spec)
        except Exception as err:  # any lowering failure leaves the platform out
            failures[platform] = _first_line(err)
    if "cpu" in failures:
        raise ServingError(f"JAX cannot export the model for the CPU: {failures['cpu']}")
    kept = tuple(p for p in platforms if p not in failures)
    notes = tuple(f"{p} left out: JAX {jax.__version__} cannot lower the model for it here "
                  f"({why})" for p, why in failures.items())  # fmt: skip
    return jax.export.export(jitted, platforms=kept)(spec), notes


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def serialize(exported: jax.export.Exported) -> bytes:
    """``exported.serialize()``; ``ServingError`` where JAX's serialiser is missing."""
    try:
        return bytes(exported.serialize())
    except ImportError as err:  # jax.export serialises with the flatbuffers package
        raise ServingError(
            f"jax.export cannot serialise here: {err} (pip install flatbuffers)"
        ) from None


def check_serialized(
    blob: bytes,
    reference: Callable[[jax.Array], jax.Array],
    input_shape: tuple[int, int, int],
    *,
    batch: int = CHECK_IMAGES,
    seed: int = 0,
) -> float:
    """The largest relative error (``seres_jax.parity.relative_error``) of the artifact
    ``blob`` deserialised against ``reference`` on ``batch`` seeded standard-normal images
    (preprocessed images are about that), both on the CPU (the platform always exported)."""
    from .parity import relative_error

    exported = jax.export.deserialize(bytearray(blob))
    images = np.random.default_rng(seed).standard_normal((batch, *input_shape), np.float32)
    with jax.default_device(jax.devices("cpu")[0]):
        got = np.asarray(exported.call(images))
        want = np.asarray(jax.jit(reference)(images))
    return relative_error(got, want)


# --------------------------------------------------------------------------- model.json


@dataclass(frozen=True)
class ArtifactSpec:
    """``model.json``: the artifact's input (``input_shape``: H, W, C of the float32 NHWC
    batch), classes, preprocessing (``None``: the source's inputs are no image files), the
    platforms it was lowered for and what made it. ``to_json``/``from_json`` convert."""

    arch: str
    input_shape: tuple[int, int, int]
    num_classes: int
    platforms: tuple[str, ...]
    preprocessing: DataConfig | None = None
    class_names: tuple[str, ...] | None = None
    weights: str = "trained"
    source: str | None = None
    name: str | None = None
    license: str | None = None
    matmul_precision: str = "default"
    versions: Mapping[str, Any] = field(default_factory=dict)
    check: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``model.json``'s content (plain JSON types), as ``from_json`` reads it back."""
        height, width, channels = self.input_shape
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_file": MODEL_FILE,
            "name": self.name,
            "arch": self.arch,
            "input": {
                "layout": "NHWC",
                "shape": [BATCH, height, width, channels],
                "dtype": "float32",
            },
            "output": {"kind": "logits", "shape": [BATCH, self.num_classes], "dtype": "float32"},
            "symbolic_dims": {BATCH: "images per call: any integer >= 1"},
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "preprocessing": _preprocessing_json(self.preprocessing, channels),
            "platforms": list(self.platforms),
            "matmul_precision": self.matmul_precision,
            "weights": self.weights,
            "source": self.source,
            "license": self.license,
            "versions": dict(self.versions),
            "check": dict(self.check) if self.check is not None else None,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Any, where: str = SPEC_FILE) -> ArtifactSpec:
        """The spec a ``model.json`` holds; ``ServingError`` naming the first bad field."""

        def fail(what: str) -> ServingError:
            return ServingError(f"{where}: {what}; not a {FORMAT} artifact's {SPEC_FILE}")

        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise fail('no "format": "seres-stablehlo"')
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise fail(f"format_version {version!r} is not one this seres reads "
                       f"(<= {FORMAT_VERSION})")  # fmt: skip
        given = data.get("input")
        shape = given.get("shape") if isinstance(given, Mapping) else None
        if not (isinstance(shape, list) and len(shape) == 4 and shape[0] == BATCH
                and all(isinstance(s, int) and s > 0 for s in shape[1:])):  # fmt: skip
            raise fail(f'input.shape {shape!r} is not ["{BATCH}", H, W, C]')
        classes = data.get("num_classes")
        if not isinstance(classes, int) or classes < 1:
            raise fail(f"num_classes {classes!r} is not a positive integer")
        names = data.get("class_names")
        if names is not None and not (isinstance(names, list) and len(names) == classes
                                      and all(isinstance(n, str) for n in names)):  # fmt: skip
            raise fail(f"class_names is not a list of {classes} strings")
        platforms = data.get("platforms")
        if not (isinstance(platforms, list) and platforms
                and all(p in PLATFORMS for p in platforms)):  # fmt: skip
            raise fail(f"platforms {platforms!r} are not among {', '.join(PLATFORMS)}")
        try:
            preprocessing = _preprocessing_from_json(data.get("preprocessing"))
        except (DataError, KeyError, TypeError, ValueError) as err:
            raise fail(f"preprocessing: {err}") from None
        text = {k: data.get(k) for k in ("name", "source", "license")}
        versions, check, notes = data.get("versions"), data.get("check"), data.get("notes")
        return cls(
            arch=str(data.get("arch")), input_shape=(shape[1], shape[2], shape[3]),
            num_classes=classes, platforms=tuple(platforms), preprocessing=preprocessing,
            class_names=tuple(names) if names is not None else None,
            weights=str(data.get("weights")),
            source=text["source"] if isinstance(text["source"], str) else None,
            name=text["name"] if isinstance(text["name"], str) else None,
            license=text["license"] if isinstance(text["license"], str) else None,
            matmul_precision=str(data.get("matmul_precision")),
            versions=dict(versions) if isinstance(versions, Mapping) else {},
            check=dict(check) if isinstance(check, Mapping) else None,
            notes=tuple(map(str, notes)) if isinstance(notes, list) else (),
        )  # fmt: skip


def _preprocessing_json(config: DataConfig | None, channels: int) -> dict[str, Any] | None:
    """timm's eval transform in words a server can follow (and ``DataConfig`` reads back)."""
    if config is None:
        return None
    mean, std = list(config.mean), list(config.std)
    if channels != len(mean):  # timm's rule for a mean of the wrong length: one averaged value
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    return {
        "input_size": config.input_size,
        "resize": math.floor(config.input_size / config.crop_pct),
        "resize_mode": "shorter side",
        "interpolation": config.interpolation,
        "crop_pct": config.crop_pct,
        "crop_mode": "center",
        "pixel_scale": 255,
        "mean": mean,
        "std": std,
        "color": {1: "L", 3: "RGB"}.get(channels),  # PIL's mode names
    }


def _preprocessing_from_json(data: Any) -> DataConfig | None:
    if data is None:
        return None
    mean, std = data["mean"], data["std"]
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return DataConfig(int(data["input_size"]), float(data["crop_pct"]),
                      str(data["interpolation"]), tuple(mean), tuple(std))  # fmt: skip


# --------------------------------------------------------------------------- writing


def _why_not_artifact(path: Path) -> str | None:
    """Why the existing directory ``path`` is not one ``force`` may replace: it holds files
    other than an artifact's."""
    others = sorted(e.name for e in os.scandir(path) if e.name not in (MODEL_FILE, SPEC_FILE))
    if others:
        return f"holds files other than a StableHLO artifact's ({', '.join(others[:3])})"
    return None


def check_artifact_dir(
    out_dir: str | os.PathLike[str],
    force: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Raise ``ServingError`` unless ``write_artifact`` would write ``out_dir`` with ``force``:
    lets a caller refuse before it reads or lowers anything. ``protect``: paths (the source)
    that ``out_dir`` must not be, lie in, or hold."""
    out = Path(out_dir)
    where = out.resolve()
    for source in (Path(p).resolve() for p in protect if os.path.lexists(p)):
        if where == source or source in where.parents:
            raise ServingError(f"{out} is or lies in the source {source}; refusing to write there")
        if where in source.parents:
            raise ServingError(f"{out} holds the source {source}; refusing to replace it")
    with _write_errors(out):
        atomic.check_destination(out, force=force, directory=True,
                                 replaceable=_why_not_artifact)  # fmt: skip


def write_artifact(
    blob: bytes,
    spec: ArtifactSpec,
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``blob`` (``serialize``'s bytes) and ``spec`` as the artifact directory
    ``out_dir`` (``check_artifact_dir``'s rules), atomically; returns ``out_dir``."""
    from .export import _removing_new_parents

    out = Path(out_dir)
    check_artifact_dir(out, force, protect)
    text = json.dumps(spec.to_json(), indent=2) + "\n"
    with (
        _write_errors(out),
        _removing_new_parents(out.parent),
        atomic.staged_path(out, force=force, directory=True, replaceable=_why_not_artifact) as tmp,
    ):
        tmp.mkdir()
        (tmp / MODEL_FILE).write_bytes(blob)
        (tmp / SPEC_FILE).write_text(text, encoding="utf-8")
    return out


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """Every refusal of a destination and every ``OSError`` as one ``ServingError``."""
    try:
        yield
    except atomic.DestinationError as err:
        raise ServingError(str(err)) from None
    except OSError as err:
        raise ServingError(f"cannot write {path}: {err.strerror or err}") from None


# --------------------------------------------------------------------------- exporting


@dataclass(frozen=True)
class ServingReport:
    """What ``export_stablehlo`` wrote: where, its ``spec``, the size of ``model.stablehlo``,
    the check's error (``None``: not checked) and notes (platforms left out, classes unknown)."""

    out_dir: Path
    spec: ArtifactSpec
    model_bytes: int
    check_error: float | None
    notes: tuple[str, ...] = ()


def export_stablehlo(
    variables: Any,
    arch: str,
    out_dir: str | os.PathLike[str],
    *,
    preprocessing: DataConfig | None = None,
    input_shape: tuple[int, int, int] | None = None,
    class_names: Sequence[str] | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    check: bool = True,
    force: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
    weights: str = "trained",
    source: str | None = None,
    name: str | None = None,
    license: str | None = None,
    notes: Sequence[str] = (),
) -> ServingReport:
    """Write ``arch``'s weights ``variables`` as a serving artifact in ``out_dir``: the
    ``inference_function`` lowered for ``platforms`` (``export_inference``) at
    ``input_shape`` (default: ``preprocessing``'s square size, ``arch``'s channels), with its
    ``model.json`` (``ArtifactSpec``: ``class_names`` must name every class).

    ``check``: the serialised bytes, deserialised, must give the model's logits on the CPU
    within ``CHECK_GATE`` (else ``ServingError``). Everything is lowered and checked before
    anything is written (``write_artifact``)."""
    out = Path(out_dir)
    check_artifact_dir(out, force, protect)
    platforms = check_platforms(platforms)
    spec_, arguments = model_config(arch)
    channels, num_classes = arguments[spec_.in_channels_arg], arguments["num_classes"]
    if input_shape is None:
        if preprocessing is None:
            raise ServingError("the input shape is needed: no preprocessing gives its size")
        input_shape = (preprocessing.input_size, preprocessing.input_size, channels)
    if input_shape[-1] != channels:
        raise ServingError(f"{arch} takes {channels}-channel images, not {input_shape[-1]}")
    if class_names is not None and len(class_names) != num_classes:
        raise ServingError(f"{len(class_names)} class names for the {num_classes} classes of "
                           f"{arch}")  # fmt: skip
    fn = inference_function(arch, variables)
    exported, lowering_notes = export_inference(fn, input_shape, platforms)
    blob = serialize(exported)
    error = None
    if check:
        error = check_serialized(blob, fn, input_shape)
        if not error <= CHECK_GATE:
            raise ServingError(f"the serialised model's logits differ from {arch}'s by "
                               f"{error:.3g} (relative) on the CPU, more than {CHECK_GATE:g}; "
                               "nothing written")  # fmt: skip
    all_notes = (*lowering_notes, *notes)
    spec = ArtifactSpec(
        arch=arch, input_shape=input_shape, num_classes=num_classes,
        platforms=tuple(exported.platforms), preprocessing=preprocessing,
        class_names=tuple(class_names) if class_names is not None else None, weights=weights,
        source=source, name=name or out.resolve().name, license=license,
        matmul_precision=str(getattr(jax.config, "jax_default_matmul_precision", None)
                             or "default"),
        versions=_versions(exported),
        check=({"platform": "cpu", "images": CHECK_IMAGES, "max_relative_error": error}
               if error is not None else None),
        notes=all_notes,
    )  # fmt: skip
    write_artifact(blob, spec, out, force=force, protect=protect)
    return ServingReport(out, spec, len(blob), error, all_notes)


def _versions(exported: jax.export.Exported) -> dict[str, Any]:
    from seres import __version__

    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib = None
    return {"seres": __version__, "jax": jax.__version__, "jaxlib": jaxlib,
            "calling_convention": exported.calling_convention_version}  # fmt: skip


def export_source(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    arch: str | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    image_size: int | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    check: bool = True,
    force: bool = False,
    name: str | None = None,
    license: str | None = None,
) -> ServingReport:
    """``export_stablehlo`` of what ``source`` holds, with the preprocessing ``seres eval``
    evaluates it with (``image_size``, ``crop_pct``, ``interpolation`` override it):

    * a ``seres train`` work directory (or its ``checkpoints/``): its latest checkpoint, the
      EMA weights where the run kept an EMA; its architecture (``arch`` overrides it), its
      validation preprocessing (``seres_jax.export.run_data_configs``) and its dataset's classes;
    * a checkpoint file in any format: ``arch`` (needed), the preprocessing of the weights it
      names (``seres_jax.registry.data_config``, at their training size), no class names;
    * a timm directory (``seres export --format timm``'s, ``local-dir:``) or ``hf-hub:ORG/NAME``:
      its ``config.json``'s architecture, ``label_names`` and preprocessing (at its test size,
      as timm's ``validate.py``)."""
    from .formats import load_checkpoint
    from .hub import is_hub, is_timm_dir, resolve_model

    src = Path(source)
    overrides = (image_size, crop_pct, interpolation)
    if is_hub(source) or is_timm_dir(source):
        if arch is not None:
            raise ServingError(f"{source} names its architecture in its config.json; leave the "
                               "architecture out")  # fmt: skip
        protect = [] if is_hub(source) else [src]
        check_artifact_dir(out_dir, force, protect)
        hub = resolve_model(source)
        assert hub is not None  # a hub name or a timm directory
        hub_template = variables_template(hub.arch)
        return export_stablehlo(
            load_checkpoint(hub.weights, template=hub_template).to_variables(hub_template),
            hub.arch, out_dir,
            preprocessing=hub.data_config.for_eval(*overrides, use_test_size=True),
            class_names=hub.label_names, platforms=platforms, check=check, force=force,
            protect=protect, source=os.fspath(source), name=name, license=license,
            notes=() if hub.label_names else ("class_names: null: its config.json names no "
                                              "label_names",),
        )  # fmt: skip
    if not os.path.lexists(src):
        raise ServingError(f"{src}: no such file or directory")
    from .export import _read_ema
    from .train import CHECKPOINT_DIR, TrainConfig, find_run_config

    run = find_run_config(src)
    checkpoint = src / CHECKPOINT_DIR if (src / CHECKPOINT_DIR).is_dir() else src
    protect = [checkpoint, *([run[0]] if run is not None else [])]
    check_artifact_dir(out_dir, force, protect)
    record = run[1] if run is not None else None
    if arch is None and record is not None:
        arch = record.get("arch")
    if arch is None:
        raise ServingError(f"{src} is not part of a `seres train` work directory whose "
                           "config.json names its architecture: name it (--arch)")  # fmt: skip
    template = variables_template(arch)
    variables: Any = None
    if checkpoint.is_dir():
        variables = _read_ema(checkpoint, template)
    ema = variables is not None
    if variables is None:
        variables = load_checkpoint(checkpoint, template=template).to_variables(template)
    if record is not None:
        config = TrainConfig.from_record(record["config"])
        preprocessing, input_shape, names, notes = _run_inputs(config, arch, overrides)
    else:
        from .registry import data_config

        preprocessing, input_shape, names = data_config(arch).for_eval(*overrides), None, None
        notes = ["class_names: null: a checkpoint outside a run names no classes"]
    return export_stablehlo(
        variables, arch, out_dir, preprocessing=preprocessing, input_shape=input_shape,
        class_names=names, platforms=platforms, check=check, force=force, protect=protect,
        weights="EMA" if ema else "trained", source=os.fspath(source), name=name,
        license=license, notes=notes,
    )  # fmt: skip


def _run_inputs(
    config: TrainConfig, arch: str, overrides: tuple[int | None, float | None, str | None]
) -> tuple[DataConfig | None, tuple[int, int, int] | None, list[str] | None, list[str]]:
    """A run's ``(preprocessing, input shape, class names, notes)``: the preprocessing it
    validated with (``overrides``: size, crop, interpolation); for a run on arrays that are no
    image files (digits, synthetic) none, and the arrays' shape; the classes of its data where
    they still can be read and number ``arch``'s."""
    from .export import class_names, run_data_configs

    spec, arguments = model_config(arch)
    channels, classes = arguments[spec.in_channels_arg], arguments["num_classes"]
    notes: list[str] = []
    preprocessing: DataConfig | None = None
    input_shape = None
    try:
        train_config, val_config = run_data_configs(config)
        preprocessing = (val_config or train_config).for_eval(*overrides)
    except ExportError:  # digits, synthetic: arrays the run's loader makes, no image files
        size = overrides[0] or (8 if config.dataset == "digits" else config.image_size or 32)
        input_shape = (size, size, channels)
        notes.append(f"preprocessing: null: the {config.dataset} run's inputs are arrays its "
                     "loader normalises, not image files")  # fmt: skip
    names, why = class_names(config.dataset, config.data_dir)
    if config.dataset == "digits":  # scikit-learn's digits: class k is the digit k
        names, why = [str(k) for k in range(10)], None
    if names is not None and len(names) != classes:
        why = f"{len(names)} classes in {config.data_dir}, {classes} in the model"
        names = None
    if why:
        notes.append(f"class_names: null: {why}")
    return preprocessing, input_shape, names, notes


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact: its ``spec`` (``model.json``) and ``exported`` (``model.stablehlo``
    deserialised). Calling it runs a batch: float32 (or any float) ``(N, H, W, C)`` images,
    preprocessed, -> float32 numpy logits ``(N, num_classes)``; a batch of another shape or
    an integer dtype is one ``DataError`` naming the shape it takes."""

    path: Path
    spec: ArtifactSpec
    exported: jax.export.Exported = dataclasses.field(repr=False)

    def __call__(self, images: Any) -> np.ndarray:
        array = np.asarray(images)
        height, width, channels = self.spec.input_shape
        takes = f"(N, {height}, {width}, {channels})"
        if array.ndim != 4 or tuple(array.shape[1:]) != self.spec.input_shape or not len(array):
            raise DataError(f"{self.path} takes preprocessed float32 NHWC batches of shape "
                            f"{takes}, N >= 1; got {tuple(array.shape)}")  # fmt: skip
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{self.path} takes preprocessed float32 images {takes}; got "
                            f"{array.dtype} (normalise them as its {SPEC_FILE} says)")  # fmt: skip
        return np.asarray(self.exported.call(array.astype(np.float32, copy=False)))


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """The artifact directory ``path`` (``export_stablehlo``'s), its ``model.json`` read
    strictly and matched against the module's own input and output; ``ServingError`` for
    anything else."""
    root = Path(path)
    spec_path, model_path = root / SPEC_FILE, root / MODEL_FILE
    for needed in (spec_path, model_path):
        if not needed.is_file():
            raise ServingError(f"{root} is not a {FORMAT} artifact: it has no {needed.name}")
    if spec_path.stat().st_size > _MAX_SPEC_BYTES:
        raise ServingError(f"{spec_path} is larger than a {SPEC_FILE} can be")
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ServingError(f"{spec_path}: cannot be read as JSON ({err})") from None
    spec = ArtifactSpec.from_json(data, str(spec_path))
    try:
        exported = jax.export.deserialize(bytearray(model_path.read_bytes()))
    except ImportError as err:
        raise ServingError(f"jax.export cannot deserialise here: {err}") from None
    except Exception as err:  # a corrupt or foreign file, in whatever way
        why = _first_line(err)
        raise ServingError(f"{model_path}: not a jax.export artifact ({why})") from None
    (aval,), (out,) = exported.in_avals, exported.out_avals
    shape, out_shape = tuple(str(d) for d in aval.shape), tuple(str(d) for d in out.shape)
    want = (BATCH, *map(str, spec.input_shape))
    if shape != want or out_shape != (BATCH, str(spec.num_classes)):
        raise ServingError(f"{model_path} takes {shape} and gives {out_shape}, but {SPEC_FILE} "
                           f"says {want} and {(BATCH, spec.num_classes)}")  # fmt: skip
    return Artifact(root, spec, exported)
