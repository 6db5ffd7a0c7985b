"""Losses over logits and predictions, numerically stable, reduced to a scalar by default.

`reduction` is 'mean' (default), 'sum' or 'none'. 'none' returns the unreduced loss: one value
per element for mean_squared_error and binary_cross_entropy_with_logits, one per example (the
class axis summed) for the softmax cross-entropies.

>>> loss = sparse_softmax_cross_entropy(labels, model.apply(params, x))
"""

from __future__ import annotations

from jitgrad import ops
from jitgrad.ops.base import as_value

_REDUCTIONS = ("mean", "sum", "none")


def _check(op: str, reduction: str, labels, logits, same_shape=True, what="logits"):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    labels = as_value(labels)
    logits = as_value(logits)
    # Broadcasting (n,) against (n, 1) would silently make an (n, n) loss.
    if same_shape and tuple(labels.shape) != tuple(logits.shape):
        raise ValueError(
            f"{op}: labels of shape {tuple(labels.shape)} do not match {what} "
            f"of shape {tuple(logits.shape)}"
        )
    return labels, logits


def _reduce(loss, reduction: str):
    if reduction == "mean":
        return ops.reduce_mean(loss)
    if reduction == "sum":
        return ops.reduce_sum(loss)
    return loss


def mean_squared_error(labels, predictions, reduction: str = "mean"):
    """(predictions - labels)^2, reduced; labels and predictions have the same shape.

    >>> mean_squared_error(np.zeros(2, np.float32), np.array([1.0, 3.0], np.float32))
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=5.0>
    """
    labels, predictions = _check(
        "mean_squared_error", reduction, labels, predictions, what="predictions"
    )
    if predictions.dtype.kind != "f":
        predictions = ops.cast(predictions, "float32")
    return _reduce(ops.square(predictions - ops.cast(labels, predictions.dtype)), reduction)


def sparse_softmax_cross_entropy(labels, logits, reduction: str = "mean"):
    """-log softmax(logits)[label] with integer labels of shape logits.shape[:-1].

    >>> sparse_softmax_cross_entropy(np.array([0]), np.array([[0.0, 0.0]], np.float32))
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=0.6931472>
    """
    labels, logits = _check(
        "sparse_softmax_cross_entropy", reduction, labels, logits, same_shape=False
    )
    loss = ops.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _reduce(loss, reduction)


def softmax_cross_entropy(labels, logits, reduction: str = "mean"):
    """-sum(labels * log softmax(logits)) over the last axis; labels one-hot or probabilities.

    >>> softmax_cross_entropy(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]], np.float32))
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=0.6931472>
    """
    labels, logits = _check("softmax_cross_entropy", reduction, labels, logits)
    loss = ops.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(labels, logits, reduction: str = "mean"):
    """-(z log sigmoid(x) + (1 - z) log(1 - sigmoid(x))) = softplus(x) - x z, per element.

    >>> binary_cross_entropy_with_logits(np.array([1.0]), np.array([0.0], np.float32))
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=0.6931472>
    """
    labels, logits = _check("binary_cross_entropy_with_logits", reduction, labels, logits)
    loss = ops.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return _reduce(loss, reduction)
