"""Image folders: the ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*`` layout, as a grain
random-access source, checked before anything is trained or written.

**Labels agree with torchvision's ``ImageFolder``.** Classes are the sorted names of a split's
sub-directories (``find_classes``); a class's files are found as torchvision's ``make_dataset``
finds them (``sorted(os.walk(..., followlinks=True))``, each directory's files sorted), and only
files with one of torchvision's image suffixes (``IMAGE_SUFFIXES``, any case) are samples. So
on a folder this module accepts, sample ``i`` is torchvision's sample ``i`` with the same label.

**Checks** (each a ``DataError`` naming the file or directory, in one line): ROOT or the split
missing, no class directories, class directories that differ from ``classes`` (the train
split's, for val), a file without an image suffix in a class directory (torchvision would skip
it silently; hidden files are ignored), an empty class directory, and bad images: empty,
unidentifiable, or cut short. An image is checked without decoding it, cheaply enough for
ImageNet's 1.28M files (threads, since the cost is mostly I/O on a network mount): PIL must
identify its header as an image format, and the end of a JPEG, PNG or WebP must be there (see
``image_problem``). With ``skip_bad_images`` the bad files (and files without an image suffix)
are left out, listed in ``skipped`` and logged as one warning; labels stay those of the class
directories.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import index as as_index
from typing import Any, NamedTuple, SupportsIndex

import numpy as np
from PIL import Image

from .arrays import DataError

__all__ = ["IMAGE_SUFFIXES", "BadFile", "ImageFolderSource", "find_classes", "image_problem"]

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
)  # fmt: skip
"""The file suffixes (any case) that make a file in an image folder a sample: torchvision's
``IMG_EXTENSIONS``, so a folder holds the images an ``ImageFolder`` run trains on."""
LAYOUT = "an image folder is ROOT/train/<class>/<image> and ROOT/val/<class>/<image>"
# The PIL plugins tried on a file (JPEG's also opens MPO, a JPEG with extra frames as cameras
# write them); not all of PIL's: some accept almost any bytes.
_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM", "GIF")
# How far from the end a JPEG's end-of-image or a PNG's IEND may lie: some cameras append a
# trailer after the image, which decoders ignore.
_TAIL = 4096
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"
_THREADS = 16
_CHUNK = 256  # files per thread-pool task: one future per file would not fit ImageNet's count
_LISTED = 5
logger = logging.getLogger(__name__)
_OR_SKIP = "or pass --skip-bad-images to leave them out"


class BadFile(NamedTuple):
    """A file left out of a split: its name relative to the split directory, and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def listing(items: Sequence[str], limit: int = _LISTED) -> str:
    """``a, b, c and 4 more``: the first ``limit`` items and how many others there are."""
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def plural(count: int, one: str, many: str) -> str:
    """``1 file`` or ``3 files``."""
    return f"{count} {one if count == 1 else many}"


def _these(items: list[str], one: str, many: str, advice: str) -> DataError:
    """``3 <many>: a, b, c; <advice>``."""
    return DataError(f"{plural(len(items), one, many)}: {listing(items)}; {advice}")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def image_problem(path: str) -> str | None:
    """Why the file at ``path`` is not a readable image, or ``None``; reads its header and its
    last few KiB, not the whole file (except a WebP's, which PIL reads whole to identify it).

    A JPEG must hold its end-of-image marker and a PNG its IEND chunk in the last 4 KiB (after
    them only a trailer or padding); a WebP must be as long as its RIFF header says. Other
    formats are checked by their header only.
    """
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                return "empty file"
            head = file.read(12)
            if head[:4] == b"RIFF" and head[8:] == b"WEBP":
                # Before PIL, which reads a whole WebP to open it, and fails on a cut one
                # without saying so.
                declared = struct.unpack("<I", head[4:8])[0] + 8
                if size < declared:
                    return f"truncated WebP ({size} of the {declared} bytes its header declares)"
            file.seek(0)
            try:
                with Image.open(file, formats=_FORMATS) as img:
                    kind = img.format
            except Exception as err:  # unidentified, or a header PIL cannot parse
                return f"not a readable image ({_first_line(err)})"
            file.seek(max(0, size - _TAIL))
            tail = file.read()
    except OSError as err:
        return f"cannot be read ({err.strerror or _first_line(err)})"
    if kind in ("JPEG", "MPO") and _JPEG_END not in tail:
        return f"truncated {kind} (no end-of-image marker)"
    if kind == "PNG" and _PNG_END not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def find_classes(split_dir: str | os.PathLike[str]) -> list[str]:
    """The class names of a split: its sub-directories' names, sorted (torchvision's rule)."""
    try:
        with os.scandir(split_dir) as entries:
            classes = sorted(entry.name for entry in entries if entry.is_dir())
    except OSError as err:
        raise DataError(f"{os.fspath(split_dir)}: cannot be listed ({err.strerror})") from None
    if not classes:
        raise DataError(f"{os.fspath(split_dir)}: no class directories; {LAYOUT}")
    return classes


