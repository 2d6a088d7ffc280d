"""Weights from the Hugging Face hub, named as timm names them: ``hf-hub:ORG/NAME[@REV]``.

``resolve_hub`` fetches a timm model repository's ``config.json`` and its weights
(``model.safetensors``, else ``pytorch_model.bin``: timm's order) with ``huggingface_hub``'s
``hf_hub_download``, so the hub's own cache, its settings and its credentials apply:
``HF_HUB_CACHE``/``HF_HOME`` (where the cache is), ``HF_HUB_OFFLINE`` (the cache only),
``HF_TOKEN`` or ``hf auth login`` (private and gated repositories), and ``@REV`` (a branch, a
tag or a commit). The weights come from the commit the config came from, so a repository that
moves on in between cannot pair one commit's config with another's weights.

The config is what ``timm.models.save_for_hf`` writes (``architecture``, ``num_classes``,
``model_args``, ``label_names``, ``pretrained_cfg``; timm's older flat layout too). It is read
strictly: at most 1 MiB, plain JSON types checked field by field. ``architecture`` must be a timm
model seres' registry has, and each of ``model_args`` must be an argument seres' model takes with
the same meaning (``channels``, ``in_chans``, ``drop_rate``...), or one of timm's that seres
has no counterpart for at the value that means what seres does (``global_pool="avg"``); any
other is refused, since seres could not build the network those weights belong to. The result
is a registry architecture string (``seresnet18:num_classes=6,channels=8-16-32-64``) and the
``DataConfig`` of the weights' ``pretrained_cfg``.

Every failure is one ``HubError`` line saying what to do: a malformed name, no such repository
(or a private one without credentials), no such revision or file, offline with nothing cached,
the network, a config that is not timm's or that seres cannot honour. ``HubError`` is a
``CheckpointError``: the command line reports it as it reports any unreadable checkpoint.
``huggingface_hub`` is imported only when something is fetched.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .formats import CheckpointError

if TYPE_CHECKING:
    from .data.images import DataConfig

__all__ = [
    "CONFIG_NAME",
    "HUB_PREFIX",
    "LOCAL_PREFIX",
    "WEIGHT_NAMES",
    "HubError",
    "HubModel",
    "check_hub_config",
    "hub_arch",
    "hub_data_config",
    "is_hub",
    "is_timm_dir",
    "parse_hub_name",
    "pretrained_source",
    "read_hub_config",
    "resolve_hub",
    "resolve_local",
    "resolve_model",
]

HUB_PREFIX = "hf-hub:"
"""What starts a hub model's name, ``hf-hub:ORG/NAME[@REV]``, as timm spells it."""
LOCAL_PREFIX = "local-dir:"
"""What starts the name of a directory ``save_for_hf`` wrote, ``local-dir:DIR``, as timm
spells it."""
CONFIG_NAME = "config.json"
"""The timm model configuration's file name, on the hub and in a local directory."""
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
"""The weights' file names in timm's order of preference (``load_state_dict_from_hf``): the
first one the repository or directory holds is read."""
# A config.json is a few KiB (ImageNet-22k label names: ~300 KiB); anything past this is not
# one, and is refused before it is read.
MAX_CONFIG_BYTES = 1 << 20
_LOGIN = "log in (`hf auth login`, or set HF_TOKEN)"
# The hub's own rule for a repository name (huggingface_hub's validate_repo_id), and a
# revision: a branch, tag or commit, no spaces or control characters.
_NAME = re.compile(r"[\w.-]{1,96}")
_REVISION = re.compile(r"[^\s@]{1,256}")
# Strings from model_args become parts of an architecture string: no separators in them.
_WORD = re.compile(r"[A-Za-z0-9_]*")

