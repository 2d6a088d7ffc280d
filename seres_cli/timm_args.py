"""timm's ``train.py`` arguments for ``seres train -c args.yaml`` and ``--recipe``: the table of
every key of timm's train.py parser (``TIMM_KEYS``: timm's default, its type, and what a seres run
does with it), the guarded ``args.yaml`` reader (``read_args_yaml``) and the mapping of timm keys
onto ``seres train``'s flag dests (``resolve``), with timm's per-device batch size turned into
seres' global one (``batch_note``).

The table is built for timm's train.py at commit ``aa4b585`` (1.0.29.dev0, 8 Aug 2026; 172
keys), the newest train.py obtainable here: timm 1.0.31's package ships no train.py (neither
wheel nor sdist). ``parity_tests/fixtures/record_timm_args.py`` records that parser's keys and
defaults, and ``args.yaml`` files written by it and by v0.9.16's, which the tests hold the table to.

Each key is one of

* **mapped**: sets the ``seres train`` flag dest ``dest`` (converted where timm's meaning or
  spelling differs, e.g. timm's ``batch_size`` is per device and micro-batch, seres' global);
* **irrelevant** to a JAX run (memory layout, PyTorch compilation, logging, where output goes,
  datasets seres refuses anyway): ignored whatever its value;
* **refused if changed**: not implemented; a file passes while the key holds timm's default (or a
  value meaning the same run, ``accept``), else it is refused. Some only act together with
  another key (``needs``): they pass whatever their value while that key is at its default.

Keys a file has that the table lacks (a newer timm's) are ignored with one warning; keys the
table has that the file lacks (an older timm's) take timm's default, as timm itself would.
Precedence: seres' defaults < ``--recipe`` < the ``-c`` file < command-line flags.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .common import UsageError

TIMM_TRAIN_PY = "aa4b5850c1543fa488abf260f18390eda46cf85d (timm 1.0.29.dev0, 2026-08-08)"
MAX_BYTES = 1 << 20  # an args.yaml is ~5 kB; a bigger file is not one
_MAX_DEPTH = 8  # timm's values nest two deep (a list in a mapping); deeper is hostile

Status = Literal["mapped", "irrelevant", "refused"]
# A value's YAML type: timm's argparse `type` (int, float, str), a list of them (`nargs`), a
# boolean (`store_true`) or a mapping (`ParseKwargs`). None is allowed where timm's default is None.
Kind = Literal["int", "float", "str", "bool", "ints", "floats", "strs", "kwargs"]


class _RefusedError(Exception):
    """A value a conversion cannot map: the message says why."""


@dataclass(frozen=True)
class TimmKey:
    """One key of timm's train.py: its ``default`` and ``kind``, what seres does with it
    (``status``), the flag dest it sets (``dest``, mapped keys) and ``why`` (the conversion, or
    why it is irrelevant or refused). ``accept``: values other than the default that a refused
    key may hold (the same run); ``needs``: the key it acts with (it passes, whatever its value,
    while that one is at its default). ``convert``: timm's value to seres' (default: as is)."""

    default: Any
    kind: Kind
    status: Status
    dest: str | None = None
    why: str = ""
    accept: tuple[Any, ...] = ()
    needs: str | None = None
    convert: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)


def _map(default: Any, kind: Kind, dest: str, why: str = "", convert: Any = None) -> TimmKey:
    return TimmKey(default, kind, "mapped", dest, why, convert=convert)


def _off(default: Any, kind: Kind, why: str) -> TimmKey:
    return TimmKey(default, kind, "irrelevant", why=why)


def _no(
    default: Any, kind: Kind, why: str, accept: tuple[Any, ...] = (), needs: str | None = None
) -> TimmKey:
    return TimmKey(default, kind, "refused", why=why, accept=accept, needs=needs)


def _none_if_empty(value: Any) -> Any:
    return value or None


def _tuple(value: Any) -> Any:
    return None if value is None else tuple(value)


# timm's names for an image folder: the empty default (a folder or a tar, by what --data-dir is),
# and the torchvision ImageFolder names.
_FOLDER_NAMES = ("", "folder", "imagefolder", "image_folder", "torch/folder", "torch/image_folder")


def _dataset(value: str) -> str:
    if value.lower() in _FOLDER_NAMES:
        return "imagefolder"
    raise _RefusedError("seres reads image folders only ('' or folder), no hfds/tfds/wds/torch")


def _opt(value: str) -> str:
    return value.lower()  # timm lower-cases it; an unknown name is refused by the validation


ITERABLE = "only read by hfds/hfids/tfds/wds datasets, which seres refuses (see dataset)"
TORCH = "a PyTorch/CUDA execution detail; XLA compiles and places the JAX run itself"
_NF, _NAFLEX = "naflex_loader", "goes with naflex_loader"
_KDN, _KD = "kd_model_name", "goes with kd_model_name"
LOGGING = "timm's logging and output; seres takes --workdir, --log-every and --keep instead"

TIMM_KEYS: dict[str, TimmKey] = {
    # Dataset parameters
    "data": _map(None, "str", "data_dir", "timm's deprecated positional path: data_dir "
                 "when data_dir is unset, as in timm"),
    "data_dir": _map(None, "str", "data_dir"),
    "dataset": _map("", "str", "dataset", "'', folder, imagefolder -> imagefolder", _dataset),
    "train_split": _no("train", "str", "seres reads ROOT/train"),
    "val_split": _no("validation", "str", "seres reads ROOT/val (timm's 'validation' looks "
                     "for val/, valid/, validation/, eval/, evaluation/)", accept=("val",)),
    "train_num_samples": _off(None, "int", ITERABLE),
    "val_num_samples": _off(None, "int", ITERABLE),
    "dataset_download": _off(False, "bool", "only torch/ and tfds/ datasets download, which "
                             "seres refuses (see dataset)"),
    "class_map": _no("", "str", "a class-to-index file: seres indexes the sorted class "
                     "directories, as timm does without one"),
    "input_img_mode": _no(None, "str", "seres decodes RGB", accept=("RGB",)),
    "input_key": _off(None, "str", ITERABLE),
    "target_key": _off(None, "str", ITERABLE),
    "dataset_trust_remote_code": _off(False, "bool", ITERABLE),
    # Model parameters
    "model": _map("resnet50", "str", "model", "a seres_jax.registry name (timm's seresnet50 "
                  "etc.); an unknown one is refused by the usual validation"),
    "pretrained": _map(False, "bool", "pretrained", "the hub weights of --model's tag"),
    "pretrained_path": _no(None, "str", "use initial_checkpoint for a file of weights"),
    "initial_checkpoint": _map("", "str", "initial_checkpoint", "a path or hf-hub: name",
                               convert=_none_if_empty),
    "resume": _no("", "str", "timm's checkpoint resume; seres resumes its own --workdir "
                  "(--resume)"),
    "no_resume_opt": _no(False, "bool", "goes with resume", needs="resume"),
    "num_classes": _map(None, "int", "num_classes", "None: the data's classes (timm: the "
                        "model's 1000)"),
    "gp": _no(None, "str", "the zoo pools by average", accept=("avg",)),
    "img_size": _map(None, "int", "image_size", "input_size wins when both are set, as in timm"),
    "in_chans": _map(None, "int", "in_chans", "must be the data's channels"),
    "input_size": _map(None, "ints", "image_size", "[3, S, S] -> S: three channels, square "
                       "images only"),
    "crop_pct": _map(None, "float", "crop_pct"),
    "mean": _no(None, "floats", "seres normalises with the model's pretrained mean"),
    "std": _no(None, "floats", "seres normalises with the model's pretrained std"),
    "interpolation": _map("", "str", "interpolation", "'' -> the model's", _none_if_empty),
    "batch_size": _map(128, "int", "batch_size", "per device and micro-batch in timm: x devices "
                       "x grad_accum_steps = seres' batch per update"),
    "validation_batch_size": _off(None, "int", "evaluation's batch only: the same metrics"),
    "channels_last": _off(False, "bool", TORCH),
    "fuser": _off("", "str", TORCH),
    "grad_accum_steps": _map(1, "int", "grad_accum_steps"),
    "grad_checkpointing": _off(False, "bool", "trades memory for time: the same numbers"),
    "fast_norm": _off(False, "bool", "timm's fused LayerNorm/GroupNorm kernels; the zoo has "
                      "BatchNorm only"),
    "model_kwargs": _no({}, "kwargs", "constructor arguments: give them in --model as "
                        "name:key=value"),
    "head_init_scale": _no(None, "float", "classifier initialisation scale"),
    "head_init_bias": _no(None, "float", "classifier initialisation bias"),
    "torchcompile_mode": _off(None, "str", TORCH),
    "torchscript": _off(False, "bool", TORCH),
    "torchcompile": _off(None, "str", TORCH),
    # Device parameters
    "device": _off("cuda", "str", TORCH),
    "amp": _map(False, "bool", "precision", "true -> bf16 (bfloat16 compute, float32 "
                "parameters), false -> fp32"),
    "amp_dtype": _map("float16", "str", "precision", "with amp, float16 and bfloat16 both run "
                      "as bf16: seres has no float16 loss scaling, bfloat16 needs none"),
    "model_dtype": _no(None, "str", "seres keeps float32 parameters", accept=("float32",)),
    "no_ddp_bb": _off(False, "bool", "DDP's buffer broadcast; seres keeps one copy of the "
                      "BatchNorm statistics"),
    "synchronize_step": _off(False, "bool", TORCH),
    "local_rank": _off(0, "int", "torch.distributed's; JAX numbers its processes itself"),
    "device_modules": _off(None, "strs", TORCH),
    # Optimizer parameters
    "opt": _map("sgd", "str", "optimizer", "lower-cased, as timm does", _opt),
    "opt_eps": _map(None, "float", "opt_eps"),
    "opt_betas": _map(None, "floats", "opt_betas", convert=_tuple),
    "momentum": _map(0.9, "float", "momentum"),
    "weight_decay": _map(2e-05, "float", "weight_decay"),
    "clip_grad": _map(None, "float", "clip_grad"),
    "clip_mode": _map("norm", "str", "clip_mode"),
    "layer_decay": _no(None, "float", "layer-wise lr decay"),
    "layer_decay_min_scale": _no(0, "float", "goes with layer_decay", needs="layer_decay"),
    "layer_decay_no_opt_scale": _no(None, "float", "goes with layer_decay", needs="layer_decay"),
    "opt_kwargs": _no({}, "kwargs", "optimizer arguments beyond timm's flags"),
    # Learning rate schedule parameters
    "sched": _map("cosine", "str", "sched", "seres has cosine, tanh, poly, step, multistep, "
                  "constant, plateau: others are refused by the validation"),
    "sched_on_updates": _map(False, "bool", "sched_on_updates"),
    "lr": _map(None, "float", "lr", "null or 0 -> from lr_base, as in timm", _none_if_empty),
    "lr_base": _map(0.1, "float", "lr_base"),
    "lr_base_size": _map(256, "int", "lr_base_size"),
    "lr_base_scale": _map("", "str", "lr_base_scale", "'' -> by optimizer, as in timm",
                          _none_if_empty),
    "lr_noise": _no(None, "floats", "lr noise"),
    "lr_noise_pct": _no(0.67, "float", "goes with lr_noise", needs="lr_noise"),
    "lr_noise_std": _no(1.0, "float", "goes with lr_noise", needs="lr_noise"),
    "lr_cycle_mul": _map(1.0, "float", "lr_cycle_mul"),
    "lr_cycle_decay": _map(0.5, "float", "lr_cycle_decay"),
    "lr_cycle_limit": _map(1, "int", "lr_cycle_limit"),
    "lr_k_decay": _map(1.0, "float", "lr_k_decay"),
    "warmup_lr": _map(1e-05, "float", "warmup_lr"),
    "min_lr": _map(0, "float", "min_lr"),
    "epochs": _map(300, "int", "epochs"),
    "epoch_repeats": _off(0.0, "float", ITERABLE),
    "start_epoch": _no(None, "int", "timm's resume epoch; seres resumes where its --workdir "
                       "stopped"),
    "decay_milestones": _map([90, 180, 270], "ints", "decay_milestones", convert=_tuple),
    "decay_epochs": _map(90, "float", "decay_epochs"),
    "warmup_epochs": _map(5, "int", "warmup_epochs"),
    "warmup_prefix": _map(False, "bool", "warmup_prefix"),
    "cooldown_epochs": _map(0, "int", "cooldown_epochs"),
    "patience_epochs": _map(10, "int", "patience_epochs"),
    "decay_rate": _map(0.1, "float", "decay_rate"),
    # Augmentation and regularization parameters
    "no_aug": _no(False, "bool", "timm's no_aug trains on resize + centre crop at the image "
                  "size; seres' --no-augment trains on the eval transform (crop_pct)"),
    "train_crop_mode": _no(None, "str", "seres crops with RandomResizedCrop (rrc)",
                           accept=("rrc",)),
    "scale": _map([0.08, 1.0], "floats", "scale", convert=_tuple),
    "ratio": _map([0.75, 1.3333333333333333], "floats", "ratio", convert=_tuple),
    "hflip": _map(0.5, "float", "hflip"),
    "vflip": _map(0.0, "float", "vflip"),
    "color_jitter": _map(0.4, "float", "color_jitter"),
    "color_jitter_prob": _map(None, "float", "color_jitter_prob"),
    "grayscale_prob": _map(None, "float", "grayscale_prob", "null -> 0",
                           lambda v: 0.0 if v is None else v),
    "gaussian_blur_prob": _no(None, "float", "gaussian blur", accept=(0, 0.0)),
    "aa": _map(None, "str", "aa"),
    "aug_repeats": _map(0, "float", "aug_repeats", "a whole number"),
    "aug_splits": _no(0, "int", "augmentation splits (AugMix)"),
    "jsd_loss": _no(False, "bool", "the JSD loss needs augmentation splits"),
    "bce_loss": _map(False, "bool", "bce_loss"),
    "bce_sum": _map(False, "bool", "bce_sum"),
    "bce_target_thresh": _map(None, "float", "bce_target_thresh"),
    "bce_pos_weight": _map(None, "float", "bce_pos_weight"),
    "reprob": _map(0.0, "float", "reprob"),
    "remode": _map("pixel", "str", "remode"),
    "recount": _map(1, "int", "recount"),
    "resplit": _map(False, "bool", "resplit"),
    "mixup": _map(0.0, "float", "mixup"),
    "cutmix": _map(0.0, "float", "cutmix"),
    "cutmix_minmax": _no(None, "floats", "cutmix min/max ratios"),
    "mixup_prob": _map(1.0, "float", "mix_prob"),
    "mixup_switch_prob": _map(0.5, "float", "mixup_switch_prob"),
    "mixup_mode": _no("batch", "str", "seres mixes per batch only"),
    "mixup_off_epoch": _no(0, "int", "mixup off after an epoch"),
    "smoothing": _map(0.1, "float", "label_smoothing"),
    "train_interpolation": _map("random", "str", "train_interpolation", "'' -> the model's "
                                "interpolation, as in timm", _none_if_empty),
    "drop": _map(0.0, "float", "drop"),
    "drop_connect": _off(None, "float", "deprecated; timm's train.py reads it nowhere"),
    "drop_path": _map(None, "float", "drop_path"),
    "drop_block": _no(None, "float", "DropBlock"),
    # Batch norm parameters
    "bn_momentum": _no(None, "float", "seres' BatchNorm keeps PyTorch's momentum 0.1"),
    "bn_eps": _no(None, "float", "seres' BatchNorm keeps the model's epsilon"),
    "sync_bn": _off(False, "bool", "seres' BatchNorm always reduces over the global batch "
                    "(SyncBatchNorm's statistics, whatever this says)"),
    "dist_bn": _off("reduce", "str", "one copy of the BatchNorm statistics: nothing to reduce"),
    "split_bn": _no(False, "bool", "needs augmentation splits"),
    # Model exponential moving average parameters
    "model_ema": _map(False, "bool", "model_ema"),
    "model_ema_force_cpu": _off(False, "bool", "where the EMA lives, not what it is"),
    "model_ema_decay": _map(0.9998, "float", "model_ema_decay"),
    "model_ema_warmup": _map(False, "bool", "model_ema_warmup"),
    # Miscellaneous parameters
    "seed": _map(42, "int", "seed", "seeds JAX's generators: not torch's draws"),
    "worker_seeding": _off("all", "str", "torch DataLoader worker seeding; grain seeds its own"),
    "log_interval": _off(50, "int", LOGGING),
    "val_interval": _no(1, "int", "seres evaluates every epoch"),
    "recovery_interval": _off(0, "int", LOGGING),
    "checkpoint_hist": _off(10, "int", "timm keeps the N best checkpoints; seres keeps the "
                            "last --keep"),
    "workers": _map(4, "int", "workers", "grain worker processes"),
    "save_images": _off(False, "bool", LOGGING),
    "pin_mem": _off(False, "bool", TORCH),
    "no_prefetcher": _off(False, "bool", TORCH),
    "output": _off("", "str", LOGGING),
    "experiment": _off("", "str", LOGGING),
    "eval_metric": _map("top1", "str", "eval_metric"),
    "tta": _no(0, "int", "test-time augmentation"),
    "use_multi_epochs_loader": _off(False, "bool", TORCH),
    "log_wandb": _off(False, "bool", LOGGING),
    "wandb_project": _off(None, "str", LOGGING),
    "wandb_tags": _off([], "strs", LOGGING),
    "wandb_resume_id": _off("", "str", LOGGING),
    # Scheduled resolution loader arguments
    "train_img_sizes": _no(None, "ints", "scheduled training resolutions"),
    "train_batch_sizes": _no(None, "ints", "goes with train_img_sizes", needs="train_img_sizes"),
    "train_size_probs": _no(None, "floats", "goes with train_img_sizes", needs="train_img_sizes"),
    "train_size_schedule": _no("constant", "str", "goes with train_img_sizes",
                               needs="train_img_sizes"),
    "train_size_schedule_spread": _no(0.65, "float", "goes with train_img_sizes",
                                      needs="train_img_sizes"),
    "train_size_random_mix": _no(0.1, "float", "goes with train_img_sizes",
                                 needs="train_img_sizes"),
    "train_batches_per_epoch": _no(None, "int", "seres trains every batch of an epoch"),
    "variable_batch_loss_scale": _no("none", "str", "goes with train_img_sizes",
                                     needs="train_img_sizes"),
    # NaFlex scheduled loader arguments
    "naflex_loader": _no(False, "bool", "NaFlex (ViT sequence) loading; the zoo is convolutional"),
    "naflex_train_seq_lens": _no([128, 256, 576, 784, 1024], "ints", _NAFLEX, needs=_NF),
    "naflex_max_seq_len": _no(576, "int", _NAFLEX, needs=_NF),
    "naflex_patch_sizes": _no(None, "ints", _NAFLEX, needs=_NF),
    "naflex_patch_size_probs": _no(None, "floats", _NAFLEX, needs=_NF),
    "naflex_loss_scale": _no("linear", "str", _NAFLEX, needs=_NF),
    "naflex_patchify_channels_first": _no(False, "bool", _NAFLEX, needs=_NF),
    # Knowledge distillation parameters
    "kd_model_name": _no(None, "str", "knowledge distillation"),
    "kd_distill_type": _no("logit", "str", _KD, needs=_KDN),
    "kd_loss_type": _no("kl", "str", _KD, needs=_KDN),
    "distill_loss_weight": _no(None, "float", _KD, needs=_KDN),
    "task_loss_weight": _no(None, "float", _KD, needs=_KDN),
    "kd_temperature": _no(4.0, "float", _KD, needs=_KDN),
    "kd_student_feature_dim": _no(None, "int", _KD, needs=_KDN),
    "kd_teacher_feature_dim": _no(None, "int", _KD, needs=_KDN),
    "kd_token_distill_type": _no("soft", "str", _KD, needs=_KDN),
}  # fmt: skip


# --------------------------------------------------------------------------- reading a file


def _escape(text: str, limit: int = 60) -> str:
    """``text`` as one printable line of at most ``limit`` characters: a hostile file chooses
    its keys and values, which land in messages."""
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def _short(value: Any) -> str:
    return _escape(repr(value))


def _events_checked(text: str, where: str) -> None:
    """Refuse what ``yaml.safe_load`` would accept but no ``args.yaml`` holds: anchors and
    aliases (an alias bomb expands a few kB into gigabytes once walked), explicit tags
    (``!!python/object`` and friends, ``!!binary``, ``!!timestamp``), several documents and deep
    nesting. PyYAML's event parser is iterative and expands nothing, so this costs one pass."""
    import yaml

    depth, documents = 0, 0
    try:
        for event in yaml.parse(text, Loader=_loader()):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise UsageError(f"{where}: YAML anchors and aliases are not allowed")
            if getattr(event, "tag", None) is not None:
                raise UsageError(f"{where}: YAML tags are not allowed, got {_escape(event.tag)}")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise UsageError(f"{where}: more than one YAML document")
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > _MAX_DEPTH:
                    raise UsageError(f"{where}: nested more than {_MAX_DEPTH} deep")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as err:
        raise UsageError(f"{where}: not valid YAML: {_yaml_problem(err)}") from None


