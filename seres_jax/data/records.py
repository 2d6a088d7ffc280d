"""ArrayRecord packs of an image folder: ``pack`` writes them, ``ArrayRecordSource`` reads them
with random access (the format a TPU pod reads from a bucket mount).

**Layout.** ``OUT_DIR/<split>-0000k-of-0000N.array_record`` per split and ``OUT_DIR/classes.json``
(``{"format": "seres-arrayrecord-v1", "classes": [...], "splits": {split: {"count": n,
"shards": [...], "skipped": k}}}``). A split's records are cut into contiguous ranges, shard
``k`` holding records ``k*n//N`` up to ``(k+1)*n//N``, so record ``i`` of the split is sample
``i`` of the ``ImageFolderSource`` it was packed from: same bytes, label and name. A split gets
at most one shard per image. Shards are written with ``group_size:1,uncompressed``.

**Records** (version 1): a 10-byte header, ``b"SRS1"``, the label (int32) and the name's
length in bytes (uint16), all little-endian; then the name (UTF-8; path relative to the split
directory) and the image file's bytes as they were on disk (no re-encoding). Every record read
is validated: magic, lengths, label in range, a non-empty image.

**Packing** reads the folder through ``ImageFolderSource``, so every check it makes (bad images,
``skip_bad_images``) happens before anything is written; the pack is written into a staging
directory and renamed into place (``seres_jax.atomic``), so a failure leaves no ``OUT_DIR`` and
no staging directory. An existing ``OUT_DIR`` is replaced only with ``force``, and only if it
is a previous pack: a ``classes.json`` with this format and nothing but ``.array_record`` files.

**Reading** checks ``classes.json`` (bounded size, its schema) and opens every shard at
construction: a missing shard, one cut short (ArrayRecord opens a truncated file without an
error and reports 0 records; only ``ok()`` or a read tells) or one holding another record count
than the manifest implies is a ``DataError`` naming it. Riegeli checksums every chunk, so a
record damaged later fails its read, also a ``DataError`` naming shard and record.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import index as as_index
from pathlib import Path
from typing import Any, SupportsIndex

from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from grain.python import ArrayRecordDataSource

from .. import atomic
from .arrays import DataError
from .folders import ImageFolderSource, listing

__all__ = [
    "MANIFEST",
    "PACK_FORMAT",
    "ArrayRecordSource",
    "decode_record",
    "encode_record",
    "pack",
    "read_manifest",
]

PACK_FORMAT = "seres-arrayrecord-v1"
"""The ``format`` a pack's manifest declares: a reader refuses any other, and ``pack`` replaces
only a directory declaring it. A new record layout gets a new version."""
MANIFEST = "classes.json"
"""The file in a pack's directory that lists its classes and, per split, its shards, record
count and skipped images (see the module docstring)."""
_SUFFIX = ".array_record"
_SHARD_NAME = re.compile(r"[^./\\][^/\\]*\.array_record")
_MAGIC = b"SRS1"
_HEADER = struct.Struct("<4siH")  # magic, label, name length
_MAX_MANIFEST = 16 << 20
# group_size:1: a random read decodes one record, not a group. Uncompressed: JPEG, PNG and WebP
# bytes do not compress, and zstd would cost CPU on every read.
_WRITER_OPTIONS = "group_size:1,uncompressed"
_BLOCK = 256  # images read ahead while packing: bounded memory, enough to keep threads busy
_THREADS = 16


def encode_record(image: bytes, label: int, name: str) -> bytes:
    """One record (see the module docstring)."""
    encoded = name.encode("utf-8", "surrogateescape")  # any name the file system gave
    return _HEADER.pack(_MAGIC, label, len(encoded)) + encoded + image


def decode_record(record: bytes, num_classes: int) -> dict[str, Any]:
    """``{"image", "label", "name"}`` of a record; ``ValueError`` saying what is malformed."""
    if len(record) < _HEADER.size:
        raise ValueError(f"{len(record)} bytes, shorter than a record's header")
    magic, label, length = _HEADER.unpack_from(record)
    if magic != _MAGIC:
        raise ValueError(f"not a {PACK_FORMAT} record (starts with {magic!r})")
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} outside the {num_classes} classes")
    start = _HEADER.size + length
    if start >= len(record):
        raise ValueError("no image bytes after the header and name")
    name = record[_HEADER.size : start].decode("utf-8", "surrogateescape")
    return {"image": record[start:], "label": label, "name": name}


def _shard_names(split: str, shards: int) -> list[str]:
    return [f"{split}-{k:05d}-of-{shards:05d}{_SUFFIX}" for k in range(shards)]


def _ranges(count: int, shards: int) -> list[range]:
    """The contiguous record ranges of a split's shards."""
    return [range(k * count // shards, (k + 1) * count // shards) for k in range(shards)]


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# --------------------------------------------------------------------------- writing


def pack(
    imagefolder_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    shards: int = 1,
    splits: Sequence[str] = ("train", "val"),
    force: bool = False,
    skip_bad_images: bool = False,
    workers: int = _THREADS,
) -> dict[str, Any]:
    """Write the image folder's ``splits`` as ArrayRecord shards into ``out_dir``; returns the
    manifest written as ``classes.json``. ``workers`` threads check and read the images.

    Classes are the first split's; every other split must have the same class directories.
    """
    if shards < 1:
        raise DataError(f"--shards must be at least 1, not {shards}")
    if not splits:
        raise DataError("no splits to pack")
    root, out = Path(imagefolder_root), Path(out_dir)
    sources: dict[str, ImageFolderSource] = {}
    classes: list[str] | None = None
    for split in splits:
        source = ImageFolderSource(
            root, split, classes=classes, skip_bad_images=skip_bad_images, threads=workers
        )
        classes = source.classes
        sources[split] = source
        if _inside(out, Path(source.split_dir)):
            raise DataError(f"{out} is inside {source.split_dir}; write the pack elsewhere")
    manifest: dict[str, Any] = {"format": PACK_FORMAT, "classes": classes, "splits": {}}
    try:
        with atomic.staged_path(
            out, force=force, directory=True, replaceable=_why_not_pack, protect=root
        ) as staging:
            staging.mkdir()
            for split, source in sources.items():
                names = _shard_names(split, min(shards, len(source)))
                ranges = _ranges(len(source), len(names))
                with ThreadPoolExecutor(max(1, workers)) as pool:
                    for name, indices in zip(names, ranges, strict=True):
                        _write_shard(staging / name, out / name, source, indices, pool)
                manifest["splits"][split] = {
                    "count": len(source),
                    "shards": names,
                    "skipped": len(source.skipped),
                }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    except atomic.DestinationError as err:
        raise DataError(str(err)) from None
    except OSError as err:
        raise DataError(f"cannot write {out}: {err.strerror or _first_line(err)}") from None
    return manifest


def _inside(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents


def _write_shard(
    path: Path, final: Path, source: ImageFolderSource, indices: range, pool: ThreadPoolExecutor
) -> None:
    """Write ``source[indices]`` into the shard at ``path`` (``final``: its name in messages)."""
    try:
        writer = ArrayRecordWriter(os.fspath(path), _WRITER_OPTIONS)
        if not writer.ok():
            raise RuntimeError("the writer could not open it")
        for start in range(indices.start, indices.stop, _BLOCK):
            block = range(start, min(start + _BLOCK, indices.stop))
            for element in pool.map(source.__getitem__, block):
                writer.write(encode_record(element["image"], element["label"], element["name"]))
        writer.close()
    except RuntimeError as err:  # ArrayRecord's failures: full disk, I/O error
        raise DataError(f"cannot write {final}: {_first_line(err)}") from None


def _why_not_pack(directory: Path) -> str | None:
    """``None`` if ``directory`` is a previous pack ``pack`` may replace, else why not."""
    try:
        read_manifest(directory)
    except DataError:
        return f"is not a {PACK_FORMAT} pack (no valid {MANIFEST})"
    others = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.name != MANIFEST
        and not (entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False))
    )
    if others:
        return f"holds files other than a pack's: {listing(others)}"
    return None


# --------------------------------------------------------------------------- reading


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A pack's ``classes.json``, checked (see the module docstring)."""
    path = Path(directory, MANIFEST)
    try:
        size = path.stat().st_size
        text = path.read_bytes() if size <= _MAX_MANIFEST else b""
    except OSError as err:
        what = "no such file" if isinstance(err, FileNotFoundError) else _first_line(err)
        raise DataError(f"{path}: {what}; a pack is written by `seres data pack`") from None
    if size > _MAX_MANIFEST:
        raise DataError(f"{path}: {size} bytes, more than a pack's {MANIFEST} holds")
    try:
        manifest = json.loads(text)
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({_first_line(err)})") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise DataError(f"{path}: {problem}")
    return dict(manifest)


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        return f"not a {PACK_FORMAT} manifest"
    classes = manifest.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        return "'classes' is not a non-empty list of names"
    if len(set(classes)) != len(classes):
        return "'classes' names a class twice"
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        return "'splits' is not a non-empty mapping"
    for split, entry in splits.items():
        count = entry.get("count") if isinstance(entry, dict) else None
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not (isinstance(count, int) and count >= 1):
            return f"split {split!r}: 'count' is not a positive integer"
        if not (isinstance(shards, list) and 1 <= len(shards) <= count):
            return f"split {split!r}: 'shards' is not a list of 1 to {count} file names"
        if not all(isinstance(s, str) and _SHARD_NAME.fullmatch(s) for s in shards):
            return f"split {split!r}: 'shards' holds a name that is not a *{_SUFFIX} file name"
    return None


def _count_records(path: Path) -> int:
    """How many records the shard at ``path`` holds; ``DataError`` if it is not readable."""
    if not path.is_file():
        raise DataError(f"{path}: shard missing (listed in {path.parent / MANIFEST})")
    reader = ArrayRecordReader(os.fspath(path))
    try:
        if not reader.ok():
            # A truncated file opens "successfully" with 0 records; a read says why.
            try:
                reader.read([0])
                reason = "its index at the end of the file is missing"  # cut at a block end
            except RuntimeError as err:
                reason = _first_line(err)
            raise DataError(f"{path}: not a readable ArrayRecord shard, cut short? ({reason})")
        return int(reader.num_records())
    finally:
        with contextlib.suppress(RuntimeError):  # closing a failed reader raises its failure
            reader.close()


class ArrayRecordSource:
    """One split of a pack as a grain random-access source; element ``i`` is the
    ``ImageFolderSource`` element it was packed from. Readers open lazily in each process, so
    it pickles into grain's worker processes without open files."""

    def __init__(self, directory: str | os.PathLike[str], split: str = "train") -> None:
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        if split not in manifest["splits"]:
            raise DataError(
                f"{self.directory / MANIFEST}: no split {split!r} in this pack (it holds "
                f"{', '.join(manifest['splits'])})"
            )
        self.split = split
        self.classes: list[str] = manifest["classes"]
        entry = manifest["splits"][split]
        self.shards = [self.directory / name for name in entry["shards"]]
        ranges = _ranges(entry["count"], len(self.shards))
        for path, expected in zip(self.shards, ranges, strict=True):
            found = _count_records(path)
            if found != len(expected):
                raise DataError(
                    f"{path}: holds {found} records, {MANIFEST} implies {len(expected)}; "
                    "a shard cut short or from another pack"
                )
        self._starts = [r.start for r in ranges]
        self._count: int = entry["count"]
        # "path[start:end]" instructions: grain need not open every shard again to count.
        self._records = ArrayRecordDataSource(
            [f"{path}[0:{len(r)}]" for path, r in zip(self.shards, ranges, strict=True)]
        )

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: SupportsIndex) -> dict[str, Any]:
        i = as_index(index)
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"record {as_index(index)} of a split of {self._count}")
        try:
            return decode_record(self._records[i], len(self.classes))
        except (RuntimeError, ValueError) as err:  # a read failure, or a malformed record
            shard = bisect.bisect_right(self._starts, i) - 1
            raise DataError(
                f"{self.shards[shard]}: record {i - self._starts[shard]} unreadable "
                f"({_first_line(err)})"
            ) from None

    def __repr__(self) -> str:
        return (
            f"ArrayRecordSource({os.fspath(self.directory)!r}, split={self.split!r}, "
            f"{len(self)} records in {len(self.shards)} shards, {len(self.classes)} classes)"
        )