# timm's constructor arguments with the same name and meaning in seres' model, per class.
_RESNET_SAME = frozenset({
    "layers", "num_classes", "in_chans", "cardinality", "base_width", "stem_width", "stem_type",
    "block_reduce_first", "down_kernel_size", "avg_down", "channels", "zero_init_last",
    "drop_rate", "drop_path_rate",
})  # fmt: skip
_SENET_SAME = frozenset({
    "layers", "num_classes", "in_chans", "reduction", "inplanes", "input_3x3",
    "downsample_kernel_size", "downsample_padding", "drop_rate",
})  # fmt: skip
# timm's arguments seres has under another name.
_RENAMED: dict[str, dict[str, str]] = {"seres_jax.senet:SENet": {"groups": "cardinality"}}
_SAME: dict[str, frozenset[str]] = {
    "seres_jax.resnet:SEResNet": _RESNET_SAME,
    "seres_jax.senet:SENet": _SENET_SAME,
}
# timm's arguments seres has no counterpart for, accepted at the one value that means what
# seres' model does: average pooling, stride 32, no DropBlock, the max-pool stem.
_FIXED: dict[str, dict[str, Any]] = {
    "seres_jax.resnet:SEResNet": {
        "global_pool": "avg", "output_stride": 32, "drop_block_rate": 0.0,
        "replace_stem_pool": False,
    },
    "seres_jax.senet:SENet": {"global_pool": "avg"},
}  # fmt: skip


class HubError(CheckpointError):
    """A hub source that cannot be used: the message (one line) says what to do."""


@dataclass(frozen=True)
class HubModel:
    """A timm model on the hub, resolved to files in the local hub cache."""

    name: str  # as given: "hf-hub:ORG/NAME[@REV]"
    repo_id: str
    revision: str | None
    commit: str  # the snapshot's commit hash
    weights: Path  # model.safetensors, else pytorch_model.bin
    config: dict[str, Any]  # the validated config.json
    arch: str  # seres' architecture string for the weights
    data_config: DataConfig  # the weights' pretrained_cfg
    label_names: tuple[str, ...] | None


