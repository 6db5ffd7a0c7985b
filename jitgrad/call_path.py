"""The per-version Python wrapper around a kernel, generated as straight-line code.

A jitted call must cost little more than the Numba dispatch itself (W1 is ~0.6 us of kernel),
so instead of interpreting a plan of parameters and outputs on every call, each compiled
version gets a small generated function: unpack, convert 0-d inputs to typed scalars, take
buffers, call the kernel, wrap the outputs in the function's own structure.
"""

from __future__ import annotations

import numpy as np

from jitgrad.config import config
from jitgrad.core.tensor import Tensor


def make_caller(compiled, kernel_error, lock):
    """`call(arrays, aliases=None) -> output tree` for `compiled` (an api.Compiled)."""
    ks = compiled.kernel_source
    graph = compiled.graph
    n_explicit = len(graph.inputs) - len(compiled.variables)
    env = {"Tensor": Tensor, "asarray": np.asarray, "ndarray": np.ndarray,
           "kernel": compiled.kernel,
           "buffer": compiled._buffer, "variables": compiled.variables,
           "kernel_error": kernel_error, "compiled": compiled, "lock": lock}
    lines = ["def call(arrays, aliases=None):"]
    names = []
    for j, plan in enumerate(ks.params):
        name = f"p{j}"
        names.append(name)
        kind = plan[0]
        if kind == "input":
            k = plan[1]
            aval = graph.inputs[k].aval
            source = (f"arrays[{k}]" if k < n_explicit
                      else f"variables[{k - n_explicit}]._value")
            lines.append(f"    {name} = {source}")
            if aval.ndim == 0:
                # 0-d values are scalars in the kernel; Numba converts Python scalars to the
                # compiled scalar type itself (its dispatcher no longer compiles new types).
                lines.append(f"    if type({name}) is ndarray:")
                lines.append(f"        {name} = {name}[()]")
        elif kind == "const":
            env[f"const{j}"] = plan[1]
            lines.append(f"    {name} = const{j}")
        else:
            env[f"plan{j}"] = plan
            lines.append(f"    {name} = aliases.get({j}) if aliases else None")
            lines.append(f"    if {name} is None:")
            lines.append(f"        {name} = buffer({j}, plan{j})")
    call = f"kernel({', '.join(names)})"
    if ks.parallel:
        # Numba's thread count is per calling thread: apply jitgrad.config.num_threads here.
        from numba import set_num_threads

        env.update(config=config, set_num_threads=set_num_threads)
        lines.append("    if config.num_threads:")
        lines.append("        set_num_threads(config.num_threads)")
    lines.append("    try:")
    if compiled.serialize:
        lines.append("        with lock:")
        lines.append(f"            r = {call}")
    else:
        lines.append(f"        r = {call}")
    lines.append("    except Exception as exc:")
    lines.append("        raise kernel_error(compiled, exc) from exc")
    leaves = []
    for k, (kind, j) in enumerate(ks.outputs):
        if kind == "ret":
            env[f"rt{j}"] = ks.returns[j].type
            leaves.append(f"Tensor(rt{j}(r[{j}]))")  # a numpy scalar: cheaper than a 0-d array
        elif kind == "param":
            leaves.append(f"Tensor(p{j})")
        elif kind == "input":
            leaves.append(f"Tensor(asarray(p{j}))")
        else:
            env[f"out{k}"] = j
            leaves.append(f"Tensor(out{k})")
    lines.append(f"    return {_structure(compiled.out_tree, iter(leaves))}")
    exec("\n".join(lines), env)  # noqa: S102 - our own generated wrapper
    call_fn = env["call"]
    call_fn.source = "\n".join(lines)
    return call_fn


def _structure(treedef, leaves) -> str:
    if treedef == "*":
        return next(leaves)
    if treedef is None:
        return "None"
    kind, meta, children = treedef
    items = [_structure(c, leaves) for c in children]
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(meta, items)) + "}"
    if kind == "list":
        return "[" + ", ".join(items) + "]"
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
