"""Class predictions for image files, as timm's ``inference.py`` makes them: files in, the top-k
classes and their probabilities out, one row per image.

* **Files** (``find_images``): image files and directories (walked recursively, in sorted
  order, as ``seres_jax.data.folders`` walks a class directory), checked before anything runs:
  a path that does not exist, a directory without images, a file without an image suffix and
  a file whose header or end is not an image's (``image_problem``) are each a ``DataError``
  naming them; with ``skip_bad_images`` the bad ones are left out, listed in ``skipped`` and
  logged as one warning. The result is a grain source (``ImageFiles``).
* **Pipeline** (``Predictor``): grain decodes and preprocesses each file with the evaluation
  transform of a ``DataConfig`` (``EvalTransform``: timm's resize and centre crop), batches
  them in order, and ``to_devices`` normalises them on the devices, as ``seres eval`` does; a
  full batch and the last partial one each run at their own size (the latter padded only to a
  multiple of the device count), so a folder of 15 images costs 15 images' work.
* **Forward**: the model in eval mode, jitted with ``seres_jax.compiler``'s options, returning
  the float32 logits, the top-k class indices (best first) and their softmax probabilities.
  Each batch shape is compiled once, ahead of the run and timed apart (``compile_s``), so
  ``images_per_s`` is the steady rate of the pipeline and the model together.
* **Another implementation beside it** (``Agreement``): the same normalised batches can be
  handed to a second forward (``seres_torch``'s, from the command line), and the fraction of
  images whose top-1 class is the same and the largest logit difference are measured.

One process (every local device); imports no torch.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import index as as_index
from typing import Any, SupportsIndex

import flax.linen as nn
import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import compiler
from .data import DataConfig, DataError, EvalTransform, eval_batch_sizes, to_devices
from .data.folders import IMAGE_SUFFIXES, BadFile, image_problem, listing, plural

__all__ = ["Agreement", "ImageFiles", "PredictionBatch", "Predictor", "find_images"]

logger = logging.getLogger(__name__)

_THREADS = 16  # files checked at once: the cost is mostly I/O
_OR_SKIP = "or pass --skip-bad-images to leave them out"


# --------------------------------------------------------------------------- the files


class ImageFiles:
    """Image files as a grain random-access source: element ``i`` is ``{"image": the file's
    bytes, "label": 0, "name": its path}`` (the label is there for ``EvalTransform``, which
    passes it on). ``paths`` in order, ``skipped`` the files left out (``find_images``). Holds
    names only, so it pickles cheaply into grain's worker processes."""

    def __init__(self, paths: Sequence[str], skipped: Sequence[BadFile] = ()) -> None:
        self.paths: list[str] = list(paths)
        self.skipped: list[BadFile] = list(skipped)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: SupportsIndex) -> dict[str, Any]:
        path = self.paths[as_index(index)]
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as err:
            raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
        return {"image": data, "label": 0, "name": path}

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, {len(self.skipped)} skipped)"


def _walk(directory: str) -> tuple[list[str], list[str]]:
    """``(images, others)`` under ``directory``, in ``sorted(os.walk)`` order with each
    directory's files sorted (``seres_jax.data.folders``' order); hidden files are ignored."""
    images: list[str] = []
    others: list[str] = []
    for root, _, files in sorted(os.walk(directory, followlinks=True)):
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            (images if name.lower().endswith(IMAGE_SUFFIXES) else others).append(path)
    return images, others