def is_hub(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a hub repository (``hf-hub:...``) rather than a path."""
    return os.fspath(source).startswith(HUB_PREFIX)


def parse_hub_name(source: str) -> tuple[str, str | None]:
    """``"hf-hub:ORG/NAME[@REV]"`` -> ``("ORG/NAME", REV or None)``; ``HubError`` otherwise."""
    if not is_hub(source):
        raise HubError(f"{source!r} is not a hub name; write {HUB_PREFIX}ORG/NAME[@REVISION]")
    repo_id, at, revision = source[len(HUB_PREFIX) :].partition("@")
    parts = repo_id.split("/")
    good = (
        len(parts) == 2
        and all(_NAME.fullmatch(p) and p[0] not in ".-" and p[-1] not in ".-" for p in parts)
        and "--" not in repo_id
        and ".." not in repo_id
    )
    if not good:
        raise HubError(
            f"malformed hub name {source!r}: write {HUB_PREFIX}ORG/NAME[@REVISION] (letters, "
            "digits, '-', '_', '.'), e.g. hf-hub:timm/seresnet50.a1_in1k"
        )
    if at and not _REVISION.fullmatch(revision):
        raise HubError(f"malformed revision {revision!r} in {source!r}: after '@' comes a "
                       "branch, a tag or a commit hash")  # fmt: skip
    return repo_id, (revision if at else None)


def resolve_hub(source: str) -> HubModel:
    """The config and weights of the timm model ``source`` names, fetched into (or found in)
    the hub cache, with the seres architecture and data config they describe."""
    repo_id, revision = parse_hub_name(source)
    config_path = _fetch(source, repo_id, CONFIG_NAME, revision)
    commit = config_path.parent.name
    if not re.fullmatch(r"[0-9a-f]{40}", commit):  # the cache's snapshots/<commit>/ layout
        raise HubError(f"{source}: {config_path} is not in a hub cache snapshot; set "
                       "HF_HUB_CACHE/HF_HOME to a cache directory")  # fmt: skip
    config = read_hub_config(config_path, source)
    arch = hub_arch(config, source)
    data_config = hub_data_config(config, source)
    label_names = _label_names(config, source)
    # Only a config seres can honour has its weights fetched (they may be gigabytes).
    weights = _fetch_weights(source, repo_id, commit)
    return HubModel(
        name=source, repo_id=repo_id, revision=revision, commit=commit, weights=weights,
        config=config, arch=arch, data_config=data_config, label_names=label_names,
    )  # fmt: skip


def is_timm_dir(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a directory as timm's ``save_for_hf`` (or ``seres export
    --format timm``) writes it: a ``config.json`` naming an ``architecture``, beside the
    weights; ``local-dir:PATH`` (timm's spelling) says so outright."""
    text = os.fspath(source)
    if text.startswith(LOCAL_PREFIX):
        return True
    config = Path(text) / CONFIG_NAME
    if not config.is_file() or config.stat().st_size > MAX_CONFIG_BYTES:
        return False
    try:
        return "architecture" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return False


def resolve_local(source: str | os.PathLike[str]) -> HubModel:
    """The timm model in the directory ``source`` (``local-dir:PATH`` or ``PATH``, what
    ``timm.create_model("local-dir:PATH")`` reads): as ``resolve_hub``, from the disk."""
    text = os.fspath(source)
    path = Path(text.removeprefix(LOCAL_PREFIX))
    if not path.is_dir():
        raise HubError(f"{text}: no such directory")
    config = read_hub_config(path / CONFIG_NAME, text)
    weights = next((path / n for n in WEIGHT_NAMES if (path / n).is_file()), None)
    if weights is None:
        raise HubError(f"{text}: no weights ({' or '.join(WEIGHT_NAMES)}) beside its config.json")
    return HubModel(
        name=text, repo_id=str(path), revision=None, commit="", weights=weights,
        config=config, arch=hub_arch(config, text), data_config=hub_data_config(config, text),
        label_names=_label_names(config, text),
    )  # fmt: skip


def resolve_model(source: str | os.PathLike[str]) -> HubModel | None:
    """A timm model named by ``source``: ``resolve_hub`` for ``hf-hub:`` names,
    ``resolve_local`` for timm directories; ``None`` for any other path (a plain checkpoint)."""
    if is_hub(source):
        return resolve_hub(os.fspath(source))
    return resolve_local(source) if is_timm_dir(source) else None


def pretrained_source(model: str) -> str:
    """The hub repository timm downloads ``model``'s weights from: ``"seresnet50.a1_in1k"`` ->
    ``"hf-hub:timm/seresnet50.a1_in1k"``; a name without a tag takes its default tag."""
    from .pretrained import default_tag, weight_tags

    name, _, tag = model.partition(".")
    if ":" in model or name not in _timm_names():
        raise HubError(f"{model!r} is not a timm model name[.tag]; known: "
                       f"{', '.join(sorted(_timm_names()))}")  # fmt: skip
    tags = weight_tags(name)
    tag = tag or default_tag(name) or ""
    if tag not in tags:
        published = ", ".join(tags) or "none"
        raise HubError(f"timm publishes no weights {name}.{tag}; its tags with weights: "
                       f"{published}")  # fmt: skip
    if name.startswith("legacy_"):
        # timm downloads the legacy SENets' weights from GitHub releases, not from the hub.
        raise HubError(f"timm hosts {name}.{tag}'s weights outside the hub (a GitHub release): "
                       "download them with timm and `seres convert` the .pth")  # fmt: skip
    return f"{HUB_PREFIX}timm/{name}.{tag}"


def read_hub_config(path: str | os.PathLike[str], source: str = "") -> dict[str, Any]:
    """timm's hub ``config.json`` at ``path``: at most 1 MiB of JSON, checked by
    ``check_hub_config``."""
    where = source or os.fspath(path)
    try:
        size = os.stat(path).st_size
        if size > MAX_CONFIG_BYTES:
            _fail(where, f"{CONFIG_NAME} is {size} bytes, more than a timm config's "
                  f"{MAX_CONFIG_BYTES}: not a timm model")  # fmt: skip
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)  # bounded, should it grow meanwhile
        if len(data) > MAX_CONFIG_BYTES:
            _fail(where, f"{CONFIG_NAME} is more than a timm config's {MAX_CONFIG_BYTES} bytes")
        text = data.decode("utf-8")
    except OSError as err:
        _fail(where, f"cannot read {CONFIG_NAME}: {err.strerror or err}")
    except UnicodeDecodeError:
        _fail(where, f"{CONFIG_NAME} is not UTF-8 text")

    def no_constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not JSON")

    try:
        config = json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as err:
        _fail(where, f"{CONFIG_NAME} is not valid JSON ({str(err)[:80]})")
    return check_hub_config(config, where)


