"""timm's ``RandomErasing`` (``--reprob --remode --recount --resplit``) as jittable JAX
functions applied on the device to a batch of normalised NHWC images.

This module owns random erasing with the semantics of ``timm.data.random_erasing``
(timm 1.0.31), image by image as timm's batch path loops over the batch: with probability
``probability`` an image gets ``count`` boxes (``min_count``, or uniform in
``[min_count, max_count]`` when they differ); each box makes up to 10 attempts of
``target_area = uniform(min_area, max_area) * H * W / count`` and
``aspect = exp(uniform(log(min_aspect), log(max_aspect)))``,
``h = round(sqrt(target_area * aspect))``, ``w = round(sqrt(target_area / aspect))``, and takes
the first attempt with ``h < H`` and ``w < W`` (none: no box) at ``top`` uniform in
``[0, H - h]`` and ``left`` in ``[0, W - w]``. The box is filled with 0 (``const``: the
dataset mean, the images being normalised), one standard normal per channel (``rand``) or one
per pixel and channel (``pixel``); later boxes cover earlier ones. With ``num_splits > 1`` the
first ``batch // num_splits`` images (timm's clean aug split) are left alone.

``draw_erasing`` draws every random choice from a ``jax.random`` key into an
``ErasingDraws``; ``erase`` applies given draws, so recorded timm draws can be replayed
(``parity_tests/test_random_erasing.py`` does: same boxes, outputs equal bit for bit). Given
the draws, the only differences from timm are float32 rounding (timm computes the box size in
Python floats: ``h`` or ``w`` could differ by one where ``sqrt(...)`` lies within float32
rounding of a half-integer) and the layout (NHWC here, CHW in timm); and an image whose uniform
equals the probability exactly is erased by timm (``u <= p``) but not here (``u < p``), so
that probability 0 never erases. The draws themselves come from the caller's key (timm: the
global Python and torch generators), independent per attempt where timm's stream stops at the
accepted one, and in ``pixel`` mode one patch of fresh normals per box, as timm draws it,
only as large as a box can be (a third of the image by default: the normals are most of the
cost), laid out in image coordinates: the distribution is timm's, each erased pixel one fresh
standard normal.

``mode``, the counts and the areas are static (``RandomErasing`` is hashable): a configured
probability of 0 makes ``random_erasing`` return the images without drawing. A ``probability``
passed separately may be traced. Every operation is per image, so a batch sharded along its
first axis stays sharded and gives the same result as unsharded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .data.arrays import DataError

__all__ = [
    "ATTEMPTS",
    "MODES",
    "ErasingBoxes",
    "ErasingDraws",
    "RandomErasing",
    "box_sizes",
    "draw_erasing",
    "erase",
    "erasing_boxes",
    "random_erasing",
]

ATTEMPTS = 10
"""timm's number of tries per box before it gives that box up."""
MODES = ("const", "rand", "pixel")
"""timm's ``--remode`` values, what ``RandomErasing.mode`` fills a box with: 0 (the mean),
one standard normal per channel, or one per pixel and channel."""


