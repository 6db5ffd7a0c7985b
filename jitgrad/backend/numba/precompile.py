"""Compile jitgrad's own Numba helpers (vmath, special, the BLAS wrappers, the reassociable sum
step) ahead of time, so that no user's first kernel waits for them.

They are compiled once per installation into Numba's cache (`cache=True`: the package's
`__pycache__`, or NUMBA_CACHE_DIR). On a new installation the compile worker starts a warmer
process that does it (worker.py), one process per installation at a time (warming_lock);
`python -m jitgrad.backend.numba.precompile` does it in the foreground (after installing, or
in a container image).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time

from jitgrad.backend.numba import cache


def helper_signatures():
    """(dispatcher, argument types) for every helper signature that kernels use: the vmath
    functions per float type, `matmul_into` (its operands of any layout, read-only: kernels
    pass them through runtime.strided), convolutions, pooling, linear algebra, a loop's
    copies per rank, per float type; transposes and contiguous copies per rank and dtype;
    random draws."""
    import numba
    import numpy as np
    from numba import types

    from jitgrad.backend.numba import (
        amx,
        conv_filters,
        conv_scatter,
        conv_tiles,
        helper_names,
        runtime,
        special,
        vmath,
    )

    for (_, dtype), name in helper_names.VMATH.items():
        scalar = getattr(types, dtype)
        yield getattr(vmath, name), (scalar,) * (2 if name == "floordiv_i64" else 1)
    for (op, dtype), name in helper_names.SPECIAL.items():
        helper = getattr(special, name)
        if helper.targetoptions.get("inline") == "always":
            continue  # compiled inside each kernel (Numba-IR inlining), never on its own
        scalar = getattr(types, dtype)
        arity = helper_names.SPECIAL_ARITY[op]
        args = (scalar, types.int64) if op == "polygamma" else (scalar,) * arity
        yield helper, args
    for dtype in (types.float32, types.float64):
        yield runtime.sum_step, (types.float64, dtype)  # a reduction's float64 accumulator
        yield runtime.sum_step, (dtype, dtype)  # a row loop's partial sums
        # Products read their operands through runtime.strided (read-only, any layout),
        # convolutions and pooling through runtime.readonly: one signature whether the
        # kernel's operand is an input or a buffer (and, for products, a transpose or not).
        operand = types.Array(dtype, 2, "A", readonly=True)
        yield runtime.matmul_into, (operand, operand, types.Array(dtype, 2, "C"))
        if dtype == types.float32 and amx.available():  # its tile code compiles only there
            out = types.Array(dtype, 2, "C")
            yield amx.amx_matmul_into, (operand, operand, out, types.int64)
            yield amx.matmul_into_one_thread, (operand, operand, out)
        for rank in (1, 2):  # convolutions (ops/conv.py)
            out = types.Array(dtype, rank + 2, "C")
            ints = (types.UniTuple(types.int64, rank) if rank == 2 else types.int64,) * 4
            x = types.Array(dtype, rank + 2, "C", readonly=True)
            yield getattr(runtime, f"conv{rank}"), (x, x, out, *ints, types.int64)
        image = types.Array(dtype, 4, "C")
        pairs = (types.UniTuple(types.int64, 2),) * 3
        matrix = types.Array(dtype, 2, "C")
        x = types.Array(dtype, 4, "C", readonly=True)
        yield runtime.conv2_gemm, (x, x, image, matrix, *pairs)  # conv2 by GEMM
        flat = types.Array(dtype, 1, "C")  # a filter gradient (ops/conv.py's conv_filters)
        yield conv_filters.conv2_filters, (x, x, image, flat, *pairs, pairs[0], types.int64)
        bias = types.Array(dtype, 1, "C", readonly=True)  # few output channels: tiles
        yield conv_tiles.conv2_tiles, (x, x, bias, image, flat, *pairs, pairs[0], types.boolean)
        taps = types.Array(dtype, 3, "C")  # conv2 by window rows (a filter gradient)
        yield conv_filters.conv2_windows, (x, x, image, taps)
        yield conv_scatter.conv2_col2im, (x, x, image, matrix, matrix, *pairs, pairs[0])
        yield conv_scatter.conv2_scatter, (x, x, image, *pairs, pairs[0])  # few output channels
        yield runtime.max_pool2, (x, image, *pairs)  # max pooling (ops/pool.py)
        yield runtime.max_pool_scatter2, (x, x, image, *pairs)
        yield runtime.max_pool_gather2, (x, x, image, *pairs)
        yield from _linalg_signatures(dtype)
        for rank in range(1, 5):  # a loop's carry and ys copies (control.py)
            copy = getattr(runtime, f"copy{rank}")
            for readonly in (False, True):
                source = types.Array(dtype, rank, "C", readonly=readonly)
                yield copy, (types.Array(dtype, rank, "C"), source)
    for name in helper_names.ARRAY_DTYPES:  # transposes, strided views made contiguous
        dtype = numba.from_dtype(np.dtype(name))
        for rank in helper_names.PERMUTE_RANKS:
            x = types.Array(dtype, rank, "C", readonly=True)
            perm = types.UniTuple(types.int64, rank)
            yield runtime.permute, (x, types.Array(dtype, rank, "C"), perm)
        for rank in range(1, helper_names.MAX_CONTIGUOUS_RANK + 1):
            yield runtime.contiguous_copy, (types.Array(dtype, rank, "A", readonly=True),)
    for readonly in (False, True):  # random draws (ops/philox.py): a key input, or computed
        key = (types.Array(types.uint32, 1, "C", readonly=readonly), types.int64)
        yield runtime.philox_bits, (*key, types.Array(types.uint32, 1, "C"))
        for dtype in (types.float32, types.float64):
            out = types.Array(dtype, 1, "C")
            yield runtime.philox_normal, (*key, out)
            yield runtime.philox_truncated_normal, (*key, out)
            yield getattr(runtime, f"philox_uniform{dtype.bitwidth}"), (*key, out)


def helper(name: str):
    """The helper (a Numba dispatcher) named `name`: runtime.py's, a register-tile
    convolution's (conv_tiles.py, conv_filters.py, conv_scatter.py), or the AMX product's."""
    from jitgrad.backend.numba import amx, conv_filters, conv_scatter, conv_tiles, runtime

    for module in (runtime, conv_tiles, conv_filters, conv_scatter, amx):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"no helper named {name!r}")


def signatures_of(name: str, dtypes: tuple[str, ...], ranks=None) -> list[tuple]:
    """The argument types of runtime helper `name` that helper_signatures lists for arrays of
    `dtypes` (dtype names) and, unless `ranks` is None, a first array argument of one of
    `ranks`: the signatures a kernel's calls produce (symbols.py binds them). A signature's
    dtype is its last array argument's (a helper's output or scratch)."""
    from numba import types

    found = []
    for dispatcher, argtypes in helper_signatures():
        if getattr(dispatcher, "__name__", None) != name:
            continue
        arrays = [t for t in argtypes if isinstance(t, types.Array)]
        if not arrays or arrays[-1].dtype.name not in dtypes:
            continue
        if ranks is None or arrays[0].ndim in ranks:
            found.append(tuple(argtypes))
    return found


def _linalg_signatures(dtype):
    """The linear-algebra helpers (backend/numba/linalg.py) per matrix: C-contiguous operands,
    read-only (inputs) or not, into a matrix or a packed row."""
    from numba import types

    from jitgrad.backend.numba import runtime

    matrix, row, i64 = types.Array(dtype, 2, "C"), types.Array(dtype, 1, "C"), types.int64
    for ro in (False, True):
        a = types.Array(dtype, 2, "C", readonly=ro)
        yield runtime.cholesky_into, (a, matrix)
        yield runtime.slogdet_into, (a, row)
        yield runtime.qr_into, (a, row, i64)
        yield runtime.eigh_into, (a, row)
        yield runtime.svd_into, (a, row)
        for b_ro in (False, True):
            b = types.Array(dtype, 2, "C", readonly=b_ro)
            yield runtime.triangular_solve_into, (a, b, matrix, i64, i64)
            yield runtime.solve_into, (a, b, matrix, i64)
            yield runtime.lstsq_into, (a, b, matrix, types.float64)


def helpers_ready() -> bool:
    """Whether this installation's helpers were all compiled before: a stamp beside their
    machine code (loading them all from Numba's cache just to find out takes seconds)."""
    return os.path.exists(_stamp_path())


def mark_helpers_ready() -> None:
    try:
        with cache.private_writer(_stamp_path()) as fh:
            fh.write(cache.versions().encode())
    except OSError:
        pass  # only the warm-up is repeated next time


@contextlib.contextmanager
def warming_lock():
    """Yield whether this process may warm the installation's helpers: one process at a time
    (a lock file beside the stamp, released when the process ends however it ends). Without
    it, each short script run on a new installation left a worker compiling the same
    helpers, all of them sharing the idle cores for minutes."""
    with _file_lock(_stamp_path()[: -len(".ready")] + ".lock", wait=False) as held:
        yield held


def compile_shared(entries, compile_one) -> None:
    """compile_one(dispatcher, argument types) for each helper signature of `entries`, under
    a lock per signature shared with the other processes of this installation (the warmer
    and the compile worker, worker.py): first the ones nobody else is compiling, then,
    waiting for their lock, the others, which are in Numba's cache by then (compile_one
    loads them). Without it the two processes compiled W10's helpers side by side, each
    one twice: its first kernel on a new installation served after 35-39 s, against
    26-33 s from one process."""
    taken_elsewhere = []
    for dispatcher, argtypes in entries:
        with _file_lock(_helper_lock_path(dispatcher, argtypes), wait=False) as held:
            if held:
                compile_one(dispatcher, argtypes)
            else:
                taken_elsewhere.append((dispatcher, argtypes))
    for dispatcher, argtypes in taken_elsewhere:
        with _file_lock(_helper_lock_path(dispatcher, argtypes), wait=True):
            compile_one(dispatcher, argtypes)


def _helper_lock_path(dispatcher, argtypes) -> str | None:
    """The lock file of one helper signature, in a private directory beside the helpers'
    machine code; None where that directory cannot be made (no sharing then)."""
    directory = os.path.join(os.path.dirname(_stamp_path()), "jitgrad-helper-locks")
    try:
        cache.private_dir(directory)
    except cache.CacheUnavailableError:
        return None
    key = f"{cache.versions()}\n{dispatcher.py_func.__qualname__}\n{argtypes}"
    return os.path.join(directory, hashlib.sha256(key.encode()).hexdigest()[:24] + ".lock")


@contextlib.contextmanager
def _file_lock(path: str | None, wait: bool):
    """Yield whether this process holds the exclusive lock on file `path` (flock: released
    when the file is closed, or the process ends however it ends); without `wait`, False at
    once when another process holds it. A lock file that cannot be opened (a read-only
    cache, where Numba cannot write either) counts as held: only the sharing is lost."""
    import fcntl

    fd = None
    if path is not None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            fd = None
    if fd is None:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except OSError:
            held = False
        yield held
    finally:
        os.close(fd)  # releases the lock


def _stamp_path() -> str:
    """In the directory where Numba caches the helpers (the package's `__pycache__`, or
    NUMBA_CACHE_DIR), named after the versions that compiled them."""
    from jitgrad.backend.numba import runtime

    digest = hashlib.sha256(cache.versions().encode()).hexdigest()[:16]
    return os.path.join(runtime.sum_step._cache._cache_path, f"jitgrad-helpers-{digest}.ready")


def main() -> None:
    start = time.perf_counter()
    count = 0
    for dispatcher, signature in helper_signatures():
        dispatcher.compile(signature)
        count += 1
    mark_helpers_ready()
    print(f"jitgrad: {count} helper signatures ready in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
