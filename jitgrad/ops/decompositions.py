"""Matrix decompositions and solves: the linear-algebra primitives, batched over leading axes.

    cholesky(A) -> L                           L L^T = (A + A^T) / 2, L lower triangular
    triangular_solve[lower, adjoint](A, B)     X with op(A) X = B, op(A) = A or A^T
    solve[adjoint](A, B)                       the same for a general square A (LU)
    slogdet(A)                                 packed (sign, log|det A|)
    qr[full_matrices](A)                       packed (Q, R)
    eigh(A)                                    packed (w, V): (A + A^T) / 2 = V diag(w) V^T
    svd(A)                                     packed (U, s, V): A = U diag(s) V^T, reduced
    lstsq[rcond](A, B)                         X = A^+ B, the minimum-norm least-squares solution

Why these are the primitives: each is one LAPACK routine (or, for triangular_solve, a
substitution) that numpy and Numba's nopython mode both provide, so eager and compiled code
run the same algorithm; and each has a short VJP over its own output. Everything else is a
composite over them (matrix.py): inv is a solve against the identity, det and logdet
come from slogdet and cholesky, pinv is a lstsq against the identity. Every VJP is written with
these primitives and jitgrad's other ops, so it is differentiable again (second order).

Several results, one value. An IR value is one array (a TupleAVal is control flow's), so an op
with several results returns them flattened and concatenated along one last axis after the
batch axes (`packed`); the public functions slice them apart (`unpack`), and a VJP slices its
packed cotangent the same way (the parts of unused results arrive as zeros, from slice's VJP).

Singular and non-positive-definite inputs give NaN, never an exception, in eager and compiled
code alike (JAX's convention; TensorFlow raises on some devices and returns NaN on others): a
NaN can travel through a compiled kernel, an exception cannot be raised from the middle of one
in a useful way, and `jitgrad.config.debug_nans` finds the op that made it. Precisely: cholesky
of a matrix whose symmetric part is not positive definite is all NaN; solve of an exactly
singular matrix is all NaN; triangular_solve divides by its diagonal (a zero there gives inf or
NaN by IEEE arithmetic, as TensorFlow's and JAX's kernels do); slogdet of a singular matrix is
(0, -inf), as numpy's; qr, eigh, svd and lstsq of a matrix holding inf or NaN (which Numba's
np.linalg refuses) are all NaN. Only float32 and float64 are supported (LAPACK's types).

cholesky and eigh read the symmetric part (A + A^T) / 2 of their input (JAX's
`symmetrize_input`): LAPACK reads one triangle only, and a function of one triangle has a
gradient confined to it, while the symmetric form of the gradient that TensorFlow and JAX return
is the gradient of the symmetric part. Symmetrizing makes the value and that gradient agree.
"""

from __future__ import annotations

import math

import numpy as np

from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.core.tensor import Tensor
from jitgrad.ops import shape as sh
from jitgrad.ops.linalg import matmul_p

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# ---------------------------------------------------------------------------------------------
# Checks and packing


def check_matrix(op: str, a, square: bool = False) -> None:
    """`a` is a (batch of) float32/float64 matrices, square if asked: else an error naming op."""
    if a.ndim < 2:
        raise op_error(op, f"expects a matrix (rank >= 2), got shape {a.shape}")
    if a.dtype not in FLOATS:
        raise op_error(
            op, f"expects float32 or float64, got {a.dtype.name} of shape {a.shape}", TypeError
        )
    if square and a.shape[-1] != a.shape[-2]:
        raise op_error(op, f"expects square matrices, got shape {a.shape}")


def check_rhs(op: str, a, b) -> None:
    """`b` is a right-hand side for `a`: its rows match a's, same batch axes and dtype."""
    if b.ndim != a.ndim or b.shape[:-2] != a.shape[:-2] or b.shape[-2] != a.shape[-2]:
        raise op_error(
            op,
            f"matrix {a.shape} and right-hand side {b.shape}: need equal batch axes and "
            f"{a.shape[-2]} rows on the right",
        )
    if b.dtype != a.dtype:
        raise op_error(op, f"matrix {a.dtype.name} and right-hand side {b.dtype.name}", TypeError)


