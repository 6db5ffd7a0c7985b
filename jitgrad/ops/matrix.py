"""The public linear-algebra functions (TensorFlow's `tf.linalg` names and arguments), batched
over leading axes: thin wrappers over the primitives of decompositions.py, and composites.

Composites, and why they are not primitives: `inv` is a solve against the identity and `pinv` a
lstsq against it (the same LAPACK work; their gradients follow); `det` is sign * exp(log|det|)
from slogdet (one LU, and slogdet's gradient A^-T covers both); `logdet` of a positive-definite
matrix is 2 sum(log(diag(cholesky))) (cheaper and stabler than LU); `diag_part` is a strided
slice of the flattened matrices, `diag` and `set_diag` products with a constant identity,
`trace` a sum of the diagonal: shape ops whose gradients exist already, and which fuse.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.tensor import Tensor
from jitgrad.ops import decompositions as dec
from jitgrad.ops import elementwise as ew
from jitgrad.ops import reduce
from jitgrad.ops import shape as sh
from jitgrad.ops.base import VALUE_TYPES, as_value, broadcast_shapes
from jitgrad.ops.decompositions import mask, unpack
from jitgrad.ops.linalg import matmul


def _matrix(op: str, x, square: bool = False):
    x = as_value(x, op=op)
    dec.check_matrix(op, x, square)
    return x


def _operands(op: str, matrix, rhs, square: bool = True):
    """(matrix, rhs as a matrix with the matrix's batch axes, whether rhs was a vector).
    Batch axes broadcast; an rhs that is not a tensor takes the matrix's dtype; a 1-d rhs is
    one column, the result a vector again (numpy's rule)."""
    a = _matrix(op, matrix, square)
    b = as_value(rhs, dtype=None if isinstance(rhs, VALUE_TYPES) else a.dtype, op=op)
    vector = b.ndim == 1
    if vector:
        b = sh.reshape(b, b.shape + (1,))
    if b.ndim < 2:
        raise op_error(op, f"right-hand side of shape {b.shape} for matrix {a.shape}")
    batch = broadcast_shapes(op, a.shape[:-2], b.shape[:-2])
    if a.shape[:-2] != batch:
        a = sh.broadcast_to(a, batch + a.shape[-2:])
    if b.shape[:-2] != batch:
        b = sh.broadcast_to(b, batch + b.shape[-2:])
    dec.check_rhs(op, a, b)
    return a, b, vector


def _column(x, vector: bool):
    return sh.reshape(x, x.shape[:-1]) if vector else x


# ---------------------------------------------------------------------------------------------
# Factorizations and solves


def cholesky(input, name=None):  # noqa: A002 - TensorFlow's argument name
    """The lower Cholesky factor L of a symmetric positive-definite matrix, L L^T = A (its
    symmetric part (A + A^T) / 2 is read). Not positive definite: NaN.

    >>> jitgrad.linalg.cholesky([[4.0, 2.0], [2.0, 5.0]]).numpy().tolist()
    [[2.0, 0.0], [1.0, 2.0]]
    """
    return bind(dec.cholesky_p, _matrix("cholesky", input, square=True))


def triangular_solve(matrix, rhs, lower=True, adjoint=False, name=None):
    """X with A X = rhs (A^T X = rhs if `adjoint`) for triangular A; only the lower (or upper)
    triangle of A is read. A zero on the diagonal gives inf/NaN (IEEE division).

    >>> jitgrad.linalg.triangular_solve([[2.0, 0.0], [1.0, 1.0]], [[2.0], [3.0]]).numpy().ravel()
    array([1., 2.], dtype=float32)
    """
    a, b, vector = _operands("triangular_solve", matrix, rhs)
    x = bind(dec.triangular_solve_p, a, b, lower=bool(lower), adjoint=bool(adjoint))
    return _column(x, vector)


def solve(matrix, rhs, adjoint=False, name=None):
    """X with A X = rhs (A^T X = rhs if `adjoint`), by LU; an exactly singular A gives NaN.
    A 1-d rhs is a vector (numpy's rule).

    >>> jitgrad.linalg.solve([[2.0, 0.0], [0.0, 4.0]], [2.0, 2.0]).numpy()
    array([1. , 0.5], dtype=float32)
    """
    a, b, vector = _operands("solve", matrix, rhs)
    return _column(bind(dec.solve_p, a, b, adjoint=bool(adjoint)), vector)


def cholesky_solve(chol, rhs, name=None):
    """X with A X = rhs given A's Cholesky factor `chol` (two triangular solves)."""
    y = triangular_solve(chol, rhs, lower=True)
    return triangular_solve(chol, y, lower=True, adjoint=True)


def inv(input, adjoint=False, name=None):  # noqa: A002
    """The inverse (of the transpose, if `adjoint`): a solve against the identity."""
    a = _matrix("inv", input, square=True)
    eye = sh.broadcast_to(mask(a.shape[-1], a.shape[-1], a.dtype, "eye"), a.shape)
    return bind(dec.solve_p, a, eye, adjoint=bool(adjoint))


def slogdet(input, name=None):  # noqa: A002
    """(sign, log|det|) of square matrices, by LU; singular: (0, -inf).

    >>> [float(t) for t in jitgrad.linalg.slogdet([[2.0, 0.0], [0.0, -3.0]])]
    [-1.0, 1.791759...]
    """
    a = _matrix("slogdet", input, square=True)
    sign, logdet = unpack(bind(dec.slogdet_p, a), [(), ()])
    return sign, logdet


def det(input, name=None):  # noqa: A002
    """The determinant, sign * exp(log|det|). Its gradient det * A^-T is NaN at a singular A
    (computed through A^-1)."""
    sign, logdet = slogdet(input)
    return sign * ew.exp(logdet)


def logdet(matrix, name=None):
    """log det of symmetric positive-definite matrices: 2 sum(log(diag(cholesky))).

    >>> float(jitgrad.linalg.logdet([[4.0, 0.0], [0.0, 1.0]]))
    1.386294...
    """
    chol = cholesky(matrix)
    return 2.0 * reduce.reduce_sum(ew.log(diag_part(chol)), axis=-1)


def qr(input, full_matrices=False, name=None):  # noqa: A002
    """(Q, R) with A = Q R, Q with orthonormal columns and R upper triangular: (m, k) and
    (k, n), k = min(m, n), or k = m if `full_matrices` (numpy's `mode='complete'`, also
    accepted as a string, like 'reduced'). The gradient exists except for full_matrices with
    m > n, where Q's last columns are not unique."""
    if isinstance(full_matrices, str):
        if full_matrices not in ("reduced", "complete"):
            raise op_error("qr", f"mode {full_matrices!r}: 'reduced' or 'complete'")
        full_matrices = full_matrices == "complete"
    a = _matrix("qr", input)
    m, n = a.shape[-2:]
    packed = bind(dec.qr_p, a, full_matrices=bool(full_matrices))
    q, r = unpack(packed, dec.qr_shapes(m, n, bool(full_matrices)))
    return q, r


def eigh(tensor, name=None):
    """(eigenvalues ascending, eigenvectors as columns) of the symmetric part of `tensor`.
    Gradients assume distinct eigenvalues.

    >>> [float(w) for w in jitgrad.linalg.eigh([[2.0, 1.0], [1.0, 2.0]])[0]]
    [1.0, 3.0]
    """
    a = _matrix("eigh", tensor, square=True)
    w, v = unpack(bind(dec.eigh_p, a), dec.eigh_shapes(a.shape[-1]))
    return w, v


def eigvalsh(tensor, name=None):
    """The eigenvalues (ascending) of the symmetric part of `tensor`."""
    return eigh(tensor)[0]


def svd(tensor, full_matrices=False, compute_uv=True, name=None):
    """TensorFlow's order: (s, u, v) with A = u diag(s) v^T (v, not numpy's vh), or s alone
    if not `compute_uv`; singular values descending. The reduced SVD only (full_matrices
    for square matrices is the same). Gradients assume distinct nonzero singular values.

    >>> [float(x) for x in jitgrad.linalg.svd([[3.0, 0.0], [0.0, -4.0]], compute_uv=False)]
    [4.0, 3.0]
    """
    a = _matrix("svd", tensor)
    m, n = a.shape[-2:]
    if full_matrices and m != n:
        raise op_error(
            "svd",
            f"full_matrices=True for a non-square {a.shape}: only the reduced SVD is supported "
            "(the extra singular vectors are not unique and have no gradient)",
        )
    u, s, v = unpack(bind(dec.svd_p, a), dec.svd_shapes(m, n))
    return (s, u, v) if compute_uv else s


def lstsq(matrix, rhs, l2_regularizer=0.0, fast=True, rcond=None, name=None):
    """The least-squares solution X minimising |A X - rhs|^2 (+ l2_regularizer |X|^2).

    Without regularization: the minimum-norm solution A^+ rhs by SVD (LAPACK gelsd, numpy's
    `rcond` cutoff, default eps * max(m, n)), also for rank-deficient A; gradients assume the
    rank does not change nearby. With l2_regularizer > 0: TensorFlow's fast path, the normal
    equations solved by Cholesky. `fast` is accepted for TensorFlow's signature. A 1-d rhs is
    a vector (numpy's rule).

    >>> jitgrad.linalg.lstsq([[1.0], [1.0]], [[1.0], [3.0]]).numpy().tolist()
    [[2.0]]
    """
    a, b, vector = _operands("lstsq", matrix, rhs, square=False)
    m, n = a.shape[-2:]
    if l2_regularizer:
        reg = float(l2_regularizer)
        if m >= n:
            gram = sh.matrix_transpose(a) @ a + reg * mask(n, n, a.dtype, "eye")
            x = cholesky_solve(cholesky(gram), sh.matrix_transpose(a) @ b)
        else:
            gram = a @ sh.matrix_transpose(a) + reg * mask(m, m, a.dtype, "eye")
            x = sh.matrix_transpose(a) @ cholesky_solve(cholesky(gram), b)
        return _column(x, vector)
    cutoff = dec.default_rcond(a.dtype, m, n) if rcond is None else float(rcond)
    return _column(bind(dec.lstsq_p, a, b, rcond=cutoff), vector)


def pinv(a, rcond=None, validate_args=False, name=None):
    """The Moore-Penrose pseudo-inverse: lstsq against the identity."""
    a = _matrix("pinv", a)
    m, n = a.shape[-2:]
    eye = sh.broadcast_to(mask(m, m, a.dtype, "eye"), a.shape[:-2] + (m, m))
    cutoff = dec.default_rcond(a.dtype, m, n) if rcond is None else float(rcond)
    return bind(dec.lstsq_p, a, eye, rcond=cutoff)


# ---------------------------------------------------------------------------------------------
# Diagonals, bands, traces


def _k_zero(op: str, k) -> None:
    if k != 0:
        raise op_error(op, f"k={k}: only the main diagonal (k=0) is supported")


def diag_part(input, name=None, k=0):  # noqa: A002
    """The main diagonals (..., min(m, n)) of matrices (..., m, n): a strided slice of the
    flattened matrices, positions 0, n + 1, 2 (n + 1), ..."""
    _k_zero("diag_part", k)
    x = as_value(input, op="diag_part")
    if x.ndim < 2:
        raise op_error("diag_part", f"expects a matrix (rank >= 2), got shape {x.shape}")
    m, n = x.shape[-2:]
    size = min(m, n)
    flat = sh.reshape(x, x.shape[:-2] + (m * n,))
    stop = (size - 1) * (n + 1) + 1 if size else 0
    return sh.strided_slice(flat, (slice(None),) * (x.ndim - 2) + (slice(0, stop, n + 1),))


def diag(diagonal, name=None, k=0):
    """Square matrices (..., n, n) with `diagonal` (..., n) on their diagonals (TensorFlow's
    `tf.linalg.diag`; a batch of diagonals gives a batch of matrices)."""
    _k_zero("diag", k)
    v = as_value(diagonal, op="diag")
    if v.ndim < 1:
        raise op_error("diag", f"expects a diagonal of rank >= 1, got shape {v.shape}")
    n = v.shape[-1]
    return sh.reshape(v, v.shape[:-1] + (1, n)) * mask(n, n, v.dtype, "eye")


def set_diag(input, diagonal, name=None, k=0):  # noqa: A002
    """`input` with its main diagonals replaced by `diagonal` (..., min(m, n))."""
    _k_zero("set_diag", k)
    x = as_value(input, op="set_diag")
    v = as_value(diagonal, dtype=x.dtype, op="set_diag")
    if x.ndim < 2 or v.shape != x.shape[:-2] + (min(x.shape[-2:]),):
        raise op_error("set_diag", f"diagonal of shape {v.shape} for matrices of shape {x.shape}")
    m, n = x.shape[-2:]
    size = min(m, n)
    placed = sh.reshape(v, v.shape[:-1] + (1, size)) * mask(m, size, x.dtype, "eye")
    if size < n:
        placed = sh.pad(placed, [[0, 0]] * (x.ndim - 1) + [[0, n - size]])
    return x * (1.0 - mask(m, n, x.dtype, "eye")) + placed


def band_part(input, num_lower, num_upper, name=None):  # noqa: A002
    """Keep the band of `num_lower` subdiagonals and `num_upper` superdiagonals (negative:
    all of them), zero the rest: a product with a constant 0/1 band."""
    x = as_value(input, op="band_part")
    if x.ndim < 2:
        raise op_error("band_part", f"expects a matrix (rank >= 2), got shape {x.shape}")
    m, n = x.shape[-2:]
    rows, cols = np.arange(m)[:, None], np.arange(n)[None, :]
    keep = np.ones((m, n), bool)
    if num_lower >= 0:
        keep &= rows - cols <= num_lower
    if num_upper >= 0:
        keep &= cols - rows <= num_upper
    return x * Tensor(keep.astype(x.dtype))


def trace(x, name=None):
    """The sum of each matrix's main diagonal, over the last two axes (TensorFlow's rule;
    numpy's `trace` uses the first two)."""
    return reduce.reduce_sum(diag_part(x), axis=-1)


def matvec(a, b, transpose_a=False, name=None):
    """A b for matrices (..., m, n) and vectors (..., n)."""
    b = as_value(b, op="matvec")
    return sh.squeeze(matmul(a, sh.expand_dims(b, -1), transpose_a=transpose_a), -1)


# ---------------------------------------------------------------------------------------------
# numpy.linalg's meanings where they differ from TensorFlow's (jitgrad.numpy runs numpy.linalg
# calls on tensors through NUMPY_MEANINGS first, then the names above).


def numpy_svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """numpy.linalg.svd: (u, s, vh), or s alone without `compute_uv`. full_matrices (numpy's
    default) for square matrices only, as `svd`."""
    s, u, v = svd(a, full_matrices=full_matrices)
    return (u, s, sh.matrix_transpose(v)) if compute_uv else s


def numpy_lstsq(a, b, rcond=None):
    """numpy.linalg.lstsq: (x, residuals, rank, s). The residuals (the squared norm of each
    column of b - a x) are given when m > n, empty otherwise; numpy also leaves them empty for a
    rank-deficient a, which a traced function cannot know. rank counts the singular values
    above the cutoff."""
    a = _matrix("lstsq", a)
    x = lstsq(a, b, rcond=rcond)
    m, n = a.shape[-2:]
    s = svd(a, compute_uv=False)
    cutoff = dec.default_rcond(a.dtype, m, n) if rcond is None else float(rcond)
    above = ew.greater(s, cutoff * reduce.reduce_max(s, -1, keepdims=True))
    rank = reduce.reduce_sum(ew.cast(above, np.int64), -1)
    if m > n:
        b = as_value(b, dtype=None if isinstance(b, VALUE_TYPES) else a.dtype, op="lstsq")
        residual = b - (matmul(a, x) if b.ndim > 1 else matvec(a, x))
        residuals = reduce.reduce_sum(residual * residual, axis=-2 if b.ndim > 1 else -1)
        residuals = sh.reshape(residuals, (1,)) if b.ndim == 1 else residuals
    else:
        residuals = Tensor(np.zeros((0,), a.dtype))
    return x, residuals, rank, s


NUMPY_MEANINGS = {"svd": numpy_svd, "lstsq": numpy_lstsq}
