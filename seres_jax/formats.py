"""Checkpoint files in four formats: read safely, verified, written atomically.

=====================  ==============  ====================================================
format                 holds           chosen by
=====================  ==============  ====================================================
PyTorch (``torch``)    a state_dict    ``.pt`` / ``.pth`` / ``.bin`` (``pytorch_model.bin``)
safetensors            a state_dict    ``.safetensors`` (PyTorch key names; no torch needed)
Flax msgpack           Flax variables  ``.msgpack`` (``flax.serialization``)
orbax                  Flax variables  a directory, or a path without a suffix
=====================  ==============  ====================================================

**Reading.** PyTorch files are loaded with ``torch.load(weights_only=True)``, so a pickle that
would run code is refused before anything runs; a state_dict nested under ``state_dict`` or
``model`` is unwrapped and a common ``module.`` (DataParallel) or ``_orig_mod.``
(``torch.compile``) prefix is stripped. An orbax directory may be a checkpoint, a step of a
``CheckpointManager`` (its ``default`` item) or a manager's root (its latest step), as
``seres train`` writes them; from a training state only ``params`` and ``batch_stats`` are
restored. Every failure — missing, truncated, corrupt, hostile or wrong content — is a
``CheckpointError`` (or, against a template, a ``ConversionError``) with a readable message.

**Hostile files cost bounded memory.** Every entry's shape and dtype are read and checked
before any tensor is: against ``template`` when one is given (every missing, unexpected or
mis-shaped entry listed, in the file's own names and layout), and always for what seres reads
at all — string keys, at least one tensor, dense real floating-point tensors (integer ones for
BatchNorm's counter); no sparse, quantized, complex or meta tensors. A file cannot declare more
tensor data than it holds: a ``.pt`` is opened with ``mmap=True`` (storages stay on disk) and a
tensor larger than its storage (a stride trick, or views that overlap) is refused (a ``.pt``
in PyTorch's pre-1.6 format is read into memory, as large as the file); safetensors' header is
bounded (16 MiB) and its offsets must match the file; an orbax checkpoint may declare at most
16 times its bytes on disk (plus 64 MiB) — zstd does not compress real weights further —
unless ``template`` bounds it instead; a ``.msgpack`` holds its arrays inline, and with a
template its size must fit the template's.

**Integrity.** A ``.pt`` is a zip: each member's CRC-32 is verified, streamed in 1 MiB chunks,
before ``torch.load``. seres records a SHA-256 in what it writes and verifies it on reading:
over the tensors (each entry's name, dtype, shape and bytes, in name order; see
``tensor_digest``) in a safetensors file's ``__metadata__`` and in an orbax checkpoint's
``custom_metadata`` (both under ``seres.sha256``), and over the whole file in a
``<name>.msgpack.sha256`` file beside a ``.msgpack`` (``sha256sum -c`` reads it). A file
without a checksum (written by other tools) still loads; one whose checksum does not match is
refused. So damage to a file's tensors goes unnoticed only where nothing records them: a
``.msgpack`` without its ``.sha256``, or safetensors and orbax files written by other tools.

**Writing** goes through ``seres_jax.atomic``: a temporary file or directory beside the
destination, renamed into place only when complete, so a failure or a crash never leaves a
partial destination. An existing destination is replaced only with ``force=True``, and only by
the same kind of thing: a file by a file, an orbax checkpoint by an orbax checkpoint (a
directory holding orbax's ``_CHECKPOINT_METADATA`` and nothing but orbax's files; never another
directory), and never a destination that is or contains the file being converted.
Every refusal and every failure to write (a full disk, a read-only directory) is one
``CheckpointError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from flax.core import unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict

from . import atomic
from .convert import (
    ConversionError,
    check_state_dict,
    check_variables,
    flax_to_state_dict,
    to_numpy,
    to_torch,
    torch_to_flax,
)

PathLike = str | os.PathLike[str]
"""A file system path as the functions here take it: a string or any ``os.PathLike``."""
Kind = Literal["state_dict", "variables"]
"""What a checkpoint holds: a PyTorch-keyed ``state_dict`` or a Flax ``variables`` tree."""
FORMATS: dict[str, tuple[str, Kind]] = {
    ".pt": ("torch", "state_dict"),
    ".pth": ("torch", "state_dict"),
    ".bin": ("torch", "state_dict"),  # the hub's pytorch_model.bin
    ".safetensors": ("safetensors", "state_dict"),
    ".msgpack": ("msgpack", "variables"),
    "": ("orbax", "variables"),
}
"""A path's suffix -> its format and what that holds; ``""`` (no suffix, or a directory) is
orbax. ``format_of`` reads it and names the known suffixes when a path has none of them."""
_WRAPPERS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")
# The dtypes seres reads: real floating-point weights, and integers for BatchNorm's counter.
_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")
_SAFETENSORS_DTYPES = {
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64", "U8": "uint8",
}  # fmt: skip
_SAFETENSORS_MAX_HEADER = 16 << 20
_ORBAX_EXPANSION, _ORBAX_SLACK = 16, 64 << 20
_MSGPACK_SLACK_PER_ENTRY, _MSGPACK_SLACK = 4 << 10, 1 << 20
_CHUNK = 1 << 20
DIGEST_KEY = "seres.sha256"
"""The metadata key under which seres records ``tensor_digest`` in the safetensors and orbax
files it writes, and verifies it on reading."""
_ORBAX_ENTRIES = re.compile(
    r"_CHECKPOINT_METADATA|_METADATA|_sharding|commit_success\.txt|manifest\.ocdbt|d|descriptor"
    r"|array_metadatas|ocdbt\.process_\d+"
)
_OS_ERROR_CODE = re.compile(r"os_error_code='(\d+)'|os error (\d+)")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or written; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: a PyTorch-keyed ``state_dict`` or a Flax ``variables`` tree."""

    kind: Kind
    data: dict[str, Any]
    path: Path

    def to_variables(self, template: Any = None) -> dict[str, Any]:
        """As Flax variables (strict against ``template`` when given)."""
        if self.kind == "state_dict":
            return torch_to_flax(self.data, template)
        if template is not None:
            check_variables(self.data, template)
        return self.data

    def to_state_dict(self, template: Any = None) -> dict[str, Any]:
        """As a PyTorch-keyed dict of arrays (strict against a Flax ``template`` when given)."""
        if template is not None:
            return flax_to_state_dict(self.to_variables(template))
        if self.kind == "variables":
            return flax_to_state_dict(self.data)
        return self.data

    @property
    def num_tensors(self) -> int:
        """How many tensors (state_dict entries, or leaves of the variables) it holds."""
        return len(self.data) if self.kind == "state_dict" else len(flatten_dict(self.data))