def packed_size(shapes) -> int:
    return sum(math.prod(s) for s in shapes)


def pack(batch: tuple, parts) -> np.ndarray:
    """numpy arrays of shapes batch + core, flattened and joined along one last axis."""
    flat = [np.asarray(p).reshape(batch + (math.prod(p.shape[len(batch) :]),)) for p in parts]
    return np.concatenate(flat, axis=-1)


def unpack(x, shapes) -> list:
    """The parts of a packed value (jitgrad ops: differentiable), one per core shape."""
    batch = x.shape[:-1]
    parts, start = [], 0
    for core in shapes:
        n = math.prod(core)
        index = (slice(None),) * len(batch) + (slice(start, start + n),)
        parts.append(sh.reshape(sh.strided_slice(x, index), batch + tuple(core)))
        start += n
    return parts


def _batched(fn, *arrays, out_shape, dtype):
    """fn(matrix, ...) -> flat result, for each batch element of `arrays`."""
    batch = arrays[0].shape[:-2]
    out = np.empty(batch + out_shape, dtype)
    for i in np.ndindex(batch):
        out[i] = fn(*[a[i] for a in arrays])
    return out


def finite_or_nan(impl):
    """`impl` (batched numpy), giving NaN for each matrix of the first argument that holds a
    non-finite value or makes LAPACK fail (no convergence): what the compiled helpers give
    (Numba's np.linalg refuses non-finite input; numpy returns partly-NaN results)."""

    def run(a, *rest, **params):
        bad = ~np.isfinite(a).all(axis=(-2, -1))
        if bad.any():
            a = np.where(bad[..., None, None], 0, a).astype(a.dtype)
        try:
            out = impl(a, *rest, **params)
        except np.linalg.LinAlgError:  # one matrix failed: NaN for it alone
            out = None
        if out is None:
            out = np.empty(_eval_shape(impl, a, rest, params), a.dtype)
            for i in np.ndindex(a.shape[:-2]):
                try:
                    out[i] = impl(a[i][None], *[r[i][None] for r in rest], **params)[0]
                except np.linalg.LinAlgError:
                    out[i] = np.nan
        out[bad] = np.nan
        return out

    return run


def _eval_shape(impl, a, rest, params):
    """The result shape of `impl` on these inputs, from a run on one matrix of zeros."""
    batch = a.shape[:-2]
    zeros = [np.zeros((1,) + x.shape[len(batch) :], x.dtype) for x in (a, *rest)]
    return batch + impl(*zeros, **params).shape[1:]


# ---------------------------------------------------------------------------------------------
# Constants and small helpers for the VJP rules (jitgrad ops)


def mT(x):  # noqa: N802 - numpy's name for the matrix transpose
    return sh.matrix_transpose(x)


def mm(a, b):
    return bind(matmul_p, a, b)


def mask(n: int, m: int, dtype, kind: str):
    """A constant (n, m) 0/1 matrix: `lower`/`upper` triangle (with the diagonal), `eye`,
    `half` (the strict lower triangle plus 0.5 on the diagonal)."""
    ones = np.ones((n, m), dtype)
    table = {
        "lower": lambda: np.tril(ones),
        "upper": lambda: np.triu(ones),
        "eye": lambda: np.eye(n, m, dtype=dtype),
        "half": lambda: np.tril(ones, -1) + 0.5 * np.eye(n, m, dtype=dtype),
    }
    return Tensor(table[kind]().astype(dtype))


def _sym(x):
    return (x + mT(x)) * 0.5


def _batch_eye(a):
    """Identity matrices shaped like `a` (square): a constant broadcast to a's batch."""
    n = a.shape[-1]
    return sh.broadcast_to(mask(n, n, a.dtype, "eye"), a.shape)


# ---------------------------------------------------------------------------------------------
# cholesky


def _cholesky_eval(a):
    check_matrix("cholesky", a, square=True)
    return AVal(a.shape, a.dtype)


def _cholesky_one(a):
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        return np.full(a.shape, np.nan, a.dtype)