def _walk_class(split_dir: str, name: str) -> tuple[list[str], list[str]]:
    """``(images, others)``: a class directory's files with an image suffix, in torchvision's
    order, and its files without one (hidden files aside), as names relative to ``split_dir``."""
    images: list[str] = []
    others: list[str] = []
    start = len(split_dir) + 1
    for root, _, files in sorted(os.walk(os.path.join(split_dir, name), followlinks=True)):
        for file in sorted(files):
            relative = os.path.join(root[start:], file)
            if file.lower().endswith(IMAGE_SUFFIXES):
                images.append(relative)
            elif not file.startswith("."):
                others.append(relative)
    return images, others


def _check_classes(split_dir: str, found: list[str], expected: Sequence[str]) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"no directory for the classes {listing(missing)}")
    if extra:
        problems.append(f"class directories not in the train split: {listing(extra)}")
    if problems:
        raise DataError(
            f"{split_dir}: {'; '.join(problems)}; train and val need the same class directories"
        )


class ImageFolderSource:
    """One split of an image folder as a grain random-access source, checked on construction
    (see the module docstring).

    Element ``i`` is ``{"image": the file's bytes, "label": int, "name": path relative to the
    split directory}``. It holds names and labels only (no open files), so it pickles cheaply
    into grain's worker processes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        classes: Sequence[str] | None = None,
        skip_bad_images: bool = False,
        threads: int = _THREADS,
    ) -> None:
        self.root = root = os.fspath(root)
        if not os.path.isdir(root):
            what = "is not a directory" if os.path.exists(root) else "no such directory"
            raise DataError(f"{root}: {what}; {LAYOUT}")
        self.split_dir = os.path.join(root, split)
        if not os.path.isdir(self.split_dir):
            raise DataError(f"{self.split_dir} not found; {LAYOUT}")
        found = find_classes(self.split_dir)
        if classes is not None:
            _check_classes(self.split_dir, found, classes)
        self.classes: list[str] = list(classes) if classes is not None else found
        self.skipped: list[BadFile] = []
        names, labels = self._scan(skip_bad_images)
        bad = self._check_images(names, threads)
        if bad and not skip_bad_images:
            full = [f"{os.path.join(self.split_dir, f.name)} ({f.reason})" for f in bad]
            raise _these(full, "bad image file", "bad image files", f"remove them, {_OR_SKIP}")
        if bad:
            dropped = {f.name for f in bad}
            self.skipped += bad
            keep = [i for i, name in enumerate(names) if name not in dropped]
            names, labels = [names[i] for i in keep], [labels[i] for i in keep]
        if not names:
            raise DataError(f"{self.split_dir}: no readable images ({len(self.skipped)} skipped)")
        if self.skipped:
            logger.warning(
                "skipped %s in %s: %s",
                plural(len(self.skipped), "bad file", "bad files"),
                self.split_dir,
                listing([str(f) for f in self.skipped]),
            )
        self.names: list[str] = names
        self.labels: np.ndarray = np.asarray(labels, np.int32)

    def _scan(self, skip_bad_images: bool) -> tuple[list[str], list[int]]:
        names: list[str] = []
        labels: list[int] = []
        others: list[str] = []
        empty: list[str] = []
        for label, name in enumerate(self.classes):
            images, other = _walk_class(self.split_dir, name)
            names += images
            labels += [label] * len(images)
            others += other
            if not images:
                empty.append(os.path.join(self.split_dir, name))
        if others and not skip_bad_images:
            full = [os.path.join(self.split_dir, name) for name in others]
            what = ("file without an image suffix", "files without an image suffix")
            raise _these(
                full, *what, f"an image is named *{', *'.join(IMAGE_SUFFIXES)}; {_OR_SKIP}"
            )
        self.skipped += [BadFile(name, "not an image file name") for name in others]
        if empty:
            what = ("empty class directory", "empty class directories")
            raise _these(empty, *what, "each class needs at least one image")
        return names, labels

    def _check_images(self, names: list[str], threads: int) -> list[BadFile]:
        def check(start: int) -> list[str | None]:
            chunk = names[start : start + _CHUNK]
            return [image_problem(os.path.join(self.split_dir, name)) for name in chunk]

        with ThreadPoolExecutor(max(1, threads)) as pool:
            problems = [p for chunk in pool.map(check, range(0, len(names), _CHUNK)) for p in chunk]
        return [BadFile(n, p) for n, p in zip(names, problems, strict=True) if p is not None]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: SupportsIndex) -> dict[str, Any]:
        i = as_index(index)
        name = self.names[i]
        path = os.path.join(self.split_dir, name)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as err:
            raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
        return {"image": data, "label": int(self.labels[i]), "name": name}

    def __repr__(self) -> str:
        return (
            f"ImageFolderSource({self.split_dir!r}, {len(self)} images, "
            f"{len(self.classes)} classes, {len(self.skipped)} skipped)"
        )
