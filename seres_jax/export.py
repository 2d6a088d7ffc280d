"""A model in timm's Hugging Face hub layout: the directory ``timm.models.push_to_hf_hub`` uploads,
which ``timm.create_model("local-dir:DIR", pretrained=True)`` (or ``"hf-hub:user/name"`` once
pushed) loads.

* ``config.json``: what timm's ``save_config_for_hf`` writes for the same network (``timm_config``):
  ``architecture``, ``num_classes``, ``num_features``, ``global_pool``, ``label_names``,
  ``model_args`` (the seres architecture's arguments that differ from the timm model's, in timm's
  names: what ``create_model`` is called with) and ``pretrained_cfg`` (the filtered
  ``pretrained_cfg`` of the timm weights the architecture names, ``timm_pretrained_cfg``, holding
  the preprocessing the weights were trained and evaluated with). Same keys, values, types,
  order and bytes as timm's, checked against files timm wrote
  (``parity_tests/fixtures/record_timm_export.py``).
* ``model.safetensors``: the ``state_dict`` with timm's keys (``seres_jax.convert``), float32.
* ``README.md``: a model card as timm's ``generate_readme`` writes it (``ModelCard``,
  ``build_card``): the model, its preprocessing and, for a ``seres train`` run, its last epoch's
  validation results, its recipe and the command that trains it again.

``export_timm`` writes the three from Flax variables; ``export_trained`` from the weights of a
``seres train`` run in hand (its config, epochs and classes), ``export_run`` from a work directory
or a checkpoint (the EMA weights where the run kept an EMA, as ``seres train --export`` does).
A new directory appears complete or not at all; an existing one is refused unless ``force``,
and then only those three files are replaced (each atomically), nothing else in it is touched.
Imports no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from .convert import check_variables, flax_to_state_dict
from .data.images import DataConfig
from .formats import CheckpointError, atomic_path, check_destination, save_state_dict
from .layers import count_params
from .pretrained import default_tag, pretrained_config
from .registry import MODELS, model_config, parse_arch, variables_template
from .registry import weight_tag as arch_weight_tag

if TYPE_CHECKING:
    from .train import TrainConfig

__all__ = [
    "FILES",
    "ExportError",
    "ExportReport",
    "ModelCard",
    "RunSummary",
    "build_card",
    "check_export_dir",
    "class_names",
    "export_run",
    "export_timm",
    "export_trained",
    "generate_readme",
    "run_data_configs",
    "timm_config",
    "timm_model_args",
    "timm_pretrained_cfg",
]

CONFIG, WEIGHTS, README = "config.json", "model.safetensors", "README.md"
FILES = (WEIGHTS, CONFIG, README)
"""The files of an export directory, in the order written: what timm's ``push_to_hf_hub``
uploads with ``safe_serialization=True``."""


class ExportError(CheckpointError):
    """A model or run that cannot be exported in timm's format, or a destination refused; the
    message says why."""


# --------------------------------------------------------------------------- timm's config

# timm's pretrained_cfg metadata beyond the data config, per weight tag (checked for every tag of
# `pretrained.json` against timm's own in parity_tests/test_export.py).
_GITHUB = "https://github.com/huggingface/pytorch-image-models"
_ORIGIN_BY_TAG: dict[str, str | None] = {
    "gluon_in1k": "https://cv.gluon.ai/model_zoo/classification.html",
    "miil_in1k": None,
    "in1k": None,  # the SENet authors' weights (legacy_*)
}
# Other weights timm gives no origin_url (the rest: timm's GitHub).
_NO_ORIGIN = frozenset({
    "ecaresnet50t.ra2_in1k", "ecaresnext26t_32x4d.untrained", "ecaresnext50t_32x4d.untrained",
    "seresnextaa201d_32x8d.sw_in12k", "seresnextaa201d_32x8d.sw_in12k_ft_in1k_384",
})  # fmt: skip
# ResNet strikes back (arXiv 2110.00476): the recipes these tags name.
_RSB_TAGS = frozenset({"a1_in1k", "a2_in1k", "a3_in1k", "ah_in1k"})
_TAG_CLASSES = {"sw_in12k": 11821}  # ImageNet-12k's classes; the other tags' 1000

# Constructor arguments in timm's signature order (ResNet, SENet), seres' names mapped to timm's.
_RESNET_ARGS = ("layers", "num_classes", "in_chans", "cardinality", "base_width", "stem_width",
                "stem_type", "block_reduce_first", "down_kernel_size", "avg_down", "channels",
                "zero_init_last", "block_args")  # fmt: skip
_SENET_ARGS = ("layers", "groups", "reduction", "in_chans", "inplanes", "input_3x3",
               "downsample_kernel_size", "downsample_padding", "num_classes")  # fmt: skip
_RENAMED = {"attn": "block_args", "cardinality": "groups"}  # "cardinality": SENet's only
# Rates timm leaves out of model_args (regularisation of training, not the network).
_RATES = frozenset({"drop_rate", "drop_path_rate"})
# seres arguments a config.json cannot change: timm takes them as classes, or derives them.
_NOT_IN_CONFIG = {
    "block": "timm takes the block as a class, which a config.json cannot name",
    "aa_layer": "timm's ResNet takes aa_layer as a class, which a config.json cannot name",
    "block_widths": "timm reads the pruned widths from its own files",
    "channels": "timm's legacy SENet has fixed widths",  # SENet's only (ResNet takes channels)
}


def _is_senet(name: str) -> bool:
    return MODELS[name].flax_path == "seres_jax.senet:SENet"


def _timm_name(arch: str) -> tuple[str, str]:
    """``(timm model name, weight tag)`` of ``arch``; ``ExportError`` for a model timm lacks."""
    name, _ = parse_arch(arch)
    tag = arch_weight_tag(arch) or default_tag(name)
    if tag is None:
        raise ExportError(f"timm has no {name}: only timm's models (seresnet18, seresnet50, "
                          "legacy_seresnet18, ...) export in its format")  # fmt: skip
    return name, tag


def timm_pretrained_cfg(name: str, tag: str | None = None) -> dict[str, Any]:
    """The ``pretrained_cfg`` of timm's ``name`` with weights ``tag`` (default: timm's default
    tag) as ``save_config_for_hf`` starts from it: ``filter_pretrained_cfg(...,
    remove_source=True)``, JSON values (lists), timm's key order. ``ExportError`` for a model
    timm does not have."""
    tag = tag or default_tag(name)
    data = pretrained_config(name, tag) if tag is not None else None
    if tag is None or data is None:
        raise ExportError(f"timm has no {name}")
    size, test = data["input_size"], data.get("test_input_size")
    defaults = MODELS[name].arguments()
    senet = _is_senet(name)
    first_conv = "layer0.conv1" if senet else "conv1.0" if defaults["stem_type"] else "conv1"
    key = f"{name}.{tag}"
    origin = _ORIGIN_BY_TAG.get(tag, None if key in _NO_ORIGIN else _GITHUB)
    cfg: dict[str, Any] = {
        "architecture": name,
        "tag": tag,
        "custom_load": False,
        "input_size": [3, size, size],
        "test_input_size": [3, test, test] if test else None,
        "fixed_input_size": False,
        "interpolation": data["interpolation"],
        "crop_pct": data["crop_pct"],
        "test_crop_pct": data.get("test_crop_pct"),
        "crop_mode": "center",
        "mean": list(data["mean"]),
        "std": list(data["std"]),
        "num_classes": _TAG_CLASSES.get(tag, 1000),
        "pool_size": [size // 32, size // 32],  # the stride-32 feature map at input_size
        "first_conv": first_conv,
        "classifier": "last_linear" if senet else "fc",
        "license": "apache-2.0",
        "origin_url": origin,
        "paper_ids": "arXiv:2110.00476" if tag in _RSB_TAGS else None,
    }
    return {k: v for k, v in cfg.items() if v is not None}  # remove_null


def timm_model_args(arch: str) -> dict[str, Any]:
    """The keyword arguments of ``timm.create_model(name, **kwargs)`` that build ``arch``: its
    arguments that differ from timm's model (``num_classes`` from its weights'), in timm's
    names (``attn`` -> ``block_args={"attn_layer": ...}``, a SENet's ``cardinality`` ->
    ``groups``) and its constructor's order; no dropout or stochastic depth rates (timm leaves
    them out of a config.json). ``ExportError`` for an argument a config.json cannot express."""
    name, tag = _timm_name(arch)
    spec, arguments = model_config(arch)
    defaults = dict(spec.arguments(), num_classes=_TAG_CLASSES.get(tag, 1000))
    senet = _is_senet(name)
    changed: dict[str, Any] = {}
    for key, value in arguments.items():
        if key in _RATES or value == defaults[key] or _listed(value) == _listed(defaults[key]):
            continue
        if key in _NOT_IN_CONFIG and (key != "channels" or senet):
            raise ExportError(f"{arch}: {key}={_text(value)} cannot be exported to timm "
                              f"({_NOT_IN_CONFIG[key]})")  # fmt: skip
        timm_key = _RENAMED.get(key, key) if (key != "cardinality" or senet) else key
        changed[timm_key] = {"attn_layer": value} if key == "attn" else _listed(value)
    order = _SENET_ARGS if senet else _RESNET_ARGS
    unknown = set(changed) - set(order)
    if unknown:  # a seres argument timm's constructor lacks
        raise ExportError(f"{arch}: timm's {name} has no argument {', '.join(sorted(unknown))}")
    return {key: changed[key] for key in order if key in changed}


def _listed(value: Any) -> Any:
    """Tuples as lists (JSON's arrays), nested."""
    if isinstance(value, tuple | list):
        return [_listed(v) for v in value]
    return value


def _text(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def timm_config(
    arch: str,
    data_config: DataConfig,
    val_config: DataConfig | None = None,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` timm's ``save_for_hf(model, dir, model_config={"label_names": ...},
    data_config=...)`` writes for ``arch``'s network, built by ``timm.create_model(name,
    **timm_model_args(arch))``, trained and evaluated with ``data_config`` (its ``input_size``,
    ``crop_pct``, ``interpolation``, ``mean``, ``std``) and validated with ``val_config``
    (``test_input_size``/``test_crop_pct`` where it differs; ``None``: as ``data_config``).

    As timm: the weights' ``pool_size`` is kept only at their own input size; with other than 3
    input channels the mean and std are averaged to one value each (timm's rule for a mean of
    the wrong length). ``label_names`` must name every class."""
    name, tag = _timm_name(arch)
    spec, arguments = model_config(arch)
    channels, num_classes = arguments[spec.in_channels_arg], arguments["num_classes"]
    if label_names is not None and len(label_names) != num_classes:
        raise ExportError(f"{len(label_names)} label names for the {num_classes} classes of "
                          f"{arch}")  # fmt: skip
    kwargs = timm_model_args(arch)
    source = timm_pretrained_cfg(name, tag)
    cfg = dict(source)
    # timm's resolve_input_data_config: these keys are all in `cfg`, replaced where they are.
    size = data_config.input_size
    cfg["input_size"] = [channels, size, size]
    cfg["interpolation"] = data_config.interpolation
    for key in ("mean", "std"):
        value = [float(v) for v in getattr(data_config, key)]
        cfg[key] = value if len(value) in (1, channels) else [sum(value) / len(value)]
    cfg["crop_pct"] = float(data_config.crop_pct)
    val = val_config or data_config
    # The export's own test size and crop replace the weights'; absent, they are dropped (the
    # `input_size`/`crop_pct` given mean "evaluate here").
    if val.input_size != size:
        cfg["test_input_size"] = [channels, val.input_size, val.input_size]
    else:
        cfg.pop("test_input_size", None)
    if val.crop_pct != data_config.crop_pct:
        cfg["test_crop_pct"] = float(val.crop_pct)
    else:
        cfg.pop("test_crop_pct", None)
    if size != source["input_size"][1]:
        cfg["pool_size"] = None
    cfg["num_classes"] = num_classes
    del cfg["architecture"]
    config: dict[str, Any] = {
        "architecture": name,
        "num_classes": num_classes,
        "num_features": _num_features(arch),
        "global_pool": "avg",
    }
    if label_names:
        config["label_names"] = list(label_names)
    # timm's get_model_args: the recorded arguments, then the current channels, classes and
    # pooling (replacing a recorded one in place).
    config["model_args"] = {**kwargs, "in_chans": channels, "num_classes": num_classes,
                            "global_pool": "avg"}  # fmt: skip
    config["pretrained_cfg"] = cfg
    return config


def _num_features(arch: str) -> int:
    """The width of the pooled features: the classifier's input."""
    params = variables_template(arch)["params"]
    head = params["last_linear"] if "last_linear" in params else params["fc"]
    return int(head["kernel"].shape[0])


# --------------------------------------------------------------------------- the model card


def generate_readme(
    model_card: Mapping[str, Any], model_name: str, task_name: str = "image-classification"
) -> str:
    """timm's ``generate_readme``, text for text: YAML front matter (``tags``, ``pipeline_tag``,
    ``library_name``, ``license``, ``datasets`` from ``details["Dataset"]``), the title, the
    description, ``details`` as a list (lists and dicts one level deep), ``usage``,
    ``comparison`` and ``citation``s."""
    tags = model_card.get("tags", None) or [task_name, "timm", "transformers"]
    lines = ["---\n"]
    if tags:
        lines.append("tags:\n")
        lines += [f"- {t}\n" for t in tags]
    lines.append(f"pipeline_tag: {task_name}\n")
    lines.append(f"library_name: {model_card.get('library_name', 'timm')}\n")
    lines.append(f"license: {model_card.get('license', 'apache-2.0')}\n")
    for key in ("license_name", "license_link"):
        if key in model_card:
            lines.append(f"{key}: {model_card.get(key)}\n")
    details = model_card.get("details", {})
    if "details" in model_card and "Dataset" in details:
        lines.append("datasets:\n")
        for key in ("Dataset", "Pretrain Dataset"):
            if key in details:
                value = details[key]
                names = value if isinstance(value, tuple | list) else [value]
                lines += [f"- {d.lower()}\n" for d in names]
    lines.append("---\n")
    lines.append(f"# Model card for {model_name}\n")
    if "description" in model_card:
        lines.append(f"\n{model_card['description']}\n")
    if "details" in model_card:
        lines.append("\n## Model Details\n")
        for k, v in details.items():
            if isinstance(v, list | tuple):
                lines.append(f"- **{k}:**\n")
                lines += [f"  - {vi}\n" for vi in v]
            elif isinstance(v, dict):
                lines.append(f"- **{k}:**\n")
                lines += [f"  - {ki}: {vi}\n" for ki, vi in v.items()]
            else:
                lines.append(f"- **{k}:** {v}\n")
    for key, title in (("usage", "Model Usage"), ("comparison", "Model Comparison")):
        if key in model_card:
            lines.append(f"\n## {title}\n{model_card[key]}\n")
    if "citation" in model_card:
        lines.append("\n## Citation\n")
        citations = model_card["citation"]
        for c in citations if isinstance(citations, list | tuple) else [citations]:
            lines.append(f"```bibtex\n{c}\n```\n")
    return "".join(lines)


@dataclass(frozen=True)
class ModelCard:
    """A model card in timm's terms (``push_to_hf_hub``'s ``model_card``): ``name`` titles it,
    ``details`` is the "Model Details" list, ``usage`` the "Model Usage" section (markdown).
    ``render`` writes it as timm's ``generate_readme`` does."""

    name: str
    description: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    usage: str | None = None
    citation: Sequence[str] = ()
    license: str = "apache-2.0"
    tags: tuple[str, ...] = ("image-classification", "timm")

    def timm_card(self) -> dict[str, Any]:
        """The ``model_card`` dict of ``timm.models.push_to_hf_hub``."""
        card: dict[str, Any] = {"tags": list(self.tags), "license": self.license}
        if self.description is not None:
            card["description"] = self.description
        if self.details:
            card["details"] = dict(self.details)
        if self.usage is not None:
            card["usage"] = self.usage
        if self.citation:
            card["citation"] = list(self.citation)
        return card

    def render(self) -> str:
        """The card as ``README.md`` text: ``generate_readme`` of ``timm_card()``."""
        return generate_readme(self.timm_card(), self.name)


@dataclass(frozen=True)
class RunSummary:
    """What a model card says of the ``seres train`` run that trained the weights: its
    ``config.json`` record (``config``, ``versions``, ...), its ``metrics.jsonl`` records, the
    command that trains it again (the command line builds it), and whether the weights are
    the run's EMA."""

    record: Mapping[str, Any]
    history: Sequence[Mapping[str, Any]] = ()
    command: str | None = None
    ema: bool = False


# The TrainConfig fields a card's recipe always lists, and those it never lists (where the data
# is, how the run logs and saves: not the recipe).
_RECIPE_ALWAYS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay")
_RECIPE_NEVER = frozenset({"model", "dataset", "data_dir", "workers", "log_every",
                           "checkpoint_every", "keep", "skip_bad_images"})  # fmt: skip
_CITATION = """@inproceedings{hu2018senet,
  title={Squeeze-and-Excitation Networks},
  author={Hu, Jie and Shen, Li and Sun, Gang},
  booktitle={CVPR},
  year={2018}
}"""


def _recipe(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The run's recipe: a few fields always, and every other that differs from seres'
    defaults."""
    from .train import TrainConfig

    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    return {
        key: _text(value)
        for key, value in stored.items()
        if key not in _RECIPE_NEVER
        and (key in _RECIPE_ALWAYS or (key in defaults and value != defaults[key]))
    }


def _results(history: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The last epoch's validation loss, top-1 and top-5 (and the EMA's)."""
    if not history:
        return {}
    last = history[-1]
    results = {"epochs": str(int(last["epoch"]) + 1)}
    for prefix, who in (("", ""), ("ema_", "EMA ")):
        for key, label, scale in (("val_acc", "top-1", 100), ("val_acc5", "top-5", 100),
                                  ("val_loss", "loss", 1)):  # fmt: skip
            value = last.get(prefix + key)
            if isinstance(value, int | float):
                text = f"{value * scale:.2f} %" if scale == 100 else f"{value:.4f}"
                results[f"{who}val {label}"] = text
    return results


def build_card(
    arch: str,
    variables: Any,
    data_config: DataConfig,
    val_config: DataConfig | None = None,
    *,
    name: str,
    run: RunSummary | None = None,
    label_names: Sequence[str] | None = None,
    license: str = "apache-2.0",
) -> ModelCard:
    """The model card of ``arch``'s weights ``variables``: the timm model and its arguments, the
    parameter count, the preprocessing, the classes; for a ``run``, its dataset, last epoch's
    validation results, recipe and the command that trains it again; how to load it in timm."""
    timm_name, _ = _timm_name(arch)
    kwargs = timm_model_args(arch)
    _, arguments = model_config(arch)
    val = val_config or data_config
    size = f"train = {data_config.input_size} x {data_config.input_size}"
    if val.input_size != data_config.input_size:
        size += f", test = {val.input_size} x {val.input_size}"
    crop = f"{data_config.crop_pct}" + (
        f" (test {val.crop_pct})" if val.crop_pct != data_config.crop_pct else ""
    )
    details: dict[str, Any] = {
        "Model Type": "Image classification",
        "Model Stats": {
            "Params (M)": round(count_params(variables) / 1e6, 3),
            "Image size": size,
            "Crop pct": crop,
            "Interpolation": data_config.interpolation,
        },
        "Architecture": f"timm's {timm_name}"
        + (f" with {json.dumps(kwargs)}" if kwargs else "")
        + f" (seres: {arch})",
        "Classes": (
            f"{arguments['num_classes']}: {', '.join(label_names)}"
            if label_names and len(label_names) <= 20
            else str(arguments["num_classes"])
        ),
        "Papers": ["Squeeze-and-Excitation Networks: https://arxiv.org/abs/1709.01507"],
    }
    description = f"A {timm_name} image classification model"
    if run is not None:
        stored = run.record.get("config", {})
        dataset = stored.get("dataset") or "its dataset"
        folder = Path(stored["data_dir"]).name if stored.get("data_dir") else None
        description += f", trained with seres (JAX) on {dataset}" + (
            f" (`{folder}`)" if folder else ""
        )
        details["Training data"] = f"{dataset}" + (f", `{folder}`" if folder else "")
        ema = stored.get("model_ema_decay")
        details["Weights"] = (
            f"the EMA of the trained weights (timm's ModelEmaV3, decay {ema})"
            if run.ema
            else "the trained weights"
        )
        results = _results(run.history)
        if results:
            details["Results"] = results
        details["Recipe"] = _recipe(stored)
        versions = run.record.get("versions", {})
        if versions:
            details["Trained with"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    description += ", in timm's format."
    top = min(5, int(arguments["num_classes"]))
    usage = f"""### Image Classification
```python
import timm
import torch
from PIL import Image

# this directory pushed to the hub; or "local-dir:<this directory>"
model = timm.create_model("hf-hub:<user>/{name}", pretrained=True)
model = model.eval()
data_config = timm.data.resolve_model_data_config(model)
transforms = timm.data.create_transform(**data_config, is_training=False)
img = Image.open("image.jpg").convert("RGB")
with torch.no_grad():
    output = model(transforms(img).unsqueeze(0))
top{top}_probabilities, top{top}_class_indices = torch.topk(output.softmax(dim=1) * 100, k={top})
```
"""
    if run is not None and run.command:
        usage += f"""
### Training
```bash
{run.command}
```
"""
    return ModelCard(
        name=name,
        description=description,
        details=details,
        usage=usage,
        citation=(_CITATION,),
        license=license,
    )


# --------------------------------------------------------------------------- writing


def export_timm(
    variables: Any,
    arch: str,
    out_dir: str | os.PathLike[str],
    *,
    data_config: DataConfig,
    val_config: DataConfig | None = None,
    label_names: Sequence[str] | None = None,
    card: ModelCard | None = None,
    force: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``arch``'s weights ``variables`` into ``out_dir`` in timm's hub layout (``FILES``:
    ``timm_config``'s ``config.json``, ``model.safetensors``, ``card``'s ``README.md``, default
    ``build_card``'s); returns ``out_dir``.

    ``variables`` must be exactly ``arch``'s (a ``ConversionError`` lists every difference).
    Everything is checked and computed before anything is written. A new ``out_dir`` (and any
    parent made for it) appears complete or not at all; an existing one is refused unless
    ``force``, and then only the three files are replaced, each atomically (a file of the same
    name that is a directory is refused). ``protect``: paths (the source being exported, the
    run's ``config.json``) that ``out_dir`` must not be nor lie in, and that none of the three
    files may be."""
    out = Path(out_dir)
    check_export_dir(out, force, protect)
    config = timm_config(arch, data_config, val_config, label_names)
    template = variables_template(arch)
    variables = jax.device_get(variables)
    check_variables(variables, template)
    state = {
        key: value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
        for key, value in flax_to_state_dict(variables).items()
    }
    card = card or build_card(
        arch, variables, data_config, val_config, name=out.resolve().name, label_names=label_names
    )
    texts = {CONFIG: json.dumps(config, indent=2), README: card.render()}

    def write(path: Path) -> None:  # a staged path, named as its destination
        if path.name == WEIGHTS:
            save_state_dict(state, path)
        else:
            path.write_text(texts[path.name], encoding="utf-8")

    if out.is_dir():
        # Each file staged beside its destination, all renamed at the end: a failure while
        # writing changes nothing.
        with contextlib.ExitStack() as stack:
            for name in FILES:
                write(stack.enter_context(atomic_path(out / name, force=True)))
        return out
    with _removing_new_parents(out.parent), atomic_path(out, directory=True) as tmp:
        tmp.mkdir()
        for name in FILES:
            write(tmp / name)
    return out


def check_export_dir(
    out_dir: str | os.PathLike[str],
    force: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Raise ``ExportError`` (or ``CheckpointError``) unless ``export_timm`` would write
    ``out_dir`` with ``force`` and ``protect``: lets a caller refuse before it reads, computes or
    trains."""
    out = Path(out_dir)
    for source in (Path(p).resolve() for p in protect if os.path.lexists(p)):
        where = out.resolve()
        if where == source or source in where.parents:
            raise ExportError(f"{out} is or lies in the source {source}; refusing to write there")
        if any(where / name == source for name in FILES):
            raise ExportError(f"{out} holds the source {source}; refusing to replace it")
    if os.path.lexists(out) and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.is_dir():
        if not force:
            raise ExportError(f"{out} exists; pass --force to replace its "
                              f"{', '.join(FILES)} (nothing else in it is touched)")  # fmt: skip
        for name in FILES:
            check_destination(out / name, force=True)
    else:
        check_destination(out, directory=True)


@contextlib.contextmanager
def _removing_new_parents(parent: Path) -> Iterator[None]:
    """Remove the (empty) directories above the destination that this write created, if it
    fails."""
    missing = []
    for directory in (parent, *parent.parents):
        if directory.exists():
            break
        missing.append(directory)
    try:
        yield
    except BaseException:
        for directory in missing:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


# --------------------------------------------------------------------------- a run


def run_data_configs(config: TrainConfig) -> tuple[DataConfig, DataConfig | None]:
    """The preprocessing a ``seres train`` run trained (``data_config``: its size, crop and
    interpolation of the evaluation transform) and validated with (``val_config``, ``None``
    when the same): its ``data_options()``, or CIFAR-10's arrays (32 pixels, no resize or
    crop, their mean and std). ``ExportError`` for the other in-memory datasets (digits,
    synthetic), which are no image files a timm transform reads."""
    from .data.arrays import CIFAR10_MEAN, CIFAR10_STD

    options = config.data_options()
    if config.dataset == "cifar10":
        whole = replace(options.data_config, input_size=32, crop_pct=1.0, mean=CIFAR10_MEAN,
                        std=CIFAR10_STD)  # fmt: skip
        return whole, None
    if config.dataset not in ("imagefolder", "arrayrecord"):
        raise ExportError(f"a {config.dataset} run cannot be exported to timm: its images are "
                          "arrays of its own, not files timm's transforms read")  # fmt: skip
    return options.data_config, options.val_config


def class_names(dataset: str | None, data_dir: str | None) -> tuple[list[str] | None, str | None]:
    """``(class names, None)`` of a run's dataset as its labels number them, read from the data
    where it still is (an image folder's ``train/`` class directories, a pack's
    ``classes.json``, CIFAR-10's ``batches.meta.txt``); else ``(None, why not)``."""
    from .data.arrays import DataError
    from .data.folders import find_classes
    from .data.records import read_manifest

    if not data_dir:
        return None, f"the {dataset} run records no data directory"
    root = Path(data_dir)
    try:
        if dataset == "imagefolder":
            return find_classes(root / "train"), None
        if dataset == "arrayrecord":
            return list(read_manifest(root)["classes"]), None
        if dataset == "cifar10":
            for meta in (root / "cifar-10-batches-bin" / "batches.meta.txt",
                         root / "batches.meta.txt"):  # fmt: skip
                if meta.is_file():
                    return [n for n in meta.read_text(encoding="utf-8").split("\n") if n], None
            return None, f"{root} holds no batches.meta.txt"
    except (DataError, OSError, UnicodeDecodeError) as err:
        return None, str(err)
    return None, f"{dataset} names no classes"


@dataclass(frozen=True)
class ExportReport:
    """What ``export_run`` wrote: where, for which architecture, which weights (``"EMA"`` or
    ``"trained"``), how many tensors, the class names (``None``: left out, ``notes`` says why)."""

    out_dir: Path
    arch: str
    weights: str
    num_tensors: int
    label_names: list[str] | None
    notes: tuple[str, ...] = ()


def export_run(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    arch: str | None = None,
    force: bool = False,
    command: str | None = None,
    name: str | None = None,
    license: str = "apache-2.0",
) -> ExportReport:
    """Export a ``seres train`` work directory (its latest checkpoint), or a checkpoint in any
    format, in timm's layout (``export_timm``).

    A run's ``config.json`` gives the architecture (``arch`` overrides it), the preprocessing
    (``run_data_configs``), the dataset's class names (``label_names``) and, with its
    ``metrics.jsonl`` and ``command``, the model card; its checkpoint gives the EMA weights
    where the run kept an EMA, else the trained ones. A checkpoint outside a run needs
    ``arch``, and gets the preprocessing of the weights ``arch`` names (timm's
    ``pretrained_cfg``). ``name`` titles the card (default: ``out_dir``'s name)."""
    from .formats import load_checkpoint
    from .train import CHECKPOINT_DIR, TrainConfig, find_run_config, read_metrics

    src = Path(source)
    if not os.path.lexists(src):
        raise ExportError(f"{src}: no such file or directory")
    run = find_run_config(src)
    checkpoint = src / CHECKPOINT_DIR if (src / CHECKPOINT_DIR).is_dir() else src
    protect = [checkpoint, *([run[0]] if run is not None else [])]
    check_export_dir(Path(out_dir), force, protect)
    record = run[1] if run is not None else None
    if arch is None:
        arch = record.get("arch") if record is not None else None
    if arch is None:
        raise ExportError(f"{src} is not part of a `seres train` work directory whose "
                          "config.json names its architecture: name it (--arch)")  # fmt: skip
    timm_model_args(arch)  # timm can build it: refused before any weights are read
    template = variables_template(arch)
    variables, ema = None, False
    if checkpoint.is_dir():
        variables = _read_ema(checkpoint, template)
        ema = variables is not None
    if variables is None:
        variables = load_checkpoint(checkpoint, template=template).to_variables(template)
    if record is not None:
        config = TrainConfig.from_record(record["config"])
        workdir = run[0].parent if run is not None else src
        return export_trained(
            variables, arch, config, out_dir, history=read_metrics(workdir), ema=ema,
            record=record, command=command, force=force, name=name, license=license,
            protect=protect,
        )  # fmt: skip
    from .registry import data_config as pretrained_data_config

    pretrained = pretrained_data_config(arch)
    data_config = pretrained.for_eval()
    val = pretrained.for_eval(use_test_size=True)
    val_config = val if val != data_config else None
    out = Path(out_dir)
    card = build_card(arch, variables, data_config, val_config, name=name or out.resolve().name,
                      license=license)  # fmt: skip
    export_timm(variables, arch, out, data_config=data_config, val_config=val_config,
                card=card, force=force, protect=protect)  # fmt: skip
    notes = ("label_names left out: a checkpoint outside a run names no classes",)
    return ExportReport(out, arch, "trained", len(jax.tree.leaves(variables)), None, notes)


def export_trained(
    variables: Any,
    arch: str,
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    history: Sequence[Mapping[str, Any]] = (),
    ema: bool = False,
    record: Mapping[str, Any] | None = None,
    command: str | None = None,
    label_names: Sequence[str] | None = None,
    force: bool = False,
    name: str | None = None,
    license: str = "apache-2.0",
    protect: Sequence[str | os.PathLike[str]] = (),
) -> ExportReport:
    """Export the weights ``variables`` a ``seres train`` run of ``config`` trained (``ema``:
    they are its EMA) for ``arch`` (``run_arch``'s) in timm's layout (``export_timm``), with
    the run's preprocessing (``run_data_configs``) and a card of its ``history`` (the epoch
    records), ``record`` (its ``config.json``: the versions; default: ``config`` alone) and
    ``command``. ``label_names``: the classes as the run numbered them (default: read from
    ``config``'s data, ``class_names``; left out, with a note, where they cannot be read or
    do not number ``arch``'s classes)."""
    data_config, val_config = run_data_configs(config)
    notes: list[str] = []
    num_classes = model_config(arch)[1]["num_classes"]
    names = list(label_names) if label_names is not None else None
    why = None
    if names is None:
        names, why = class_names(config.dataset, config.data_dir)
    if names is not None and len(names) != num_classes:
        why = f"{len(names)} classes in {config.data_dir}, {num_classes} in the model"
        names = None
    if why:
        notes.append(f"label_names left out: {why}")
    record = record if record is not None else {"config": dataclasses.asdict(config)}
    out = Path(out_dir)
    summary = RunSummary(record, history, command, ema)
    card = build_card(arch, variables, data_config, val_config, name=name or out.resolve().name,
                      run=summary, label_names=names, license=license)  # fmt: skip
    export_timm(variables, arch, out, data_config=data_config, val_config=val_config,
                label_names=names, card=card, force=force, protect=protect)  # fmt: skip
    return ExportReport(out, arch, "EMA" if ema else "trained",
                        len(jax.tree.leaves(variables)), names, tuple(notes))  # fmt: skip


def _read_ema(path: Path, template: Any) -> dict[str, Any] | None:
    """The EMA weights (``params``, ``batch_stats``) of the training state saved in the orbax
    checkpoint ``path`` (a ``seres train`` checkpoint directory, a step of it, or a state), checked
    against ``template`` before any tensor is read; ``None`` where the state keeps no EMA (or
    ``path`` holds other variables)."""
    import orbax.checkpoint as ocp

    # formats' orbax reader restores params and batch_stats only; this restores the `ema` entry
    # of the same checkpoint the same way (host numpy arrays, nothing else read).
    from .formats import _orbax_item, _quiet_orbax, _unreadable

    item = _orbax_item(path).absolute()
    with (
        _unreadable(item, "orbax checkpoint"),
        _quiet_orbax(),
        ocp.PyTreeCheckpointer() as checkpointer,
    ):
        tree = checkpointer.metadata(item).item_metadata.tree
        ema = tree.get("ema") if isinstance(tree, Mapping) else None
        if not isinstance(ema, Mapping) or not isinstance(ema.get("params"), Mapping):
            return None
        wanted = {"ema": {k: ema[k] for k in ("params", "batch_stats") if ema.get(k)}}
        check_variables(
            jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), wanted["ema"]),
            template,
        )
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        restored = checkpointer.restore(
            item,
            args=ocp.args.PyTreeRestore(item=wanted, restore_args=as_numpy, partial_restore=True),
        )
    return dict(restored["ema"])
