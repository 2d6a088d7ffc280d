"""Classification losses for JAX training, each equal to its PyTorch or timm twin.

``cross_entropy`` is ``torch.nn.functional.cross_entropy`` with label smoothing;
``soft_cross_entropy`` is timm's ``SoftTargetCrossEntropy`` (mixed or smoothed targets). Every
loss is computed in float32 whatever the logits' dtype: a bfloat16 log-softmax keeps only ~3
significant digits of the loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cross_entropy", "soft_cross_entropy"]


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
