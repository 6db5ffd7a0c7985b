"""Special functions: lgamma, digamma, polygamma, erfc, erfinv, betainc, logaddexp (primitives)
and xlogy, xlog1py, log_ndtr (composites).

Eagerly each primitive is its scipy.special function (imported on first use; float32 inputs
computed in float64 and rounded once); compiled it is `math.lgamma`/`math.erfc` or a helper of
jitgrad/backend/numba/special.py. Error bounds, tested in tests/test_special.py over each
function's full range (tiny and huge x, negative non-integers, near poles and zeros, erfinv
up to 1 - 1e-16, erfc into its denormal tail), in float64 ulps of the exact value (scipy's;
where scipy is itself off, as for lgamma near its zeros, digamma near its poles or erfc's
denormals, mpmath's):

    function   compiled float64
    lgamma     8 ulps; for x < 0 of |lgamma(1 - x)| + |log(pi / sin(pi x))| (reflection: the
               terms cancel at its zeros between the poles)
    digamma    8 ulps; for x < 0 of |digamma(1 - x)| + |pi / tan(pi x)| (likewise)
    polygamma  8 ulps for x > 0, n = 1..4
    erf        4 ulps (elementwise.py's erf_p: libm's erf; float32's erff within 1 ulp)
    erfc       6 ulps
    erfinv     6 ulps, up to 1 - |y| = 2^-53
    betainc    300 ulps for a, b in [0.1, 32] (the continued fraction's rounding, amplified
               where I = 1 - I_(1-x)(b, a) is small); where x^a or Gamma(a + b) leave the
               float range the prefactor x^a (1-x)^b / B(a, b) is taken in log space, where
               terms of size ~ a |log x| cancel: about that many ulps more
    logaddexp  2 ulps
    log_ndtr   16 ulps (a composite: the same eagerly) for x <= 0; for x > 0 times x^2 / 2,
               the effect of rounding x / sqrt 2 (scipy's own log_ndtr is 44 ulps off at 8.8)

Eager float64 results are scipy's; every float32 result, eager or compiled, is the float64
value rounded once: within 1 ulp (log_ndtr: 4 ulps, computed in float32).

Integer inputs are refused with a TypeError, as TensorFlow does (and unlike exp, which computes
integers in float32): an integer argument to a special function is nearly always a bug.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.core.tensor import Tracer
from jitgrad.ops.base import (
    PYTHON_SCALARS,
    VALUE_TYPES,
    _weak_constant,
    as_value,
    broadcast_all,
    eager_elementwise,
    require_float,
)
from jitgrad.ops.elementwise import (
    _same,
    equal,
    exp,
    greater,
    log,
    log1p,
    logical_and,
    logical_not,
    minimum,
    sigmoid,
    where,
    zeros_like_value,
)
from jitgrad.ops.structural import cast_value

_SQRT_PI = math.sqrt(math.pi)


def _scipy(name, *, fix=None):
    """scipy.special.<name>, imported on first use (it costs 0.25 s). float32 inputs are
    computed in float64 and rounded once, as the compiled helpers do: scipy's own float32
    loops of some functions flush tiny results to 0 (betainc) or are 2 ulps off (erfinv).
    `fix(args, out)` adjusts special values."""

    def impl(*args, **params):
        import scipy.special

        dtype = args[-1].dtype
        wide = [np.asarray(a, np.float64) for a in args]
        out = np.asarray(getattr(scipy.special, name)(*params.values(), *wide), dtype=dtype)
        return out if fix is None else fix(args, out)

    return impl


def _lgamma_fix(args, out):
    """log|Gamma(-inf)| = +inf, as C's lgamma (compiled) and TensorFlow; scipy says -inf."""
    (x,) = args
    return np.where(x == -np.inf, np.inf, out).astype(out.dtype)


def _float32_or_64(op: str, arity: int = 1):
    """The shape rule of a special function: `arity` operands of equal shapes, float32 or
    float64 (the compiled helpers exist for those two; float16 has no libm or scipy loop of its
    own either)."""
    same = _same(op, floats_only=True)

    def abstract_eval(*xs, **params):
        if len(xs) != arity:
            raise op_error(op, f"takes {arity} operand(s), got {len(xs)}", TypeError)
        out = same(*xs)
        if out.dtype not in (dtypes.float32, dtypes.float64):
            raise op_error(
                op,
                f"supports float32 and float64, got {out.dtype.name} {list(out.shape)}",
                TypeError,
            )
        return out

    return abstract_eval


