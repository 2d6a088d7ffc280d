"""Classification losses for JAX training, each equal to its PyTorch or timm twin.

``cross_entropy`` is ``torch.nn.functional.cross_entropy`` with label smoothing;
``soft_cross_entropy`` is timm's ``SoftTargetCrossEntropy`` (mixed or smoothed targets);
``binary_cross_entropy`` is timm's ``BinaryCrossEntropy`` (``--bce-loss``: one sigmoid per class,
on integer labels or on mixed soft targets). Every loss is computed in float32 whatever the
logits' dtype: a bfloat16 log-softmax keeps only ~3 significant digits of the loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["binary_cross_entropy", "cross_entropy", "soft_cross_entropy"]


def cross_entropy(
    logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, label_smoothing: float = 0.0
) -> jax.Array:
    """Mean softmax cross-entropy over the batch, in float32 whatever the logits dtype.

    ``logits`` is ``(..., num_classes)`` and ``labels`` the matching integer class ids.
    Equals ``torch.nn.functional.cross_entropy(logits, labels,
    label_smoothing=label_smoothing)``, whose smoothed target is
    ``(1 - eps) * onehot + eps / num_classes`` (the uniform part covers all classes,
    the true one included), i.e. ``(1 - eps) * nll + eps * mean_k(-log p_k)``.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    log_probs = jax.nn.log_softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)
    labels = jnp.asarray(labels)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    if label_smoothing:
        uniform = -jnp.mean(log_probs, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    return jnp.mean(nll)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """timm's ``SoftTargetCrossEntropy``: ``mean(sum(-targets * log_softmax(logits), -1))``,
    in float32 whatever the logits dtype."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.mean(jnp.sum(-targets * log_probs, axis=-1))


def _check_range(name: str, value: object, low: float, high: float, *, open_high: bool) -> None:
    """Checks a host value (a Python or NumPy number, a concrete array) for ``[low, high]``
    (``[low, high)`` with ``open_high``); traced values are left to the caller."""
    if isinstance(value, jax.core.Tracer):
        return
    v = float(value)  # type: ignore[arg-type]
    if not (low <= v < high if open_high else low <= v <= high):
        interval = f"[{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")


def binary_cross_entropy(
    logits: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    smoothing: jax.typing.ArrayLike = 0.0,
    target_threshold: jax.typing.ArrayLike | None = None,
    sum_classes: bool = False,
    pos_weight: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """timm's ``BinaryCrossEntropy`` (``reduction="mean"``), a float32 scalar whatever the
    logits' dtype.

    ``logits`` is ``(..., num_classes)``. ``targets`` is either integer class ids of shape
    ``logits.shape[:-1]``, turned into smoothed one-hots as timm does (``smoothing /
    num_classes`` off the label, ``1 - smoothing + smoothing / num_classes`` on it), or soft
    targets of the logits' shape, used as they are: ``smoothing`` does not apply to them
    (timm's default ``smooth_dense=False``). With ``target_threshold`` set, targets above it
    become 1 and the rest 0. The loss per element is PyTorch's
    ``binary_cross_entropy_with_logits``, ``(1 - t) x - (1 + (pos_weight - 1) t) log σ(x)``
    (``log σ`` in its overflow-free form; ``pos_weight`` a scalar or one per class). It is
    averaged over every element, or with ``sum_classes`` summed over the classes and
    averaged over the rest.

    **With mixup** (timm's ``train.py --bce-loss`` with ``--mixup``/``--cutmix``): smoothing
    happens in the mixed targets, ``seres_jax.mixup.mixup_target(labels, num_classes, lam,
    smoothing)`` (what ``mix_batch`` returns), and the loss gets them with the default
    ``smoothing=0``; ``target_threshold=0.2`` (``--bce-target-thresh``) then marks both mixed
    classes as positives. Without mixup, pass the integer labels and ``smoothing``.

    Jittable: ``smoothing`` and ``target_threshold`` may be traced; Python numbers are
    checked here (``ValueError`` unless ``0 <= smoothing < 1`` and ``0 <= target_threshold
    <= 1``). Unlike timm, the one-hot targets are float32 even for low-precision logits (timm
    builds them in the logits' dtype, bfloat16 rounding ``1 - smoothing + off``).
    """
    _check_range("smoothing", smoothing, 0.0, 1.0, open_high=True)
    if target_threshold is not None:
        _check_range("target_threshold", target_threshold, 0.0, 1.0, open_high=False)
    x = jnp.asarray(logits).astype(jnp.float32)
    targets = jnp.asarray(targets)
    if x.ndim < 1:
        raise ValueError("logits must have a class axis, got a scalar")
    num_classes = x.shape[-1]
    if targets.shape == x.shape:
        t = targets.astype(jnp.float32)
    elif targets.shape == x.shape[:-1]:
        off = jnp.asarray(smoothing, jnp.float32) / num_classes
        on = 1.0 - jnp.asarray(smoothing, jnp.float32) + off
        hot = targets.astype(jnp.int32)[..., None] == jnp.arange(num_classes)
        t = jnp.where(hot, on, off)
    else:
        raise ValueError(
            f"targets must be class ids of shape {x.shape[:-1]} or soft targets of the "
            f"logits' shape {x.shape}, got {targets.shape}"
        )
    if target_threshold is not None:
        t = (t > target_threshold).astype(jnp.float32)
    log_sigmoid = jax.nn.log_sigmoid(x)
    if pos_weight is not None:
        log_sigmoid = ((jnp.asarray(pos_weight, jnp.float32) - 1.0) * t + 1.0) * log_sigmoid
    loss = (1.0 - t) * x - log_sigmoid
    if sum_classes:
        return jnp.mean(jnp.sum(loss, axis=-1))
    return jnp.mean(loss)
