"""Elementwise primitives (equal shapes, explicit broadcasting) and their public functions."""

from __future__ import annotations

import math

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import NOT_DIFFERENTIABLE, defop
from jitgrad.ops.base import (
    as_operand,
    as_value,
    binary_operands,
    broadcast_all,
    eager_elementwise,
    require_float,
    scalar_like,
)
from jitgrad.ops.structural import broadcast_value, cast_value

# ---------------------------------------------------------------------------------------------
# Shape/dtype rules


def _same(op: str, floats_only: bool = False, numeric: bool = True):
    def abstract_eval(*xs):
        first = xs[0]
        for x in xs[1:]:
            if x.shape != first.shape or x.dtype != first.dtype:
                raise op_error(
                    op,
                    "operands must have equal shapes and dtypes after broadcasting, got "
                    + ", ".join(f"{y.dtype.name}{list(y.shape)}" for y in xs),
                )
        if floats_only:
            require_float(op, first)
        elif numeric and first.dtype == dtypes.bool_:
            raise op_error(
                op, f"expects a numeric tensor, got bool of shape {first.shape}", TypeError
            )
        return AVal(first.shape, first.dtype)

    return abstract_eval


def _to_bool(op: str, bool_inputs: bool = False):
    def abstract_eval(*xs):
        _same(op, numeric=False)(*xs)
        if bool_inputs and xs[0].dtype != dtypes.bool_:
            raise op_error(op, f"expects bool tensors, got {xs[0].dtype.name}", TypeError)
        return AVal(xs[0].shape, dtypes.bool_)

    return abstract_eval


def _unary(name, impl, vjp, template, *, floats_only=True, vmath=None, doc=""):
    return defop(
        name,
        abstract_eval=_same(name, floats_only=floats_only),
        impl=impl,
        vjp=vjp,
        kind="elementwise",
        template=template,
        vmath=vmath,
        doc=doc,
    )


def _binary(name, impl, vjp, template, *, floats_only=False, vmath=None, doc=""):
    return defop(
        name,
        abstract_eval=_same(name, floats_only=floats_only),
        impl=impl,
        vjp=vjp,
        kind="elementwise",
        template=template,
        vmath=vmath,
        doc=doc,
    )


# ---------------------------------------------------------------------------------------------
# Unary primitives. VJPs: g is the output cotangent, out the forward output.

neg_p = _unary("neg", np.negative, lambda g, out, x: (negative(g),), "(-{0})", floats_only=False)
exp_p = _unary("exp", np.exp, lambda g, out, x: (g * out,), "math.exp({0})", vmath="exp")
# d expm1 = exp(x) = expm1(x) + 1
expm1_p = _unary(
    "expm1", np.expm1, lambda g, out, x: (g * (out + 1.0),), "math.expm1({0})", vmath="expm1"
)
log_p = _unary("log", np.log, lambda g, out, x: (g / x,), "math.log({0})", vmath="log")
log1p_p = _unary(
    "log1p", np.log1p, lambda g, out, x: (g / (x + 1.0),), "math.log1p({0})", vmath="log1p"
)
sin_p = _unary("sin", np.sin, lambda g, out, x: (g * cos(x),), "math.sin({0})")
cos_p = _unary("cos", np.cos, lambda g, out, x: (negative(g * sin(x)),), "math.cos({0})")
# d tan = 1 + tan^2
tan_p = _unary("tan", np.tan, lambda g, out, x: (g * (out * out + 1.0),), "math.tan({0})")
# d tanh = 1 - tanh^2
tanh_p = _unary(
    "tanh", np.tanh, lambda g, out, x: (g * (1.0 - out * out),), "math.tanh({0})", vmath="tanh"
)
sinh_p = _unary("sinh", np.sinh, lambda g, out, x: (g * cosh(x),), "math.sinh({0})")
cosh_p = _unary("cosh", np.cosh, lambda g, out, x: (g * sinh(x),), "math.cosh({0})")
# d asin = 1/sqrt(1-x^2), d acos = -1/sqrt(1-x^2), d atan = 1/(1+x^2)
arcsin_p = _unary("arcsin", np.arcsin, lambda g, out, x: (g / sqrt(1.0 - x * x),), "math.asin({0})")
arccos_p = _unary(
    "arccos", np.arccos, lambda g, out, x: (negative(g / sqrt(1.0 - x * x)),), "math.acos({0})"
)
arctan_p = _unary("arctan", np.arctan, lambda g, out, x: (g / (x * x + 1.0),), "math.atan({0})")
# d sqrt = 1/(2 sqrt x): +inf at 0, as TensorFlow.
sqrt_p = _unary("sqrt", np.sqrt, lambda g, out, x: (g / (out * 2.0),), "math.sqrt({0})")