def _elementwise(name, impl, vjp, *, template=None, vmath=None, doc=""):
    return defop(
        name,
        abstract_eval=_float32_or_64(name),
        impl=impl,
        vjp=vjp,
        kind="elementwise",
        template=template or "",
        vmath=vmath,
        doc=doc,
    )


# d lgamma = digamma
lgamma_p = _elementwise(
    "lgamma",
    _scipy("gammaln", fix=_lgamma_fix),
    lambda g, out, x: (g * digamma(x),),
    # float32 through float64 (then within 1 ulp): libm's lgammaf is 2 ulps off.
    template="{dtype}(math.lgamma(np.float64({0})))",
    doc="log|Gamma(x)|: +inf at the poles (x = 0, -1, -2, ...).",
)
# d digamma = polygamma(1, .)
digamma_p = _elementwise(
    "digamma",
    _scipy("digamma"),
    lambda g, out, x: (g * bind(polygamma_p, x, n=1),),
    vmath="digamma",
)


def _polygamma_eval(x, *, n):
    if not isinstance(n, int) or n < 1:
        raise op_error("polygamma", f"the primitive's order must be an int >= 1, got {n!r}")
    return _float32_or_64("polygamma")(x)


# d polygamma(n, .) = polygamma(n + 1, .). n >= 1: the public function sends n = 0 to digamma.
polygamma_p = defop(
    "polygamma",
    abstract_eval=_polygamma_eval,
    impl=_scipy("polygamma"),
    vjp=lambda g, out, x, n: (g * bind(polygamma_p, x, n=n + 1),),
    kind="elementwise",
    template="",
    vmath="polygamma",
    doc="The n-th derivative of digamma; n (>= 1) is a static parameter.",
)
# d erfc = -2/sqrt(pi) exp(-x^2)
erfc_p = _elementwise(
    "erfc",
    _scipy("erfc"),
    lambda g, out, x: (g * (-2.0 / _SQRT_PI) * exp(-(x * x)),),
    template="{dtype}(math.erfc(np.float64({0})))",  # as lgamma: erfcf is 2.3 ulps off
    doc="1 - erf(x) without the cancellation for large x: a primitive for its tail.",
)
# d erfinv(y) = sqrt(pi)/2 exp(erfinv(y)^2)
erfinv_p = _elementwise(
    "erfinv",
    _scipy("erfinv"),
    lambda g, out, y: (g * (_SQRT_PI / 2.0) * exp(out * out),),
    vmath="erfinv",
)


def _betainc_vjp(g, out, a, b, x):
    """d/dx I_x(a, b) = x^(a-1) (1-x)^(b-1) / B(a, b), in log space (TensorFlow's form: xlogy
    and xlog1py keep a = 1 or b = 1 finite at the ends). No gradient for a and b (None), as
    TensorFlow, whose Betainc gradient gives None for them: their derivatives need series of
    their own."""
    log_beta = lgamma(a) + lgamma(b) - lgamma(a + b)
    return (None, None, g * exp(xlog1py(b - 1.0, -x) + xlogy(a - 1.0, x) - log_beta))


betainc_p = defop(
    "betainc",
    abstract_eval=_float32_or_64("betainc", arity=3),
    impl=_scipy("betainc"),
    vjp=_betainc_vjp,
    kind="elementwise",
    template="",
    vmath="betainc",
    doc="The regularized incomplete beta function; differentiable in x only.",
)


def _logaddexp_vjp(g, out, x, y):
    """d/dx log(e^x + e^y) = sigmoid(x - y): 1/2 each on ties (a composite over max would give
    the whole gradient to one side there). Not e^(x - out): out = x + log 2 rounds to x for
    |x| > 2^53, and the halves would become ones."""
    return (lambda: g * sigmoid(x - y), lambda: g * sigmoid(y - x))


# A primitive for its gradient on ties (see the VJP) and for accuracy: max(x, y) +
# log1p(exp(-|x - y|)) keeps the tiny results of x = 0, y = -40; x == y (infinities too) is
# x + log 2.
logaddexp_p = defop(
    "logaddexp",
    abstract_eval=_float32_or_64("logaddexp", arity=2),
    impl=np.logaddexp,
    vjp=_logaddexp_vjp,
    kind="elementwise",
    template=(
        "({0} + {dtype}(0.6931471805599453) if {0} == {1} "
        "else max({0}, {1}) + math.log1p(math.exp(-abs({0} - {1}))))"
    ),
)