def find_images(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    skip_bad_images: bool = False,
    threads: int = _THREADS,
) -> ImageFiles:
    """The image files ``inputs`` name: each a file, or a directory whose images are taken
    recursively in sorted order; a file named twice is read once. Every file is checked
    without being decoded (``image_problem``: its header, and the end of a JPEG, PNG or WebP).

    ``DataError`` (one line naming them) for an input that does not exist, a directory holding
    no image file, files without an image suffix (a directory's hidden files aside) and bad
    image files; with ``skip_bad_images`` the last two are left out and reported
    (``ImageFiles.skipped``, one warning), and only no image left at all is an error."""
    if not inputs:
        raise DataError("no input: name image files or directories")
    paths: list[str] = []
    others: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        if os.path.isdir(text):
            images, other = _walk(text)
            if not images and not other:
                raise DataError(f"{text}: no image files in it (an image is named "
                                f"*{', *'.join(IMAGE_SUFFIXES)})")  # fmt: skip
            paths += images
            others += other
        elif os.path.isfile(text):
            (paths if text.lower().endswith(IMAGE_SUFFIXES) else others).append(text)
        else:
            exists = os.path.lexists(text)
            raise DataError(f"{text}: {'not a file or directory' if exists else 'no such file'}")
    paths = list(dict.fromkeys(paths))
    if others and not skip_bad_images:
        raise DataError(
            f"{plural(len(others), 'file', 'files')} without an image suffix: {listing(others)}; "
            f"an image is named *{', *'.join(IMAGE_SUFFIXES)}; {_OR_SKIP}"
        )
    skipped = [BadFile(name, "not an image file name") for name in dict.fromkeys(others)]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        problems = list(pool.map(image_problem, paths))
    bad = [BadFile(p, why) for p, why in zip(paths, problems, strict=True) if why is not None]
    if bad and not skip_bad_images:
        raise DataError(
            f"{plural(len(bad), 'bad image file', 'bad image files')}: "
            f"{listing([str(b) for b in bad])}; remove them, {_OR_SKIP}"
        )
    skipped += bad
    good = [p for p, why in zip(paths, problems, strict=True) if why is None]
    if not good:
        raise DataError(f"no readable image among {', '.join(os.fspath(i) for i in inputs)} "
                        f"({len(skipped)} skipped)")  # fmt: skip
    if skipped:
        logger.warning("skipped %s: %s", plural(len(skipped), "bad file", "bad files"),
                       listing([str(s) for s in skipped]))  # fmt: skip
    return ImageFiles(good, skipped)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class PredictionBatch:
    """One batch of predictions, its padding rows removed: the files' ``names``, the float32
    ``logits`` (n, classes), the ``topk`` class ``indices`` (n, k; best first) and their softmax
    ``probs`` (n, k); ``inputs``: the normalised NHWC float32 images the model saw, when asked
    for (``keep_inputs``)."""

    names: list[str]
    logits: np.ndarray
    indices: np.ndarray
    probs: np.ndarray
    inputs: np.ndarray | None = None