@dataclass(frozen=True)
class RandomErasing:
    """timm ``RandomErasing``'s arguments, with its names and defaults (``device`` aside).

    ``max_aspect=None`` means ``1 / min_aspect`` and ``max_count=None`` means ``min_count``, as
    in timm; ``mode`` is case-insensitive and ``""`` means ``"const"``, as in timm. Bad values
    raise ``DataError`` (a ``ValueError``) naming them. Hashable: pass it as a static argument.
    """

    probability: float = 0.5
    min_area: float = 0.02
    max_area: float = 1 / 3
    min_aspect: float = 0.3
    max_aspect: float | None = None
    mode: str = "const"
    min_count: int = 1
    max_count: int | None = None
    num_splits: int = 0

    def __post_init__(self) -> None:
        mode = self.mode.lower() if isinstance(self.mode, str) else self.mode
        if mode == "":
            mode = "const"
        if mode not in MODES:
            raise DataError(f"random erasing mode must be one of {MODES}, got {self.mode!r}")
        object.__setattr__(self, "mode", mode)
        if not 0.0 <= self.probability <= 1.0:
            raise DataError(f"random erasing probability must be in [0, 1], got {self.probability}")
        if not 0.0 < self.min_area <= self.max_area <= 1.0:
            raise DataError(
                "random erasing areas need 0 < min_area <= max_area <= 1, got "
                f"min_area={self.min_area}, max_area={self.max_area}"
            )
        low, high = self.aspect_range
        if not 0.0 < low <= high or not math.isfinite(high):
            raise DataError(
                "random erasing aspects need 0 < min_aspect <= max_aspect, got "
                f"min_aspect={self.min_aspect}, max_aspect={self.max_aspect}"
            )
        low_count, high_count = self.count_range
        if not 1 <= low_count <= high_count:
            raise DataError(
                "random erasing counts need 1 <= min_count <= max_count, got "
                f"min_count={self.min_count}, max_count={self.max_count}"
            )
        if self.num_splits < 0:
            raise DataError(f"random erasing num_splits must be >= 0, got {self.num_splits}")

    @property
    def aspect_range(self) -> tuple[float, float]:
        """``(min_aspect, max_aspect)``, the latter resolved to ``1 / min_aspect`` if unset."""
        if self.max_aspect is not None:
            return self.min_aspect, self.max_aspect
        return self.min_aspect, (1 / self.min_aspect if self.min_aspect > 0 else math.inf)

    @property
    def count_range(self) -> tuple[int, int]:
        """``(min_count, max_count)``, the latter resolved to ``min_count`` if unset."""
        high = self.min_count if self.max_count is None else self.max_count
        return self.min_count, high

    def clean_images(self, batch: int) -> int:
        """How many leading images of a ``batch`` are never erased (timm's clean split)."""
        return batch // self.num_splits if self.num_splits > 1 else 0


class ErasingDraws(NamedTuple):
    """One batch's random choices; ``K = max_count`` boxes per image, ``ATTEMPTS`` tries each.

    * ``apply``: float32 ``(B,)`` uniforms in [0, 1); image ``b`` is erased iff
      ``apply[b] < probability``.
    * ``counts``: int32 ``(B,)``, each image's number of boxes.
    * ``area``, ``aspect``: float32 ``(B, K, ATTEMPTS)`` uniforms in [0, 1), scaled as timm's
      ``uniform(min_area, max_area)`` and ``uniform(log(min_aspect), log(max_aspect))``.
    * ``top``, ``left``: int32 ``(B, K, ATTEMPTS)``, the corner each attempt takes if accepted,
      in ``[0, H - h]`` and ``[0, W - w]`` for that attempt's size (any value otherwise).
    * ``fill``: ``None`` for ``const``; ``(B, K, C)`` normals for ``rand``; ``(B, H, W, C)``
      normals for ``pixel``, in image coordinates (the box at ``(y, x)`` shows ``fill[b, y, x]``;
      ``draw_erasing`` lays a fresh patch per box there, other pixels are never shown).
    """

    apply: jax.Array
    counts: jax.Array
    area: jax.Array
    aspect: jax.Array
    top: jax.Array
    left: jax.Array
    fill: jax.Array | None


class ErasingBoxes(NamedTuple):
    """The boxes ``erase`` paints, ``(B, K)`` each: whether box ``k`` of image ``b`` is painted,
    and its rows ``[top, top + height)`` and columns ``[left, left + width)`` (int32)."""

    on: jax.Array
    top: jax.Array
    left: jax.Array
    height: jax.Array
    width: jax.Array


def box_sizes(
    area: ArrayLike,
    aspect: ArrayLike,
    count: ArrayLike,
    image_height: int,
    image_width: int,
    config: RandomErasing,
) -> tuple[jax.Array, jax.Array]:
    """timm's box height and width for area and aspect uniforms in [0, 1), among ``count``
    boxes (broadcast against them): ``round`` half to even, as Python's."""
    min_area, max_area = config.min_area, config.max_area
    log_low, log_high = (math.log(a) for a in config.aspect_range)
    count = jnp.asarray(count, jnp.float32)
    target = (
        (min_area + (max_area - min_area) * jnp.asarray(area, jnp.float32))
        * (image_height * image_width)
        / count
    )
    ratio = jnp.exp(log_low + (log_high - log_low) * jnp.asarray(aspect, jnp.float32))
    height = jnp.round(jnp.sqrt(target * ratio)).astype(jnp.int32)
    width = jnp.round(jnp.sqrt(target / ratio)).astype(jnp.int32)
    return height, width


