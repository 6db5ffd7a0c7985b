"""Split a batch's work across cores: the per-example part of a graph runs as shards at once.

A CNN's kernel runs its convolutions and pools on one core: each helper is serial, and making
each one parallel moves the activations between the cores' caches at every hand-over (measured
in session 14: the second core saved what the moves cost). The whole batch split instead keeps
each core on its own examples from the input to the gradients, which are summed once at the
end. This pass proves that a graph allows it and rewrites it:

    { lambda K x y ;  ...conv, pool, loss, gradients...  in (loss, dK) }
 -> { lambda K x y ;
        t = shards[body, shards=2, in_axes=(None, 0, 0), out_kinds=('sum', 'sum')] K x y
        loss = tuple_get[index=0] t ; dK = tuple_get[index=1] t
      in (loss, dK) }

where `body` is the same computation at the shard's batch (64 -> 32 examples), keeping the
graph's constants: a mean's 1/64 stays 1/64, so the shards' partial sums add up to the whole.

The proof tracks, per value, whether it is *replicated* (the same on every shard: parameters,
and anything computed from them alone), *sharded* along one axis (each shard holds its examples'
slice: the batch inputs, and per-example work on them), or a *partial sum* (each shard holds
its examples' share of a sum over the batch: a loss, a filter gradient). Each op has a rule; a
partial sum may only be added, negated, scaled by a replicated value, reshaped or summed again
(the shards' values then still add up to the whole). Any other use of a partial sum, a batch
norm's mean say, makes it a *reduction point*: the shards' values are summed there, and that op
and everything after it run once, after the shards (the optimizer update of a train step). A
sharded value read after a reduction point, an op without a rule, or an output sharded along an
axis other than the first disproves it, and the graph is left as it is. Ops that can raise (a
label's range check) run before the shards, on the whole batch: an exception inside Numba's
parallel region would reach the caller as a SystemError.

Sharding pays where the graph's work is in ops that run on one core (convolutions, pooling):
matrix products use the BLAS's own threads, and the fused elementwise loops Numba's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jitgrad.core.aval import AVal, TupleAVal
from jitgrad.core.opdef import REGISTRY
from jitgrad.ir.graph import Eqn, Graph, Var
from jitgrad.passes.dce import dce

PARTIAL = "partial"  # the state of a partial sum; a sharded value's state is its axis (an int)

# Work below this many FLOPs in the one-core ops is not worth a parallel region (~5 us to start
# and join, and the shards' gradients summed afterwards).
MIN_SHARDED_FLOPS = 4e6
ONE_CORE_OPS = frozenset(
    {"conv", "conv_filters", "max_pool", "max_pool_scatter", "max_pool_gather"}
)


class NotShardableError(Exception):
    """The proof failed: the graph stays as it is."""


def shard_batch(graph: Graph, threads: int) -> Graph:
    """`graph` with its per-example work as one `shards` equation of up to `threads` shards,
    or `graph` itself when it cannot be split (see the module docstring) or would not gain."""
    names = {e.op.name for e in graph.eqns}
    if threads < 2 or not names & ONE_CORE_OPS or names & {"loop", "cond", "shards"}:
        return graph
    for batch, sharded in _candidates(graph):
        shards = _shard_count(batch, threads)
        if shards < 2:
            continue
        try:
            plan = _Plan(graph, sharded, batch, shards)
        except NotShardableError:
            continue
        if plan.worth_it():
            try:
                return plan.rewrite()
            except NotShardableError:  # an op the body cannot have at the shard's size
                continue
    return graph


def _candidates(graph: Graph):
    """(batch size, inputs sharded along their first axis) to try: for each leading size of
    the inputs, the inputs of that size; then the same without the floating ones shaped like
    a floating output (a parameter whose gradient is an output can share the batch's size by
    chance; integer labels cannot be one)."""
    sizes: dict[int, list[Var]] = {}
    for v in graph.inputs:
        if v.aval.ndim and v.aval.shape[0] is not None and v.aval.shape[0] >= 2:
            sizes.setdefault(v.aval.shape[0], []).append(v)
    output_shapes = {v.aval.shape for v in graph.outputs if v.aval.dtype.kind == "f"}
    for batch, inputs in sorted(sizes.items(), key=lambda kv: -len(kv[1])):
        yield batch, inputs
        data = [v for v in inputs if v.aval.shape not in output_shapes or v.aval.dtype.kind != "f"]
        if data and len(data) < len(inputs):
            yield batch, data


def _shard_count(batch: int, threads: int) -> int:
    """The largest divisor of `batch` that is at most `threads`: shards of equal size."""
    return max(n for n in range(1, min(threads, batch) + 1) if batch % n == 0)


@dataclass
class _Plan:
    """Where each equation of `graph` runs: before the shards (`outer`), in each shard
    (`body`) or after them (`tail`); raises NotShardableError when the proof fails."""

    graph: Graph
    sharded_inputs: list
    batch: int
    shards: int
    state: dict = field(default_factory=dict)  # Var -> axis (sharded) or PARTIAL
    uniform: dict = field(default_factory=dict)  # replicated Var -> axes of size batch it repeats
    outer: list = field(default_factory=list)
    body: list = field(default_factory=list)
    tail: list = field(default_factory=list)
    after: set = field(default_factory=set)  # values computed after the shards
    whole: set = field(default_factory=set)  # sharded values available before the shards
    reduced: dict = field(default_factory=dict)  # partial sum -> None (ordered set)
    resize: dict = field(default_factory=dict)  # Eqn -> the axis its replicated operands shrink
    sliced: set = field(default_factory=set)  # replicated values shards read their rows of

    def __post_init__(self):
        for v in self.sharded_inputs:
            self.state[v] = 0
            self.whole.add(v)
        for v, c in self.graph.consts.items():
            self.uniform[v] = self._uniform_const(np.asarray(c))
        for e in self.graph.eqns:
            self._place(e)
        for v in self.graph.outputs:
            s = self.state.get(v)
            if s == PARTIAL:
                self.reduced[v] = None
            elif s is not None and (s != 0 or v in self.after):
                raise NotShardableError(f"output sharded along axis {s}")

    # -- the proof -----------------------------------------------------------------------------
    def _place(self, e: Eqn) -> None:
        states = [self.state.get(v) for v in e.inputs]
        sharded = [s for s in states if s is not None and s != PARTIAL]
        if isinstance(e.out.aval, TupleAVal) or (e.op.collective and sharded):
            raise NotShardableError(e.op.name)
        if PARTIAL in states and sharded:
            raise NotShardableError(f"{e.op.name} of a partial sum and a sharded value")
        if any(v in self.after for v in e.inputs) or (
            PARTIAL in states and not sharded and not self._linear_in_partial(e, states)
        ):
            if sharded:
                raise NotShardableError(f"{e.op.name} reads a sharded value after a reduction")
            self.reduced.update((v, None) for v, s in zip(e.inputs, states) if s == PARTIAL)
            self.tail.append(e)
            self.after.add(e.out)
            return
        if PARTIAL not in states and not sharded:
            self.outer.append(e)
            self.uniform[e.out] = self._uniform_out(e)
            return
        out_state = self._rule(e, states)
        if e.op.raises:
            if out_state != 0 or any(
                s is not None and v not in self.whole for v, s in zip(e.inputs, states)
            ):
                raise NotShardableError(f"{e.op.name} can raise inside a shard")
            self.outer.append(e)  # checked on the whole batch, before the shards
            self.whole.add(e.out)
        else:
            self.body.append(e)
        self.state[e.out] = out_state

    def _linear_in_partial(self, e: Eqn, states: list) -> bool:
        """Whether `e` maps partial sums to partial sums (the shards' outputs still add up)."""
        name = e.op.name
        partial = [s == PARTIAL for s in states]
        if name in ("add", "sub"):
            return all(partial)
        if name in ("neg", "reshape", "transpose", "broadcast_to", "reduce_sum"):
            return True
        if name == "cast":
            return e.out.aval.dtype.kind == "f"
        if name == "mul":
            return partial.count(True) == 1
        if name == "div":
            return partial == [True, False]
        return False

    def _rule(self, e: Eqn, states: list):
        """The state of `e`'s output, given its inputs' (some sharded or partial)."""
        if PARTIAL in states:
            return PARTIAL  # _place checked that e is linear in its partial sums
        name, params = e.op.name, e.params
        x = e.inputs[0]
        a = states[0]
        if e.op.kind == "elementwise" or name == "concat":
            axes = {s for s in states if s is not None}
            if len(axes) != 1:
                raise NotShardableError(f"{name} of values sharded along different axes")
            (axis,) = axes
            if name == "concat" and params["axis"] == axis:
                raise NotShardableError("concat along the batch")
            return self._resized_operands(e, states, axis)
        if name == "broadcast_to":
            return a + e.out.aval.ndim - x.aval.ndim
        if name == "reshape":
            return _reshaped_axis(x.aval.shape, e.out.aval.shape, a)
        if name == "transpose":
            return list(params["perm"]).index(a)
        if name == "slice":
            if tuple(params["index"][a]) != (0, self.batch, 1):
                raise NotShardableError("slice along the batch")
            return a
        if e.op.reduction is not None or name in ("argmax", "argmin"):
            axes = params["axes"] if "axes" in params else (params["axis"],)
            if a in axes:
                if name != "reduce_sum":
                    raise NotShardableError(f"{name} over the batch")
                return PARTIAL
            return a - sum(1 for k in axes if k < a)
        if name == "matmul":
            return _matmul_state(e, states)
        if name in ("conv", "max_pool") and states == [0] + [None] * (len(states) - 1):
            return 0
        if name == "conv_filters" and 0 in states:
            self._resized_operands(e, states, 0)
            return PARTIAL
        if name in ("max_pool_scatter", "max_pool_gather") and 0 in states:
            return self._resized_operands(e, states, 0)
        if name == "check_index" and states == [0]:
            return 0
        raise NotShardableError(f"no sharding rule for {name} with inputs {states}")

    def _resized_operands(self, e: Eqn, states: list, axis: int) -> int:
        """`axis`, when each replicated operand of `e` repeats itself along it (a shard then
        computes its own slice of it: `resize`) or, along the first axis, is computed before
        the shards (each gets its rows of it: `sliced`, a dropout mask say); else
        NotShardableError."""
        for v, s in zip(e.inputs, states):
            if s is None and axis not in self.uniform.get(v, ()):
                if axis != 0 or v in self.after or v.aval.shape[:1] != (self.batch,):
                    raise NotShardableError(
                        f"{e.op.name} of a sharded and a replicated batch-sized value"
                    )
                self.sliced.add(v)
            if s is not None and s != axis:
                raise NotShardableError(f"{e.op.name} of values sharded along different axes")
        self.resize[e] = axis
        return axis

    def _uniform_const(self, c: np.ndarray) -> frozenset:
        if c.ndim == 0 or c.size > 1 << 20:
            return frozenset()
        return frozenset(
            a
            for a, n in enumerate(c.shape)
            if n == self.batch and np.all(c == np.take(c, [0], axis=a))
        )

    def _uniform_out(self, e: Eqn) -> frozenset:
        """The axes of size `batch` along which a replicated value repeats itself: a shard
        can then compute its own slice (a broadcast label range, a mean's seed)."""
        out, name = e.out.aval, e.op.name
        if name == "broadcast_to":
            x = e.inputs[0].aval
            lead = out.ndim - x.ndim
            held = self.uniform.get(e.inputs[0], frozenset())
            return frozenset(
                a
                for a, n in enumerate(out.shape)
                if n == self.batch and (a < lead or x.shape[a - lead] == 1 or a - lead in held)
            )
        held = [self.uniform.get(v, frozenset()) for v in e.inputs]
        if name == "reshape":
            x = e.inputs[0].aval
            mapped = set()
            for a in held[0]:
                try:
                    mapped.add(_reshaped_axis(x.shape, out.shape, a))
                except NotShardableError:
                    pass
            return frozenset(mapped)
        if name == "transpose":
            return frozenset(list(e.params["perm"]).index(a) for a in held[0])
        if e.op.kind == "elementwise" and held:
            return frozenset.intersection(*held)
        return frozenset()

    # -- the cost --------------------------------------------------------------------------------
    def worth_it(self) -> bool:
        """Whether the shards' one-core work (convolutions, pooling) is large enough and at
        least the matrix products' (which the BLAS runs on every core already)."""
        one_core = products = 0.0
        for e in self.body:
            if e.op.name in ONE_CORE_OPS:
                one_core += _flops(e)
            elif e.op.name == "matmul":
                products += _flops(e)
        return one_core > 0 and one_core >= max(products, MIN_SHARDED_FLOPS)

    # -- the rewrite -----------------------------------------------------------------------------
    def rewrite(self) -> Graph:
        builder = _BodyBuilder(self)
        body = builder.build()
        outer_inputs = builder.outer_inputs
        in_axes = tuple(builder.in_axes)
        out_kinds = tuple("sum" if self.state[v] == PARTIAL else "concat" for v in builder.outputs)
        params = {
            "body": body,
            "shards": self.shards,
            "in_axes": in_axes,
            "out_kinds": out_kinds,
        }
        op = REGISTRY["shards"]
        result = Var(op.abstract_eval(*[v.aval for v in outer_inputs], **params))
        eqns = [*self.outer, Eqn(op, tuple(outer_inputs), params, result)]
        replaced = {}
        for k, v in enumerate(builder.outputs):
            out = Var(v.aval)
            eqns.append(Eqn(REGISTRY["tuple_get"], (result,), {"index": k}, out))
            replaced[v] = out
        for e in self.tail:
            inputs = tuple(replaced.get(v, v) for v in e.inputs)
            eqns.append(Eqn(e.op, inputs, e.params, e.out, e.source))
        outputs = tuple(replaced.get(v, v) for v in self.graph.outputs)
        return dce(Graph(self.graph.inputs, tuple(eqns), outputs, dict(self.graph.consts)))


class _BodyBuilder:
    """The shards' body: the plan's body equations again at the shard's batch size."""

    def __init__(self, plan: _Plan):
        self.plan = plan
        self.size = plan.batch // plan.shards
        self.outer_inputs: list[Var] = []  # outer values the body reads, in parameter order
        self.in_axes: list = []  # per outer input: 0 (each shard reads its rows) or None
        self.inputs: list[Var] = []  # the body's own inputs, one per outer input
        self.rows: dict = {}  # replicated outer Var -> the body input of a shard's rows of it
        self.consts: dict = {}
        self.eqns: list[Eqn] = []
        self.env: dict = {}  # outer Var -> body Var (sharded values at the shard's size)
        self.resized: dict = {}  # (replicated outer Var, axis) -> its body Var at shard size
        # What the shards give back: partial sums to add up, and sharded outputs.
        self.outputs = [
            v
            for v in dict.fromkeys([*plan.reduced, *plan.graph.outputs])
            if v in plan.state and v not in plan.whole
        ]

    def build(self) -> Graph:
        self.producers = {e.out: e for e in self.plan.outer}
        for e in self.plan.body:
            self._replay(e)
        body = Graph(
            tuple(self.inputs),
            tuple(self.eqns),
            tuple(self.env[v] for v in self.outputs),
            self.consts,
        )
        return dce(body)

    def _shrunk(self, aval: AVal, axis: int) -> AVal:
        shape = list(aval.shape)
        shape[axis] = self.size
        return AVal(tuple(shape), aval.dtype)

    def _input(self, v: Var, sharded: bool) -> Var:
        got = self.env.get(v)
        if got is None:
            if v in self.plan.graph.consts:
                got = Var(v.aval)
                self.consts[got] = self.plan.graph.consts[v]
            else:
                aval = self._shrunk(v.aval, self.plan.state[v]) if sharded else v.aval
                got = self._outer_input(v, aval, 0 if sharded else None)
            self.env[v] = got
        return got

    def _outer_input(self, v: Var, aval: AVal, axis) -> Var:
        got = Var(aval)
        self.outer_inputs.append(v)
        self.in_axes.append(axis)
        self.inputs.append(got)
        return got

    def _rows(self, v: Var) -> Var:
        """A shard's rows of replicated `v`, computed before the shards (plan.sliced)."""
        if v not in self.rows:
            self.rows[v] = self._outer_input(v, self._shrunk(v.aval, 0), 0)
        return self.rows[v]

    def _operand(self, v: Var, axis) -> Var:
        """Body value of outer `v`, an operand of an equation whose replicated operands shrink
        along `axis` (None: they stay whole)."""
        if v in self.plan.whole:
            return self._input(v, True)
        if v in self.plan.state:
            return self.env[v]
        if axis is not None and axis in self.plan.uniform.get(v, ()):
            return self._resize(v, axis)
        if axis == 0 and v in self.plan.sliced:
            return self._rows(v)
        return self._input(v, False)

    def _resize(self, v: Var, axis: int) -> Var:
        """Replicated `v`, uniform along `axis`, at the shard's size there."""
        key = (v, axis)
        if key in self.resized:
            return self.resized[key]
        aval = self._shrunk(v.aval, axis)
        if v in self.plan.graph.consts:
            got = Var(aval)
            c = np.asarray(self.plan.graph.consts[v])
            self.consts[got] = np.ascontiguousarray(np.take(c, np.arange(self.size), axis=axis))
        else:
            e = self.producers[v]
            if e.op.name == "broadcast_to":
                x = e.inputs[0]
                lead = v.aval.ndim - x.aval.ndim
                if axis >= lead and x.aval.shape[axis - lead] != 1:
                    inputs = (self._resize(x, axis - lead),)
                else:
                    inputs = (self._input(x, False),)
            elif e.op.name == "reshape":
                x = e.inputs[0]
                inputs = (self._resize(x, _reshaped_axis(v.aval.shape, x.aval.shape, axis)),)
            elif e.op.name == "transpose":
                inputs = (self._resize(e.inputs[0], e.params["perm"][axis]),)
            elif e.op.kind == "elementwise":  # every operand repeats along `axis`
                inputs = tuple(self._resize(x, axis) for x in e.inputs)
            else:
                raise NotShardableError(f"{e.op.name} of a value repeated along the batch")
            got = self._bind(e, inputs, aval)
        self.resized[key] = got
        return got

    def _replay(self, e: Eqn) -> None:
        out_state = self.plan.state[e.out]
        axis = None if out_state == PARTIAL else out_state
        inputs = tuple(self._operand(v, self.plan.resize.get(e)) for v in e.inputs)
        aval = e.out.aval if axis is None else self._shrunk(e.out.aval, axis)
        self.env[e.out] = self._bind(e, inputs, aval)

    def _bind(self, e: Eqn, inputs: tuple, aval: AVal) -> Var:
        """`e` again on `inputs`, with its shape parameters at the shard's size; the result
        must have `aval` (else the graph stays unsharded: a parameter this pass does not
        shrink)."""
        params = dict(e.params)
        old, new = e.out.aval.shape, aval.shape
        for k, value in params.items():
            if k == "shape" and tuple(value) == old:
                params[k] = new
            elif k == "index":
                params[k] = tuple(
                    (0, n, 1) if (n != o and tuple(ix) == (0, o, 1)) else tuple(ix)
                    for ix, o, n in zip(value, old, new)
                )
        try:
            got = e.op.abstract_eval(*[v.aval for v in inputs], **params)
        except Exception as exc:  # a shape parameter this pass does not know how to shrink
            raise NotShardableError(f"{e.op.name} at the shard's size: {exc}") from exc
        if got != aval:
            raise NotShardableError(f"{e.op.name} at the shard's size: {got.short()}")
        out = Var(aval)
        self.eqns.append(Eqn(e.op, inputs, params, out, e.source))
        return out


def _reshaped_axis(old: tuple, new: tuple, axis: int) -> int:
    """The axis of `new` that holds `old`'s `axis` whole after a reshape (the same elements
    before it, the same size), or NotShardableError."""
    before = int(np.prod(old[:axis], dtype=np.int64))
    count = 1
    for k, n in enumerate(new):
        if count == before and n == old[axis]:
            return k
        count *= n
    raise NotShardableError(f"reshape {old} -> {new} splits axis {axis}")


def _matmul_state(e: Eqn, states: list):
    x, y = (v.aval for v in e.inputs)
    if x.ndim != y.ndim or x.ndim < 2:
        raise NotShardableError("matmul of a vector")
    m, k_x, k_y, n = x.ndim - 2, x.ndim - 1, y.ndim - 2, y.ndim - 1
    sx, sy = states
    if sx == k_x and sy == k_y:
        return PARTIAL  # the batch contracted: a gradient w.r.t. a weight
    if sx == m and sy is None and x.ndim == 2:
        return m
    if sx is None and sy == n and y.ndim == 2:
        return n
    if sx is not None and sx == sy and sx < m:
        return sx  # a batched product over the batch axis
    raise NotShardableError(f"matmul with inputs sharded along {states}")


def _flops(e: Eqn) -> float:
    """Multiply-adds x 2 of a convolution or product; one per window tap of a pool."""
    out = e.out.aval
    if e.op.name == "matmul":
        return 2.0 * out.size * e.inputs[0].aval.shape[-1]
    if e.op.name == "conv":
        w = e.inputs[1].aval.shape
        return 2.0 * out.size * int(np.prod(w[:-1], dtype=np.int64))
    if e.op.name == "conv_filters":
        g = e.inputs[1].aval
        return 2.0 * g.size * int(np.prod(out.shape[:-1], dtype=np.int64))
    window = int(np.prod(e.params["window"], dtype=np.int64))
    return float(max(out.size, e.inputs[0].aval.size) * window)