def format_of(path: PathLike) -> tuple[str, Kind]:
    """``(format name, kind)`` of ``path``, from its suffix (a directory without a file
    format's suffix is orbax)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS and p.is_dir():
        suffix = ""
    if suffix not in FORMATS:
        known = ", ".join(s for s in FORMATS if s) + " or a directory (orbax)"
        raise CheckpointError(f"{p}: unknown checkpoint format {suffix!r}; use {known}")
    return FORMATS[suffix]


def tensor_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of named arrays: each one's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.name}\0{array.shape}\0".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _nbytes(spec: Any) -> int:
    return int(np.prod(spec.shape, dtype=np.int64)) * spec.dtype.itemsize


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


@contextlib.contextmanager
def _unreadable(path: Path, what: str) -> Iterator[None]:
    """Report whatever a reader library raises as ``path`` being unreadable, in one line."""
    try:
        yield
    except (CheckpointError, ConversionError):
        raise
    except Exception as err:  # truncated, bad magic number, EOF, corrupt, ...
        raise CheckpointError(f"{path}: not a readable {what} ({_first_line(err)})") from None


# --------------------------------------------------------------------------- reading


def load_checkpoint(path: PathLike, *, template: Any = None) -> Checkpoint:
    """Read ``path`` in the format its name says (see the module docstring).

    With ``template`` (Flax variables or their shapes), the file's entries are checked against
    it before any tensor is read: a ``ConversionError`` lists every problem.
    """
    p = Path(path)
    name, kind = format_of(p)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    if name == "orbax" and not p.is_dir():
        known = ", ".join(s for s in FORMATS if s)
        raise CheckpointError(
            f"{p}: a file without a checkpoint suffix ({known}); an orbax checkpoint is a directory"
        )
    reader = {
        "torch": _read_torch,
        "safetensors": _read_safetensors,
        "msgpack": _read_msgpack,
        "orbax": _read_orbax,
    }[name]
    return Checkpoint(kind, reader(p, template), p)


def _check_declared(
    path: Path, kind: Kind, specs: Mapping[Any, Any], template: Any, on_disk: int | None = None
) -> None:
    """Check a file's entries (``{name: shape and dtype}``) before any tensor is read."""
    if not specs:
        raise CheckpointError(f"{path}: holds no tensors")

    def label(key: Any) -> str:
        return "/".join(key) if kind == "variables" else repr(key)

    _refuse_dtypes(
        path, [f"{label(k)} ({s.dtype})" for k, s in specs.items() if s.dtype.name not in _DTYPES]
    )
    if template is not None:
        if kind == "state_dict":
            check_state_dict(specs, template)
        else:
            check_variables(unflatten_dict(specs), template)
    elif on_disk is not None:
        declared = sum(_nbytes(s) for s in specs.values())
        if declared > _ORBAX_EXPANSION * on_disk + _ORBAX_SLACK:
            raise CheckpointError(
                f"{path}: declares {_size(declared)} of tensors in {_size(on_disk)} on disk, "
                f"more than compression explains (at most {_ORBAX_EXPANSION}x); refusing to "
                "expand it (check it against an architecture, --arch, to lift this limit)"
            )