def _below(u: jax.Array, n: ArrayLike) -> jax.Array:
    """An integer uniform in ``[0, n)`` from a uniform in [0, 1) (bias below ``n / 2**23``)."""
    n = jnp.asarray(n, jnp.int32)
    return jnp.minimum(jnp.floor(u * n.astype(jnp.float32)).astype(jnp.int32), n - 1)


def draw_erasing(
    key: jax.Array,
    shape: tuple[int, ...],
    config: RandomErasing,
    dtype: jax.typing.DTypeLike = jnp.float32,
) -> ErasingDraws:
    """Draws every random choice of ``config``'s erasing for an NHWC batch of ``shape``, with
    timm's distributions; the fill normals in ``dtype``."""
    if len(shape) != 4:
        raise DataError(f"random erasing takes NHWC images, got shape {shape}")
    batch, height, width, channels = shape
    low_count, high_count = config.count_range
    tries = (batch, high_count, ATTEMPTS)
    size = high_count * ATTEMPTS
    # One flat block of uniforms per image, cut up below: a single 2-D draw compiles several
    # times faster than one per shape on XLA's CPU backend, and shards with the batch.
    key_u, key_fill = jax.random.split(key)
    u = jax.random.uniform(key_u, (batch, 2 + 4 * size))
    apply = u[:, 0]
    area, aspect, top_u, left_u = (
        u[:, 2 + i * size : 2 + (i + 1) * size].reshape(tries) for i in range(4)
    )
    counts = _below(u[:, 1], high_count - low_count + 1) + low_count
    box_h, box_w = box_sizes(area, aspect, counts[:, None, None], height, width, config)
    # Each attempt's own corner range; attempts that do not fit are never used: any range.
    top = _below(top_u, jnp.maximum(height - box_h + 1, 1))
    left = _below(left_u, jnp.maximum(width - box_w + 1, 1))
    fill: jax.Array | None = None
    if config.mode == "rand":
        fill = jax.random.normal(key_fill, (batch, high_count * channels), dtype)
        fill = fill.reshape(batch, high_count, channels)
    elif config.mode == "pixel":
        fill = _pixel_fill(key_fill, shape, config, box_h, box_w, top, left, dtype)
    return ErasingDraws(apply, counts, area, aspect, top, left, fill)


def _pixel_fill(
    key: jax.Array,
    shape: tuple[int, ...],
    config: RandomErasing,
    box_h: jax.Array,
    box_w: jax.Array,
    top: jax.Array,
    left: jax.Array,
    dtype: jax.typing.DTypeLike,
) -> jax.Array:
    """``pixel``'s field of normals in image coordinates, drawn as timm draws them: one patch
    of fresh normals per box, as large as the box can be (about ``max_area`` of the image, not
    the whole image: the normals are most of the cost), laid out row-major in the box that
    shows it (the last box's where boxes overlap, as later boxes cover earlier ones)."""
    batch, height, width, channels = shape
    boxes = box_h.shape[1]
    # The largest accepted box: h * w <= t + (h + w) / 2 + 1/4 with t <= max_area * H * W.
    size = min(
        height * width, math.ceil(config.max_area * height * width + (height + width) / 2 + 1)
    )
    pool = jax.random.normal(key, (batch, boxes * size * channels), dtype)
    pool = pool.reshape(batch, boxes * size, channels)
    fits = (box_h < height) & (box_w < width)
    first = jnp.argmax(fits, axis=-1)[..., None]

    def pick(values: jax.Array) -> jax.Array:
        return jnp.take_along_axis(values, first, axis=-1)[..., 0]

    b_top, b_left, b_w = pick(top), pick(left), pick(box_w)
    b_h = pick(box_h)
    rows, cols = jnp.arange(height)[None, :, None], jnp.arange(width)[None, None, :]
    index = jnp.zeros((batch, height, width), jnp.int32)
    for k in range(boxes):
        y = rows - b_top[:, k, None, None]
        x = cols - b_left[:, k, None, None]
        inside = (y >= 0) & (y < b_h[:, k, None, None]) & (x >= 0) & (x < b_w[:, k, None, None])
        local = jnp.clip(y * b_w[:, k, None, None] + x, 0, size - 1)
        index = jnp.where(inside, k * size + local, index)
    fill = jnp.take_along_axis(pool, index.reshape(batch, height * width, 1), axis=1)
    return fill.reshape(batch, height, width, channels)


