"""Neural-network functions, all composites of primitives (sigmoid and softplus are primitives
in elementwise.py, for numerics). `where`-based rules feed the masked branch a safe input so
that no inf/NaN appears even in higher derivatives ("double where")."""

from __future__ import annotations

import math

from jitgrad.core import dtypes
from jitgrad.core.errors import op_error
from jitgrad.ops import elementwise as ew
from jitgrad.ops import reduce
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value
from jitgrad.ops.elementwise import sigmoid, softplus  # noqa: F401 - re-exported names
from jitgrad.ops.index import check_index, one_hot


def _float(x, op):
    x = as_value(x, op=op)
    return ew.cast(x, dtypes.float32) if x.dtype.kind != "f" else x


def relu(features, name=None):
    """max(x, 0) with relu'(0) = 0, as TensorFlow."""
    x = _float(features, "relu")
    return ew.where(x > 0, x, ew.zeros_like_value(x))


def relu6(features, name=None):
    """min(max(x, 0), 6); the gradient is 1 on (0, 6) only, as TensorFlow."""
    x = _float(features, "relu6")
    zero = ew.zeros_like_value(x)
    return ew.where(x > 0, ew.where(x < 6, x, zero + 6.0), zero)


def leaky_relu(features, alpha=0.2, name=None):
    """x for x > 0, alpha x otherwise."""
    x = _float(features, "leaky_relu")
    return ew.where(x > 0, x, x * alpha)


def _negative_part(x):
    """x where x <= 0, else 0: a safe input for exp-based branches of the negative side."""
    return ew.where(x > 0, ew.zeros_like_value(x), x)


def elu(features, name=None):
    """x for x > 0, exp(x) - 1 otherwise."""
    x = _float(features, "elu")
    return ew.where(x > 0, x, ew.expm1(_negative_part(x)))


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(features, name=None):
    """scale * (x if x > 0 else alpha (exp(x) - 1)), the self-normalising constants."""
    x = _float(features, "selu")
    return ew.where(x > 0, x, ew.expm1(_negative_part(x)) * _SELU_ALPHA) * _SELU_SCALE


def gelu(features, approximate=False, name=None):
    """x Phi(x): exact with erf, or the tanh approximation when `approximate`."""
    x = _float(features, "gelu")
    if approximate:
        inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (ew.tanh(inner) + 1.0)
    return x * 0.5 * (ew.erf(x * (1.0 / math.sqrt(2.0))) + 1.0)


def log_sigmoid(x, name=None):
    """log(sigmoid(x)) = -softplus(-x), stable for large |x|."""
    return ew.negative(ew.softplus(ew.negative(_float(x, "log_sigmoid"))))


def softsign(features, name=None):
    """x / (1 + |x|)."""
    x = _float(features, "softsign")
    return x / (ew.abs(x) + 1.0)


def silu(features, beta=1.0, name=None):
    """x sigmoid(beta x) (swish)."""
    x = _float(features, "silu")
    return x * ew.sigmoid(x * beta if beta != 1.0 else x)


swish = silu


def softmax(logits, axis=-1, name=None):
    """exp(x - max) / sum(exp(x - max)) along `axis`."""
    x = _float(logits, "softmax")
    m = ew.stop_gradient(reduce.reduce_max(x, axis, keepdims=True))
    e = ew.exp(x - m)
    return e / reduce.reduce_sum(e, axis, keepdims=True)


def log_softmax(logits, axis=-1, name=None):
    """(x - m) - log(sum(exp(x - m))) along `axis`, m the (finite) maximum: no overflow, and
    no cancellation: x - logsumexp(x) would round m + log(...) first, losing the low digits
    (at x = 1000 in float32, a relative error of 5e-5). The gradient does not depend on m."""
    x = _float(logits, "log_softmax")
    m = ew.stop_gradient(reduce.reduce_max(x, axis, keepdims=True))
    m = ew.where(ew.less(ew.abs(m), math.inf), m, ew.zeros_like_value(m))
    shifted = x - m
    return shifted - ew.log(reduce.reduce_sum(ew.exp(shifted), axis, keepdims=True))


def logsumexp(x, axis=None, keepdims=False, name=None):
    """log(sum(exp(x))), stable; the same as reduce_logsumexp."""
    return reduce.reduce_logsumexp(x, axis, keepdims)


def sparse_softmax_cross_entropy_with_logits(labels=None, logits=None, name=None):
    """-log softmax(logits)[label] per example (integer labels, classes on the last axis)."""
    if labels is None or logits is None:
        raise op_error(
            "sparse_softmax_cross_entropy_with_logits", "needs labels= and logits=", TypeError
        )
    z = _float(logits, "sparse_softmax_cross_entropy_with_logits")
    y = as_value(labels, op="sparse_softmax_cross_entropy_with_logits")
    if y.shape != z.shape[:-1]:
        raise op_error(
            "sparse_softmax_cross_entropy_with_logits",
            f"labels of shape {y.shape} do not match logits of shape {z.shape}",
        )
    # TensorFlow raises for a label outside [0, classes); one_hot alone would give the row an
    # all-off mask and a silent loss of 0.
    y = check_index(y, (z.shape[-1],), "sparse_softmax_cross_entropy_with_logits", "label")
    picked = one_hot(y, z.shape[-1], on_value=True, off_value=False, dtype=dtypes.bool_)
    logp = log_softmax(z, -1)
    return ew.negative(reduce.reduce_sum(ew.where(picked, logp, ew.zeros_like_value(logp)), -1))


def softmax_cross_entropy_with_logits(labels, logits, axis=-1, name=None):
    """-sum(labels * log softmax(logits)) along `axis` (one-hot or probability labels)."""
    z = _float(logits, "softmax_cross_entropy_with_logits")
    y = ew.cast(as_value(labels, op="softmax_cross_entropy_with_logits"), z.dtype)
    return ew.negative(reduce.reduce_sum(y * log_softmax(z, axis), axis))


def sigmoid_cross_entropy_with_logits(labels=None, logits=None, name=None):
    """softplus(x) - x z = max(x, 0) - x z + log(1 + exp(-|x|)), stable for any x."""
    x = _float(logits, "sigmoid_cross_entropy_with_logits")
    z = ew.cast(as_value(labels, op="sigmoid_cross_entropy_with_logits"), x.dtype)
    if z.shape != x.shape:
        raise op_error(
            "sigmoid_cross_entropy_with_logits",
            f"labels of shape {z.shape} do not match logits of shape {x.shape}",
        )
    return ew.softplus(x) - x * z


def l2_loss(t, name=None):
    """sum(t^2) / 2."""
    x = _float(t, "l2_loss")
    return reduce.reduce_sum(x * x) * 0.5


def bias_add(value, bias, name=None):
    """value + bias on the last axis."""
    return ew.add(value, bias)


def moments(x, axes, keepdims=False, name=None):
    """(mean, variance) over `axes`."""
    x = _float(x, "moments")
    mean = reduce.reduce_mean(x, axes, keepdims=True)
    variance = reduce.reduce_mean(ew.square(x - mean), axes, keepdims=True)
    if not keepdims:
        axes_t = tuple(a % x.ndim for a in (axes if isinstance(axes, (list, tuple)) else [axes]))
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes_t)
        mean, variance = sh.reshape(mean, shape), sh.reshape(variance, shape)
    return mean, variance