def check_hub_config(config: Any, source: str = "") -> dict[str, Any]:
    """A parsed timm hub config, checked (a JSON object naming an ``architecture``; the types
    of the fields seres reads) and in timm's current layout: the flat older one rearranged as
    timm's ``_parse_model_cfg`` does."""
    where = source or "the hub config"
    if not isinstance(config, dict):
        _fail(where, f"{CONFIG_NAME} holds a {type(config).__name__}, not a JSON object")
    if "pretrained_cfg" not in config:  # timm's older, flat layout
        flat = dict(config)
        config = {k: flat.pop(k) for k in ("architecture", "num_classes", "num_features",
                                            "global_pool", "model_args") if k in flat}  # fmt: skip
        if "labels" in flat:
            config["label_names"] = flat.pop("labels")
        config["pretrained_cfg"] = flat
    if not isinstance(config.get("architecture"), str):
        _fail(where, f"{CONFIG_NAME} names no architecture: not a timm model repository")
    for key, kind in (("pretrained_cfg", dict), ("model_args", dict), ("num_classes", int),
                      ("num_features", int), ("global_pool", str)):  # fmt: skip
        value = config.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            _fail(where, f"{CONFIG_NAME}: {key} must be a JSON {_JSON[kind]}, got {value!r:.60}")
    return config


_JSON = {dict: "object", int: "integer", str: "string"}


def hub_arch(config: Mapping[str, Any], source: str = "") -> str:
    """The registry architecture string of a timm hub config (``check_hub_config``'s): its
    ``architecture``, ``num_classes`` and the ``model_args`` seres' model takes, refusing those
    it cannot honour."""
    from .registry import MODELS, RegistryError, format_arch, model_config, parse_arch

    where = source or "the hub config"
    name = config["architecture"]
    if name not in _timm_names():
        _fail(where, f"architecture {name!r} is not one seres implements; known: "
              f"{', '.join(sorted(_timm_names()))}")  # fmt: skip
    spec = MODELS[name]
    defaults = spec.arguments()
    same, renamed = _SAME[spec.flax_path], _RENAMED.get(spec.flax_path, {})
    fixed = _FIXED[spec.flax_path]
    model_args = dict(config.get("model_args") or {})
    num_classes = config.get("num_classes", model_args.get("num_classes", defaults["num_classes"]))
    if model_args.get("num_classes", num_classes) != num_classes:
        _fail(where, f"model_args.num_classes={model_args['num_classes']!r} contradicts "
              f"num_classes={num_classes!r}")  # fmt: skip
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        _fail(where, f"num_classes must be an integer, got {num_classes!r:.60}")
    if num_classes < 1:
        _fail(where, f"num_classes={num_classes}: a model without a classifier; seres' models "
              "have one")  # fmt: skip
    if config.get("global_pool", "avg") != "avg":
        model_args.setdefault("global_pool", config["global_pool"])
    arguments: dict[str, Any] = {"num_classes": num_classes}
    for key, value in model_args.items():
        if key in fixed:
            if value != fixed[key] or isinstance(value, bool) != isinstance(fixed[key], bool):
                _fail(where, f"model_args.{key}={value!r}: seres' {name} has only "
                      f"{key}={fixed[key]!r}")  # fmt: skip
            continue
        if key not in same and key not in renamed:
            honoured = sorted({*same, *renamed, *fixed})
            _fail(where, f"model_args.{key} has no counterpart in seres' {name} (it honours "
                  f"{', '.join(honoured)})")  # fmt: skip
        target: str = renamed.get(key) or key
        value = _arch_value(where, key, value)
        if target != "num_classes" and value != _arch_value(where, key, defaults[target]):
            arguments[target] = value
    arch = format_arch(name, arguments)
    try:
        # The string must read back as exactly these arguments (nothing a value smuggled in),
        # and the registry must accept each of them.
        if parse_arch(arch) != (name, arguments):
            _fail(where, f"model_args do not form an architecture string: {arch!r}")
        model_config(arch)
    except RegistryError as err:
        _fail(where, f"model_args: {err}")
    return arch