class Predictor:
    """``model`` with ``variables`` in eval mode over image files preprocessed by
    ``data_config``'s evaluation transform, returning the top ``topk`` classes of each.

    Calling it yields a ``PredictionBatch`` per batch, in file order. The statistics of the
    last call: ``count`` images, ``compile_s`` (the batch shapes it compiled, before the run:
    each shape once per ``Predictor``), ``run_s`` (the time the caller waited for the batches:
    the pipeline and the model, compilation excluded) and ``images_per_s``."""

    def __init__(
        self,
        model: nn.Module,
        variables: Any,
        data_config: DataConfig,
        *,
        topk: int,
        mesh: Mesh | None = None,
    ) -> None:
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise DataError(f"topk must be a positive integer, got {topk!r}")
        self.model, self.data_config, self.topk = model, data_config, topk
        self.mesh = mesh or Mesh(np.asarray(jax.local_devices()), ("data",))
        self.batch = NamedSharding(self.mesh, PartitionSpec("data"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.variables = jax.device_put(variables, self.replicated)
        platform = self.mesh.devices.flat[0].platform
        self._forward = compiler.jit(
            self._apply,
            platform=platform,
            in_shardings=(self.replicated, self.batch),
            out_shardings=(self.batch, self.batch, self.batch),
        )
        self._compiled: dict[int, Any] = {}
        self.count, self.compile_s, self.run_s = 0, 0.0, 0.0

    def _apply(self, variables: Any, images: jax.Array) -> tuple[jax.Array, ...]:
        # The logits exactly as `seres eval`'s step computes them (the model in eval mode on
        # the same normalised batch), then the top-k of those and their probabilities.
        logits: jax.Array = self.model.apply(variables, images, train=False)  # type: ignore[assignment]
        logits = logits.astype(jnp.float32)
        _, indices = jax.lax.top_k(logits, self.topk)
        probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), indices, axis=-1)
        return logits, indices, probs

    @property
    def images_per_s(self) -> float:
        """The last call's ``count / run_s`` (0 before any image ran)."""
        return self.count / self.run_s if self.run_s > 0 else 0.0

    def _compile(self, size: int) -> Any:
        if size not in self._compiled:
            side = self.data_config.input_size
            images = jax.ShapeDtypeStruct((size, side, side, 3), jnp.float32, sharding=self.batch)
            start = time.perf_counter()
            self._compiled[size] = self._forward.lower(self.variables, images).compile()
            self.compile_s += time.perf_counter() - start
        return self._compiled[size]

    def __call__(
        self,
        files: ImageFiles,
        batch_size: int,
        *,
        workers: int = 0,
        keep_inputs: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> Iterator[PredictionBatch]:
        """The predictions for ``files`` in batches of ``batch_size`` (a multiple of the device
        count), ``workers`` grain processes decoding them (0: threads of this one);
        ``on_batch(n)`` after each batch of ``n`` images. Checks its arguments and compiles
        the batch shapes now; the files are read as the result is iterated."""
        devices = self.mesh.size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch size must be a positive integer, got {batch_size!r}")
        if batch_size % devices:
            raise DataError(f"batch size {batch_size} is not divisible by the {devices} devices")
        if not len(files):
            raise DataError("no image files to predict")
        self.count, self.compile_s, self.run_s = 0, 0.0, 0.0
        # `seres eval`'s batches: full ones, then the rest padded to a multiple of the devices.
        sizes = eval_batch_sizes(len(files), batch_size, devices, num_processes=1)
        compiled = {size: self._compile(size) for size in dict.fromkeys(sizes)}
        config = self.data_config
        transform = EvalTransform(config.input_size, config.crop_pct, config.interpolation)
        batches = (
            grain.MapDataset.source(files)
            .map(transform)
            .batch(batch_size, drop_remainder=False)
            .map(functools.partial(_images_padded, multiple=devices))
        )
        stream = to_devices(batches, self.batch, workers=workers, mean=config.mean, std=config.std)
        return self._run(files, batch_size, stream, compiled, keep_inputs, on_batch)

    def _run(
        self,
        files: ImageFiles,
        batch_size: int,
        stream: Any,
        compiled: dict[int, Any],
        keep_inputs: bool,
        on_batch: Callable[[int], None] | None,
    ) -> Iterator[PredictionBatch]:
        iterator = iter(stream)
        try:
            resumed = time.perf_counter()
            for index, (images,) in enumerate(iterator):
                first = index * batch_size
                names = files.paths[first : first + batch_size]
                n = len(names)
                outputs = compiled[images.shape[0]](self.variables, images)
                logits, indices, probs = jax.device_get(outputs)
                inputs = np.asarray(images)[:n] if keep_inputs else None
                self.count += n
                # The caller's time between batches is not the predictor's (the pipeline goes
                # on reading ahead meanwhile).
                self.run_s += time.perf_counter() - resumed
                if on_batch is not None:
                    on_batch(n)
                yield PredictionBatch(names, logits[:n], indices[:n], probs[:n], inputs)
                resumed = time.perf_counter()
        finally:
            iterator.close()  # grain's workers and prefetch threads end with the predictions


def _images_padded(batch: tuple[np.ndarray, np.ndarray], multiple: int) -> tuple[np.ndarray]:
    """A batch's images (its labels dropped) with zero rows appended up to a multiple of
    ``multiple`` (the devices)."""
    images = batch[0]
    extra = -len(images) % multiple
    if extra:
        images = np.concatenate([images, np.zeros((extra, *images.shape[1:]), images.dtype)])
    return (images,)


# --------------------------------------------------------------------------- agreement


@dataclass
class Agreement:
    """Two implementations' logits on the same images: how many images, on how many their
    top-1 class is the same, the largest absolute logit difference and the largest logit
    (of ``theirs``, the reference), which scales it."""

    count: int = 0
    same_top1: int = 0
    max_logit_diff: float = 0.0
    max_logit: float = 0.0

    def add(self, ours: np.ndarray, theirs: np.ndarray) -> None:
        """Count one batch: ``ours`` and ``theirs`` are (n, classes) logits."""
        ours, theirs = np.asarray(ours, np.float32), np.asarray(theirs, np.float32)
        if ours.shape != theirs.shape:
            raise ValueError(f"logits of shape {ours.shape} against {theirs.shape}")
        self.count += len(ours)
        self.same_top1 += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
        diff = float(np.abs(ours - theirs).max(initial=0.0))
        self.max_logit_diff = max(self.max_logit_diff, diff)
        self.max_logit = max(self.max_logit, float(np.abs(theirs).max(initial=0.0)))

    @property
    def top1_agreement(self) -> float:
        """The fraction of the images on which both top-1 classes are the same (0 with none
        counted)."""
        return self.same_top1 / self.count if self.count else 0.0

    @property
    def relative_logit_diff(self) -> float:
        """The largest logit difference relative to the largest logit (``seres_jax.parity``'s
        measure)."""
        return self.max_logit_diff / self.max_logit if self.max_logit > 0 else self.max_logit_diff

    def to_dict(self) -> dict[str, float]:
        """``count``, ``top1_agreement``, ``max_logit_diff`` and ``relative_logit_diff``,
        JSON-ready."""
        return {"count": self.count, "top1_agreement": self.top1_agreement,
                "max_logit_diff": self.max_logit_diff,
                "relative_logit_diff": self.relative_logit_diff}  # fmt: skip