def _cholesky_impl(a):
    s = (a + np.swapaxes(a, -1, -2)) * a.dtype.type(0.5)
    try:
        return np.linalg.cholesky(s)
    except np.linalg.LinAlgError:  # one matrix of the batch is not positive definite: NaN
        return _batched(_cholesky_one, s, out_shape=a.shape[-2:], dtype=a.dtype)


def _cholesky_vjp(g, chol, a):
    # Murray (2016) in the symmetric form TensorFlow and JAX use: with Phi(X) the lower
    # triangle of X with its diagonal halved, S = L^-T Phi(L^T G) L^-1 and dA = (S + S^T) / 2.
    def da():
        n = chol.shape[-1]
        p = mm(mT(chol), g) * mask(n, n, chol.dtype, "half")
        x = bind(triangular_solve_p, chol, p, lower=True, adjoint=True)  # L^-T P
        s = mT(bind(triangular_solve_p, chol, mT(x), lower=True, adjoint=True))  # L^-T P L^-1
        return _sym(s)

    return (da,)


cholesky_p = defop(
    "cholesky",
    abstract_eval=_cholesky_eval,
    impl=_cholesky_impl,
    vjp=_cholesky_vjp,
    kind="linalg",
    doc="Lower Cholesky factor of the symmetric part; NaN if it is not positive definite.",
)

# ---------------------------------------------------------------------------------------------
# triangular_solve


def _triangular_eval(a, b, *, lower, adjoint):
    check_matrix("triangular_solve", a, square=True)
    check_rhs("triangular_solve", a, b)
    return AVal(b.shape, b.dtype)


