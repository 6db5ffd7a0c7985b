"""The Numba signature of a generated kernel, from the graph's types.

Compiling the one signature explicitly (instead of letting the first call's argument types
decide) types Python float arguments as float32 without converting them first, and types the
input arrays read-only, which accepts writeable and read-only arrays alike.

The signature is first spelled without numba (`signature_spec`: plain tuples that pickle and
travel as JSON to the compile worker, backend/numba/worker.py), then turned into Numba types
where Numba is imported anyway (`numba_signature`).
"""

from __future__ import annotations


def signature_spec(kernel_source, graph) -> list:
    """One entry per `kernel_source.params`: ["scalar", dtype name] or
    ["array", dtype name, ndim, read-only]."""
    spec = []
    for plan in kernel_source.params:
        kind = plan[0]
        if kind == "input":
            aval = graph.inputs[plan[1]].aval
            if aval.ndim == 0:
                spec.append(["scalar", aval.dtype.name])
            else:
                spec.append(["array", aval.dtype.name, aval.ndim, True])
        elif kind == "scalar":
            spec.append(["scalar", plan[1].dtype.name])
        elif kind == "const":
            spec.append(["array", plan[1].dtype.name, plan[1].ndim, True])
        else:  # a buffer the kernel writes
            spec.append(["array", plan[2].name, len(plan[1]), False])
    return spec


def numba_signature(spec: list) -> tuple:
    """Numba argument types for a `signature_spec`."""
    import numpy as np
    from numba import from_dtype, types

    sig = []
    for entry in spec:
        scalar = from_dtype(np.dtype(entry[1]))
        if entry[0] == "scalar":
            sig.append(scalar)
        else:
            sig.append(types.Array(scalar, entry[2], "C", readonly=entry[3]))
    return tuple(sig)