# d erf = 2/sqrt(pi) exp(-x^2)
def _scipy_special(name):
    """A scipy.special ufunc, imported on first use: scipy.special takes 0.25 s to import, a
    third of a warm process start, and most programs never call erf or an eager sigmoid."""

    def impl(x):
        import scipy.special

        return getattr(scipy.special, name)(x)

    return impl


erf_p = _unary(
    "erf",
    _scipy_special("erf"),
    lambda g, out, x: (g * (2.0 / math.sqrt(math.pi)) * exp(negative(x * x)),),
    "math.erf({0})",
)
# abs'(0) = 0, as TensorFlow: sign(0) = 0.
abs_p = _unary("abs", np.abs, lambda g, out, x: (g * sign(x),), "abs({0})", floats_only=False)


def _zero_vjp(g, out, x):
    """Piecewise-constant ops (sign, floor, ceil, round) have a zero gradient."""
    return (zeros_like_value(x),)


# numpy's sign: +0.0 at both zeros, NaN at NaN, 0/1 for unsigned integers (Numba's np.sign
# returns -0.0 at -0.0 and 255 for a uint8 >= 128).
sign_p = _unary(
    "sign",
    np.sign,
    _zero_vjp,
    "({dtype}(({0} > 0) - ({0} < 0)) if {0} == {0} else {0})",
    floats_only=False,
)
floor_p = _unary("floor", np.floor, _zero_vjp, "np.floor({0})")
ceil_p = _unary("ceil", np.ceil, _zero_vjp, "np.ceil({0})")
# np.rint is np.round to 0 decimals (half to even); Numba types it float32 -> float32, where its
# np.round returns float64 (a cast back in every kernel).
round_p = _unary(
    "round",
    np.round,
    _zero_vjp,
    "np.rint({0})",
    doc="Rounds half to even, like numpy and TensorFlow.",
)
# sigma' = sigma (1 - sigma); a primitive for the vectorised kernel and the cheap VJP.
sigmoid_p = _unary(
    "sigmoid",
    _scipy_special("expit"),
    lambda g, out, x: (g * (out * (1.0 - out)),),
    "(1.0 / (1.0 + math.exp(-{0})))",
    vmath="sigmoid",
)


