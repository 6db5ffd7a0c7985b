"""The numpy fallback that serves a version while its kernel compiles (tiered execution).

`make_fallback(compiled)` returns a `run(arrays, aliases=None) -> output tree` with the
kernel caller's contract (call_path.make_caller): the same inputs, the same output structure
and wrapper types (Tensors, and CompiledScalars for the 0-d values the kernel returns as
numbers), computed by ir/execute.py's executor of the optimised graph. Its values equal the
kernel's up to float rounding: the kernel may sum in another order (blocked float sums, fused
loops), so bitwise reproducibility needs `jitgrad.config.compile = "blocking"`.

`aliases` (a train step's in-place plan) is ignored: the fallback writes nothing in place,
and TrainStep copies every update back itself.
"""

from __future__ import annotations

from jitgrad.core import pytree
from jitgrad.core.tensor import Tensor, compiled_scalar_type
from jitgrad.ir.execute import make_executor


def make_fallback(compiled):
    """`run(arrays, aliases=None)` for `compiled` (a function.Compiled) on numpy: its traced
    graph, so that a first call waits for no optimisation pass (those run in the background
    before the compile)."""
    graph = compiled.traced
    execute = make_executor(graph, compiled.name)
    variables = compiled.variables
    out_tree = compiled.out_tree
    wrappers = []
    for v in graph.outputs:
        if v.aval.ndim == 0 and v not in graph.consts and v not in graph.inputs:
            # What the kernel returns as a number (emit.py's "ret" outputs).
            scalar = compiled_scalar_type(v.aval.dtype)
            wrappers.append(lambda value, scalar=scalar: scalar(value.item()))
        else:
            wrappers.append(Tensor)

    def run(arrays, aliases=None):
        values = execute(list(arrays) + [v._value for v in variables] if variables else arrays)
        return pytree.unflatten(out_tree, [wrap(x) for wrap, x in zip(wrappers, values)])

    return run
