"""A fast numpy executor for a graph: straight-line Python generated once per graph.

Tiered execution serves calls from the optimised graph while its kernel compiles. The reference
interpreter (`eval_graph`) looks every operand up in a dict, converts every result and keeps
every value alive to the end; the executor generates one function per graph instead, a line
per equation, each value dropped after its last use:

    def run(inputs):
        v0, v1 = inputs
        v0 = asarray(v0, d0)
        v1 = asarray(v1, d1)
        try:
            v3 = op0(v0, v2)              # op0: the op's impl with its params bound
            v4 = op1(v3, out=v3)          # an elementwise ufunc into a dead temporary
            del v3
            ...
        except Exception as exc:
            raise located(exc) from None  # names the op and the user's line
        return [v4]

Results are not cast: every impl returns its aval's dtype (tests/test_execute.py checks the
impls against the avals), numpy scalars for most 0-d results included.

Elementwise ufunc results are written into a temporary that dies at that equation when it has
the result's shape and dtype (`np.exp(v3, out=v3)`): on large arrays this saves the allocation
and a pass over fresh memory (13-17% on W2's value-and-grad graph at 2**20-2**22 elements).
Buffers kept from call to call measured slower than that (their working set is the sum of all
temporaries), and would need to be per thread.
"""

from __future__ import annotations

import functools

import numpy as np

from jitgrad.core.errors import user_frame
from jitgrad.ir.graph import Eqn, Graph, value_numbers


def make_executor(graph: Graph, name: str = "graph"):
    """`run(inputs) -> outputs` computing `graph` with its ops' numpy impls.

    `inputs`: one value per `graph.inputs`, arrays or numpy/Python scalars, converted to the
    input's dtype (no copy for an array of that dtype). They are only read, never written, so
    they may alias each other.

    `outputs`: a list of numpy arrays, one per `graph.outputs`, each of exactly its aval's dtype
    and shape; 0-d outputs are 0-d arrays, never numpy scalars. Each output owns its memory, a
    fresh array no other output, input, constant or later call shares: one that would be an
    input, a constant, a view of anything or a repeat of another output is copied. Callers may
    hand them to users, who may write into them.

    An op that raises (an index out of bounds) raises the error class its eager call raises,
    naming the op and the user's line recorded at trace time (`Eqn.source`).

    `run` keeps no state between calls: threads may call it concurrently."""
    numbers = value_numbers(graph)
    env: dict = {"asarray": np.asarray, "array": np.array, "ndarray": np.ndarray}

    def ref(v) -> str:
        return f"v{numbers[v]}"

    def dtype(v) -> str:
        env[f"d{numbers[v]}"] = v.aval.dtype
        return f"d{numbers[v]}"

    lines = []
    if graph.inputs:
        names = ", ".join(ref(v) for v in graph.inputs)
        lines.append(f"{names}{',' if len(graph.inputs) == 1 else ''} = inputs")
    for v in graph.inputs:
        lines.append(f"{ref(v)} = asarray({ref(v)}, {dtype(v)})")
    for v, value in graph.consts.items():
        env[ref(v)] = np.asarray(value, v.aval.dtype)

    last_use = {}
    for i, e in enumerate(graph.eqns):
        for v in e.inputs:
            last_use[v] = i
    outputs = set(graph.outputs)
    reusable = _reusable_temporaries(graph, last_use)

    body = []  # the eqns' lines, run inside `try:`
    eqn_lines = []  # (index in body, eqn)
    for i, e in enumerate(graph.eqns):
        op, out = f"op{i}", ref(e.out)
        env[op] = functools.partial(e.op.impl, **e.params) if e.params else e.op.impl
        args = [ref(v) for v in e.inputs]
        target = reusable.get(e.out)
        if target is not None:
            args.append(f"out={ref(target)}")
        eqn_lines.append((len(body), e))
        body.append(f"{out} = {op}({', '.join(args)})")
        if e.out in outputs:
            # The output's own array, made while the eqn's inputs are still bound: a numpy
            # scalar, a view, or an input the impl returned as it is, becomes a copy.
            fresh = [f"type({out}) is ndarray", f"{out}.base is None"]
            fresh += [f"{out} is not {ref(x)}" for x in dict.fromkeys(e.inputs)]
            body.append(f"if not ({' and '.join(fresh)}):")
            body.append(f"    {out} = array({out}, {dtype(e.out)})")
        dead = [
            ref(v)
            for v in dict.fromkeys((*e.inputs, e.out))
            if last_use.get(v, i) == i and v not in outputs and v not in graph.consts
        ]
        if dead:
            body.append(f"del {', '.join(dead)}")
    # Source line numbers (the `def` is line 1, then `lines`, `try:`, `body`) -> eqn.
    eqn_at_line = {len(lines) + 3 + k: e for k, e in eqn_lines}
    if body:
        lines += ["try:", *("    " + line for line in body)]
        lines += ["except Exception as exc:", "    raise located(exc) from None"]

    # An output an eqn computes is its own array (above) the first time it is listed; an
    # input, a constant or a repeat is a copy.
    owned = {e.out for e in graph.eqns}
    results = []
    for v in graph.outputs:
        if v in owned:
            owned.discard(v)
            results.append(ref(v))
        else:
            results.append(f"array({ref(v)}, {dtype(v)})")
    lines.append(f"return [{', '.join(results)}]")
    source = "def run(inputs):\n" + "\n".join("    " + line for line in lines) + "\n"

    def located(exc: Exception) -> Exception:
        e = eqn_at_line.get(exc.__traceback__.tb_lineno)
        return exc if e is None else _relocated(exc, e)

    env["located"] = located
    # A file name that error locations skip (core.errors.user_frame).
    exec(compile(source, f"<jitgrad executor of {name}>", "exec"), env)  # noqa: S102
    run = env["run"]
    run.source = source
    return run


