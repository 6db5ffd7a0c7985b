"""The names generated kernels import from jitgrad's compiled helper modules.

Kept apart from the helpers themselves (runtime.py, vmath.py import numba and define njit
functions): emitting a kernel's source must not import numba, so that a first call can run
on the numpy fallback while Numba is still being imported and the kernel compiled elsewhere
(tiered execution, compiler/background.py).
"""

# The Numba options of a generated function that only its kernel calls (a loop body, an
# outlined parallel loop): Numba's wrappers for calls from Python and from C are skipped (for
# 31 array arguments they cost 0.16 and 0.035 s of compile).
KERNEL_ONLY = "no_cpython_wrapper=True, no_cfunc_wrapper=True"

RUNTIME_MODULE = "jitgrad.backend.numba.runtime"
VMATH_MODULE = "jitgrad.backend.numba.vmath"
SYMBOLS_MODULE = "jitgrad.backend.numba.symbols"
BLAS_THREADS_MODULE = "jitgrad.backend.numba.blas_threads"
SIMD_MODULE = "jitgrad.backend.numba.simd"

# The array helpers precompiled for every dtype of ARRAY_DTYPES: runtime.permute (a transpose
# other than a matrix's) for ranks PERMUTE_RANKS, runtime.contiguous_copy (a strided view made
# C-contiguous) for ranks 1 to MAX_CONTIGUOUS_RANK. Kernels emit the others as loops or `.copy()`.
ARRAY_DTYPES = ("bool", "int32", "int64", "float32", "float64")
PERMUTE_RANKS = (3, 4, 5)
MAX_CONTIGUOUS_RANK = 5

VMATH_OPS = ("exp", "log", "tanh", "sigmoid", "softplus", "log1p", "expm1")

# (op, dtype name) -> name of the function in VMATH_MODULE to call for that element type,
# e.g. VMATH["tanh", "float32"] == "vtanh_f32".
VMATH = {
    (op, dtype): f"v{op}_{suffix}"
    for op in VMATH_OPS
    for dtype, suffix in (("float32", "f32"), ("float64", "f64"))
} | {("floordiv", "int64"): "floordiv_i64"}

SPECIAL_MODULE = "jitgrad.backend.numba.special"

# op -> the number of arguments of its helpers in SPECIAL_MODULE (polygamma's second one is
# its order n, an int64). (op, dtype name) -> helper name, as VMATH.
SPECIAL_ARITY = {"digamma": 1, "polygamma": 2, "erfinv": 1, "betainc": 3}
SPECIAL = {
    (op, dtype): f"v{op}_{suffix}"
    for op in SPECIAL_ARITY
    for dtype, suffix in (("float32", "f32"), ("float64", "f64"))
}

# The in-kernel allreduce (backend/numba/mpi.py): MPI_ALLREDUCE[dtype name] sums a flat
# C-contiguous array over the ranks of the job, in place.
MPI_MODULE = "jitgrad.backend.numba.mpi"
MPI_ALLREDUCE = {"float32": "allreduce_sum_f32", "float64": "allreduce_sum_f64"}
# The barrier of a sharded update's exchange (every rank at the same point of its step),
# through the exchange array the ranks share.
EXCHANGE_POINTS_MODULE = "jitgrad.backend.numba.exchange_points"
EXCHANGE_POINT = "exchange_point"
