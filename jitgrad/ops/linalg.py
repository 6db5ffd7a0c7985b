"""matmul (the one linear-algebra primitive) and the composites tensordot and einsum."""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.dtypes import promote
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.ops import reduce
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value, broadcast_shapes
from jitgrad.ops.elementwise import cast


def _describe(a, b) -> str:
    return f"{a.shape} @ {b.shape}"


def _matmul_eval(a, b):
    # Matrices with equal batch dimensions, or (unbatched) a vector on either side or both,
    # as numpy does: the vector's axis is contracted and does not appear in the result.
    vector = a.ndim == 1 or b.ndim == 1
    if (
        a.ndim == 0
        or b.ndim == 0
        or a.dtype != b.dtype
        or (vector and max(a.ndim, b.ndim) > 2)
        or (not vector and (a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2]))
    ):
        raise op_error(
            "matmul",
            f"{_describe(a, b)}: operands need equal batch dimensions and "
            f"dtypes ({a.dtype.name}, {b.dtype.name})",
        )
    contracted_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != contracted_b:
        raise op_error(
            "matmul", f"{_describe(a, b)} cannot contract {a.shape[-1]} with {contracted_b}"
        )
    if a.dtype.kind == "b":
        raise op_error("matmul", "bool operands are not supported", TypeError)
    return AVal(a.shape[:-1] + (b.shape[-1:] if b.ndim > 1 else ()), a.dtype)


def _matmul_vjp(g, out, a, b):
    # C = A B:  dA = G B^T,  dB = A^T G; with a vector operand the "transpose" of the vector
    # side is an outer product, and a vector-vector product (a dot) scales the other vector.
    if a.ndim == 1 and b.ndim == 1:
        return (lambda: g * b, lambda: g * a)
    if b.ndim == 1:  # (m, k) @ (k,)
        return (
            lambda: bind(matmul_p, sh.reshape(g, g.shape + (1,)), sh.reshape(b, (1,) + b.shape)),
            lambda: bind(matmul_p, sh.matrix_transpose(a), g),
        )
    if a.ndim == 1:  # (k,) @ (k, n)
        return (
            lambda: bind(matmul_p, b, g),
            lambda: bind(matmul_p, sh.reshape(a, a.shape + (1,)), sh.reshape(g, (1,) + g.shape)),
        )
    return (
        lambda: bind(matmul_p, g, sh.matrix_transpose(b)),
        lambda: bind(matmul_p, sh.matrix_transpose(a), g),
    )


matmul_p = defop(
    "matmul", abstract_eval=_matmul_eval, impl=np.matmul, vjp=_matmul_vjp, kind="linalg"
)


def matmul(a, b, transpose_a=False, transpose_b=False, name=None):
    """Matrix product with numpy's rules: batch dimensions broadcast, 1-d operands are
    promoted to matrices and the added axis is removed from the result."""
    a, b = as_value(a, op="matmul"), as_value(b, op="matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise op_error("matmul", f"{_describe(a, b)}: operands must have rank >= 1")
    if transpose_a:
        a = sh.matrix_transpose(a)
    if transpose_b:
        b = sh.matrix_transpose(b)
    if a.dtype != b.dtype:
        dt = promote(a.dtype, b.dtype)
        a, b = cast(a, dt), cast(b, dt)
    vec_a, vec_b = a.ndim == 1, b.ndim == 1
    if (vec_a or vec_b) and a.ndim <= 2 and b.ndim <= 2:
        return bind(matmul_p, a, b)  # one op: matrix-vector, vector-matrix or dot
    a2 = sh.reshape(a, (1,) + a.shape) if vec_a else a
    b2 = sh.reshape(b, b.shape + (1,)) if vec_b else b
    if a2.shape[-1] != b2.shape[-2]:
        raise op_error(
            "matmul", f"{_describe(a, b)} cannot contract {a2.shape[-1]} with {b2.shape[-2]}"
        )
    batch = a2.shape[:-2]
    if batch or b2.ndim > 2:
        batch = broadcast_shapes("matmul", batch, b2.shape[:-2])
        a2 = sh.broadcast_to(a2, batch + a2.shape[-2:])
        b2 = sh.broadcast_to(b2, batch + b2.shape[-2:])
    out = bind(matmul_p, a2, b2)
    if vec_a or vec_b:
        shape = (
            batch + ((a2.shape[-2],) if not vec_a else ()) + ((b2.shape[-1],) if not vec_b else ())
        )
        out = sh.reshape(out, shape)
    return out


def tensordot(a, b, axes, name=None):
    """Contract `axes` of a with those of b (an int N: the last N of a with the first N of b)."""
    a, b = as_value(a, op="tensordot"), as_value(b, op="tensordot")
    if isinstance(axes, (int, np.integer)):
        axes_a = list(range(a.ndim - int(axes), a.ndim))
        axes_b = list(range(int(axes)))
    else:
        axes_a, axes_b = (
            [axes[0]] if isinstance(axes[0], int) else list(axes[0]),
            [axes[1]] if isinstance(axes[1], int) else list(axes[1]),
        )
    axes_a = [x % a.ndim for x in axes_a]
    axes_b = [x % b.ndim for x in axes_b]
    if [a.shape[i] for i in axes_a] != [b.shape[i] for i in axes_b]:
        raise op_error(
            "tensordot",
            f"{a.shape} and {b.shape}: contracted axes {axes_a} and {axes_b} differ in size",
        )
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]

    def size(x, axes):
        return int(np.prod([x.shape[i] for i in axes], dtype=np.int64))

    # Explicit sizes, not -1: with an empty axis, -1 would be ambiguous.
    k = size(a, axes_a)
    a2 = sh.reshape(sh.transpose(a, free_a + axes_a), (size(a, free_a), k))
    b2 = sh.reshape(sh.transpose(b, axes_b + free_b), (k, size(b, free_b)))
    out_shape = tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b)
    return sh.reshape(matmul(a2, b2), out_shape)