def _refuse_dtypes(path: Path, bad: list[str]) -> None:
    if bad:
        raise CheckpointError(
            f"{path}: entries that are not real floating-point (or integer counter) tensors: "
            f"{', '.join(bad)}"
        )


def _verify_digest(path: Path, recorded: Any, arrays: Mapping[str, np.ndarray]) -> None:
    if recorded is None:
        return  # written by another tool: nothing to verify against
    actual = tensor_digest(arrays)
    if recorded != actual:
        raise CheckpointError(
            f"{path}: corrupt: its tensors' SHA-256 is {actual[:16]}..., the file records "
            f"{str(recorded)[:16]}..."
        )


def _require_torch(path: Path) -> None:
    """Refuse a ``.pt``/``.pth`` in one line where PyTorch is not installed (a TPU VM)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CheckpointError(
            f"{path}: .pt and .pth files need PyTorch, which is not installed here "
            "(pip install torch); .safetensors holds the same state_dict without it"
        ) from None


def _read_torch(path: Path, template: Any) -> dict[str, Any]:
    import pickle

    _require_torch(path)
    import torch

    zipped = zipfile.is_zipfile(path)
    if zipped:
        _verify_zip(path)
    try:
        with warnings.catch_warnings():
            # torch warns about deprecated storage and quantization types a file names: noise
            # around the one line a user gets (such tensors are refused below).
            warnings.simplefilter("ignore")
            # mmap: storages stay on disk until a tensor is copied, after the checks below.
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it holds pickled objects other than tensors and "
            f"containers, which weights_only=True does not run (nothing was executed; "
            f"{_first_line(err)})"
        ) from None
    except Exception as err:  # truncated, bad magic number, EOF, ...
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})"
        ) from None
    state_dict = _unwrap_state_dict(obj, path)
    _check_declared(path, "state_dict", _torch_specs(state_dict, path), template)
    return state_dict


def _verify_zip(path: Path) -> None:
    """Check every member's CRC-32, in bounded memory; torch.load does not."""
    with _unreadable(path, "PyTorch checkpoint"), zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"{path}: member {info.filename} is compressed; PyTorch stores "
                    "checkpoints uncompressed"
                )
            with archive.open(info) as member:
                while member.read(_CHUNK):
                    pass


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors)")
    bad = [repr(k) for k in obj if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{path}: keys that are not strings: {', '.join(bad)}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(bad)}")
    state_dict = dict(obj)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def _torch_specs(state_dict: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Shape and dtype of each tensor, refusing any that is not dense, real, on the CPU and
    backed by its own storage (a stride trick would expand a few bytes into gigabytes)."""
    import torch

    problems: list[str] = []
    specs: dict[str, Any] = {}
    storages: dict[int, int] = {}
    declared = 0
    for key, tensor in state_dict.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.layout != torch.strided:
            problems.append(f"{key!r} is a {str(tensor.layout).removeprefix('torch.')} tensor")
        elif tensor.device.type != "cpu":
            problems.append(f"{key!r} is a {tensor.device.type} tensor, without data")
        elif dtype not in _DTYPES:
            problems.append(f"{key!r} has dtype {dtype}")
        else:
            nbytes = tensor.numel() * tensor.element_size()
            storage = tensor.untyped_storage()
            available = storage.nbytes() - tensor.storage_offset() * tensor.element_size()
            if nbytes > available:
                problems.append(
                    f"{key!r} declares {tensor.numel()} elements ({_size(nbytes)}) over "
                    f"{_size(available)} of storage"
                )
            storages[storage.data_ptr()] = storage.nbytes()
            declared += nbytes
            specs[key] = jax.ShapeDtypeStruct(tuple(tensor.shape), _numpy_dtype(dtype))
    if problems:
        raise CheckpointError(
            f"{path}: entries that are not dense real floating-point tensors backed by their "
            f"own data: {'; '.join(problems)}"
        )
    if declared > sum(storages.values()):
        raise CheckpointError(
            f"{path}: its tensors declare {_size(declared)} over {_size(sum(storages.values()))} "
            "of storage (views that overlap); refusing to expand them"
        )
    return specs


def _read_safetensors(path: Path, template: Any) -> dict[str, Any]:
    from safetensors import safe_open

    size = path.stat().st_size
    with path.open("rb") as f:
        header = int.from_bytes(f.read(8), "little")
    if not 0 < header <= min(_SAFETENSORS_MAX_HEADER, size - 8):
        raise CheckpointError(
            f"{path}: not a readable safetensors file (a header of {header} bytes in a file "
            f"of {size}; at most {_size(_SAFETENSORS_MAX_HEADER)} is read)"
        )
    with _unreadable(path, "safetensors file"), safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata() or {}
        specs, bad = {}, []
        for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
            entry = f.get_slice(key)
            dtype = _SAFETENSORS_DTYPES.get(entry.get_dtype())
            if dtype is None:
                bad.append(f"{key!r} ({entry.get_dtype()})")
            else:
                specs[key] = jax.ShapeDtypeStruct(tuple(entry.get_shape()), _numpy_dtype(dtype))
        _refuse_dtypes(path, bad)
        _check_declared(path, "state_dict", specs, template)
        arrays = {key: f.get_tensor(key) for key in specs}
    _verify_digest(path, metadata.get(DIGEST_KEY), arrays)
    return arrays


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_msgpack(path: Path, template: Any) -> dict[str, Any]:
    from flax.serialization import msgpack_restore

    size = path.stat().st_size
    if template is not None:
        specs = flatten_dict(unfreeze(template))
        limit = sum(_nbytes(s) for s in specs.values())
        limit += _MSGPACK_SLACK + _MSGPACK_SLACK_PER_ENTRY * len(specs)
        if size > limit:
            raise CheckpointError(
                f"{path}: {_size(size)} is more than the architecture's tensors can fill "
                f"({_size(limit)} at most)"
            )
    data = path.read_bytes()
    sidecar = _sidecar(path)
    if sidecar.is_file():
        with sidecar.open("rb") as f:
            recorded = f.read(64).decode("ascii", "replace")
        actual = hashlib.sha256(data).hexdigest()
        if recorded != actual:
            raise CheckpointError(
                f"{path}: corrupt: its SHA-256 is {actual[:16]}..., {sidecar.name} records "
                f"{recorded[:16]}..."
            )
    with _unreadable(path, "Flax msgpack file"):
        tree = msgpack_restore(data)
    flat = _flat_leaves(
        _variables_from(tree, path), path, lambda x: isinstance(x, np.ndarray | np.generic)
    )
    _check_declared(path, "variables", flat, template)
    return unflatten_dict(flat)


def _orbax_item(path: Path) -> Path:
    """The checkpoint directory inside a CheckpointManager layout, or ``path`` itself."""
    if (path / "_CHECKPOINT_METADATA").exists() and not (path / "default").is_dir():
        return path
    if (path / "default").is_dir():
        return path / "default"
    steps = sorted((int(p.name), p) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
    if steps:
        return _orbax_item(steps[-1][1])
    raise CheckpointError(f"{path}: not an orbax checkpoint directory")


def _bytes_on_disk(path: Path) -> int:
    """Bytes the files under ``path`` occupy (a sparse file counts what it really holds)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += min(st.st_size, st.st_blocks * 512)
    return total


class _ClosedLoopFilter:
    """``sys.unraisablehook`` that drops orbax's 'Event loop is closed' reports (see
    ``_quiet_orbax``) and passes everything else on."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            self.previous(unraisable)


def _drop_orphan_task_reports(record: logging.LogRecord) -> bool:
    """asyncio's "Task exception was never retrieved" of orbax's tasks: the failure already
    reached us as the exception of the read (``_quiet_orbax``)."""
    return not str(record.msg).startswith("Task exception was never retrieved")


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Silence orbax's duplicate reports of a failure that reaches us as an exception anyway.

    Its worker threads log the failure with a traceback before the exception returns; and
    after its event loop has closed, tensorstore's remaining completions each report an
    unraisable 'Event loop is closed' (hundreds of lines on a full disk), some of them after
    the call returned, so that filter stays installed for the process, as does the one on
    asyncio's reports of the tasks it left with the failure.
    """
    if not isinstance(sys.unraisablehook, _ClosedLoopFilter):
        sys.unraisablehook = _ClosedLoopFilter(sys.unraisablehook)
    asyncio_logger = logging.getLogger("asyncio")
    if _drop_orphan_task_reports not in asyncio_logger.filters:
        asyncio_logger.addFilter(_drop_orphan_task_reports)
    absl = logging.getLogger("absl")
    was_disabled, absl.disabled = absl.disabled, True
    try:
        yield
    finally:
        absl.disabled = was_disabled


def _read_orbax(path: Path, template: Any) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    item = _orbax_item(path).absolute()
    with (
        _unreadable(item, "orbax checkpoint"),
        _quiet_orbax(),
        ocp.PyTreeCheckpointer() as checkpointer,
    ):
        metadata = checkpointer.metadata(item)
        tree = _variables_from(metadata.item_metadata.tree, path)
        flat = _flat_leaves(tree, path, lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
        specs = {
            k: jax.ShapeDtypeStruct(tuple(v.shape), np.dtype(v.dtype)) for k, v in flat.items()
        }
        _check_declared(path, "variables", specs, template, on_disk=_bytes_on_disk(item))
        # Host numpy arrays, and only params and batch_stats: no device placement, no
        # sharding to guess, nothing of an optimizer state read.
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        restored = checkpointer.restore(
            item,
            args=ocp.args.PyTreeRestore(item=tree, restore_args=as_numpy, partial_restore=True),
        )
        recorded = dict(metadata.custom_metadata or {}).get(DIGEST_KEY)
    arrays = flatten_dict(restored)
    _verify_digest(path, recorded, {"/".join(k): v for k, v in arrays.items()})
    return unflatten_dict(arrays)


def _variables_from(tree: Any, path: Path) -> dict[str, Any]:
    """``params`` and ``batch_stats`` of a variables dict or a saved training state."""
    if not isinstance(tree, Mapping) or "params" not in tree:
        raise CheckpointError(f"{path}: expected Flax variables with a 'params' collection")
    collections = {k: tree[k] for k in ("params", "batch_stats") if k in tree}
    for name, collection in collections.items():
        if not isinstance(collection, Mapping):
            raise CheckpointError(
                f"{path}: not Flax variables: {name} is a {type(collection).__name__}"
            )
    return {name: collection for name, collection in collections.items() if collection}


def _flat_leaves(tree: Mapping[str, Any], path: Path, is_leaf: Any) -> dict[tuple[str, ...], Any]:
    """``{(collection, *modules, name): leaf}``, refusing keys that are not strings and
    leaves that are not arrays."""
    flat: dict[tuple[str, ...], Any] = {}
    problems: list[str] = []
    pending: list[tuple[tuple[str, ...], Any]] = [((), tree)]  # no recursion: depth is untrusted
    while pending:
        at, node = pending.pop()
        if isinstance(node, Mapping):
            for key, child in node.items():
                if isinstance(key, str):
                    pending.append(((*at, key), child))
                else:
                    problems.append(f"key {key!r} in {'/'.join(at)} is not a string")
        elif is_leaf(node):
            flat[at] = node
        else:
            problems.append(f"{'/'.join(at)} is a {type(node).__name__}, not an array")
    if problems:
        raise CheckpointError(f"{path}: not Flax variables: {'; '.join(problems)}")
    return flat


# --------------------------------------------------------------------------- writing


def _why_not_orbax(path: Path) -> str | None:
    """Why the directory ``path`` is not an orbax checkpoint that seres may replace."""
    names = sorted(entry.name for entry in os.scandir(path))
    if "_CHECKPOINT_METADATA" not in names:
        return "is a directory, not an orbax checkpoint"
    others = [name for name in names if not _ORBAX_ENTRIES.fullmatch(name)]
    if others:
        return f"is an orbax checkpoint holding other files too ({', '.join(others[:3])})"
    return None


def _write_failure(path: PathLike, err: BaseException) -> CheckpointError:
    """One line for a failed write: the operating system's reason when there is one (writers
    wrap it in their own exceptions, or only quote its code)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return CheckpointError(f"cannot write {path}: {cause.strerror}")
        cause = cause.__cause__ or cause.__context__
    match = _OS_ERROR_CODE.search(str(err))
    if match:
        return CheckpointError(f"cannot write {path}: {os.strerror(int(match[1] or match[2]))}")
    return CheckpointError(f"cannot write {path}: {_first_line(err)}")


def _rules(force: bool, directory: bool, source: PathLike | None) -> dict[str, Any]:
    protect = Path(source) if source is not None else None
    return {
        "force": force,
        "directory": directory,
        "replaceable": _why_not_orbax,
        "protect": protect,
    }


@contextlib.contextmanager
def _write_errors(path: PathLike) -> Iterator[None]:
    """Every refusal of a destination and every ``OSError`` as one ``CheckpointError``."""
    try:
        yield
    except atomic.DestinationError as err:
        raise CheckpointError(str(err)) from None
    except OSError as err:
        raise _write_failure(path, err) from None


@contextlib.contextmanager
def atomic_path(
    path: PathLike,
    *,
    force: bool = False,
    directory: bool = False,
    source: PathLike | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    ``seres_jax.atomic.staged_path`` with seres' rules: an existing ``path`` is replaced only
    with ``force``, a file only by a file, a directory only by an orbax checkpoint; never one
    that is or contains ``source``. Every refusal and every ``OSError`` (raised before anything
    is written, or while writing: a full disk, a read-only directory) is a ``CheckpointError``.
    """
    with _write_errors(path), atomic.staged_path(path, **_rules(force, directory, source)) as tmp:
        yield tmp


def check_destination(
    path: PathLike,
    *,
    force: bool = False,
    directory: bool = False,
    source: PathLike | None = None,
) -> None:
    """Raise ``CheckpointError`` unless ``atomic_path`` would write ``path``: lets a caller
    refuse before it reads or computes anything."""
    with _write_errors(path):
        atomic.check_destination(Path(path), **_rules(force, directory, source))


def save_state_dict(
    state_dict: Mapping[str, Any],
    path: PathLike,
    *,
    force: bool = False,
    source: PathLike | None = None,
) -> None:
    """Write a PyTorch-keyed dict of arrays or tensors as ``.pt``/``.pth`` or ``.safetensors``.

    ``force`` replaces an existing file of the same kind; ``source`` (a file being converted)
    is never replaced, nor is a directory holding it.
    """
    name, kind = format_of(path)
    if kind != "state_dict":
        raise CheckpointError(f"{path}: a state_dict is written as .pt, .pth or .safetensors")
    # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
    if name == "torch":
        _require_torch(Path(path))
    arrays = {k: np.require(to_numpy(v), requirements="C") for k, v in state_dict.items()}
    with atomic_path(path, force=force, source=source) as tmp:
        try:
            if name == "torch":
                import torch

                # A Python file, so that a failed write keeps its OSError (as the context).
                with tmp.open("wb") as f:
                    torch.save({k: to_torch(v) for k, v in arrays.items()}, f)
            else:
                from safetensors.numpy import save_file

                save_file(arrays, tmp, metadata={DIGEST_KEY: tensor_digest(arrays)})
        except Exception as err:
            raise _write_failure(path, err) from None


def save_variables(
    variables: Mapping[str, Any],
    path: PathLike,
    *,
    force: bool = False,
    source: PathLike | None = None,
) -> None:
    """Write Flax variables as ``.msgpack`` (with its ``.sha256`` beside it) or an orbax
    directory; ``force`` and ``source`` as in ``save_state_dict``."""
    name, kind = format_of(path)
    if kind != "variables":
        raise CheckpointError(f"{path}: Flax variables are written as .msgpack or orbax")
    tree = jax.device_get(dict(variables))
    if name == "msgpack":
        from flax.serialization import msgpack_serialize

        data = msgpack_serialize(tree)
        sidecar = _sidecar(Path(path))
        with atomic_path(path, force=force, source=source) as tmp:
            tmp.write_bytes(data)
            # The old checksum goes first: a crash before the new one is in place then leaves
            # a file without a checksum (loaded unverified), never one that looks corrupt.
            sidecar.unlink(missing_ok=True)
        with atomic_path(sidecar, force=True) as tmp:
            tmp.write_text(f"{hashlib.sha256(data).hexdigest()}  {Path(path).name}\n")
        return
    import orbax.checkpoint as ocp

    digest = tensor_digest({"/".join(k): np.asarray(v) for k, v in flatten_dict(tree).items()})
    with atomic_path(path, force=force, directory=True, source=source) as tmp:
        try:
            with _quiet_orbax(), ocp.PyTreeCheckpointer() as checkpointer:
                checkpointer.save(tmp.absolute(), tree, custom_metadata={DIGEST_KEY: digest})
        except Exception as err:
            raise _write_failure(path, err) from None


def save_checkpoint(checkpoint: Checkpoint, path: PathLike, *, force: bool = False,
                    template: Any = None) -> None:  # fmt: skip
    """Write ``checkpoint`` in the format ``path`` names, converting as needed; never onto the
    file it was read from, nor onto a directory holding it."""
    _, kind = format_of(path)
    source = checkpoint.path
    if kind == "state_dict":
        save_state_dict(checkpoint.to_state_dict(template), path, force=force, source=source)
    else:
        save_variables(checkpoint.to_variables(template), path, force=force, source=source)
