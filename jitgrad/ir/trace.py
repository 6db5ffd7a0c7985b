"""Tracing: run a Python function on Tracers and record the graph IR it builds."""

from __future__ import annotations

import contextlib

from jitgrad.core.aval import AVal
from jitgrad.core.convert import to_array
from jitgrad.core.dispatch import current_trace
from jitgrad.core.errors import LeakedTracerError, TracerError, user_frame, with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.variable import Variable
from jitgrad.core.weak import WeakTracer, as_weak
from jitgrad.ir.gcpause import gc_paused
from jitgrad.ir.graph import Eqn, Graph, Var


class Trace:
    """The graph under construction while a function runs on tracers."""

    def __init__(self, name: str, parent: Trace | None = None):
        self.name = name
        self.parent = parent  # the trace a nested one (autodiff's) was started in, if any
        self.inputs: list[Var] = []
        self.eqns: list[Eqn] = []
        self.consts: dict[Var, object] = {}
        # Inputs supplied by the caller at each call: the Variables read, and in a nested trace
        # the enclosing traces' values a closure uses: (that Variable or value, its tracer).
        self.captured: list[tuple[Variable | Tracer, Tracer]] = []
        self.custom_vjps: dict[Var, Eqn] = {}  # see Graph.custom_vjps
        self._lifted: dict[int, tuple[object, Tracer]] = {}
        # The user's line for the equations emitted while it is set (a graph replayed into
        # this trace keeps its own lines); None: the caller's line (`user_frame`).
        self.source: str | None = None
        # Frames of jitgrad code under way -> the user's line above them (see user_frame).
        self.known_frames: dict = {}
        # Variables the traced code advances (a random Generator's state): id -> (the Variable,
        # its latest value in this trace). Like the Variables it reads, each is an input of the
        # graph; its latest value is also an output, which the trace's owner writes back after
        # every call. None where the owner cannot (a loop body, a branch): writing raises.
        self.states: dict | None = None

    def new_input(self, aval: AVal) -> Tracer:
        var = Var(_interned(aval))
        self.inputs.append(var)
        return Tracer(self, var)

    def lift(self, value):
        """A tracer of this trace for `value`: tracers pass, Variables become inputs read at
        every call, other tensors become constants."""
        if isinstance(value, Tracer):
            if value.trace is self:
                return value
            if self._encloses(value.trace):
                return self._capture(value, getattr(value, "variable", None))
            raise LeakedTracerError(
                with_location(
                    f"a traced value of shape {value.shape} from {value.trace.name!r} was used "
                    f"while tracing {self.name!r}: values of one trace cannot flow into another "
                    "(pass it as an argument instead)"
                )
            )
        if isinstance(value, Variable):
            return self.read_state(value)
        entry = self._lifted.get(id(value))
        if entry is not None:
            return entry[1]
        tracer = Tracer(self, Var(_interned(AVal(value.shape, value.dtype))))
        self.consts[tracer.var] = value._value
        self._lifted[id(value)] = (value, tracer)
        return tracer

    def _capture(self, value, variable) -> Tracer:
        """The input standing for `value` (a Variable, or an enclosing trace's tracer)."""
        entry = self._lifted.get(id(value))
        if entry is not None:
            return entry[1]
        tracer = Tracer(self, Var(_interned(AVal(value.shape, value.dtype))), variable=variable)
        if isinstance(value, WeakTracer):
            tracer = as_weak(tracer)  # a closure over a weak value is weak inside too
        self.captured.append((value, tracer))
        self._lifted[id(value)] = (value, tracer)
        return tracer

    def read_state(self, variable: Variable) -> Tracer:
        """The current value of `variable`: the latest one written (assigned, or a random
        Generator's advanced state) in this trace or an enclosing one, else the Variable
        itself, an input read at each call."""
        trace = self
        while trace is not None:
            if trace.states and id(variable) in trace.states:
                return self.lift(trace.states[id(variable)][1])
            trace = trace.parent
        return self._capture(variable, variable)

    def write_state(self, variable: Variable, value) -> None:
        """Make `value` the new value of `variable`, assigned after each call (a Variable's
        assign, a random Generator's draw)."""
        if self.states is None:
            raise TracerError(
                with_location(
                    f"{variable.name}: a Variable was assigned, or a random Generator (or "
                    f"jitgrad.random's global one) advanced its state, inside {self.name!r}, "
                    "which cannot return the new value; assign outside the loop, branch or "
                    "vmap (return the value from it), and draw random numbers outside and pass "
                    "them in, or use explicit keys (jitgrad.random.split / fold_in)"
                )
            )
        self.states[id(variable)] = (variable, self.lift(value))

    def _encloses(self, other: Trace) -> bool:
        """Whether `other` is a trace this one was started in (so its values are closures)."""
        trace = self.parent
        while trace is not None and trace is not other:
            trace = trace.parent
        return trace is other

    def note_custom_vjp(self, op, inputs, out: Tracer) -> None:
        """Record that `op`'s VJP (a custom_gradient rule over `inputs`) stands for the op
        that defined `out`, so that the graph transform differentiates it like the tape."""
        inputs = [self.lift(x) for x in inputs]
        self.custom_vjps[out.var] = Eqn(op, tuple(x.var for x in inputs), {}, out.var)

    def emit(self, op, args, params) -> Tracer:
        if len(args) == 2:
            x, y = args
            inputs = (x.var, y.var)
        else:
            inputs = tuple([a.var for a in args])
        aval = abstract_eval(op, args, inputs, params)
        out = Var(aval)
        source = self.source or user_frame(self.known_frames)
        self.eqns.append(Eqn(op, inputs, params, out, source))
        return Tracer(self, out)

    def to_graph(self, outputs) -> Graph:
        """The finished graph: explicit inputs, then the Variables it read, as inputs. Outputs
        that are not tensors (`lambda x: 3.0`, a numpy array) are constants, converted as
        `jitgrad.constant` would (3.0 is a 0-d float32)."""
        out_vars = tuple(
            self.lift(
                o
                if isinstance(o, (Tensor, Tracer))
                else Tensor(to_array(o, op=f"{self.name} output"))
            ).var
            for o in outputs
        )
        inputs = tuple(self.inputs) + tuple(t.var for _, t in self.captured)
        return Graph(inputs, tuple(self.eqns), out_vars, dict(self.consts), dict(self.custom_vjps))


