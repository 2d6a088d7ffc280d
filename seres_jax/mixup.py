"""timm's batch-mode Mixup/CutMix as pure, jittable JAX functions run on the device.

This module owns the mixing of a training batch and its soft targets, with the semantics of
``timm.data.mixup.Mixup(mode="batch", correct_lam=True)``: with probability ``prob`` the batch
is mixed (else ``lam = 1``); when both alphas are positive, CutMix is chosen with probability
``switch_prob``; ``lam ~ Beta(alpha, alpha)`` of the chosen one. Mixup blends the batch with
itself reversed along the batch axis, ``x * lam + x[::-1] * (1 - lam)``; CutMix pastes a box
of the reversed batch (timm's ``rand_bbox``: cut ratio ``sqrt(1 - lam)``, centre uniform over
the image, clipped at the borders) and sets ``lam = 1 - box_area / (H * W)``. Targets are
``mixup_target``'s: smoothed one-hots mixed with the same ``lam``.

Two differences from timm, both deliberate: the draws come from ``jax.random`` with a key the
caller passes (timm uses NumPy's global RNG), so a resumed run draws the same; and images are
NHWC (timm: NCHW), the box spanning axes 1 (height) and 2 (width). The hyper-parameters may be
traced (``MixupConfig`` is a pytree of them), so changing them does not recompile, and with
both alphas 0 ``mix_batch`` returns the images unchanged and the smoothed one-hot targets.
The cut sizes are computed in float32, where timm uses float64: they can differ by a pixel
only when ``H * sqrt(1 - lam)`` lies within float32 rounding of an integer.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

# Moved to seres_jax.losses; still importable from here.
from .losses import soft_cross_entropy as soft_cross_entropy


@flax.struct.dataclass
class MixupConfig:
    """timm ``Mixup``'s hyper-parameters; every field is a pytree leaf, so it may be traced.

    The defaults mix nothing: ``mixup_alpha`` and ``cutmix_alpha`` enable each kind when
    positive; ``prob`` is the probability that a batch is mixed at all, ``switch_prob`` that
    of CutMix when both are enabled; ``label_smoothing`` smooths the targets as timm does.
    """

    mixup_alpha: ArrayLike = 0.0
    cutmix_alpha: ArrayLike = 0.0
    prob: ArrayLike = 1.0
    switch_prob: ArrayLike = 0.5
    label_smoothing: ArrayLike = 0.0


class Box(NamedTuple):
    """A CutMix box: rows ``[y_lo, y_hi)`` and columns ``[x_lo, x_hi)``, int32 scalars."""

    y_lo: jax.Array
    y_hi: jax.Array
    x_lo: jax.Array
    x_hi: jax.Array


class MixDraw(NamedTuple):
    """One batch's random choices: the weight of the batch itself (``lam``, float32, already
    corrected to the box's area for CutMix; 1 when the batch is not mixed), whether CutMix was
    chosen, and the box (used only then)."""

    lam: jax.Array
    use_cutmix: jax.Array
    box: Box


def cut_box(
    centre_y: ArrayLike, centre_x: ArrayLike, height: int, width: int, lam: ArrayLike
) -> Box:
    """timm's ``rand_bbox`` for a given centre: a ``sqrt(1 - lam)`` fraction of each side,
    ``int()``-truncated, centred there (the odd pixel after it) and clipped to the image."""
    ratio = jnp.sqrt(1.0 - jnp.asarray(lam, jnp.float32))
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    centre_y = jnp.asarray(centre_y, jnp.int32)
    centre_x = jnp.asarray(centre_x, jnp.int32)
    return Box(
        y_lo=jnp.clip(centre_y - cut_h // 2, 0, height),
        y_hi=jnp.clip(centre_y + (cut_h + 1) // 2, 0, height),
        x_lo=jnp.clip(centre_x - cut_w // 2, 0, width),
        x_hi=jnp.clip(centre_x + (cut_w + 1) // 2, 0, width),
    )


def cutmix_box(key: jax.Array, height: int, width: int, lam: ArrayLike) -> Box:
    """``cut_box`` at a centre drawn uniformly from ``[0, height) x [0, width)``."""
    key_y, key_x = jax.random.split(key)
    centre_y = jax.random.randint(key_y, (), 0, height)
    centre_x = jax.random.randint(key_x, (), 0, width)
    return cut_box(centre_y, centre_x, height, width, lam)


def box_lam(box: Box, height: int, width: int) -> jax.Array:
    """timm's ``correct_lam``: the fraction of each image the box leaves in place."""
    area = (box.y_hi - box.y_lo) * (box.x_hi - box.x_lo)
    return 1.0 - area.astype(jnp.float32) / (height * width)