def erasing_boxes(
    draws: ErasingDraws,
    height: int,
    width: int,
    config: RandomErasing,
    probability: ArrayLike | None = None,
) -> ErasingBoxes:
    """The boxes ``draws`` give on ``height x width`` images: per box the first attempt that
    fits, off when none does, beyond the image's count, or the image is not erased (its uniform
    not below ``probability``, or in the clean split). ``probability`` (default
    ``config.probability``) may be traced, a scalar or one per image."""
    batch, boxes, attempts = draws.area.shape
    if boxes != config.count_range[1] or attempts != ATTEMPTS:
        raise DataError(
            f"draws have {boxes} boxes x {attempts} attempts per image, config "
            f"{config} needs {config.count_range[1]} x {ATTEMPTS}"
        )
    box_h, box_w = box_sizes(
        draws.area, draws.aspect, draws.counts[:, None, None], height, width, config
    )
    fits = (box_h < height) & (box_w < width)
    first = jnp.argmax(fits, axis=-1)[..., None]

    def pick(values: jax.Array) -> jax.Array:
        return jnp.take_along_axis(values, first, axis=-1)[..., 0]

    p = config.probability if probability is None else probability
    erased = (draws.apply < p) & (jnp.arange(batch) >= config.clean_images(batch))
    on = erased[:, None] & (jnp.arange(boxes) < draws.counts[:, None]) & fits.any(-1)
    return ErasingBoxes(on, pick(draws.top), pick(draws.left), pick(box_h), pick(box_w))


def erase(
    images: jax.Array,
    draws: ErasingDraws,
    config: RandomErasing,
    probability: ArrayLike | None = None,
) -> jax.Array:
    """Erases NHWC ``images`` as ``draws`` say (``erasing_boxes``), filled as ``config.mode``
    says; same dtype. ``probability`` (default ``config.probability``) may be traced, a scalar
    or one per image."""
    if images.ndim != 4:
        raise DataError(f"random erasing takes NHWC images, got shape {images.shape}")
    batch, height, width, channels = images.shape
    if draws.apply.shape != (batch,):
        raise DataError(f"draws are for {draws.apply.shape[0]} images, the batch has {batch}")
    boxes = erasing_boxes(draws, height, width, config, probability)
    colours = draws.fill
    # Comparisons with traced bounds, not dynamic slices, keep every shape static and every
    # operation per image (a sharded batch stays sharded).
    rows, cols = jnp.arange(height), jnp.arange(width)
    in_rows = (rows >= boxes.top[..., None]) & (rows < (boxes.top + boxes.height)[..., None])
    in_cols = (cols >= boxes.left[..., None]) & (cols < (boxes.left + boxes.width)[..., None])
    masks = boxes.on[..., None, None] & in_rows[..., :, None] & in_cols[..., None, :]
    if config.mode == "rand":
        if colours is None or colours.shape != (*boxes.on.shape, channels):
            got = None if colours is None else colours.shape
            raise DataError(f"'rand' erasing needs {(*boxes.on.shape, channels)} fills, got {got}")
        out = images
        for k in range(boxes.on.shape[1]):  # in order: later boxes cover earlier ones
            colour = colours[:, k, None, None, :].astype(images.dtype)
            out = jnp.where(masks[:, k, :, :, None], colour, out)
        return out
    union = masks.any(axis=1)[..., None]
    if config.mode == "pixel":
        if draws.fill is None or draws.fill.shape != images.shape:
            got = None if draws.fill is None else draws.fill.shape
            raise DataError(f"'pixel' erasing needs {images.shape} fills, got {got}")
        return jnp.where(union, draws.fill.astype(images.dtype), images)
    return jnp.where(union, jnp.zeros((), images.dtype), images)


def random_erasing(
    key: jax.Array,
    images: jax.Array,
    config: RandomErasing,
    probability: ArrayLike | None = None,
) -> jax.Array:
    """timm ``RandomErasing(**config)(images)`` on a batch of normalised NHWC ``images``, drawn
    from ``key``: ``draw_erasing`` then ``erase``. ``probability`` overrides
    ``config.probability`` and may be traced; a static probability of 0 returns ``images``
    without drawing anything."""
    static_p = config.probability if probability is None else probability
    if isinstance(static_p, (int, float)) and static_p == 0:
        return images
    if images.ndim != 4:
        raise DataError(f"random erasing takes NHWC images, got shape {images.shape}")
    draws = draw_erasing(key, images.shape, config, images.dtype)
    return erase(images, draws, config, probability)