# ---------------------------------------------------------------------------------------------
# Public functions (TensorFlow's names and arguments; `name=` is accepted and ignored)


def _unary_fn(prim, public_name, summary, example):
    def fn(x, name=None):
        out = eager_elementwise(prim, x)
        if out is not None:
            return out
        return bind(prim, as_value(x, op=public_name))

    fn.__name__ = fn.__qualname__ = public_name
    fn.__doc__ = f"{summary}\n\n{example}\n"
    return fn


lgamma = _unary_fn(
    lgamma_p,
    "lgamma",
    "log|Gamma(x)| elementwise; its gradient is digamma.",
    ">>> import jitgrad\n>>> float(jitgrad.math.lgamma(4.0))  # log 3!\n1.7917594909667969",
)
digamma = _unary_fn(
    digamma_p,
    "digamma",
    "d/dx log|Gamma(x)| elementwise (-inf at +0, +inf at -0, nan at -1, -2, ...; as scipy).",
    ">>> import jitgrad\n>>> round(float(jitgrad.math.digamma(1.0)), 6)  # -Euler's gamma\n"
    "-0.577216",
)
erfc = _unary_fn(
    erfc_p,
    "erfc",
    "1 - erf(x) elementwise, accurate in the tail where 1 - erf(x) rounds to 0.",
    ">>> import jitgrad\n>>> float(jitgrad.math.erfc(jitgrad.constant(10.0, jitgrad.float64)))\n"
    "2.0884875837625446e-45",
)
erfinv = _unary_fn(
    erfinv_p,
    "erfinv",
    "The inverse of erf on [-1, 1] elementwise (+-inf at +-1, nan outside).",
    ">>> import jitgrad\n>>> round(float(jitgrad.math.erfinv(0.5)), 6)\n0.476936",
)


def _polygamma_order(a) -> int:
    """polygamma's order as a Python int: a static parameter of the kernel (one kernel per
    order), so it must be a concrete non-negative integer, not a traced value."""
    if isinstance(a, Tracer):
        raise op_error(
            "polygamma",
            "the order a must be a concrete integer (a static parameter), got a traced value",
            TypeError,
        )
    value = np.asarray(a._value if isinstance(a, VALUE_TYPES) else a)
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise op_error(
            "polygamma",
            f"the order a must be one non-negative integer, got {value.dtype.name} of shape "
            f"{value.shape}",
            TypeError,
        )
    n = value.item()
    if n != math.floor(n) or n < 0:
        raise op_error("polygamma", f"the order a must be a non-negative integer, got {n!r}")
    return int(n)


def polygamma(a, x, name=None):
    """The a-th derivative of digamma at x (a = 0: digamma itself), elementwise. Unlike
    TensorFlow, whose `a` is a tensor like x (NaN where not a non-negative integer), `a` is one
    concrete integer here: it selects the series the kernel computes.

    >>> import jitgrad
    >>> round(float(jitgrad.math.polygamma(1, 1.0)), 6)  # pi^2 / 6
    1.644934
    """
    n = _polygamma_order(a)
    if n == 0:
        return digamma(x)
    return bind(polygamma_p, as_value(x, op="polygamma"), n=n)


def _float_operands(op: str, *xs):
    """Tensors for `xs` of one float dtype and shape: Python scalars are weak (take the others'
    dtype), the rest promote; integers are refused."""
    strong = [as_value(x, op=op) for x in xs if type(x) not in PYTHON_SCALARS]
    if not strong:
        values = [as_value(x, op=op) for x in xs]
    else:
        dt = functools.reduce(dtypes.promote, [v.dtype for v in strong])
        values = [
            _weak_constant(x, strong[0], op) if type(x) in PYTHON_SCALARS else as_value(x, op=op)
            for x in xs
        ]
        values = [v if v.dtype == dt else cast_value(v, dt) for v in values]
    require_float(op, *values)
    return broadcast_all(op, *values)


def betainc(a, b, x, name=None):
    """The regularized incomplete beta function I_x(a, b), elementwise with broadcasting.

    Differentiable in x only: the gradients with respect to a and b are None, as in
    TensorFlow (tf.math.betainc's gradient gives None for them): `tape.gradient` returns None
    for them, and `jitgrad.grad`/`jit_grad`, which give zeros for any argument without a
    gradient path, give zeros. Those zeros are not the derivative: do not ask for it.

    >>> import jitgrad
    >>> float(jitgrad.math.betainc(2.0, 3.0, 0.5))
    0.6875
    """
    return bind(betainc_p, *_float_operands("betainc", a, b, x))