def _box_mask(box: Box, height: int, width: int) -> jax.Array:
    # Comparisons with traced bounds, not dynamic slices, keep every shape static.
    rows = jnp.arange(height)
    cols = jnp.arange(width)
    in_rows = (rows >= box.y_lo) & (rows < box.y_hi)
    in_cols = (cols >= box.x_lo) & (cols < box.x_hi)
    return in_rows[:, None] & in_cols[None, :]


def paste_box(images: jax.Array, box: Box) -> jax.Array:
    """CutMix on NHWC ``images``: inside ``box``, each image takes the batch-reversed one's
    pixels."""
    mask = _box_mask(box, images.shape[1], images.shape[2])
    return jnp.where(mask[None, :, :, None], images[::-1], images)


def mixup_images(images: jax.Array, lam: ArrayLike) -> jax.Array:
    """Mixup: ``images * lam + images[::-1] * (1 - lam)``, in the images' dtype."""
    lam = jnp.asarray(lam, jnp.float32)
    return (images * lam + images[::-1] * (1.0 - lam)).astype(images.dtype)


def mixup_target(
    labels: jax.Array, num_classes: int, lam: ArrayLike, smoothing: ArrayLike = 0.0
) -> jax.Array:
    """timm's ``mixup_target``: smoothed one-hots (``off = smoothing / num_classes`` off the
    label, ``1 - smoothing + off`` on it) mixed with the batch-reversed ones,
    ``y * lam + y[::-1] * (1 - lam)``; float32 ``(batch, num_classes)``."""
    smoothing = jnp.asarray(smoothing, jnp.float32)
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    hot = labels[:, None] == jnp.arange(num_classes)
    y = jnp.where(hot, on, off)
    lam = jnp.asarray(lam, jnp.float32)
    return y * lam + y[::-1] * (1.0 - lam)


def draw_mix(key: jax.Array, height: int, width: int, config: MixupConfig) -> MixDraw:
    """Draws timm ``Mixup._params_per_batch``'s choices, and the CutMix box, for one batch."""
    key_prob, key_switch, key_lam, key_box = jax.random.split(key, 4)
    mixup_on = jnp.asarray(config.mixup_alpha) > 0
    cutmix_on = jnp.asarray(config.cutmix_alpha) > 0
    mixes = (mixup_on | cutmix_on) & (jax.random.uniform(key_prob) < config.prob)
    switch = jax.random.uniform(key_switch) < config.switch_prob
    use_cutmix = mixes & cutmix_on & (~mixup_on | switch)
    alpha = jnp.where(use_cutmix, config.cutmix_alpha, config.mixup_alpha)
    # Beta(0, 0) is undefined (NaN): draw from a valid one; `mixes` discards it then.
    alpha = jnp.where(alpha > 0, alpha, 1.0).astype(jnp.float32)
    lam = jnp.where(mixes, jax.random.beta(key_lam, alpha, alpha), 1.0)
    box = cutmix_box(key_box, height, width, lam)
    lam = jnp.where(use_cutmix, box_lam(box, height, width), lam)
    return MixDraw(lam=lam, use_cutmix=use_cutmix, box=box)


def mix_batch(
    key: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int, config: MixupConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """timm ``Mixup(mode="batch")(images, labels)`` on NHWC ``images`` with ``jax.random``.

    Returns the mixed images (same dtype), the float32 soft targets
    ``(batch, num_classes)`` and ``lam`` (float32 scalar, 1 when not mixed). Jittable with any
    field of ``config`` traced; with the batch sharded, the reversal is over the global batch.
    """
    draw = draw_mix(key, images.shape[1], images.shape[2], config)
    targets = mixup_target(labels, num_classes, draw.lam, config.label_smoothing)
    return mix_images(images, draw), targets, draw.lam


def mix_images(images: jax.Array, draw: MixDraw) -> jax.Array:
    """Mixes NHWC ``images`` as ``draw`` says (timm ``Mixup._mix_batch``): Mixup with
    ``draw.lam``, CutMix in ``draw.box``, or (``lam = 1``) the images unchanged. The batch
    size must be even (``ValueError`` otherwise, as timm asserts)."""
    if images.ndim != 4:
        raise ValueError(f"mixup takes NHWC images, got shape {images.shape}")
    if images.shape[0] % 2:
        # timm asserts it too: the middle image of an odd batch would mix with itself.
        raise ValueError(f"mixup needs an even batch size, got {images.shape[0]}")
    # Selects rather than branches: both are cheap, elementwise, and shard with the batch.
    blended = jnp.where(draw.lam < 1, mixup_images(images, draw.lam), images)
    return jnp.where(draw.use_cutmix, paste_box(images, draw.box), blended)