def _arch_value(where: str, key: str, value: Any) -> Any:
    """A model argument as the architecture string carries it: a bool, an int, a finite float,
    a word, or a sequence of ints (as a tuple)."""
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, str) and _WORD.fullmatch(value):
        return value
    ints = isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )
    if ints and value:
        return tuple(value)
    _fail(where, f"model_args.{key}={value!r:.60} is not a value seres' model takes")


def hub_data_config(config: Mapping[str, Any], source: str = "") -> DataConfig:
    """The ``DataConfig`` of a timm hub config's (``check_hub_config``'s) ``pretrained_cfg``
    (timm's defaults where it has no entry); square sizes only, centre crops only."""
    from .data import DataError
    from .data.images import DataConfig

    where = source or "the hub config"
    pretrained = config.get("pretrained_cfg") or {}
    channels = (config.get("model_args") or {}).get("in_chans")
    fields: dict[str, Any] = {}
    for key in ("input_size", "test_input_size"):
        value = pretrained.get(key)
        if value is None:
            continue
        if not (_ints(value) and len(value) == 3):
            _fail(where, f"pretrained_cfg.{key} must be [channels, height, width], got "
                  f"{value!r:.60}")  # fmt: skip
        if value[1] != value[2]:
            _fail(where, f"pretrained_cfg.{key}={value}: seres evaluates square images only")
        if channels is not None and value[0] != channels:
            _fail(where, f"pretrained_cfg.{key}={value} contradicts in_chans={channels}")
        fields[key] = value[1]
    for key in ("crop_pct", "test_crop_pct"):
        value = pretrained.get(key)
        if value is not None:
            if not _number(value):
                _fail(where, f"pretrained_cfg.{key} must be a number, got {value!r:.60}")
            fields[key] = float(value)
    for key in ("mean", "std"):
        value = pretrained.get(key)
        if value is not None:
            if not (isinstance(value, list) and all(_number(v) for v in value)):
                _fail(where, f"pretrained_cfg.{key} must be a list of numbers, got {value!r:.60}")
            fields[key] = tuple(value)
    interpolation = pretrained.get("interpolation")
    if interpolation is not None:
        if not isinstance(interpolation, str):
            _fail(where, f"pretrained_cfg.interpolation must be a string, got "
                  f"{interpolation!r:.60}")  # fmt: skip
        fields["interpolation"] = interpolation
    crop_mode = pretrained.get("crop_mode", "center")
    if crop_mode != "center":
        _fail(where, f"pretrained_cfg.crop_mode={crop_mode!r:.60}: seres crops at the centre only")
    try:
        return DataConfig(**fields)
    except DataError as err:
        _fail(where, f"pretrained_cfg: {err}")


