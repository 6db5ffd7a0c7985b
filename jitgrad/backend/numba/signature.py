"""The Numba signature of a generated kernel, from the graph's types.

Compiling the one signature explicitly (instead of letting the first call's argument types
decide) types Python float arguments as float32 without converting them first, and types the
input arrays read-only, which accepts writeable and read-only arrays alike.
"""

from __future__ import annotations

from numba import from_dtype, types


def kernel_signature(kernel_source, graph) -> tuple:
    """Numba argument types for `kernel_source.params`, in order."""
    sig = []
    for plan in kernel_source.params:
        kind = plan[0]
        if kind == "input":
            aval = graph.inputs[plan[1]].aval
            scalar = from_dtype(aval.dtype)
            sig.append(
                scalar if aval.ndim == 0 else types.Array(scalar, aval.ndim, "C", readonly=True)
            )
        elif kind == "scalar":
            sig.append(from_dtype(plan[1].dtype))
        elif kind == "const":
            sig.append(types.Array(from_dtype(plan[1].dtype), plan[1].ndim, "C", readonly=True))
        else:  # a buffer the kernel writes
            sig.append(types.Array(from_dtype(plan[2]), len(plan[1]), "C"))
    return tuple(sig)