def _softplus_impl(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large |x|."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


# A primitive for numerics: the naive log(1 + exp(x)) overflows for x > 88 in float32.
softplus_p = _unary(
    "softplus",
    _softplus_impl,
    lambda g, out, x: (g * sigmoid(x),),
    "(max({0}, 0.0) + math.log1p(math.exp(-abs({0}))))",
    vmath="softplus",
)

logical_not_p = defop(
    "logical_not",
    abstract_eval=_to_bool("logical_not", bool_inputs=True),
    impl=np.logical_not,
    vjp=NOT_DIFFERENTIABLE,
    kind="elementwise",
    template="(not {0})",
)

# ---------------------------------------------------------------------------------------------
# Binary primitives

add_p = _binary("add", np.add, lambda g, out, x, y: (g, g), "({0} + {1})")
sub_p = _binary("sub", np.subtract, lambda g, out, x, y: (g, lambda: negative(g)), "({0} - {1})")
mul_p = _binary(
    "mul", np.multiply, lambda g, out, x, y: (lambda: g * y, lambda: g * x), "({0} * {1})"
)
# d(x/y) = (g/y, -g x/y^2) = (g/y, -g out/y)
div_p = _binary(
    "div",
    np.divide,
    lambda g, out, x, y: (lambda: g / y, lambda: negative(g * out) / y),
    "({0} / {1})",
    floats_only=True,
)


def _pow_vjp(g, out, x, y):
    """d x^y/dx = y x^(y-1), taken as 0 where y == 0 (TensorFlow gives NaN at x = 0);
    d x^y/dy = x^y log x, taken as 0 where x <= 0. The inner `where`s keep the masked branch
    finite so that higher derivatives stay NaN-free."""

    def dx():
        y_is_zero = equal(y, 0.0)
        safe_y = where(y_is_zero, scalar_like(2.0, y), y)
        return g * where(y_is_zero, zeros_like_value(x), safe_y * pow(x, safe_y - 1.0))

    def dy():
        positive = greater(x, 0.0)
        safe_log = where(
            positive, log(where(positive, x, scalar_like(1.0, x))), zeros_like_value(x)
        )
        return g * out * safe_log

    return (dx, dy)


pow_p = _binary("pow", np.power, _pow_vjp, "({0} ** {1})", floats_only=True)


def _max_min_vjp(compare):
    """TensorFlow's rule: on ties the whole gradient goes to the first operand."""

    def vjp(g, out, x, y):
        first = compare(x, y)
        zero = zeros_like_value(g)
        return (lambda: where(first, g, zero), lambda: where(first, zero, g))

    return vjp


# numpy's maximum and minimum: NaN if either operand is NaN, the second operand on ties (so
# maximum(-0.0, 0.0) is +0.0 and maximum(0.0, -0.0) is -0.0). Python's max(1.0, nan) is 1.0.
maximum_p = _binary(
    "maximum",
    np.maximum,
    _max_min_vjp(lambda x, y: greater_equal(x, y)),
    "({0} if {0} > {1} or {0} != {0} else {1})",
)
minimum_p = _binary(
    "minimum",
    np.minimum,
    _max_min_vjp(lambda x, y: less_equal(x, y)),
    "({0} if {0} < {1} or {0} != {0} else {1})",
)
floordiv_p = _binary(
    "floordiv", np.floor_divide, NOT_DIFFERENTIABLE, "({0} // {1})", vmath="floordiv"
)
# x mod y = x - floor(x/y) y: (g, -g floor(x/y)), as TensorFlow's FloorMod.
mod_p = _binary(
    "mod", np.mod, lambda g, out, x, y: (g, lambda: negative(g * floordiv(x, y))), "({0} % {1})"
)


def _comparison(name, impl, template):
    return defop(
        name,
        abstract_eval=_to_bool(name),
        impl=impl,
        vjp=NOT_DIFFERENTIABLE,
        kind="elementwise",
        template=template,
    )


equal_p = _comparison("equal", np.equal, "({0} == {1})")
not_equal_p = _comparison("not_equal", np.not_equal, "({0} != {1})")
less_p = _comparison("less", np.less, "({0} < {1})")
less_equal_p = _comparison("less_equal", np.less_equal, "({0} <= {1})")
greater_p = _comparison("greater", np.greater, "({0} > {1})")
greater_equal_p = _comparison("greater_equal", np.greater_equal, "({0} >= {1})")
logical_and_p = defop(
    "logical_and",
    abstract_eval=_to_bool("logical_and", bool_inputs=True),
    impl=np.logical_and,
    vjp=NOT_DIFFERENTIABLE,
    kind="elementwise",
    template="({0} and {1})",
)
logical_or_p = defop(
    "logical_or",
    abstract_eval=_to_bool("logical_or", bool_inputs=True),
    impl=np.logical_or,
    vjp=NOT_DIFFERENTIABLE,
    kind="elementwise",
    template="({0} or {1})",
)


def _select_eval(c, x, y):
    if c.dtype != dtypes.bool_:
        raise op_error("where", f"condition must be bool, got {c.dtype.name}", TypeError)
    if not (c.shape == x.shape == y.shape) or x.dtype != y.dtype:
        raise op_error(
            "where",
            f"condition, x and y must have equal shapes and x, y equal dtypes after "
            f"broadcasting, got bool{list(c.shape)}, {x.dtype.name}{list(x.shape)}, "
            f"{y.dtype.name}{list(y.shape)}",
        )
    return AVal(x.shape, x.dtype)


def _select_vjp(g, out, c, x, y):
    zero = zeros_like_value(g)
    return (None, lambda: where(c, g, zero), lambda: where(c, zero, g))


select_p = defop(
    "select",
    abstract_eval=_select_eval,
    impl=np.where,
    vjp=_select_vjp,
    kind="elementwise",
    template="({1} if {0} else {2})",
)


stop_gradient_p = defop(
    "stop_gradient",
    abstract_eval=lambda x: AVal(x.shape, x.dtype),
    impl=lambda x: x,
    vjp=NOT_DIFFERENTIABLE,
    kind="elementwise",
    template="{0}",
)

# ---------------------------------------------------------------------------------------------
# Public functions (TensorFlow names; `name=` is accepted and ignored)


def _unary_fn(prim, public_name, floats_only=True):
    def fn(x, name=None):
        out = eager_elementwise(prim, x)
        if out is not None:
            return out
        x = as_operand(x, public_name)
        if floats_only and x.dtype.kind in "biu":
            # TensorFlow refuses tf.exp(int); we follow numpy and compute in float32.
            x = cast(x, dtypes.float32)
        return bind(prim, x)

    fn.__name__ = fn.__qualname__ = public_name
    fn.__doc__ = f"Elementwise {public_name}; integer inputs are computed in float32."
    return fn


negative = _unary_fn(neg_p, "negative", floats_only=False)
exp = _unary_fn(exp_p, "exp")
expm1 = _unary_fn(expm1_p, "expm1")
log = _unary_fn(log_p, "log")
log1p = _unary_fn(log1p_p, "log1p")
sin = _unary_fn(sin_p, "sin")
cos = _unary_fn(cos_p, "cos")
tan = _unary_fn(tan_p, "tan")
tanh = _unary_fn(tanh_p, "tanh")
sinh = _unary_fn(sinh_p, "sinh")
cosh = _unary_fn(cosh_p, "cosh")
arcsin = _unary_fn(arcsin_p, "arcsin")
arccos = _unary_fn(arccos_p, "arccos")
arctan = _unary_fn(arctan_p, "arctan")
sqrt = _unary_fn(sqrt_p, "sqrt")
erf = _unary_fn(erf_p, "erf")
abs = _unary_fn(abs_p, "abs", floats_only=False)  # noqa: A001 - TensorFlow's name
sign = _unary_fn(sign_p, "sign", floats_only=False)
floor = _unary_fn(floor_p, "floor")
ceil = _unary_fn(ceil_p, "ceil")
round = _unary_fn(round_p, "round")  # noqa: A001 - TensorFlow's name
sigmoid = _unary_fn(sigmoid_p, "sigmoid")
softplus = _unary_fn(softplus_p, "softplus")


def logical_not(x, name=None):
    return bind(logical_not_p, as_value(x, op="logical_not"))


def rsqrt(x, name=None):
    """1 / sqrt(x)."""
    x = as_operand(x, "rsqrt")
    return 1.0 / sqrt(x)


def square(x, name=None):
    """x * x (one multiply; its VJP 2 g x comes out of mul's rule)."""
    x = as_operand(x, "square")
    return multiply(x, x)


def _binary_fn(prim, public_name):
    def fn(x, y, name=None):
        out = eager_elementwise(prim, x, y)
        if out is not None:
            return out
        x, y = binary_operands(public_name, x, y)
        return bind(prim, x, y)

    fn.__name__ = fn.__qualname__ = public_name
    fn.__doc__ = f"Elementwise {public_name} with broadcasting."
    return fn


add = _binary_fn(add_p, "add")
subtract = _binary_fn(sub_p, "subtract")
multiply = _binary_fn(mul_p, "multiply")
maximum = _binary_fn(maximum_p, "maximum")
minimum = _binary_fn(minimum_p, "minimum")
floordiv = _binary_fn(floordiv_p, "floordiv")
mod = _binary_fn(mod_p, "mod")
equal = _binary_fn(equal_p, "equal")
not_equal = _binary_fn(not_equal_p, "not_equal")
less = _binary_fn(less_p, "less")
less_equal = _binary_fn(less_equal_p, "less_equal")
greater = _binary_fn(greater_p, "greater")
greater_equal = _binary_fn(greater_equal_p, "greater_equal")


def _to_float(*xs):
    """True division and pow of integers compute in float (float64 for 32/64-bit ints, as TF)."""
    out = []
    for x in xs:
        if x.dtype.kind in "biu":
            x = cast(x, dtypes.float64 if x.dtype.itemsize >= 4 else dtypes.float32)
        out.append(x)
    return out


def divide(x, y, name=None):
    """x / y; integer operands are divided in float (TensorFlow's truediv)."""
    out = eager_elementwise(div_p, x, y)
    if out is not None:
        return out
    x, y = binary_operands("divide", x, y)
    x, y = _to_float(x, y)
    return bind(div_p, x, y)


def pow(x, y, name=None):  # noqa: A001 - TensorFlow's name
    """x ** y. Integer tensors raised to integer powers stay integer."""
    out = eager_elementwise(pow_p, x, y)
    if out is not None:
        return out
    x, y = binary_operands("pow", x, y)
    if x.dtype.kind in "biu":
        return cast(pow(*_to_float(x, y)), x.dtype)
    return bind(pow_p, x, y)


def logical_and(x, y, name=None):
    x, y = binary_operands("logical_and", x, y)
    return bind(logical_and_p, x, y)


def logical_or(x, y, name=None):
    x, y = binary_operands("logical_or", x, y)
    return bind(logical_or_p, x, y)


def where(condition, x=None, y=None, name=None):
    """Elementwise `x if condition else y`, with broadcasting (the gradient flows to the chosen
    side only). The public `where` (ops/sequences.py) also takes `condition` alone."""
    if x is None or y is None:
        raise op_error("where", "give both x and y, or neither", TypeError)
    c = as_value(condition, op="where")
    if c.dtype != dtypes.bool_:
        c = cast(c, dtypes.bool_)
    x, y = binary_operands("where", x, y)
    c, x, y = broadcast_all("where", c, x, y)
    return bind(select_p, c, x, y)


def cast(x, dtype, name=None):
    """x converted to `dtype` (float -> int truncates toward zero, as numpy)."""
    return cast_value(as_value(x, op="cast"), dtypes.as_dtype(dtype))


def stop_gradient(x, name=None):
    """x, with no gradient flowing through it."""
    return bind(stop_gradient_p, as_value(x, op="stop_gradient"))


def identity(input, name=None):  # noqa: A002 - TensorFlow's argument name
    """A new tensor equal to `input` (a Variable's current value), through which gradients
    flow: TensorFlow's tf.identity. It is `input * 1` (`input and True` for bools), exact in
    IEEE arithmetic and folded away when compiled, so that the tape records a node for it.

    >>> float(jitgrad.identity(jitgrad.Variable(2.0)))
    2.0
    """
    x = as_value(input, op="identity")
    return logical_and(x, True) if x.dtype == dtypes.bool_ else multiply(x, 1)


def zeros_like_value(x):
    """A zero tensor of x's shape and dtype, as a constant (broadcast view of a 0-d zero)."""
    return broadcast_value(scalar_like(0, x), x.shape)


def clip_by_value(t, clip_value_min, clip_value_max, name=None):
    """min(max(t, lo), hi); the gradient passes where lo <= t <= hi (ties included)."""
    return minimum(maximum(t, clip_value_min), clip_value_max)


def ones_like_value(x):
    """A tensor of ones of x's shape and dtype, as a constant."""
    return broadcast_value(scalar_like(1, x), x.shape)