def _loader() -> Any:
    """PyYAML's safe loader, libyaml's C one where PyYAML was built with it (10x faster on a
    1 MiB file)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_problem(err: Any) -> str:
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return _escape(str(problem), 120) + (f" (line {mark.line + 1})" if mark is not None else "")


def read_args_yaml(path: Path) -> dict[str, Any]:
    """The mapping an ``args.yaml`` holds, keys as written. Every problem is a ``UsageError``
    naming ``path``: missing, unreadable, not a regular file, over ``MAX_BYTES`` (refused
    before it is read), not UTF-8, not YAML, YAML beyond plain scalars, lists and mappings, a
    top level that is not a mapping, a key that is not a string."""
    import yaml

    where = f"-c {path}"
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{where}: is a directory, not an args.yaml file")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{where}: not a regular file")
        if info.st_size > MAX_BYTES:
            raise UsageError(f"{where}: {info.st_size} bytes; an args.yaml is at most {MAX_BYTES}")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # the file may have grown since the stat
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except OSError as err:
        raise UsageError(f"{where}: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise UsageError(f"{where}: more than {MAX_BYTES} bytes; an args.yaml is not that big")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{where}: not UTF-8 text (byte {err.start})") from None
    _events_checked(text, where)
    try:
        loaded = yaml.load(text, Loader=_loader())  # a safe loader: plain data only
    except yaml.YAMLError as err:  # e.g. an unhashable key
        raise UsageError(f"{where}: not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(loaded, dict):
        what = "empty" if loaded is None else f"a {type(loaded).__name__}"
        raise UsageError(f"{where}: is {what}, not a mapping of timm train.py arguments")
    bad = [key for key in loaded if not isinstance(key, str)]
    if bad:
        keys = ", ".join(_short(key) for key in bad[:5])
        raise UsageError(f"{where}: keys must be strings (timm's argument names), got {keys}")
    return loaded


# --------------------------------------------------------------------------- types and mapping


def _type_problem(kind: Kind, value: Any, nullable: bool) -> str | None:
    """What is wrong with ``value`` as a ``kind`` (``None``: nothing)."""

    def number(v: Any, integer: bool) -> bool:
        if isinstance(v, bool):
            return False
        return isinstance(v, int) if integer else isinstance(v, (int, float))

    if value is None:
        return None if nullable else "must not be null"
    ok = {
        "int": lambda: number(value, True),
        "float": lambda: number(value, False),
        "str": lambda: isinstance(value, str),
        "bool": lambda: isinstance(value, bool),
        "ints": lambda: isinstance(value, list) and all(number(v, True) for v in value),
        "floats": lambda: isinstance(value, list) and all(number(v, False) for v in value),
        "strs": lambda: isinstance(value, list) and all(isinstance(v, str) for v in value),
        "kwargs": lambda: isinstance(value, dict) and all(isinstance(k, str) for k in value),
    }[kind]()
    if ok:
        return None
    what = {
        "int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
        "ints": "a list of integers", "floats": "a list of numbers", "strs": "a list of strings",
        "kwargs": "a mapping",
    }[kind]  # fmt: skip
    return f"must be {what}" + (" or null" if nullable else "")


def _is_default(key: str, value: Any) -> bool:
    spec = TIMM_KEYS[key]
    same = value == spec.default and type(value) is type(spec.default)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return same or (numeric and value == spec.default) or value in spec.accept


def _problems(values: Mapping[str, Any]) -> Iterator[str]:
    """Each value of the wrong type, then the refused keys off their default, in one item."""
    refused = []
    for key, value in values.items():
        spec = TIMM_KEYS[key]
        wrong = _type_problem(spec.kind, value, spec.default is None)
        if wrong:
            yield f"{key} {wrong}, got {_short(value)}"
            continue
        inert = spec.needs is not None and _is_default(spec.needs, values[spec.needs])
        if spec.status == "refused" and not _is_default(key, value) and not inert:
            refused.append(f"{key}={_short(value)} ({spec.why})")
    if refused:
        yield "seres does not implement (only timm's default passes): " + ", ".join(refused)


def _image_size(values: Mapping[str, Any]) -> int | None:
    size = values["input_size"]
    if size is None:
        return values["img_size"]
    if len(size) != 3 or size[0] != 3 or size[1] != size[2]:
        raise _RefusedError(f"input_size={_short(size)}: seres trains 3-channel square images")
    return size[1]


def _precision(values: Mapping[str, Any]) -> str:
    if values["amp"] and values["amp_dtype"] not in ("float16", "bfloat16"):
        dtype = _short(values["amp_dtype"])
        raise _RefusedError(f"amp_dtype={dtype}: timm takes float16 or bfloat16")
    return "bf16" if values["amp"] else "fp32"


def map_timm_args(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``values`` (every key of ``TIMM_KEYS``) as ``seres train`` flag dests, and the problems
    found (wrong types, refused keys), all of them. The batch size stays timm's (per device):
    ``batch_size`` here is that number."""
    problems = list(_problems(values))
    if problems:
        return {}, problems
    flags: dict[str, Any] = {}
    special: dict[str, Callable[[Mapping[str, Any]], Any]] = {
        "data_dir": lambda v: v["data_dir"] or v["data"],
        "image_size": _image_size,
        "precision": _precision,
    }
    for key, spec in TIMM_KEYS.items():
        if spec.status != "mapped" or spec.dest is None:
            continue
        try:
            if spec.dest in special:
                flags[spec.dest] = special[spec.dest](values)
            else:
                value = values[key]
                flags[spec.dest] = spec.convert(value) if spec.convert else value
        except _RefusedError as err:
            message = str(err)
            problems.append(message if "=" in message else f"{key}={_short(values[key])}: {err}")
    return flags, sorted(set(problems), key=problems.index)


