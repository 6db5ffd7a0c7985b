"""`jitgrad.scipy.special`: jax.scipy.special's names over jitgrad's special functions, so that
JAX code ports by changing one import.

>>> import jitgrad.scipy.special as jsp
>>> float(jsp.gammaln(5.0))  # log 4!
3.178053855895996

As in JAX (and unlike jitgrad.math, which refuses them as TensorFlow does), integer and bool
inputs compute in float32: `gammaln(k + 1)` of integer counts is a common idiom. Accuracy,
special values and gradients are those of jitgrad/ops/special.py.
"""

from __future__ import annotations

import math

from jitgrad.core import dtypes
from jitgrad.ops import special as _special
from jitgrad.ops.base import PYTHON_SCALARS, as_value
from jitgrad.ops.elementwise import cast, log, log1p, sigmoid
from jitgrad.ops.elementwise import erf as _erf
from jitgrad.ops.reduce import reduce_logsumexp

__all__ = [
    "betainc",
    "digamma",
    "erf",
    "erfc",
    "erfinv",
    "expit",
    "gammaln",
    "log_ndtr",
    "logit",
    "logsumexp",
    "ndtr",
    "polygamma",
    "xlog1py",
    "xlogy",
]


def _float(x, op: str):
    """x as a tensor; integers and bools as float32 (JAX's promotion); Python scalars are
    left to the function (weak next to tensors)."""
    if type(x) in PYTHON_SCALARS:
        return float(x)
    x = as_value(x, op=op)
    return cast(x, dtypes.float32) if x.dtype.kind in "biu" else x


def gammaln(x):
    """log|Gamma(x)| (jitgrad.math.lgamma)."""
    return _special.lgamma(_float(x, "gammaln"))


def digamma(x):
    """d/dx log Gamma(x) (jitgrad.math.digamma)."""
    return _special.digamma(_float(x, "digamma"))


def polygamma(n, x):
    """The n-th derivative of digamma; n one concrete non-negative integer."""
    return _special.polygamma(n, _float(x, "polygamma"))


def erf(x):
    return _erf(_float(x, "erf"))


def erfc(x):
    return _special.erfc(_float(x, "erfc"))


def erfinv(x):
    return _special.erfinv(_float(x, "erfinv"))


def xlogy(x, y):
    """x log y, 0 where x == 0 (also for y NaN, unlike scipy; as JAX and TensorFlow)."""
    return _special.xlogy(_float(x, "xlogy"), _float(y, "xlogy"))


def xlog1py(x, y):
    """x log1p(y), 0 where x == 0."""
    return _special.xlog1py(_float(x, "xlog1py"), _float(y, "xlog1py"))


def log_ndtr(x):
    """log of the standard normal CDF, accurate in both tails."""
    return _special.log_ndtr(_float(x, "log_ndtr"))


def ndtr(x):
    """The standard normal CDF, erfc(-x / sqrt 2) / 2 (no cancellation in the left tail)."""
    x = as_value(_float(x, "ndtr"), op="ndtr")
    return 0.5 * _special.erfc(x / -math.sqrt(2.0))


def betainc(a, b, x):
    """The regularized incomplete beta function; differentiable in x only (jitgrad.math)."""
    return _special.betainc(_float(a, "betainc"), _float(b, "betainc"), _float(x, "betainc"))


def logsumexp(a, axis=None, b=None, keepdims=False):
    """log(sum(b exp(a))) over `axis` (b: non-negative weights broadcast against a; a zero
    weight drops its term). JAX's `return_sign` is not supported: with negative weights the
    result is NaN here."""
    a = _float(a, "logsumexp")
    if b is not None:
        a = as_value(a, op="logsumexp") + log(_float(b, "logsumexp"))
    return reduce_logsumexp(a, axis=axis, keepdims=keepdims)


def expit(x):
    """The logistic sigmoid 1 / (1 + exp(-x))."""
    return sigmoid(_float(x, "expit"))


def logit(x):
    """log(x / (1 - x)), the inverse of expit, as log(x) - log1p(-x) (accurate near 0 and 1)."""
    x = as_value(_float(x, "logit"), op="logit")
    return log(x) - log1p(-x)
