"""The layout of the control-flow primitives' operands (see primitives.py), shared by their
rules and their gradients."""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import AVal, TupleAVal

INDEX_DTYPE = np.dtype(np.int32)


def aval_of(x):
    """The AVal of a tensor, tracer or AVal."""
    return x if isinstance(x, (AVal, TupleAVal)) else x.aval


# -- loop ---------------------------------------------------------------------------------------
def split_loop_inputs(inputs, n_consts: int, n_carry: int):
    """(consts, init, xs) of a loop equation's inputs."""
    return (
        inputs[:n_consts],
        inputs[n_consts : n_consts + n_carry],
        inputs[n_consts + n_carry :],
    )