def _label_names(config: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
    """timm's ``label_names``: a list of names, or a mapping from class index to name."""
    names = config.get("label_names")
    if names is None:
        return None
    count = config.get("num_classes")
    if isinstance(names, dict) and all(isinstance(k, str) and k.isdigit() for k in names):
        by_index = {int(k): v for k, v in names.items()}
        names = [by_index.get(i) for i in range(len(by_index))]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        _fail(where, "label_names must be a list of strings (or a mapping from class index to "
              "string), one per class")  # fmt: skip
    if count is not None and len(names) != count:
        _fail(where, f"label_names has {len(names)} names for num_classes={count}")
    return tuple(names)


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _timm_names() -> frozenset[str]:
    """The registry's architectures that are timm's (not seres' own tiny models)."""
    from .resnet import ZOO
    from .senet import LEGACY_ZOO

    return frozenset(ZOO) | frozenset(LEGACY_ZOO)


def _fail(where: str, message: str) -> NoReturn:
    raise HubError(f"{where}: {message}")


def _fetch_weights(source: str, repo_id: str, commit: str) -> Path:
    """The first of ``WEIGHT_NAMES`` the snapshot has. A file the hub says is missing, or one
    the cache lacks where the hub cannot be asked, is skipped for the next: timm falls back
    the same way."""
    from huggingface_hub import constants

    missing: list[str] = []
    for filename in WEIGHT_NAMES:
        try:
            return _fetch(source, repo_id, filename, commit, missing_ok=True)
        except _MissingError as err:
            missing.append(str(err))
    if constants.HF_HUB_OFFLINE:
        hint = "unset HF_HUB_OFFLINE to download them"
    elif any("cache" in reason for reason in missing):
        hint = "check the connection to download them"
    else:
        hint = "not a timm model repository"
    _fail(source, f"commit {commit[:12]} has neither {' nor '.join(WEIGHT_NAMES)} "
          f"({'; '.join(missing)}): {hint}")  # fmt: skip


class _MissingError(Exception):
    """A file the repository (or, offline, the cache) does not have at that revision."""


def _fetch(
    source: str, repo_id: str, filename: str, revision: str | None, missing_ok: bool = False
) -> Path:
    """``hf_hub_download`` of one file into the hub cache, every failure one ``HubError``."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub import utils as errors  # the errors live here in every version

    from seres import __version__

    at = f" at {revision!r}" if revision else ""
    try:
        return Path(
            huggingface_hub.hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                library_name="seres",
                library_version=__version__,
            )
        )
    except errors.GatedRepoError:
        _fail(source, f"a gated repository: accept its terms on huggingface.co/{repo_id} and "
              f"{_LOGIN}")  # fmt: skip
    except errors.RepositoryNotFoundError:
        _fail(source, f"no such repository on the hub, or a private one: check the name, or "
              f"{_LOGIN}")  # fmt: skip
    except errors.RevisionNotFoundError:
        _fail(source, f"the repository has no revision {revision!r}: check the name after '@'")
    except errors.LocalEntryNotFoundError as err:
        # Not in the cache, and the hub could not be asked: offline, or the network failed.
        cache = constants.HF_HUB_CACHE
        if missing_ok and _in_cache(cache, repo_id, revision):
            raise _MissingError(f"{filename} is not in the hub cache's snapshot") from None
        if constants.HF_HUB_OFFLINE:
            _fail(source, f"{filename}{at} is not in the hub cache {cache} and HF_HUB_OFFLINE "
                  "is set: unset it to download, or set HF_HUB_CACHE/HF_HOME to a cache that "
                  "has it")  # fmt: skip
        _fail(source, f"cannot reach the hub ({_reason(err)}) and {filename}{at} is not in the "
              f"hub cache {cache}: check the connection or HF_ENDPOINT, or set "
              "HF_HUB_CACHE/HF_HOME to a cache that has it")  # fmt: skip
    except errors.EntryNotFoundError:
        if missing_ok:
            raise _MissingError(f"the hub has no {filename} there") from None
        _fail(source, f"the repository has no {filename}{at}: not a timm model (timm's have "
              f"{CONFIG_NAME} and {WEIGHT_NAMES[0]})")  # fmt: skip
    except errors.HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            _fail(source, f"the hub refused access (HTTP {status}): {_LOGIN} with a token that "
                  "may read it")  # fmt: skip
        _fail(source, f"the hub answered with an error ({_reason(err)}): try again later")
    except ValueError as err:  # arguments the hub library refuses (e.g. a revision's form)
        _fail(source, f"the hub library refused it: {_reason(err)}")
    except Exception as err:  # the transport's errors: connection, TLS, proxy, disk
        _fail(source, f"fetching {filename}{at} failed ({_reason(err)}): check the connection "
              "and that the hub cache (HF_HUB_CACHE/HF_HOME) is writable")  # fmt: skip


def _in_cache(cache: str, repo_id: str, revision: str | None) -> bool:
    """Whether the hub cache holds a snapshot of ``repo_id`` at ``revision`` (a commit hash,
    or a ref pointing at one)."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    commit = revision or "main"
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        try:
            commit = (repo / "refs" / commit).read_text().strip()
        except (OSError, ValueError):
            return False
    return (repo / "snapshots" / commit).is_dir()


def _reason(err: BaseException) -> str:
    """The first line of an error, with the first line of what caused it when it says more."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    cause = err.__cause__ or err.__context__
    if cause is not None and cause is not err:
        cause_lines = [line for line in str(cause).splitlines() if line.strip()]
        text += f" <- {type(cause).__name__}" + (f": {cause_lines[0]}" if cause_lines else "")
    return text[:300]