def _parse_einsum(equation: str, n_operands: int):
    equation = equation.replace(" ", "")
    if "." in equation:
        raise op_error("einsum", f"{equation!r}: ellipsis is not supported")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != n_operands or n_operands not in (1, 2):
        raise op_error(
            "einsum", f"{equation!r}: one or two operands are supported, got {n_operands}"
        )
    if not arrow:
        counts = {c: inputs.count(c) for c in inputs if c != ","}
        output = "".join(sorted(c for c, n in counts.items() if n == 1))
    for t in terms:
        if len(set(t)) != len(t):
            raise op_error(
                "einsum",
                f"{equation!r}: repeated index in one operand (diagonals) is not supported",
            )
    return terms, output


def einsum(equation, *inputs, name=None):
    """Einstein summation for one or two operands (transposes, reductions, batched and outer
    products, contractions), lowered to transpose + reshape + matmul."""
    xs = [as_value(x, op="einsum") for x in inputs]
    terms, output = _parse_einsum(equation, len(xs))
    sizes: dict[str, int] = {}
    for term, x in zip(terms, xs):
        if len(term) != x.ndim:
            raise op_error("einsum", f"{equation!r}: term {term!r} for a tensor of shape {x.shape}")
        for c, d in zip(term, x.shape):
            if sizes.setdefault(c, d) != d:
                raise op_error("einsum", f"{equation!r}: index {c!r} has sizes {sizes[c]} and {d}")
    # Sum out the indices that appear in one operand only and not in the output.
    summed = []
    for i, (term, x) in enumerate(zip(terms, xs)):
        others = "".join(t for j, t in enumerate(terms) if j != i) + output
        drop = [k for k, c in enumerate(term) if c not in others]
        if drop:
            x = reduce.reduce_sum(x, drop)
            term = "".join(c for k, c in enumerate(term) if k not in drop)
        summed.append((term, x))
    if len(summed) == 1:
        term, x = summed[0]
        return sh.transpose(x, [term.index(c) for c in output])
    (ta, a), (tb, b) = summed
    batch = [c for c in ta if c in tb and c in output]
    contract = [c for c in ta if c in tb and c not in output]
    free_a = [c for c in ta if c not in tb]
    free_b = [c for c in tb if c not in ta]

    def size(cs):
        return int(np.prod([sizes[c] for c in cs], dtype=np.int64))

    a3 = sh.reshape(
        sh.transpose(a, [ta.index(c) for c in batch + free_a + contract]),
        (size(batch), size(free_a), size(contract)),
    )
    b3 = sh.reshape(
        sh.transpose(b, [tb.index(c) for c in batch + contract + free_b]),
        (size(batch), size(contract), size(free_b)),
    )
    out = matmul(a3, b3)
    labels = batch + free_a + free_b
    out = sh.reshape(out, tuple(sizes[c] for c in labels))
    return sh.transpose(out, [labels.index(c) for c in output])