# --------------------------------------------------------------------------- file + recipe


@dataclass(frozen=True)
class TimmRun:
    """What ``-c`` and ``--recipe`` resolve to: ``flags`` (``seres train`` dests -> values,
    ``batch_size`` left out) and the batch: ``per_device`` (timm's ``batch_size``, from the
    file or timm's default) or, for a recipe without a file batch, ``global_batch`` (the
    paper's batch of one update). ``label`` names the source of the batch, for the message;
    ``unknown``: the file's keys the table lacks."""

    flags: dict[str, Any]
    per_device: int | None
    global_batch: int | None
    label: str
    unknown: tuple[str, ...] = ()


def resolve(config: Path | None, recipe: str | None) -> TimmRun:
    """timm's defaults, then ``recipe``'s keys, then the file's, mapped onto ``seres train``'s
    flag dests. A ``UsageError`` names the file (or the recipe) and every problem at once."""
    from .recipes import RECIPES

    values = {key: spec.default for key, spec in TIMM_KEYS.items()}
    label = f"--recipe {recipe}"
    global_batch = None
    extra: dict[str, Any] = {}
    if recipe is not None:
        chosen = RECIPES[recipe]
        values.update(chosen.keys)
        global_batch = chosen.batch_size
        extra = dict(chosen.seres)
    file_batch = False
    unknown: tuple[str, ...] = ()
    if config is not None:
        read = read_args_yaml(config)
        label = str(config)
        unknown = tuple(key for key in read if key not in TIMM_KEYS)
        values.update({key: value for key, value in read.items() if key in TIMM_KEYS})
        file_batch = "batch_size" in read
    flags, problems = map_timm_args(values)
    if problems:
        raise UsageError(f"{label}: " + "; ".join(problems))
    per_device = flags.pop("batch_size")
    if global_batch is not None and not file_batch:
        per_device = None
    else:
        global_batch = None
    if per_device is not None and per_device < 1:
        raise UsageError(f"{label}: batch_size must be >= 1, got {per_device}")
    return TimmRun({**flags, **extra}, per_device, global_batch, label, unknown)


def unknown_warning(run: TimmRun) -> str | None:
    """The one ``seres: warning:`` line for keys the table lacks, or ``None``."""
    if not run.unknown:
        return None
    shown = ", ".join(_escape(key, 40) for key in run.unknown[:20])
    more = f" and {len(run.unknown) - 20} more" if len(run.unknown) > 20 else ""
    return (f"seres: warning: {_escape(run.label, 200)}: ignoring {len(run.unknown)} key(s) that "
            f"timm's train.py {TIMM_TRAIN_PY.split()[0][:7]} does not have (another timm "
            f"version's?): {shown}{more}")  # fmt: skip


def batch_note(label: str, per_device: int, devices: int, accum: int) -> str:
    """The first line of a run whose batch came from timm's per-device ``batch_size``."""
    total = per_device * devices * accum
    dev = "device" if devices == 1 else "devices"
    steps = "accumulation step" if accum == 1 else "accumulation steps"
    return (f"seres: {_escape(label, 200)} batch_size {per_device} is per device: {per_device} x "
            f"{devices} {dev} x {accum} {steps} = batch {total} per update")  # fmt: skip