def _is_elementwise_ufunc(e: Eqn) -> bool:
    impl = e.op.impl
    return type(impl) is np.ufunc and impl.nout == 1 and impl.signature is None


def _reusable_temporaries(graph: Graph, last_use: dict) -> dict:
    """{value: a temporary its elementwise ufunc may write into}: an input of the eqn that
    dies there, with the result's shape and dtype, that a ufunc allocated during the call and
    that no value still to be read may share memory with.

    A ufunc result (without `out=`) is a new array; any other op's result may be a view of its
    inputs (reshape, broadcast_to, slice, ...), so it shares the memory of their temporaries.
    An output never does: it is copied when it is a view or an input (see make_executor)."""
    fresh = {}  # value -> the temporaries it may share memory with
    for e in graph.eqns:
        if type(e.op.impl) is np.ufunc:
            # A 0-d result is a numpy scalar: no memory to share or to write into.
            fresh[e.out] = {e.out} if e.out.aval.ndim else set()
        else:
            fresh[e.out] = set().union(*(fresh.get(v, set()) for v in e.inputs))
    read_until = {}  # temporary -> the last eqn that reads it or a value sharing its memory
    for i, e in enumerate(graph.eqns):
        for v in e.inputs:
            for t in fresh.get(v, ()):
                read_until[t] = max(read_until.get(t, i), i)
    outputs = set(graph.outputs)
    reuse = {}
    for i, e in enumerate(graph.eqns):
        if not _is_elementwise_ufunc(e) or e.out in outputs or not e.out.aval.ndim:
            continue
        for v in e.inputs:
            if (
                fresh.get(v) == {v}
                and v.aval == e.out.aval
                and last_use[v] == i
                and read_until[v] == i
                and v not in outputs
            ):
                reuse[e.out] = v
                break
    return reuse


def _relocated(exc: Exception, e: Eqn) -> Exception:
    """`exc`, raised by `e`'s impl, naming the op and the user's line recorded at trace time
    instead of the line that called the executor (which the impl's `op_error` appended)."""
    message = str(exc)
    where = user_frame()
    suffix = f" ({where})" if where else ""
    if suffix and message.endswith(suffix):
        message = message[: -len(suffix)]
    elif not message.startswith(e.op.name):
        message = f"{e.op.name}: {message}"
    if e.source:
        message = f"{message} ({e.source})"
    try:
        relocated = type(exc)(message)
    except Exception:  # an exception class with another constructor: as it is
        return exc
    return relocated.with_traceback(exc.__traceback__)