# (op, the ids of its input avals[, params]) -> (the output AVal, the input avals, kept alive
# so that their ids stay theirs): an op's shape rule runs once per signature, not once per
# traced equation (a long unrolled loop repeats a few signatures). The avals a trace makes are
# shared (`_interned`), so that equal avals are one object and the key hashes no AVal. Only
# rules that passed are remembered, so an invalid call raises its error every time. Both
# tables start over when full (avals the passes make are not shared, and add up).
_AVALS: dict = {}
_INTERNED: dict = {}  # AVal -> the one AVal object equal to it
_MAX_ENTRIES = 100_000


def _interned(aval: AVal) -> AVal:
    shared = _INTERNED.get(aval)
    if shared is None:
        shared = aval
        # Only shapes of Python ints: an equal shape of numpy ints would print differently.
        if isinstance(aval, AVal) and all(type(d) is int for d in aval.shape):
            if len(_INTERNED) >= _MAX_ENTRIES:
                _INTERNED.clear()
            _INTERNED[aval] = aval
    return shared


def abstract_eval(op, args, inputs, params) -> AVal:
    """`op.abstract_eval(*args, **params)` for `args` standing for the Vars `inputs`,
    remembered per the inputs' avals and params."""
    if len(inputs) == 2 and not params:  # most ops: a flat key hashes fastest
        x, y = inputs
        avals = (x.aval, y.aval)
        key = (op, id(avals[0]), id(avals[1]))
    else:
        avals = tuple([v.aval for v in inputs])
        ids = tuple([id(a) for a in avals])
        key = (op, ids, tuple(params.items())) if params else (op, ids)
    try:
        entry = _AVALS.get(key)
    except TypeError:  # an unhashable param value
        return op.abstract_eval(*args, **params)
    if entry is not None:
        return entry[0]
    aval = _interned(op.abstract_eval(*args, **params))
    if len(_AVALS) >= _MAX_ENTRIES:
        _AVALS.clear()
    _AVALS[key] = (aval, avals)
    return aval


@contextlib.contextmanager
def tracing(trace: Trace):
    """Make `trace` the current trace; its tracers are dead once the block ends. The cyclic
    garbage collector pauses meanwhile (`gc_paused`: a trace keeps what it allocates)."""
    with gc_paused():
        token = current_trace.set(trace)
        try:
            yield trace
        finally:
            current_trace.reset(token)