def logaddexp(x1, x2, name=None):
    """log(exp(x1) + exp(x2)) without overflow, elementwise with broadcasting (numpy's name);
    on ties the gradient is 1/2 for each side.

    >>> import jitgrad
    >>> round(float(jitgrad.logaddexp(0.0, 0.0)), 6)  # log 2
    0.693147
    """
    out = eager_elementwise(logaddexp_p, x1, x2)
    if out is not None:
        return out
    return bind(logaddexp_p, *_float_operands("logaddexp", x1, x2))


def xlogy(x, y, name=None):
    """x * log(y), and 0 where x == 0 (whatever y, as TensorFlow; scipy gives NaN for y NaN).

    Gradients as TensorFlow defines them: d/dx = log(y) where x != 0, else 0; d/dy = x / y
    where x != 0, else 0 (so both are 0 at (0, 0)).

    >>> import jitgrad
    >>> float(jitgrad.math.xlogy(0.0, 0.0))
    0.0
    """
    x, y = _float_operands("xlogy", x, y)
    return _x_times(x, log, y, 1.0)


def xlog1py(x, y, name=None):
    """x * log1p(y), and 0 where x == 0 (TensorFlow's convention and gradients, as xlogy).

    >>> import jitgrad
    >>> float(jitgrad.math.xlog1py(0.0, -1.0))
    0.0
    """
    x, y = _float_operands("xlog1py", x, y)
    return _x_times(x, log1p, y, 0.0)


def _x_times(x, f, y, safe):
    """where(x == 0, 0, x f(y)), with y replaced by `safe` where x == 0 so that neither the
    value nor any derivative of the unused branch is NaN or infinite."""
    zero = equal(x, 0.0)
    safe_y = where(zero, safe, y)
    return where(zero, zeros_like_value(x), x * f(safe_y))


# log ndtr(x) ~ -x^2/2 - log(-x) - log(2 pi)/2 + log(1 + sum_k (-1)^k (2k-1)!! x^-2k) for
# x <= -lower: ten terms leave < 1e-17 (float64, x <= -20) and < 1e-11 (float32, x <= -10).
_LOG_NDTR_SERIES = tuple((-1.0) ** k * math.prod(range(1, 2 * k, 2)) for k in range(11))
_LOG_NDTR_LOWER = {np.dtype(np.float64): 20.0, np.dtype(np.float32): 10.0}


def log_ndtr(x, name=None):
    """log of the standard normal CDF, accurate in both tails: log1p(-erfc(x/sqrt 2)/2) for
    x > 0 (where ndtr rounds to 1), log(erfc(-x/sqrt 2)/2) down to x = -20 (float64; -10 for
    float32) and beyond that the asymptotic series of log ndtr, where ndtr itself underflows
    (log_ndtr(-40) = -804.6 in float64). A composite of erfc, log, log1p and where.

    >>> import jitgrad
    >>> round(float(jitgrad.math.log_ndtr(jitgrad.constant(-40.0, jitgrad.float64))), 3)
    -804.608
    """
    x = as_value(x, op="log_ndtr")
    require_float("log_ndtr", x)
    lower = _LOG_NDTR_LOWER.get(x.dtype, 10.0)
    positive = greater(x, 0.0)
    middle = logical_and(greater(x, -lower), logical_not(positive))
    # Each branch reads x only where it is selected (a constant elsewhere): no NaN or inf in
    # the unused branches' values or gradients.
    right = where(positive, x, 0.0)
    right = log1p(-0.5 * erfc(right / math.sqrt(2.0)))
    centre = where(middle, x, -1.0)
    centre = log(0.5 * erfc(centre / -math.sqrt(2.0)))
    tail = minimum(x, -lower)
    z = 1.0 / (tail * tail)
    series = z * _LOG_NDTR_SERIES[-1] + _LOG_NDTR_SERIES[-2]
    for c in reversed(_LOG_NDTR_SERIES[:-2]):
        series = series * z + c
    tail = -0.5 * tail * tail - log(-tail) - 0.5 * math.log(2.0 * math.pi) + log(series)
    return where(positive, right, where(middle, centre, tail))
