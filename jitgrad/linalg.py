"""`jitgrad.linalg`: TensorFlow's `tf.linalg` namespace, with numpy.linalg's names as aliases.

Every function is batched over leading axes, runs eagerly (numpy/scipy), traces, has
gradients (to any order) and compiles to Numba (see jitgrad/ops/decompositions.py for the
primitives and their conventions: singular inputs give NaN, not exceptions).

>>> import jitgrad
>>> a = jitgrad.constant([[4.0, 2.0], [2.0, 3.0]])
>>> float(jitgrad.linalg.det(a))
8.0

Where TensorFlow and numpy disagree, TensorFlow's meaning wins: `svd` returns (s, u, v) with v
(not numpy's (u, s, vh)), `trace` and `diag` work on the last axes of batches, `lstsq` returns
the solution only, `qr` takes `full_matrices` (numpy's mode strings are accepted too).
numpy's meanings of `svd` and `lstsq` are `NUMPY_MEANINGS` (jitgrad.numpy's `linalg` uses them).
"""

from jitgrad.ops.creation import eye
from jitgrad.ops.linalg import einsum, matmul, tensordot
from jitgrad.ops.matrix import (
    NUMPY_MEANINGS,  # noqa: F401 - jitgrad.numpy's linalg reads it
    band_part,
    cholesky,
    cholesky_solve,
    det,
    diag,
    diag_part,
    eigh,
    eigvalsh,
    inv,
    logdet,
    lstsq,
    matvec,
    pinv,
    qr,
    set_diag,
    slogdet,
    solve,
    svd,
    trace,
    triangular_solve,
)
from jitgrad.ops.norms import global_norm, norm
from jitgrad.ops.shape import matrix_transpose

adjoint = matrix_transpose  # real matrices: the adjoint is the transpose
diagonal = diag_part  # numpy.linalg.diagonal: the diagonals over the last two axes

__all__ = [
    "adjoint",
    "band_part",
    "cholesky",
    "cholesky_solve",
    "det",
    "diag",
    "diag_part",
    "diagonal",
    "eigh",
    "eigvalsh",
    "einsum",
    "eye",
    "global_norm",
    "inv",
    "logdet",
    "lstsq",
    "matmul",
    "matrix_transpose",
    "matvec",
    "norm",
    "pinv",
    "qr",
    "set_diag",
    "slogdet",
    "solve",
    "svd",
    "tensordot",
    "trace",
    "triangular_solve",
]
