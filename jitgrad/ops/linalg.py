"""matmul (the one linear-algebra primitive) and the composites tensordot and einsum."""

from __future__ import annotations

import collections
import functools

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
from jitgrad.ops.index import gather


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


# -- einsum ----------------------------------------------------------------------------------
# Labels are one-character strings: the equation's letters, and for the axes an ellipsis stands
# for, characters past the letters (chr(0x100 + k), numbered from the right, as broadcasting
# aligns them).

_ELLIPSIS_BASE = 0x100


def _einsum_error(equation: str, shapes, message: str) -> Exception:
    listed = ", ".join(str(tuple(s)) for s in shapes)
    return op_error("einsum", f"{equation!r} with operands of shapes {listed}: {message}")


def _split_term(term: str, fail) -> tuple[list[str], bool]:
    """A term's letters before and after its ellipsis, and whether it has one."""
    if term.count("...") > 1 or term.replace("...", "").count("."):
        raise fail(f"term {term!r}: '.' only as one '...'")
    head, dots, tail = term.partition("...")
    for c in head + tail:
        if not c.isalpha() or not c.isascii():
            raise fail(f"term {term!r}: labels are the letters a-z and A-Z, got {c!r}")
    return [list(head), list(tail)], bool(dots)


def _parse_einsum(equation: str, shapes) -> tuple[list[list[str]], list[str]]:
    """(labels of each operand, labels of the output), each as numpy reads the equation: an
    ellipsis covers an operand's remaining axes, broadcast across operands from the right;
    without '->' the output is the ellipsis axes, then the letters used once, sorted."""

    def fail(message):
        return _einsum_error(equation, shapes, message)

    spec = equation.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    if "->" in output or ("-" in inputs or ">" in inputs):
        raise fail("at most one '->', and '-' or '>' nowhere else")
    terms = inputs.split(",")
    if not shapes:
        raise fail("needs at least one operand")
    if len(terms) != len(shapes):
        raise fail(f"{len(terms)} term(s) for {len(shapes)} operand(s)")
    labels, ellipsis_rank = [], 0
    for term, shape in zip(terms, shapes):
        (head, tail), dots = _split_term(term, fail)
        rest = len(shape) - len(head) - len(tail)
        if rest < 0 or (rest and not dots):
            raise fail(f"term {term!r} does not fit an operand of rank {len(shape)}")
        ellipsis_rank = max(ellipsis_rank, rest)
        labels.append(head + [chr(_ELLIPSIS_BASE + k) for k in reversed(range(rest))] + tail)
    ellipsis = [chr(_ELLIPSIS_BASE + k) for k in reversed(range(ellipsis_rank))]
    if arrow:
        (head, tail), dots = _split_term(output, fail)
        out = head + (ellipsis if dots else []) + tail
        letters = head + tail
        used = {c for term in labels for c in term}
        for c in letters:
            if letters.count(c) > 1:
                raise fail(f"output label {c!r} appears more than once")
            if c not in used:
                raise fail(f"output label {c!r} is in no operand")
    else:
        counts = collections.Counter(c for term in labels for c in term if ord(c) < 128)
        out = ellipsis + sorted(c for c, n in counts.items() if n == 1)
    return labels, out


def _label_sizes(equation: str, shapes, labels) -> dict[str, int]:
    """The size of each label: equal within an operand (a diagonal), and across operands equal
    or 1 (broadcast, as numpy does)."""
    sizes: dict[str, int] = {}
    for term, shape in zip(labels, shapes):
        own: dict[str, int] = {}
        for c, d in zip(term, shape):
            if own.setdefault(c, d) != d:
                raise _einsum_error(
                    equation, shapes, f"a repeated label has sizes {own[c]} and {d} in one operand"
                )
            if sizes.get(c, 1) == 1:
                sizes[c] = d
            elif d not in (1, sizes[c]):
                raise _einsum_error(
                    equation,
                    shapes,
                    f"a label has sizes {sizes[c]} and {d}, which do not broadcast",
                )
    return sizes


def _diagonal(x, term: list[str]):
    """x with each repeated label taken once, along the diagonal: the repeated axes are moved
    last, flattened, and the diagonal's flat positions gathered (exact, and its gradient is a
    scatter-add onto the diagonal)."""
    for c in dict.fromkeys(term):
        where = [k for k, label in enumerate(term) if label == c]
        if len(where) == 1:
            continue
        keep = [k for k in range(len(term)) if k not in where]
        n = x.shape[where[0]]
        x = sh.transpose(x, keep + where)
        x = sh.reshape(x, tuple(x.shape[: len(keep)]) + (n ** len(where),))
        step = sum(n**j for j in range(len(where)))  # flat index of (i, i, ..., i) is i * step
        x = gather(x, np.arange(n, dtype=np.int64) * step, axis=-1)
        term = [term[k] for k in keep] + [c]
    return x, term


