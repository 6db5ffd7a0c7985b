"""Tracing: run a Python function on Tracers and record the graph IR it builds."""

from __future__ import annotations

import contextlib

from jitgrad.core.aval import AVal
from jitgrad.core.convert import to_array
from jitgrad.core.dispatch import current_trace
from jitgrad.core.errors import LeakedTracerError, user_frame, with_location
from jitgrad.core.tensor import Tensor, Tracer, Variable
from jitgrad.ir.graph import Eqn, Graph, Var


class Trace:
    """The graph under construction while a function runs on tracers."""

    def __init__(self, name: str):
        self.name = name
        self.inputs: list[Var] = []
        self.eqns: list[Eqn] = []
        self.consts: dict[Var, object] = {}
        self.captured: list[tuple[Variable, Tracer]] = []  # Variables read: inputs at each call
        self._lifted: dict[int, tuple[object, Tracer]] = {}

    def new_input(self, aval: AVal) -> Tracer:
        var = Var(aval)
        self.inputs.append(var)
        return Tracer(self, var)

    def lift(self, value):
        """A tracer of this trace for `value`: tracers pass, Variables become inputs read at
        every call, other tensors become constants."""
        if type(value) is Tracer:
            if value.trace is self:
                return value
            raise LeakedTracerError(
                with_location(
                    f"a traced value of shape {value.shape} from {value.trace.name!r} was used "
                    f"while tracing {self.name!r}: values of one trace cannot flow into another "
                    "(pass it as an argument instead)"
                )
            )
        entry = self._lifted.get(id(value))
        if entry is not None:
            return entry[1]
        var = Var(AVal(value.shape, value.dtype))
        if isinstance(value, Variable):
            tracer = Tracer(self, var, variable=value)
            self.captured.append((value, tracer))
        else:
            tracer = Tracer(self, var)
            self.consts[var] = value._value
        self._lifted[id(value)] = (value, tracer)
        return tracer

    def emit(self, op, args, params) -> Tracer:
        aval = op.abstract_eval(*args, **params)
        out = Var(aval)
        self.eqns.append(Eqn(op, tuple(a.var for a in args), params, out, user_frame()))
        return Tracer(self, out)

    def to_graph(self, outputs) -> Graph:
        """The finished graph: explicit inputs, then the Variables it read, as inputs. Outputs
        that are not tensors (`lambda x: 3.0`, a numpy array) are constants, converted as
        `jitgrad.constant` would (3.0 is a 0-d float32)."""
        out_vars = tuple(self.lift(o if isinstance(o, (Tensor, Tracer))
                                   else Tensor(to_array(o, op=f"{self.name} output"))).var
                         for o in outputs)
        inputs = tuple(self.inputs) + tuple(t.var for _, t in self.captured)
        return Graph(inputs, tuple(self.eqns), out_vars, dict(self.consts))


@contextlib.contextmanager
def tracing(trace: Trace):
    """Make `trace` the current trace; its tracers are dead once the block ends."""
    token = current_trace.set(trace)
    try:
        yield trace
    finally:
        current_trace.reset(token)