def substitute(a, b, lower: bool, adjoint: bool) -> np.ndarray:
    """op(a) x = b by forward or back substitution over whole rows of b (numpy, batched): the
    algorithm of the compiled helper, used eagerly when a diagonal entry is 0 so that the
    infinities and NaNs it gives are the compiled ones."""
    t = np.swapaxes(a, -1, -2) if adjoint else a
    n = a.shape[-1]
    x = np.zeros(b.shape, b.dtype)
    rows = range(n) if lower != adjoint else range(n - 1, -1, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in rows:
            done = slice(0, i) if lower != adjoint else slice(i + 1, n)
            s = b[..., i, :] - np.einsum("...j,...jk->...k", t[..., i, done], x[..., done, :])
            x[..., i, :] = s / t[..., i, i, None]
    return x


def _triangular_impl(a, b, *, lower, adjoint):
    if b.size == 0:
        return np.zeros(b.shape, b.dtype)
    if not np.all(np.diagonal(a, axis1=-2, axis2=-1)):
        return substitute(a, b, lower, adjoint)

    import scipy.linalg  # here: importing it takes `import jitgrad` ~0.3-1 s longer

    def one(a1, b1):
        return scipy.linalg.solve_triangular(
            a1, b1, lower=lower, trans=1 if adjoint else 0, check_finite=False
        )

    return _batched(one, a, b, out_shape=b.shape[-2:], dtype=b.dtype)


def _triangular_vjp(g, x, a, b, *, lower, adjoint):
    # X = op(A)^-1 B:  dB = op(A)^-T G,  d op(A) = -dB X^T, kept to the triangle A is read from.
    db = bind(triangular_solve_p, a, g, lower=lower, adjoint=not adjoint)

    def da():
        n = a.shape[-1]
        outer = mm(x, mT(db)) if adjoint else mm(db, mT(x))
        return -outer * mask(n, n, a.dtype, "lower" if lower else "upper")

    return (da, lambda: db)


triangular_solve_p = defop(
    "triangular_solve",
    abstract_eval=_triangular_eval,
    impl=_triangular_impl,
    vjp=_triangular_vjp,
    kind="linalg",
    doc="X with op(A) X = B for triangular A (one triangle read); IEEE division by its diagonal.",
)

# ---------------------------------------------------------------------------------------------
# solve (LU)


def _solve_eval(a, b, *, adjoint):
    check_matrix("solve", a, square=True)
    check_rhs("solve", a, b)
    return AVal(b.shape, b.dtype)


def _solve_one(a, b):
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.full(b.shape, np.nan, b.dtype)


def _solve_impl(a, b, *, adjoint):
    if adjoint:
        a = np.swapaxes(a, -1, -2)
    if b.size == 0:
        return np.zeros(b.shape, b.dtype)
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # a singular matrix in the batch: its solution is NaN
        return _batched(_solve_one, a, b, out_shape=b.shape[-2:], dtype=b.dtype)


def _solve_vjp(g, x, a, b, *, adjoint):
    # X = op(A)^-1 B:  dB = op(A)^-T G,  d op(A) = -dB X^T.
    db = bind(solve_p, a, g, adjoint=not adjoint)
    return (lambda: -(mm(x, mT(db)) if adjoint else mm(db, mT(x))), lambda: db)


solve_p = defop(
    "solve",
    abstract_eval=_solve_eval,
    impl=_solve_impl,
    vjp=_solve_vjp,
    kind="linalg",
    doc="X with op(A) X = B by LU with partial pivoting; NaN for an exactly singular A.",
)

# ---------------------------------------------------------------------------------------------
# slogdet: packed (sign, log|det|)


def _slogdet_eval(a):
    check_matrix("slogdet", a, square=True)
    return AVal(a.shape[:-2] + (2,), a.dtype)


def _slogdet_impl(a):
    sign, logdet = np.linalg.slogdet(a)
    return pack(a.shape[:-2], [sign[..., None], logdet[..., None]]).astype(a.dtype)


def _slogdet_vjp(g, out, a):
    # d log|det A| = tr(A^-1 dA): dA = g A^-T; the sign is piecewise constant.
    def da():
        _, glog = unpack(g, [(), ()])
        inv_t = bind(solve_p, a, _batch_eye(a), adjoint=True)
        return sh.reshape(glog, glog.shape + (1, 1)) * inv_t

    return (da,)


slogdet_p = defop(
    "slogdet",
    abstract_eval=_slogdet_eval,
    impl=_slogdet_impl,
    vjp=_slogdet_vjp,
    kind="linalg",
    doc="(sign, log|det|) packed along a last axis of 2, by LU.",
)

# ---------------------------------------------------------------------------------------------
# qr: packed (Q, R)


def qr_shapes(m: int, n: int, full_matrices: bool):
    k = m if full_matrices else min(m, n)
    return [(m, k), (k, n)]


def _qr_eval(a, *, full_matrices):
    check_matrix("qr", a)
    m, n = a.shape[-2:]
    return AVal(a.shape[:-2] + (packed_size(qr_shapes(m, n, full_matrices)),), a.dtype)


def qr_input(a: np.ndarray, full_matrices: bool) -> np.ndarray:
    """The matrix whose reduced QR gives `a`'s: for a complete QR of a tall `a`, [a | I]. Its
    first n Householder steps are those of `a`, the rest make Q square and leave a's columns
    of R (zero below row n) alone: numpy's and Numba's reduced QR then agree on Q's extra
    columns, which are not unique."""
    m, n = a.shape[-2:]
    if not full_matrices or m <= n:
        return a
    eye = np.broadcast_to(np.eye(m, dtype=a.dtype), a.shape[:-2] + (m, m))
    return np.concatenate([a, eye], axis=-1)


def _qr_impl(a, *, full_matrices):
    m, n = a.shape[-2:]
    q, r = np.linalg.qr(qr_input(a, full_matrices))
    return pack(a.shape[:-2], [q, r[..., :n]]).astype(a.dtype)


def _qr_square_or_tall(q, r, gq, gr):
    # TensorFlow's QrGrad for m >= n (reduced): with
    #   M = tril(Q^T gQ - gQ^T Q + R gR^T - gR R^T),
    #   dA = Q (gR + M R^-T) + (gQ - Q Q^T gQ) R^-T.
    n = r.shape[-1]
    qdq = mm(mT(q), gq)
    rdr = mm(r, mT(gr))
    m = (qdq - mT(qdq) + rdr - mT(rdr)) * mask(n, n, r.dtype, "lower")

    def times_r_inv_t(x):  # x R^-T = (R^-1 x^T)^T
        return mT(bind(triangular_solve_p, r, mT(x), lower=False, adjoint=False))

    return mm(q, gr + times_r_inv_t(m)) + times_r_inv_t(gq - mm(q, qdq))


def _qr_vjp(g, out, a, *, full_matrices):
    m, n = a.shape[-2:]
    if full_matrices and m > n:
        raise op_error(
            "qr",
            f"no gradient for full_matrices=True with more rows than columns ({a.shape}): the "
            "last m - n columns of Q are not unique",
        )

    def da():
        q, r = unpack(out, qr_shapes(m, n, full_matrices))
        gq, gr = unpack(g, qr_shapes(m, n, full_matrices))
        if m >= n:
            return _qr_square_or_tall(q, r, gq, gr)
        # Wide: A = [X | Y], R = [U | V] with X = Q U square, Y = Q V (TensorFlow's QrGrad).
        lead = (slice(None),) * (a.ndim - 1)
        y = sh.strided_slice(a, lead + (slice(m, None),))
        u = sh.strided_slice(r, lead + (slice(0, m),))
        gu = sh.strided_slice(gr, lead + (slice(0, m),))
        gv = sh.strided_slice(gr, lead + (slice(m, None),))
        dx = _qr_square_or_tall(q, u, gq + mm(y, mT(gv)), gu)
        return sh.concat([dx, mm(q, gv)], axis=-1)

    return (da,)


qr_p = defop(
    "qr",
    abstract_eval=_qr_eval,
    impl=finite_or_nan(_qr_impl),
    vjp=_qr_vjp,
    kind="linalg",
    doc="(Q, R) packed, by Householder QR (LAPACK geqrf/orgqr).",
)

# ---------------------------------------------------------------------------------------------
# eigh: packed (w, V)


def eigh_shapes(n: int):
    return [(n,), (n, n)]


def _eigh_eval(a):
    check_matrix("eigh", a, square=True)
    n = a.shape[-1]
    return AVal(a.shape[:-2] + (packed_size(eigh_shapes(n)),), a.dtype)


def _eigh_impl(a):
    w, v = np.linalg.eigh((a + np.swapaxes(a, -1, -2)) * a.dtype.type(0.5))
    return pack(a.shape[:-2], [w, v]).astype(a.dtype)


def _eigh_vjp(g, out, a):
    # For distinct eigenvalues: dA = sym(V (diag(gw) + F o (V^T gV)) V^T), F_ij = 1/(w_j - w_i)
    # off the diagonal and 0 on it (sym: the op reads the symmetric part of A).
    def da():
        n = a.shape[-1]
        w, v = unpack(out, eigh_shapes(n))
        gw, gv = unpack(g, eigh_shapes(n))
        eye = mask(n, n, a.dtype, "eye")
        gaps = sh.reshape(w, w.shape[:-1] + (1, n)) - sh.reshape(w, w.shape + (1,))
        f = (1.0 - eye) / (gaps + eye)
        inner = f * mm(mT(v), gv) + sh.reshape(gw, gw.shape + (1,)) * eye
        return _sym(mm(v, mm(inner, mT(v))))

    return (da,)


eigh_p = defop(
    "eigh",
    abstract_eval=_eigh_eval,
    impl=finite_or_nan(_eigh_impl),
    vjp=_eigh_vjp,
    kind="linalg",
    doc="(w, V) packed: ascending eigenvalues and eigenvectors of the symmetric part (syevd).",
)

# ---------------------------------------------------------------------------------------------
# svd: packed (U, s, V), reduced


def svd_shapes(m: int, n: int):
    k = min(m, n)
    return [(m, k), (k,), (n, k)]


def _svd_eval(a):
    check_matrix("svd", a)
    m, n = a.shape[-2:]
    return AVal(a.shape[:-2] + (packed_size(svd_shapes(m, n)),), a.dtype)


def _svd_impl(a):
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    return pack(a.shape[:-2], [u, s, np.swapaxes(vh, -1, -2)]).astype(a.dtype)


def _svd_vjp(g, out, a):
    # For distinct nonzero singular values (PyTorch's svd_backward, real case), with
    # J = skew(U^T gU) / E, K = skew(V^T gV) / E, E_ij = s_j^2 - s_i^2 (1 on the diagonal,
    # where skew(X) = X - X^T is 0):
    #   dA = U (J S + S K + diag(gs)) V^T + (I - U U^T) gU S^-1 V^T + U S^-1 gV^T (I - V V^T)
    def da():
        m, n = a.shape[-2:]
        k = min(m, n)
        u, s, v = unpack(out, svd_shapes(m, n))
        gu, gs, gv = unpack(g, svd_shapes(m, n))
        eye = mask(k, k, a.dtype, "eye")
        row = sh.reshape(s, s.shape[:-1] + (1, k))  # s_j along columns
        col = sh.reshape(s, s.shape + (1,))  # s_i along rows
        e = row * row - col * col + eye
        utgu, vtgv = mm(mT(u), gu), mm(mT(v), gv)
        j = (utgu - mT(utgu)) / e
        kk = (vtgv - mT(vtgv)) / e
        core = j * row + col * kk + sh.reshape(gs, gs.shape + (1,)) * eye
        da = mm(u, mm(core, mT(v)))
        da = da + mm((gu - mm(u, utgu)) / row, mT(v))
        return da + mm(u, (mT(gv) - mm(mT(vtgv), mT(v))) / col)

    return (da,)


svd_p = defop(
    "svd",
    abstract_eval=_svd_eval,
    impl=finite_or_nan(_svd_impl),
    vjp=_svd_vjp,
    kind="linalg",
    doc="(U, s, V) packed: the reduced SVD A = U diag(s) V^T (LAPACK gesdd).",
)

# ---------------------------------------------------------------------------------------------
# lstsq


def default_rcond(dtype, m: int, n: int) -> float:
    """numpy's default cutoff: singular values below eps * max(m, n) * s_max count as zero."""
    return float(np.finfo(dtype).eps) * max(m, n)


def _lstsq_eval(a, b, *, rcond):
    check_matrix("lstsq", a)
    check_rhs("lstsq", a, b)
    return AVal(a.shape[:-2] + (a.shape[-1], b.shape[-1]), a.dtype)


def _lstsq_impl(a, b, *, rcond):
    out_shape = (a.shape[-1], b.shape[-1])
    if 0 in a.shape[-2:] or b.shape[-1] == 0:
        return np.zeros(a.shape[:-2] + out_shape, a.dtype)

    def one(a1, b1):
        return np.linalg.lstsq(a1, b1, rcond=rcond)[0]

    return _batched(one, a, b, out_shape=out_shape, dtype=a.dtype)


def _lstsq_vjp(g, x, a, b, *, rcond):
    # X = A^+ B. Differentiating the pseudo-inverse where A's rank is locally constant:
    #   dA^+ = -A^+ dA A^+ + A^+ A^+T dA^T (I - A A^+) + (I - A^+ A) dA^T A^+T A^+,
    # so with Y = A^+T G (= lstsq(A^T, G)) and r = B - A X:
    #   dB = Y,  dA = -Y X^T + r (A^+ Y)^T + (A^+T X) (G - A^+ A G)^T,
    # every pseudo-inverse product being a lstsq again (so second order closes over it).
    def lstsq(m, rhs):
        return bind(lstsq_p, m, rhs, rcond=rcond)

    y = lstsq(mT(a), g)

    def da():
        r = b - mm(a, x)
        null_part = g - lstsq(a, mm(a, g))
        return -mm(y, mT(x)) + mm(r, mT(lstsq(a, y))) + mm(lstsq(mT(a), x), mT(null_part))

    return (da, lambda: y)


lstsq_p = defop(
    "lstsq",
    abstract_eval=_lstsq_eval,
    impl=finite_or_nan(_lstsq_impl),
    vjp=_lstsq_vjp,
    kind="linalg",
    doc="The minimum-norm least-squares solution A^+ B (LAPACK gelsd, cutoff rcond).",
)