def _sum_unused(x, term: list[str], needed: set):
    """x summed over the labels nothing else needs."""
    drop = [k for k, c in enumerate(term) if c not in needed]
    if not drop:
        return x, term
    return reduce.reduce_sum(x, drop), [c for c in term if c in needed]


def _contract(a, ta: list[str], b, tb: list[str], keep: set):
    """The product of two operands summed over their shared labels not in `keep`: a multiply
    when nothing is summed, else one batched matmul (batch, free_a, summed) @ (batch, summed,
    free_b). A shared label of size 1 on one side is broadcast to the other side's size."""
    both = [c for c in ta if c in tb]
    batch = [c for c in both if c in keep]
    summed = [c for c in both if c not in keep]
    free_a = [c for c in ta if c not in tb]
    free_b = [c for c in tb if c not in ta]
    sizes = dict(zip(ta, a.shape))
    for c, d in zip(tb, b.shape):
        sizes[c] = max(sizes.get(c, d), d)

    def size(cs):
        return int(np.prod([sizes[c] for c in cs], dtype=np.int64))

    def arrange(x, term, order, shape):
        x = sh.transpose(x, [term.index(c) for c in order])
        full = tuple(sizes[c] for c in order)
        if x.shape != full:
            x = sh.broadcast_to(x, full)
        return sh.reshape(x, shape)

    if not summed:
        a2 = arrange(a, ta, batch + free_a, (size(batch), size(free_a), 1))
        b2 = arrange(b, tb, batch + free_b, (size(batch), 1, size(free_b)))
        out = a2 * b2
    else:
        a2 = arrange(a, ta, batch + free_a + summed, (size(batch), size(free_a), size(summed)))
        b2 = arrange(b, tb, batch + summed + free_b, (size(batch), size(summed), size(free_b)))
        out = matmul(a2, b2)
    labels = batch + free_a + free_b
    return sh.reshape(out, tuple(sizes[c] for c in labels)), labels


def _greedy_pair(terms: list[list[str]], output: list[str], sizes: dict) -> tuple[int, int]:
    """The pair of operands whose contraction gives the smallest intermediate (ties: the
    first pair), opt_einsum's greedy rule: it keeps every step small."""
    best = None
    for i in range(len(terms)):
        for j in range(i + 1, len(terms)):
            others = {c for k, t in enumerate(terms) if k not in (i, j) for c in t}
            kept = {c for c in terms[i] + terms[j] if c in others or c in output}
            cost = int(np.prod([sizes[c] for c in kept], dtype=np.int64))
            shares = bool(set(terms[i]) & set(terms[j]))
            key = (cost, not shares)
            if best is None or key < best[0]:
                best = (key, i, j)
    return best[1], best[2]


def einsum(equation, *inputs, name=None):
    """Einstein summation with numpy's rules, for any number of operands.

    >>> jitgrad.einsum("ij,jk->ik", a, b)          # a matrix product
    >>> jitgrad.einsum("bxby->bxy", t)              # a diagonal (a label repeated in a term)
    >>> jitgrad.einsum("...ij,...jk", a, b)         # ellipsis and implicit output

    Each operand first loses its repeated labels (diagonals, by a gather) and the labels
    nothing else uses (summed); then operands are contracted two at a time, the pair with the
    smallest result first (greedy), each contraction one batched matmul (or a broadcast
    multiply when nothing is summed). Size-1 axes broadcast against the other operands'.
    """
    xs = [as_value(x, op="einsum") for x in inputs]
    shapes = [x.shape for x in xs]
    labels, output = _parse_einsum(equation, shapes)
    sizes = _label_sizes(equation, shapes, labels)
    if len({x.dtype for x in xs}) > 1:
        dtype = functools.reduce(promote, [x.dtype for x in xs])
        xs = [cast(x, dtype) for x in xs]
    terms = []
    for k, (x, term) in enumerate(zip(xs, labels)):
        x, term = _diagonal(x, term)
        others = {c for j, t in enumerate(labels) if j != k for c in t}
        xs[k], term = _sum_unused(x, term, others | set(output))
        terms.append(term)
    while len(xs) > 1:
        i, j = _greedy_pair(terms, output, sizes)
        rest = [k for k in range(len(xs)) if k not in (i, j)]
        keep = {c for k in rest for c in terms[k]} | set(output)
        a, ta = _sum_unused(xs[i], terms[i], keep | set(terms[j]))
        b, tb = _sum_unused(xs[j], terms[j], keep | set(ta))
        out, labels_out = _contract(a, ta, b, tb, keep)
        xs = [xs[k] for k in rest] + [out]
        terms = [terms[k] for k in rest] + [labels_out]
    (x,), (term,) = xs, terms
    return sh.transpose(x, [term.index(c) for c in output])
