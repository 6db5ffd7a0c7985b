"""Schedule -> Python source of ONE Numba kernel.

Naming in the generated code: `v12` is the array (or, for 0-d values, the scalar) of SSA
value 12; `x12` is its per-element scalar inside a loop (a vector of elements in a vector
loop, whose `flat12` is v12 as a 1-D view and `splatN` a scalar in every lane: vector_loops.py);
`acc12` an accumulator; `i0, i1, ...` loop indices; `c3` a constant passed in. The kernel's
parameters are the graph inputs, then the array constants, then the buffers that loops and
float matrix products write (allocated by the caller: a parallel loop that allocates its own
outputs runs 5x slower here, see WORKLOADS.md).
0-d values are plain scalars throughout; the kernel returns the 0-d outputs and the arrays
nothing wrote into a buffer. Loops that depend on each other only row by row share one loop
over the rows (rows.py).

The module holds the one `kernel` that Python calls (one native call), and before it the
functions the kernel calls, so that Numba's compile time stays linear and small in the
graph's size (issue 12, measured in perf/gaps.md): scalar blocks (`blockN`: a group over no
dimensions, or a large loop body; blocks.py compiles them to LLVM without Numba's ~1 ms of
typing per operation), shared loops (`loopN`: a loop that occurs twice or more with the same
code up to value names, e.g. at each step of an unrolled RNN, compiled once) and parallel loops
(`parallelN`: each prange loop, so that only they go through Numba's parallel pipeline; both in
outline_loops). A
one-element slice read as a scalar is one indexing expression (`v0[3]`), and a slice that is
one contiguous block of memory a C-contiguous view: no array temporaries for either.
"""

from __future__ import annotations

import collections
import functools
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from jitgrad.backend.numba import control, helper_names, linalg, shards
from jitgrad.backend.numba.epilogues import conv_epilogues
from jitgrad.backend.numba.literals import literal, np_dtype
from jitgrad.backend.numba.rows import RowLoop, plan_row_loops
from jitgrad.backend.numba.vector_loops import VectorLoop, vector_lanes
from jitgrad.core.aval import DYNAMIC, TupleAVal
from jitgrad.core.opdef import REGISTRY, OpDef
from jitgrad.core.row_shares import row_share, row_size, value_offsets
from jitgrad.ir.gcpause import gc_paused
from jitgrad.ir.graph import Eqn, Graph, Var, letters, value_numbers
from jitgrad.ir.schedule import LoopGroup, Schedule
from jitgrad.passes.fuse import is_structured

PARALLEL_THRESHOLD = 1 << 17  # elements; smaller loops stay serial (threads cost ~10 us)
# Elements a partial sum of a 1-D loop spans before it is added in float64 (see
# Emitter.open_innermost_loop): 2**24 float32 terms of 0.1 sum to within 2 ulps, as eager's
# pairwise sum does. The float32 part's error depends on how LLVM vectorises it for the host:
# blocks of 1,024 were 2 ulps off on an AMD EPYC (Zen 4) and 4 on an Intel Xeon (Emerald
# Rapids); blocks of 512 are 2 on the Xeon.
SUM_BLOCK = 512
# Integer ops whose Numba result is 64 bits wide whatever the operands' width.
WIDENING_INTEGER_OPS = frozenset({"neg", "add", "sub", "mul", "floordiv", "mod"})
# How each reduction combine (OpDef.reduction.combine) takes element `x` into `target`.
REDUCTION_UPDATES = {
    "add": "{target} += {x}",
    "mul": "{target} *= {x}",
    # numpy's maximum: NaN wins, and on ties the later value (it tells -0.0 from +0.0).
    "max": "{target} = {x} if {x} >= {target} or {x} != {x} else {target}",
}
# Combines that Numba computes in 64 bits for narrow integers, as WIDENING_INTEGER_OPS.
WIDENING_COMBINES = frozenset({"add", "mul"})
# The module of `scalar_block` (blocks.py; named here so that emitting never imports numba).
BLOCKS_MODULE = "jitgrad.backend.numba.blocks"
# Fused groups over no dimensions with at least this many statements are scalar blocks, and so
# are loop bodies with at least MIN_LOOP_BLOCK computations (blocks.py).
MIN_BLOCK = 8
MIN_LOOP_BLOCK = 32
# Comments list the ops of groups up to this size, and count them in larger ones.
MAX_LISTED_OPS = 40
# A 2-D convolution without groups or input dilation with at most this many output channels
# runs by register tiles straight from NHWC (conv_tiles.conv2_tiles), others by im2col and GEMM
# (conv2_gemm). Measured, float32, in one process (session 13, Intel Xeon; (N, H, C_in, k,
# C_out): tiles / GEMM ms): (64, 28, 1, 5, 8) 0.27 / 1.81; (64, 12, 8, 5, 16) 0.23 / 0.54;
# (16, 32, 16, 3, 16) 1.42 / 1.76; (16, 32, 32, 3, 32) 4.69 / 8.90; (32, 32, 3, 3, 32) 1.14 /
# 2.36; but (16, 16, 64, 3, 64) 10.6 / 8.1, (16, 32, 64, 1, 64) 2.77 / 2.13, (8, 8, 256, 3,
# 256) 50 / 19: with more output channels the tiles re-read the image once per 16 of them.
TILES_MAX_OUT_CHANNELS = 32
# conv2_gemm copies the windows of this many elements' worth of output positions, then
# multiplies them (its patches scratch; 128 KB in float32): W10's second layer (4096 x 200
# patches), 0.66-0.70 ms in blocks of 164 rows, 0.71-0.73 ms in one block of 3.3 MB.
GEMM_CONV_BLOCK_ELEMENTS = 32768
# A 2-D convolution with stride 1 and no padding or dilation, at most this many output
# positions per image and windows of at least WINDOWS_MIN_SIZE elements (a filter gradient:
# the batch is the channel axis) runs by dot products over window rows (runtime.
# conv2_windows), not im2col: W10's filter gradients, float32, 0.57 and 0.58 ms against 0.92
# and 0.64 ms (im2col copied 25 x 36,864 and 25 x 4,096 elements for products of 25 x 8 and
# 25 x 16 outputs).
WINDOWS_MAX_POSITIONS = 64
WINDOWS_MIN_SIZE = 1024
# The kernel parameter holding its temporaries (Emitter.carve_temporaries), each of them
# starting on a cache line of its own when the buffer does.
_TEMPORARIES = "temporaries"
CACHE_LINE = 64
# Helpers that are not from the vectorised math module (their own imports in module_source).
_MPI = set(helper_names.MPI_ALLREDUCE.values())
_EXCHANGE = {helper_names.EXCHANGE_POINT}
_OWN_MODULES = set(helper_names.SPECIAL.values()) | _MPI | _EXCHANGE
# Structured op name -> the Emitter method that writes it (see `emits`).
EMITTERS: dict[str, Callable] = {}


def emits(op_name: str) -> Callable:
    """Register the decorated Emitter method as the code of structured op `op_name`; Emitter.op
    calls it as method(emitter, eqn, *eqn.inputs). `check_emitters` runs when this module
    loads, so an op without one fails at the backend's import, not at its first compile."""

    def register(method: Callable) -> Callable:
        if op_name in EMITTERS:
            raise ValueError(f"two Numba emitters for op {op_name!r}")
        EMITTERS[op_name] = method
        return method

    return register


class Sizes:
    """How the kernel's source spells array sizes.

    A kernel for one signature writes numbers. A shape-polymorphic kernel writes a number that
    equals a dimension of an input array, or a product of consecutive dimensions of one, as
    that dimension read at run time (`n0_1` = `v0.shape[1]`), so that one source serves every
    input shape of the same structure. This is sound whichever dimension a number is matched
    to: every version emits its source from its own trace and shares a kernel only when that
    source is identical, so each size expression evaluates to that version's own number."""

    def __init__(self, generic: bool):
        self.generic = generic
        self.expressions: dict[int, str] = {}  # number -> its expression (first match wins)
        self.definitions: dict[str, str] = {}  # symbol -> `v0.shape[1]`, in parameter order
        self.used: set[str] = set()

    def add_array(self, name: str, shape: tuple) -> None:
        """Make the dimensions of parameter array `name` (and their products) available."""
        if not self.generic:
            return
        symbols = [f"n{name[1:]}_{d}" for d in range(len(shape))]
        for d, symbol in enumerate(symbols):
            self.definitions[symbol] = f"{name}.shape[{d}]"
            self._offer(shape[d], (symbol,))
        for lo in range(len(shape)):
            for hi in range(lo + 2, len(shape) + 1):
                self._offer(int(np.prod(shape[lo:hi], dtype=np.int64)), tuple(symbols[lo:hi]))

    def _offer(self, n: int, symbols: tuple) -> None:
        # 0 and 1 stay numbers: they decide the code's structure (broadcasts, empty loops).
        if n > 1 and n not in self.expressions:
            self.expressions[n] = symbols

    def __call__(self, n: int) -> str:
        symbols = self.expressions.get(n)
        if symbols is None:
            return str(n)
        self.used.update(symbols)
        return " * ".join(symbols) if len(symbols) == 1 else f"({' * '.join(symbols)})"

    def shape(self, shape: tuple) -> str:
        """A shape tuple's text."""
        items = [self(n) for n in shape]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"

    def prologue(self) -> list[str]:
        """The lines that read the sizes the kernel uses from its arrays."""
        return [f"{s} = {d}" for s, d in self.definitions.items() if s in self.used]


@dataclass
class KernelSource:
    """The generated module and how to call it."""

    source: str
    name: str
    # ('input', k) | ('const', array) | ('scalar', 0-d array) | ('buffer', shape, dtype)
    params: list
    outputs: list  # per graph output: ('input', k) | ('const', array) | ('param', j) | ('ret', j)
    returns: list  # dtypes of the returned values (0-d ones are boxed by the caller)
    parallel: bool  # runs prange loops (in its parallelN functions): thread settings apply
    groups: list = field(default_factory=list)  # (space, op names) per fused loop
    generic: bool = False  # shape-polymorphic (see Sizes)
    # A sharded step's gathered parameter -> the new share whose loop also wrote this rank's
    # rows of it (Emitter.mirrors): written there, not only at the gather (train_step's
    # donation plan needs the earlier of the two).
    mirrored: dict = field(default_factory=dict)


class Emitter:
    def __init__(
        self,
        schedule: Schedule,
        name: str,
        fastmath: bool,
        generic: bool = False,
        parent: Emitter | None = None,
    ):
        """`parent`: the emitter of the kernel a loop body or branch belongs to (control.py).
        A body is a function of that module: it shares the parent's module-level functions
        and imports, runs its loops serially, and returns every output (`build`)."""
        self.schedule = schedule
        self.parent = parent
        self.graph: Graph = schedule.graph
        self.name = name
        self.fastmath = fastmath
        self.lines: list[str] = []
        self.names: dict[Var, str] = {}
        self.numbers = value_numbers(self.graph)  # `v12` is the graph's value 12 (its letter)
        self.params: list = []
        self.param_names: list[str] = []
        self.helpers: set[str] = set()  # from vmath
        self.runtime: set[str] = set()  # from runtime
        self.simd: set[str] = set()  # from simd (vector loops, vector_loops.py)
        # runtime helpers called through a symbol (symbols.py): name -> (dtype names, ranks
        # of the first array argument, or None: every rank the helper is precompiled for)
        self.symbol_helpers: dict[str, tuple[set[str], set[int] | None]] = {}
        self.parallel = False
        self.contiguous: set[Var] = set()  # arrays known to be C-contiguous
        self.transposed: set[Var] = set()  # matrices known to be F-contiguous (`.T` views)
        # A shape-polymorphic kernel also takes scalar constants as parameters: their values
        # (a mean's 1/n, say) may differ between the shapes it serves.
        self.generic = generic
        self.size = Sizes(generic)
        self.conv_epilogues: dict = {}  # conv equation -> its epilogue (set by `build`)
        # Who reads each value (equations of any step), and the graph's outputs: a one-element
        # slice read only as a scalar is emitted as one indexing expression (`inline_element`).
        self.readers: dict[Var, list[Eqn]] = {}
        for step in schedule.steps:
            for e in step.eqns if isinstance(step, LoopGroup) else (step.eqn,):
                for x in e.inputs:
                    self.readers.setdefault(x, []).append(e)
        self.graph_outputs = set(self.graph.outputs)
        self.producers: dict[Var, Eqn] = {
            step.eqn.out: step.eqn for step in schedule.steps if not isinstance(step, LoopGroup)
        }
        self.elements: dict[Var, str] = {}  # one-element array value -> its element's expression
        self.group_of: dict[Eqn, LoopGroup] = {
            e: step for step in schedule.steps if isinstance(step, LoopGroup) for e in step.eqns
        }
        self.blocks: list[str] = []  # module-level scalar block functions (see scalar_block)
        self.block_reads: dict[str, str] = {}  # a scalar read left to its block: name -> read
        self.block_verdicts: dict[LoopGroup, bool] = {}
        self.block_names: dict[str, str] = {}  # loop body blocks: _Piece key -> block name
        # Module-level functions: shared and parallel loops (outline_loops), loop bodies and
        # branches.
        self.functions: list[str] = []
        self.local_symbols = False  # functions of the module called through a symbol (shards.py)
        self.checked_indices = 0  # index variables named so far (checked_index_name)
        self.exchange_views: set[str] = set()  # writeable views of exchange arrays (writable)
        self.exchange_points: set[int] = set()  # the tags of the points already waited at
        # value -> its place in an exchange array: (a view of it, (row, first element, end))
        self.placements: dict[Var, tuple[str, tuple]] = {}
        self.placed: set[Var] = set()  # the values computed in their place there
        # a new share placed there -> the gathers of it: a vector loop computing the share
        # stores it into this rank's rows of each gathered parameter too, and the gather then
        # copies only the other ranks' rows (`mirrored`: the parameters so written)
        self.mirrors: dict[Var, list[Eqn]] = {}
        self.mirrored: set[Var] = set()
        if parent is not None:
            self.helpers, self.runtime, self.simd = parent.helpers, parent.runtime, parent.simd
            self.symbol_helpers = parent.symbol_helpers
            self.blocks, self.block_names = parent.blocks, parent.block_names
            self.functions = parent.functions

    # -- names -------------------------------------------------------------------------------
    def name_of(self, v: Var) -> str:
        if v not in self.names:
            self.names[v] = f"v{self.numbers.setdefault(v, len(self.numbers))}"
        return self.names[v]

    def value(self, v: Var) -> str:
        """An expression for a whole value: its name, or a literal for a scalar constant."""
        c = self.graph.consts.get(v)
        if c is not None and v.aval.ndim == 0 and not self.generic:
            return literal(c, v.aval.dtype)
        return self.name_of(v)

    def element(self, v: Var) -> str:
        """The one element of a size-1 constant, as a scalar expression."""
        if not self.generic:
            return literal(self.graph.consts[v], v.aval.dtype)
        if v.aval.ndim == 0:
            return self.name_of(v)
        return f"{self.name_of(v)}[{', '.join('0' * v.aval.ndim)}]"

    def emit(self, line: str, depth: int = 1) -> None:
        self.lines.append("    " * depth + line)

    # -- the module --------------------------------------------------------------------------
    def build(self) -> KernelSource:
        g = self.graph
        for k, v in enumerate(g.inputs):
            self.params.append(("input", k))
            self.param_names.append(self.name_of(v))
            self.contiguous.add(v)  # the caller passes C-contiguous arrays
            self.size.add_array(self.name_of(v), v.aval.shape)
        for v, c in g.consts.items():
            if v.aval.ndim:
                self.params.append(("const", np.ascontiguousarray(c)))
                self.size.add_array(self.name_of(v), v.aval.shape)
            elif self.generic:
                self.params.append(("scalar", np.asarray(c, v.aval.dtype)))
            else:
                continue
            self.param_names.append(self.name_of(v))
            self.contiguous.add(v)
        if not self.generic:
            self.place_in_exchange()
            for v, (place, _) in self.placements.items():
                self.emit(f"{self.name_of(v)} = {place}")
        groups = []
        loops = []  # (first line, end line) of the loops a function may run (see outline_loops)
        parallel_loops = []  # (first line, end line) of the prange loops (see outline_loops)
        # The start of loop groups that a conv does on its registers (epilogues.py) is not
        # emitted again.
        self.conv_epilogues = conv_epilogues(self.schedule, lambda e: conv_strategy(e) == "tiles")
        rests = {epilogue.group: epilogue.rest for epilogue in self.conv_epilogues.values()}
        steps = [rests.get(step, step) for step in self.schedule.steps]
        steps = [step for step in steps if step is not None]
        for step in plan_row_loops(steps, self.is_parallel, self.contiguous):
            start = len(self.lines)
            if isinstance(step, RowLoop):
                self.row_loop(step)
                groups += [(g.space, g.op_names()) for g in step.groups]
                loops.append((start, len(self.lines)))
            elif isinstance(step, LoopGroup):
                block, parallel = self.is_block(step), self.is_parallel(step)
                self.loop(step)
                groups.append((step.space, step.op_names()))
                if step.space and not block:
                    (parallel_loops if parallel else loops).append((start, len(self.lines)))
            else:
                self.op(step.eqn)
        self.outline_loops(loops, parallel_loops)
        if self.parent is not None:
            values = ", ".join(self.value(v) for v in g.outputs)
            self.emit(f"return ({values}{',' if len(g.outputs) == 1 else ''})")
            return None
        outputs, returned, returns = [], {}, []
        buffer_index = {name: j for j, name in enumerate(self.param_names)}
        for v in g.outputs:
            if v in g.inputs:
                outputs.append(("input", g.inputs.index(v)))
            elif v in g.consts:
                outputs.append(("const", np.asarray(g.consts[v])))
            elif v.aval.ndim and self.name_of(v) in buffer_index:
                outputs.append(("param", buffer_index[self.name_of(v)]))
            else:
                if v not in returned:
                    returned[v] = len(returns)
                    returns.append(v)
                outputs.append(("ret", returned[v]))
        ret = ", ".join(self.value(v) for v in returns)
        self.emit(f"return ({ret}{',' if len(returns) == 1 else ''})")
        if not self.generic:
            outputs = self.carve_temporaries(outputs)
        return KernelSource(
            self.module_source(),
            self.name,
            self.params,
            outputs,
            [v.aval.dtype for v in returns],
            self.parallel,
            groups,
            self.generic,
            {
                g.out: share
                for share, gathers in self.mirrors.items()
                for g in gathers
                if g.out in self.mirrored
            },
        )

    def carve_temporaries(self, outputs: list) -> list:
        """Put the kernel's temporaries (its buffers that are not outputs) in one buffer, each
        a view of its own cache lines in it, and return `outputs` with the buffer parameters
        renumbered.

        Why: every buffer parameter costs each call a pool lookup and two reference counts in
        the call path, and an argument for Numba's dispatcher to type. W11's 1-rank step had
        25 temporaries among its 57 arguments; with one buffer for them, its Python entry
        takes 1.4 us less with warm caches and 2.1 us less after an 8 MB sweep, and Numba's
        dispatch of 24 fewer arrays saves ~1.3 and ~4.5 us (perf/gaps.md, session 24). The
        temporaries are never seen by the caller, so one buffer serves them all, reused at
        every call as each of them was. Each starts a multiple of 64 bytes into it (the call
        path puts a buffer of 4 KB or more on a cache line)."""
        kept = {j for kind, j in outputs if kind == "param"}
        temporaries = {
            j for j, plan in enumerate(self.params) if plan[0] == "buffer" and j not in kept
        }
        if len(temporaries) < 2:
            return outputs
        carved, offset = [], 0
        for j in sorted(temporaries):
            _, shape, dtype = self.params[j]
            dtype = np.dtype(dtype)
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            carved.append(
                f"    {self.param_names[j]} = carve({_TEMPORARIES}, {offset}, "
                f"{self.size.shape(shape)}, {np_dtype(dtype)})"
            )
            offset += -(-size // CACHE_LINE) * CACHE_LINE  # each on lines of its own
        self.runtime.add("carve")
        self.lines[:0] = [f"    # {len(temporaries)} temporaries, in one buffer", *carved]
        renumbered = {}
        params, names = [], []
        for j, (plan, name) in enumerate(zip(self.params, self.param_names)):
            if j not in temporaries:
                renumbered[j] = len(params)
                params.append(plan)
                names.append(name)
        self.params = [*params, ("buffer", (offset,), np.dtype(np.uint8))]
        self.param_names = [*names, _TEMPORARIES]
        return [(kind, renumbered[j]) if kind == "param" else (kind, j) for kind, j in outputs]

    def outline_loops(self, loops: list, parallel_loops: list) -> None:
        """Move loops out of the kernel into module-level functions that it calls:

        - serial loops (`loops`) that occur twice or more with the same code up to value names
          (an unrolled RNN's steps) become one function called at each place: Numba types and
          LLVM optimises and vectorises each such loop once, not once per step;
        - every prange loop (`parallel_loops`) becomes a function of its own compiled with
          `parallel=True`, and the kernel itself is compiled without: Numba's parallel
          pipeline (its parfor analysis of every loop and array expression) then runs over a
          few lines instead of the whole kernel (W10's kernel: 5.1-5.6 -> 4.5-4.7 s)."""
        found = [_Piece(self.lines[a:b]) for a, b in loops]
        counts: dict[str, int] = {}
        for piece in found:
            counts[piece.key] = counts.get(piece.key, 0) + 1
        names: dict[str, str] = {}
        replaced = {}
        for (a, b), piece in zip(loops, found):
            if counts[piece.key] < 2:
                continue
            name = names.get(piece.key)
            if name is None:
                name = names[piece.key] = f"loop{len(self.functions)}"
                self.functions.append(piece.function(name, self.fastmath))
            replaced[a] = (b, piece.call(name))
        for a, b in parallel_loops:
            piece = _Piece(self.lines[a:b])
            name = f"parallel{len(self.functions)}"
            self.functions.append(piece.function(name, self.fastmath, parallel=True))
            replaced[a] = (b, piece.call(name))
        lines, k = [], 0
        while k < len(self.lines):
            if k in replaced:
                end, call = replaced[k]
                lines += call
                k = end
            else:
                lines.append(self.lines[k])
                k += 1
        self.lines = lines

    def module_source(self) -> str:
        flags = "True" if self.fastmath else "False"
        imports = ""
        for module, names in (
            (helper_names.VMATH_MODULE, self.helpers - _OWN_MODULES),
            (helper_names.SPECIAL_MODULE, self.helpers & set(helper_names.SPECIAL.values())),
            (helper_names.MPI_MODULE, self.helpers & _MPI),
            (helper_names.EXCHANGE_POINTS_MODULE, self.helpers & _EXCHANGE),
            (helper_names.RUNTIME_MODULE, self.runtime),
            (helper_names.SIMD_MODULE, self.simd),
            (BLOCKS_MODULE, {"scalar_block"} if self.blocks else set()),
        ):
            if names:
                imports += f"from {module} import {', '.join(sorted(names))}\n"
        if self.local_symbols:
            imports += "from numba import types\n"
            imports += f"from {helper_names.SYMBOLS_MODULE} import local_symbol\n"
            imports += f"from {helper_names.BLAS_THREADS_MODULE} import set_blas_threads\n"
        if self.symbol_helpers:
            imports += f"from {helper_names.SYMBOLS_MODULE} import through_symbol\n\n"
            imports += "# helpers compiled once per installation, called through a symbol\n"
        for helper, (dtypes, ranks) in sorted(self.symbol_helpers.items()):
            ranks = f", ranks={tuple(sorted(ranks))!r}" if ranks is not None else ""
            imports += f"{helper} = through_symbol({helper!r}, {tuple(sorted(dtypes))!r}{ranks})\n"
        header = (
            f'"""Generated by jitgrad for {self.name}. Do not edit: it is rebuilt from the '
            'graph."""\n\n'
            "import math\n\nimport numba\nimport numpy as np\n"
            f"{imports}\n\n"
            + "".join(block + "\n\n" for block in self.blocks + self.functions)
            + "@numba.njit(cache=True, nogil=True, error_model='numpy', "
            f"fastmath={flags}, no_cfunc_wrapper=True)\n"
            f"def kernel({', '.join(self.param_names)}):\n"
        )
        prologue = self.size.prologue()
        if prologue:
            prologue = [
                "    # sizes read from the arrays: this kernel serves every shape of its structure"
            ] + ["    " + line for line in prologue]
        return header + "\n".join(self.legend() + prologue + self.lines) + "\n"

    def legend(self) -> list[str]:
        """Comment lines naming the kernel's values after their letters in the printed graph
        (`lowered.graph`); both count values with `value_numbers`."""
        numbers = sorted(self.numbers[v] for v in self.names)
        lines = [
            "    # legend: kernel value = graph letter (lowered.graph); xN is an element of vN,",
            "    # accN and partN are its sums",
        ]
        line = "    #  "
        for n in numbers:
            item = f" v{n}={letters(n)}"
            if len(line) + len(item) > 99:
                lines.append(line)
                line = "    #  "
            line += item
        return lines + [line]

    # -- fused loops -------------------------------------------------------------------------
    def is_parallel(self, group: LoopGroup) -> bool:
        """Large loops run as prange loops over their first dimension when every reduction is
        a full sum (Numba's parallel reduction) or keeps that dimension (each iteration then
        writes rows of its own: row sums, row maxima); not in a loop body (a parallel region
        per iteration costs more than it saves)."""
        if self.parent is not None:
            return False
        size = int(np.prod(group.space, dtype=np.int64))
        safe = all(
            (e.out.aval.ndim == 0 and is_sum(e)) or (e.out.aval.ndim and 0 not in e.params["axes"])
            for e in group.eqns
            if e.op.reduction is not None
        )
        return len(group.space) > 0 and size >= PARALLEL_THRESHOLD and safe

    def is_block(self, group: LoopGroup) -> bool:
        """Whether `group` is a scalar block: over no dimensions, no reductions, big enough
        that Numba's per-operation cost outweighs the block's call."""
        verdict = self.block_verdicts.get(group)
        if verdict is None:
            verdict = self.block_verdicts[group] = (
                not group.space
                and len(group.eqns) >= MIN_BLOCK
                and all(e.op.reduction is None for e in group.eqns)
            )
        return verdict

    def scalar_block(self, group: LoopGroup) -> None:
        """A group over no dimensions as a scalar block of its own LLVM function (blocks.py),
        with the scalar reads only it needs; the kernel calls it and receives the values the
        rest of the kernel reads."""
        kernel_lines, self.lines = self.lines, []
        self.loop_footer(group, self.loop_body(group, 0))
        body, self.lines = self.lines, kernel_lines
        outputs = [self.name_of(v) for v in group.outputs]
        # A loop body's block stays inline: it runs at every iteration (a call each costs
        # more than the block's work in a small scalar body, W8a).
        own = self.parent is None
        name, params = self.add_block(group, body, outputs, own_function=own)
        self.emit(f"# fused {describe(group.op_names())} over (): {name}")
        returned = ", ".join(outputs) + ("," if len(outputs) == 1 else "")
        self.emit(f"{returned} = {name}({', '.join(params)})")

    def add_block(self, group: LoopGroup, body: list, outputs: list, own_function: bool):
        """Add a module-level scalar block computing `body` (lines `name = expression`, in
        order) and returning `outputs`; returns its name and the names it takes, in order of
        first use. Scalar reads left to blocks (`block_reads`) come first in its body."""
        name = f"block{len(self.blocks)}"
        assigned, free = set(), []
        for line in body:
            target, expr = line.split(" = ", 1)
            for word in _names(expr):
                if word not in assigned and word not in free:
                    free.append(word)
            assigned.add(target)
        reads = [f"{v} = {self.block_reads[v]}" for v in free if v in self.block_reads]
        params = []
        for v in free:
            for word in _names(self.block_reads[v]) if v in self.block_reads else [v]:
                if word not in params:
                    params.append(word)
        returned = ", ".join(outputs) + ("," if len(outputs) == 1 else "")
        code = [f"({', '.join(params)}):", *reads, *body, f"return ({returned})"]
        # A loop body computing what an earlier one computes, up to value names (at each step
        # of an unrolled program), is that block: one compilation, and the loops calling it
        # stay alike (outline_loops). A kernel's scalar code is one big group: not looked up.
        if not own_function:
            key = _Piece(code).key
            if key in self.block_names:
                return self.block_names[key], params
            self.block_names[key] = name
        options = f"fastmath={self.fastmath}" + (", own_function=True" if own_function else "")
        space = self.size.shape(group.space) if group.space else "()"
        self.blocks.append(
            f"@scalar_block({options})\n"
            f"def {name}{code[0]}\n"
            + (
                f'    """The scalar code of: fused {describe(group.op_names())} over ()."""\n'
                if own_function
                else f'    """One element of: fused {describe(group.op_names())} over {space}."""\n'
            )
            + "".join(f"    {line}\n" for line in code[1:])
        )
        return name, params

    def loop(self, group: LoopGroup) -> None:
        if self.is_block(group):
            self.scalar_block(group)
            return
        parallel = self.is_parallel(group)
        self.parallel |= parallel
        lanes = 0 if parallel else self.vector_lanes(group)
        if lanes:
            vectors = group.space[-1] // lanes
            rows = f"{vectors} vectors" if vectors > 1 else "vectors"
            self.loop_header(group, f" (in {rows} of {lanes})")
            VectorLoop(self, group, lanes).emit()
            return
        self.loop_header(group, " (parallel)" if parallel else "")
        space = group.space
        # A size-1 dimension gets no loop (loop_body indexes it with 0), except a parallel
        # loop's first, which holds the prange.
        dims = [d for d, n in enumerate(space) if n != 1 or (parallel and d == 0)]
        if not dims:
            self.loop_footer(group, self.loop_body(group, 1))
            return
        # Partial sums span an innermost row; a row of one element adds straight into float64.
        partials = float_sums(group) + row_sums(group) if space[-1] != 1 else []
        depth = 1
        for d in dims[:-1]:
            rng = "numba.prange" if parallel and d == 0 else "range"
            self.emit(f"for i{d} in {rng}({self.size(space[d])}):", depth)
            depth += 1
        last = dims[-1]
        rng = "numba.prange" if parallel and last == 0 else "range"
        # Rows longer than a block are cut into blocks too (their float32 partial sums drift
        # like a 1-D loop's: 2**22 terms in rows of 1,024 were 4 ulps off on an Intel Xeon).
        long_row = isinstance(space[last], int) and space[last] > SUM_BLOCK
        flush, depth = self.open_innermost_loop(
            last, space[last], rng, depth, partials, blocked=len(space) == 1 or long_row
        )
        scalars = self.loop_body(group, depth, partials)
        self.close_partials(group, partials, flush)
        self.loop_footer(group, scalars)

    def vector_lanes(self, group: LoopGroup) -> int:
        """The lanes of the vectors a serial group runs in (vector_loops.py), or 0: its loop
        stays scalar. A large body stays a scalar block (emit_body)."""
        computations = sum(
            1 for e in group.eqns if e.op.reduction is None and e.op.name != "broadcast_to"
        )
        if computations >= MIN_LOOP_BLOCK:
            return 0
        return vector_lanes(group, self.graph.consts, self.contiguous, self.generic, self.in_place)

    @functools.cached_property
    def in_place(self) -> set:
        """The outputs a caller may have written into an input's own array: those with an
        input's shape and dtype (a train step's new parameters and state, donated by
        compiler/train_step.py after the kernel is emitted, so not known here exactly)."""
        avals = {x.aval for x in self.graph.inputs}
        return {v for v in self.graph.outputs if v.aval in avals}

    def open_innermost_loop(
        self, d: int, extent: int, rng: str, depth: int, partials: list, blocked: bool
    ) -> tuple[int, int]:
        """The `for` line(s) of a group's innermost loop over index `i{d}`; returns (the depth
        at which partial sums are added up, the body's depth).

        Float sums (`partials`) add up in a partial sum of their own dtype inside the innermost
        loop, through runtime.sum_step (the kernel's one reassociable addition, so that the
        loop vectorises at the values' width), and the partial sums in float64: a float64
        accumulator in the loop itself would make LLVM vectorise the whole fused loop at
        float64 width (W2: ~1.4x slower), while one float32 accumulator over millions of terms
        loses digits (2**24 terms of 0.1: 1e-3 relative). A 1-D loop (`blocked`) runs over
        blocks of SUM_BLOCK elements, with unsigned indices: a signed computed index keeps
        Numba's negative-index wraparound, which stops LLVM vectorising (6x slower)."""
        n = self.size(extent)
        if not partials:
            self.emit(f"for i{d} in {rng}({n}):", depth)
            return depth, depth + 1
        if blocked:
            self.emit(f"for b{d} in {rng}(({n} + {SUM_BLOCK - 1}) // {SUM_BLOCK}):", depth)
            depth += 1
            self.emit(f"start{d} = np.uint64(b{d}) * np.uint64({SUM_BLOCK})", depth)
        for e in partials:
            self.emit(f"part{self.name_of(e.out)[1:]} = {literal(0, e.out.aval.dtype)}", depth)
        if blocked:
            self.emit(
                f"for i{d} in range(start{d}, min(np.uint64({n}), start{d} + "
                f"np.uint64({SUM_BLOCK}))):",
                depth,
            )
        else:
            self.emit(f"for i{d} in {rng}({n}):", depth)
        return depth, depth + 1

    def close_partials(self, group: LoopGroup, partials: list, depth: int) -> None:
        """After the innermost loop: a full sum's partial into its float64 accumulator, a row
        sum's into its element (every index but the innermost one's is fixed here)."""
        for e in partials:
            number = self.name_of(e.out)[1:]
            if e.out.aval.ndim == 0:
                self.emit(f"acc{number} += np.float64(part{number})", depth)
            else:
                kept = [d for d in range(len(group.space)) if d not in e.params["axes"]]
                index = ", ".join("0" if group.space[d] == 1 else f"i{d}" for d in kept)
                self.emit(f"{self.name_of(e.out)}[{index}] += part{number}", depth)

    def row_loop(self, row: RowLoop) -> None:
        """Several groups in one loop over their shared leading dimension (see rows.py)."""
        for group in row.groups:
            self.loop_header(group, " (in the row loop below)")
        for view in row.views:
            self.op(view.eqn)
        rows = self.size(row.rows)
        row_depth = 1
        if row.rows != 1:  # one row: no loop, loop_body indexes it with 0
            self.emit(f"# one loop over the {rows} rows for the {len(row.groups)} groups above")
            self.emit(f"for i0 in range({rows}):")
            row_depth = 2
        bodies = []
        for group in row.groups:
            depth = row_depth
            space = group.space
            dims = [d for d in range(1, len(space)) if space[d] != 1]  # as in `loop`
            # A row-level sum (a 1-D group, or rows of one element) adds one term a row:
            # straight into float64.
            partials = (
                float_sums(group) + row_sums(group) if len(space) > 1 and space[-1] != 1 else []
            )
            for d in dims[:-1]:
                self.emit(f"for i{d} in range({self.size(space[d])}):", depth)
                depth += 1
            flush = None
            if dims:
                flush, depth = self.open_innermost_loop(
                    dims[-1], space[dims[-1]], "range", depth, partials, blocked=False
                )
            bodies.append(self.loop_body(group, depth, partials))
            self.close_partials(group, partials, flush)
        for group, scalars in zip(row.groups, bodies):
            self.loop_footer(group, scalars)

    def loop_header(self, group: LoopGroup, note: str) -> None:
        """The comment, the output buffers, accumulators and reduction rows' initial values."""
        space = self.size.shape(group.space) if group.space else "()"
        self.emit(f"# fused {describe(group.op_names())} over {space}{note}")
        for v in group.outputs:  # list order: the generated source must be deterministic
            if v.aval.ndim:
                self.add_buffer(v)
        for e in group.eqns:
            if e.op.reduction is not None:
                if e.out.aval.ndim == 0:
                    init = _reduction_identity(e.op, accumulator_dtype(e))
                    self.emit(f"acc{self.name_of(e.out)[1:]} = {init}")
                else:
                    init = _reduction_identity(e.op, e.out.aval.dtype)
                    self.emit(f"{self.name_of(e.out)}[...] = {init}")

    def loop_body(self, group: LoopGroup, depth: int, partials=()) -> dict:
        """One element's work, inside the loops over `group.space` (indices i0, i1, ...);
        returns the scalar expression of each value. Full sums in `partials` add into their
        partial sum `partN` (see open_innermost_loop), other full reductions into `accN`."""
        ndim = len(group.space)
        outputs = set(group.outputs)
        idx = ["0" if n == 1 else f"i{d}" for d, n in enumerate(group.space)]  # see `loop`
        scalars: dict[Var, str] = {}
        lines: list[tuple[str, str]] = []  # ("load" | "compute" | "effect", line), in order

        def load(v: Var) -> str:
            if v in scalars:
                return scalars[v]
            if v.aval.ndim == 0 or (
                v in self.graph.consts and np.asarray(self.graph.consts[v]).size == 1
            ):
                expr = self.value(v) if v.aval.ndim == 0 else self.element(v)
                scalars[v] = expr
                return expr
            name = f"x{self.name_of(v)[1:]}"
            lines.append(("load", f"{name} = {self.name_of(v)}[{', '.join(idx)}]"))
            scalars[v] = name
            return name

        for e in group.eqns:
            if e.op.name == "broadcast_to":
                src = e.inputs[0]
                if src.aval.ndim == 0 or (
                    src in self.graph.consts and np.asarray(self.graph.consts[src]).size == 1
                ):
                    scalars[e.out] = load(src)
                else:
                    lead = ndim - src.aval.ndim
                    sub = ", ".join(
                        "0" if d == 1 else idx[lead + k] for k, d in enumerate(src.aval.shape)
                    )
                    name = f"x{self.name_of(e.out)[1:]}"
                    lines.append(("load", f"{name} = {self.name_of(src)}[{sub}]"))
                    scalars[e.out] = name
            elif e.op.reduction is not None:
                x = load(e.inputs[0])
                accumulator = "part" if e in partials else "acc"
                target = (
                    f"{accumulator}{self.name_of(e.out)[1:]}"
                    if e.out.aval.ndim == 0 or e in partials
                    else f"{self.name_of(e.out)}["
                    + ", ".join(idx[d] for d in range(ndim) if d not in e.params["axes"])
                    + "]"
                )
                if e in partials:
                    self.runtime.add("sum_step")
                    lines.append(("effect", f"{target} = sum_step({target}, {x})"))
                else:
                    lines.append(("effect", _reduction_update(e.op, target, x)))
                continue
            else:
                expr = self.scalar_expr(e, [load(x) for x in e.inputs])
                # No loop (0-d values): an output is its kernel value itself.
                name = (
                    self.name_of(e.out)
                    if not ndim and e.out in outputs
                    else f"x{self.name_of(e.out)[1:]}"
                )
                lines.append(("compute", f"{name} = {expr}"))
                scalars[e.out] = name
            # A broadcast is stored too when it is needed outside the loop: a materialised
            # broadcast (e.g. the zero gradient of `sign`, a graph output) is a group of its
            # own whose only job is this store.
            if e.out in outputs and ndim:
                lines.append(
                    ("effect", f"{self.name_of(e.out)}[{', '.join(idx)}] = {scalars[e.out]}")
                )
        self.emit_body(group, lines, depth)
        return scalars

    def emit_body(self, group: LoopGroup, lines: list, depth: int) -> None:
        """A loop body's lines in their order; a large one (MIN_LOOP_BLOCK computations) as
        its loads, a call of a scalar block computing what the rest needs, then its stores
        and reductions (see blocks.py)."""
        compute = [line for kind, line in lines if kind == "compute"]
        if not group.space or len(compute) < MIN_LOOP_BLOCK:
            for _, line in lines:
                self.emit(line, depth)
            return
        needed = []
        for kind, line in lines:
            if kind == "effect":
                for word in _names(line):
                    if word not in needed:
                        needed.append(word)
        made = {line.split(" = ", 1)[0] for line in compute}
        outputs = [name for name in needed if name in made]
        for kind, line in lines:
            if kind == "load":
                self.emit(line, depth)
        name, params = self.add_block(group, compute, outputs, own_function=False)
        returned = ", ".join(outputs) + ("," if len(outputs) == 1 else "")
        self.emit(f"{returned} = {name}({', '.join(params)})", depth)
        for kind, line in lines:
            if kind == "effect":
                self.emit(line, depth)

    def loop_footer(self, group: LoopGroup, scalars: dict) -> None:
        """Full reductions and 0-d results, once the loops are done."""
        for e in group.eqns:
            if e.op.reduction is not None and e.out.aval.ndim == 0:
                acc = f"acc{self.name_of(e.out)[1:]}"
                if accumulator_dtype(e) != e.out.aval.dtype:
                    acc = f"{np_dtype(e.out.aval.dtype)}({acc})"  # rounded (or wrapped) once
                self.emit(f"{self.name_of(e.out)} = {acc}")
            elif (
                not group.space and e.out in group.outputs and scalars[e.out] != self.name_of(e.out)
            ):
                self.emit(f"{self.name_of(e.out)} = {scalars[e.out]}")

    def add_buffer(self, v: Var) -> None:
        """Give `v` an array to be written into: a kernel parameter (the caller allocates it,
        or passes its own array to update in place), or its place in a sharded update's
        exchange array (place_in_exchange)."""
        if v in self.placements:
            self.placed.add(v)
        else:
            self.params.append(("buffer", v.aval.shape, v.aval.dtype))
            self.param_names.append(self.name_of(v))
        self.contiguous.add(v)

    def scalar_expr(self, e: Eqn, args: list[str]) -> str:
        op = e.op
        dtype = e.inputs[0].aval.dtype if e.inputs else e.out.aval.dtype
        if op.vmath is not None:
            key = (op.vmath, dtype.name)
            fn = helper_names.VMATH.get(key) or helper_names.SPECIAL.get(key)
            if fn is not None:
                self.helpers.add(fn)
                # Static int params (polygamma's order) follow the operands, typed int64 (a
                # bare literal would compile the helper once per value).
                ints = [f"np.int64({e.params[k]})" for k in sorted(e.params)]
                return f"{fn}({', '.join(args + ints)})"
        if op.name == "cast":
            target = e.params["dtype"]
            if target == np.bool_:
                return f"({args[0]} != 0)"
            return f"{np_dtype(target)}({args[0]})"
        out = e.out.aval.dtype
        expr = op.template.format(*args, dtype=np_dtype(out), **e.params)
        if out.kind in "iu" and out.itemsize < 8 and op.name in WIDENING_INTEGER_OPS:
            # Numba computes these in 64 bits (int32 + int32 is int64, uint8 - uint8 uint64):
            # the cast back wraps around exactly as numpy's arithmetic in the narrow type.
            return f"{np_dtype(out)}({expr})"
        # Float templates keep float32 float32 without a cast (vector width, accumulator
        # types): they call functions Numba types float32 -> float32 (math.erf, np.rint) and
        # take typed literals (np.float32(2.0)); test_golden.py checks every template.
        return expr

    # -- structured ops ----------------------------------------------------------------------
    def op(self, e: Eqn) -> None:
        """A structured op, by the method registered for it (`emits`)."""
        if self.inline_element(e):
            return
        self.emit(f"# {e.op.name}")
        EMITTERS[e.op.name](self, e, *e.inputs)

    def read_only_by(self, v: Var, accepts: Callable[[Eqn], bool]) -> bool:
        readers = self.readers.get(v)
        return bool(readers) and v not in self.graph_outputs and all(map(accepts, readers))

    def inline_element(self, e: Eqn) -> bool:
        """Emit nothing for a one-element array that is only a step between a scalar and an
        element: a slice read only as a scalar (`x[3]`, `x[t, 0]` in user code trace to a
        one-element slice and a reshape to 0-d) becomes the indexing expression `v0[3]` that the
        reshape assigns, and a scalar reshaped to one element and only written into zeros (the
        slice's gradient) is assigned as `v9[3] = v7` by the unslice. Numba compiles an array
        temporary (its allocation, copy loop, reference counts) ~100x slower than a scalar, and
        a program indexing scalars out of arrays has one per read."""
        out = e.out
        if isinstance(out.aval, TupleAVal) or DYNAMIC in out.aval.shape or out.aval.size != 1:
            return False
        if e.op.name == "slice" and self.read_only_by(
            out, lambda r: r.op.name == "reshape" and r.out.aval.ndim == 0
        ):
            starts = ", ".join(self.size(start) for start, _, _ in e.params["index"])
            self.elements[out] = f"{self.name_of(e.inputs[0])}[{starts}]"
            return True
        if (
            e.op.name == "reshape"
            and e.inputs[0].aval.ndim == 0
            and self.read_only_by(out, lambda r: r.op.name == "unslice" and r.inputs[0] is out)
        ):
            self.elements[out] = self.value(e.inputs[0])
            return True
        if e.op.name == "reshape" and out.aval.ndim == 0:
            x = e.inputs[0]
            element = self.elements.get(x) or f"{self.name_of(x)}[{', '.join('0' * x.aval.ndim)}]"
            groups = {self.group_of.get(r) for r in self.readers.get(out, ())}
            if (
                out not in self.graph_outputs
                and len(groups) == 1
                and None not in groups
                and self.is_block(next(iter(groups)))
            ):
                self.block_reads[self.name_of(out)] = element  # read in the block only
                return True
            self.emit(f"{self.name_of(out)} = {element}  # {self.element_note(x)}")
            return True
        return False

    def element_note(self, x: Var) -> str:
        """The comment beside a scalar read: which ops it stands for."""
        return "slice, reshape" if x in self.elements else "reshape"

    def contiguous_expr(self, v: Var) -> str:
        """`v` as a C-contiguous array: itself, or a copy by runtime.contiguous_copy (through
        a symbol: W10's filter flip, `w[::-1, ::-1].copy()` in the kernel, cost 0.2-0.5 s of
        its compile), or `.copy()` for the ranks and dtypes that helper is not precompiled
        for (C order, like np.ascontiguousarray, for seconds less compile time)."""
        name = self.name_of(v)
        if v in self.contiguous:
            return name
        dtype = v.aval.dtype
        if 1 <= v.aval.ndim <= helper_names.MAX_CONTIGUOUS_RANK and (
            dtype.name in helper_names.ARRAY_DTYPES
        ):
            self.call_through_symbol("contiguous_copy", dtype, v.aval.ndim)
            self.runtime.add("strided")
            return f"contiguous_copy(strided({name}))"
        return f"{name}.copy()"

    def call_through_symbol(self, helper: str, dtype, rank: int | None = None) -> None:
        """Have the kernel call the runtime helper `helper` on arrays of `dtype` (and of
        `rank`, for a helper precompiled per rank) through a symbol (symbols.py): its
        machine code, compiled once per installation, is not linked into the kernel and
        generated again (W10: 2-3 s of compile for seven helpers)."""
        dtypes, ranks = self.symbol_helpers.setdefault(
            helper, (set(), None if rank is None else set())
        )
        dtypes.add(np.dtype(dtype).name)
        if rank is not None:
            ranks.add(rank)

    def product_call(self, dtype, m: int, k: int, n: int) -> str:
        """The call, a format string of the operands and the output, that computes an
        (m x k) @ (k x n) product: on AMX tiles where the CPU has them and the product is
        large enough to repay cutting its operands into parts (amx.py), split over the
        threads the kernel's parallel loops get; else by BLAS (runtime.matmul_into), on one
        thread in a kernel whose AMX products take several (amx.matmul_into_one_thread)."""
        from jitgrad.backend.numba import amx
        from jitgrad.core.config import usable_threads

        threads = usable_threads()
        if amx.wins(dtype, m * k * n, threads) and self.tile_helpers_ready:
            self.call_through_symbol("amx_matmul_into", dtype)
            return f"amx_matmul_into({{}}, {{}}, {{}}, {threads})"
        if threads > 1 and self.has_amx_products:
            self.call_through_symbol("matmul_into_one_thread", dtype)
            return "matmul_into_one_thread({}, {}, {})"
        self.call_through_symbol("matmul_into", dtype)
        return "matmul_into({}, {}, {})"

    @functools.cached_property
    def has_amx_products(self) -> bool:
        """Whether any matrix product of this function's schedule runs on AMX tiles (found
        once: a chain of thousands of products asks at each)."""
        from jitgrad.backend.numba import amx
        from jitgrad.core.config import usable_threads

        threads = usable_threads()
        for step in self.schedule.steps:
            for e in step.eqns if isinstance(step, LoopGroup) else (step.eqn,):
                if e.op.name == "matmul" and min(v.aval.ndim for v in e.inputs) >= 2:
                    a, b = (v.aval.shape for v in e.inputs)
                    if amx.wins(e.out.aval.dtype, a[-2] * a[-1] * b[-1], threads):
                        return self.tile_helpers_ready
        return False

    @functools.cached_property
    def tile_helpers_ready(self) -> bool:
        """Whether AMX's helpers are compiled (symbols.all_compiled): until the warmer
        process has compiled them on a new installation (~7 s), products go to BLAS, so
        that the kernel is served without waiting for them."""
        from jitgrad.backend.numba import amx, symbols

        return symbols.all_compiled(amx.KERNEL_HELPERS, ("float32",))

    def read_operand(self, expr: str) -> str:
        """`expr` as an operand a runtime helper only reads: typed read-only, so that inputs
        and buffers share one compiled signature of the helper (runtime.readonly)."""
        self.runtime.add("readonly")
        return f"readonly({expr})"

    def view(self, expr: str, shape: tuple) -> str:
        """The C-contiguous array `expr` reshaped to `shape` (sizes or their text), by
        runtime.view: Numba's `reshape` costs ~40 ms of compile per call site."""
        self.runtime.add("view")
        items = [n if isinstance(n, str) else self.size(n) for n in shape]
        return (
            f"view({expr}, ({items[0]},))"
            if len(items) == 1
            else f"view({expr}, ({', '.join(items)}))"
        )

    def matrix_operand(self, v: Var) -> str:
        """The matrix `v` as an operand of matmul_into: row- or column-major (a strided view is
        copied), typed read-only and of any layout (runtime.strided): one compiled signature
        of the product per dtype."""
        self.runtime.add("strided")
        expr = self.name_of(v) if v in self.transposed else self.contiguous_expr(v)
        return f"strided({expr})"

    @emits("reshape")
    def op_reshape(self, e, x):
        out = self.name_of(e.out)
        shape = e.params["shape"]
        if x.aval.ndim == 0:
            self.emit(f"{out} = np.full({self.size.shape(shape)}, {self.value(x)})")
            self.contiguous.add(e.out)
        elif e.out.aval.ndim == 0:
            self.emit(f"{out} = {self.contiguous_expr(x)}.reshape(-1)[0]")
        else:
            self.emit(f"{out} = {self.view(self.contiguous_expr(x), shape)}")
            self.contiguous.add(e.out)

    @emits("transpose")
    def op_transpose(self, e, x):
        """A matrix transpose is a view (`.T`, which BLAS reads as it is). Others are copied
        into a buffer by runtime.permute (ranks and dtypes it is precompiled for) or by
        element loops: Numba takes 3-4 s to compile `np.transpose(a, perm)` on a 3-D array
        (measured on the GRU example), loops 0.15-0.2 s each (W10: seven, 1.1-1.4 s),
        permute nothing (a call through a symbol)."""
        perm = e.params["perm"]
        out = self.name_of(e.out)
        if perm == (1, 0):
            self.emit(f"{out} = {self.name_of(x)}.T")
            if x in self.contiguous:
                self.transposed.add(e.out)
            elif x in self.transposed:
                self.contiguous.add(e.out)
            return
        self.add_buffer(e.out)
        dtype = e.out.aval.dtype
        if len(perm) in helper_names.PERMUTE_RANKS and dtype.name in helper_names.ARRAY_DTYPES:
            self.call_through_symbol("permute", dtype, len(perm))
            source = self.read_operand(self.contiguous_expr(x))
            self.emit(f"permute({source}, {out}, {_int64s(perm)})")
            return
        shape = e.out.aval.shape
        for d, n in enumerate(shape):
            self.emit(f"for i{d} in range({self.size(n)}):", 1 + d)
        source = [""] * len(perm)
        for d, axis in enumerate(perm):
            source[axis] = f"i{d}"
        target = ", ".join(f"i{d}" for d in range(len(shape)))
        self.emit(f"{out}[{target}] = {self.name_of(x)}[{', '.join(source)}]", 1 + len(shape))

    @emits("matmul")
    def op_matmul(self, e, a, b):
        out = self.name_of(e.out)
        floats = e.out.aval.dtype.kind == "f"
        if a.aval.ndim == 1 or b.aval.ndim == 1:
            # Vectors are made contiguous (np.dot needs it), matrices are passed as in the
            # matrix case (transposes as views); the integer loops take matrices only.
            x, y = (
                self.name_of(v) if v.aval.ndim == 2 else self.contiguous_expr(v) for v in (a, b)
            )
            if floats:
                self.runtime.add("matmul")
                self.emit(f"{out} = matmul({x}, {y})")
            else:
                self.runtime.add("int_matmul")
                x = f"{x}.reshape((1, {self.size(a.aval.shape[0])}))" if a.aval.ndim == 1 else x
                y = f"{y}.reshape(({self.size(b.aval.shape[0])}, 1))" if b.aval.ndim == 1 else y
                shape = e.out.aval.shape
                self.emit(
                    f"{out} = int_matmul({x}, {y}).reshape({self.size.shape(shape)})"
                    if shape
                    else f"{out} = int_matmul({x}, {y})[0, 0]"
                )
        elif a.aval.ndim == 2:
            if floats:
                # Into a caller-allocated buffer: a fresh result of a few hundred KB costs its
                # page faults on every call, as much as the product itself (W3's dW1).
                call = self.product_call(e.out.aval.dtype, *a.aval.shape, b.aval.shape[1])
                self.add_buffer(e.out)
                x, y = (self.matrix_operand(v) for v in (a, b))
                self.emit(call.format(x, y, out))
            else:
                self.runtime.add("int_matmul")
                self.emit(f"{out} = int_matmul({self.name_of(a)}, {self.name_of(b)})")
        else:
            batch = self.size(int(np.prod(a.aval.shape[:-2], dtype=np.int64)))
            m, k = (self.size(d) for d in a.aval.shape[-2:])
            n_items = b.aval.shape[-1]
            n = self.size(n_items)
            if floats:
                call = self.product_call(e.out.aval.dtype, *a.aval.shape[-2:], n_items)
                self.runtime.add("strided")
                self.add_buffer(e.out)
            else:
                self.runtime.add("int_matmul")
                self.emit(
                    f"{out} = np.empty({self.size.shape(e.out.aval.shape)}, "
                    f"{np_dtype(e.out.aval.dtype)})"
                )
            self.emit(f"a3 = {self.view(self.contiguous_expr(a), (batch, m, k))}")
            self.emit(f"b3 = {self.view(self.contiguous_expr(b), (batch, k, n))}")
            self.emit(f"o3 = {self.view(out, (batch, m, n))}")
            self.emit(f"for i0 in range({batch}):")
            self.emit(
                call.format("strided(a3[i0])", "strided(b3[i0])", "o3[i0]")
                if floats
                else "o3[i0] = int_matmul(a3[i0], b3[i0])",
                2,
            )
        self.contiguous.add(e.out)

    @emits("conv")
    def op_conv(self, e, x, w):
        """A convolution into a caller-allocated buffer, by a runtime helper compiled once per
        installation: a 2-D one without groups or input dilation as windows copied into
        caller-allocated scratch and one BLAS product (conv2_gemm), or by register tiles
        straight from x and w when it has few output channels (conv2_tiles), or by dot
        products over window rows when it has few outputs and large windows (a filter
        gradient: conv2_windows); one whose output has more positions than its input (an
        input gradient) by input positions, on register tiles with few output channels
        (conv2_scatter), else by columns (conv2_col2im); the others by direct loops (conv1 /
        conv2). `conv_strategy` makes the choice; a `conv_by_<strategy>` method emits it."""
        getattr(self, f"conv_by_{conv_strategy(e)}")(e, x, w)

    def conv_by_gemm(self, e, x, w) -> None:
        """A conv as windows copied into caller-allocated scratch, a block at a time, and a
        BLAS product per block (conv2_gemm)."""
        p = e.params
        self.call_through_symbol("conv2_gemm", e.out.aval.dtype)
        self.add_buffer(e.out)
        n, oh, ow, _ = e.out.aval.shape
        kh, kw, c_in, _ = w.aval.shape
        scratch = f"{self.name_of(e.out)}_patches"
        shape = (gemm_conv_block(n * oh * ow, kh * kw * c_in), kh * kw * c_in)
        self.params.append(("buffer", shape, e.out.aval.dtype))
        self.param_names.append(scratch)
        operands = [*self.conv_operands(x, w), self.name_of(e.out)]
        params = [
            _int64s(p["strides"]),
            _int64s(tuple(lo for lo, _ in p["padding"])),
            _int64s(p["rhs_dilation"]),
        ]
        self.emit(f"conv2_gemm({', '.join(operands + [scratch] + params)})")

    def conv_by_direct(self, e, x, w) -> None:
        """A conv with groups or input dilation (and the 1-D ones with many channels) by
        direct loops (conv1 / conv2)."""
        p = e.params
        rank = len(p["strides"])
        helper = f"conv{rank}"
        self.call_through_symbol(helper, e.out.aval.dtype)
        self.add_buffer(e.out)
        if rank == 1:
            args = [p["strides"][0], p["padding"][0][0], p["lhs_dilation"][0]]
            args += [p["rhs_dilation"][0]]
        else:
            args = [
                p["strides"],
                tuple(lo for lo, _ in p["padding"]),
                p["lhs_dilation"],
                p["rhs_dilation"],
            ]
        operands = [*self.conv_operands(x, w), self.name_of(e.out)]
        params = [_int64s(a) for a in args] + [_int64s(p["groups"])]
        self.emit(f"{helper}({', '.join(operands + params)})")

    @emits("conv_filters")
    def op_conv_filters(self, e, x, g):
        """A conv's filter gradient (ops/conv.py's conv_filters, any groups) straight from x
        and g in NHWC, by register tiles of taps x output channels of a group
        (conv_filters.conv2_filters); a 1-D one as a 2-D one of height 1. x padded or dilated
        is first copied into caller-allocated scratch (one element when it is not)."""
        p = e.params
        self.call_through_symbol("conv2_filters", e.out.aval.dtype)
        self.add_buffer(e.out)
        names = [self.read_operand(self.contiguous_expr(v)) for v in (x, g)]
        out = self.name_of(e.out)
        window, strides, padding = p["window"], p["strides"], p["padding"]
        lhs, rhs = p["lhs_dilation"], p["rhs_dilation"]
        x_shape, g_shape = x.aval.shape, g.aval.shape
        if len(window) == 1:
            x_shape, g_shape = (x_shape[0], 1, *x_shape[1:]), (g_shape[0], 1, *g_shape[1:])
            names = [
                self.read_operand(self.view(self.contiguous_expr(v), shape))
                for v, shape in ((x, x_shape), (g, g_shape))
            ]
            out = self.view(out, (1, *e.out.aval.shape))
            window, strides, padding = (1, *window), (1, *strides), ((0, 0), *padding)
            lhs, rhs = (1, *lhs), (1, *rhs)
        geometry = {"strides": strides, "padding": padding, "lhs_dilation": lhs}
        geometry["rhs_dilation"] = rhs
        prepared = self.prepared_image(e, x_shape, g_shape, window, geometry)
        pads = tuple(lo for lo, _ in padding)
        params = [_int64s(strides), _int64s(pads), _int64s(lhs), _int64s(rhs)]
        params.append(_int64s(p["groups"]))
        self.emit(f"conv2_filters({', '.join([*names, out, prepared, *params])})")

    def conv_by_tiles(self, e, x, w) -> None:
        """A conv by register tiles of output positions x output channels, read straight
        from x and w (conv2_tiles); with the bias and relu of the loop group after it as
        its epilogue, into that group's output (epilogues.py), when it has them."""
        p = e.params
        self.call_through_symbol("conv2_tiles", e.out.aval.dtype)
        epilogue = self.conv_epilogues.get(e)
        out = e.out if epilogue is None else epilogue.out
        self.add_buffer(out)
        self.contiguous.add(out)
        dtype = np_dtype(e.out.aval.dtype)
        if epilogue is not None and epilogue.bias is not None:
            bias = self.read_operand(self.contiguous_expr(epilogue.bias))
        else:
            bias = self.read_operand(f"np.empty(0, {dtype})")
        relu = epilogue is not None and epilogue.relu
        if epilogue is not None:
            parts = (["+ bias"] if epilogue.bias is not None else []) + (["relu"] if relu else [])
            self.emit(f"# and its epilogue: {', '.join(parts)} (from the loop group after it)")
        x_name, w_name, out_name, shapes, p = self.conv_as_2d(e, x, w, out)
        prepared = self.prepared_image(e, shapes[0], shapes[2], shapes[1][:2], p)
        params = [_int64s(p["strides"]), _int64s(tuple(lo for lo, _ in p["padding"]))]
        params += [_int64s(p["lhs_dilation"]), _int64s(p["rhs_dilation"]), f"np.bool_({relu})"]
        operands = [x_name, w_name, bias, out_name, prepared, *params]
        self.emit(f"conv2_tiles({', '.join(operands)})")

    def conv_as_2d(self, e, x, w, out):
        """(x, w and `out` as read-only / writable 2-D conv operands, their shapes, the
        params): a 1-D conv's as views of height 1 (strides 1, no padding along it)."""
        p = dict(e.params)
        shapes = [x.aval.shape, w.aval.shape, out.aval.shape]
        x_name, w_name = self.conv_operands(x, w)
        out_name = self.name_of(out)
        if len(p["strides"]) == 1:
            n, width, c_in = shapes[0]
            shapes = [(n, 1, width, c_in), (1, *shapes[1]), (shapes[2][0], 1, *shapes[2][1:])]
            x_name = self.read_operand(self.view(self.contiguous_expr(x), shapes[0]))
            w_name = self.read_operand(self.view(self.contiguous_expr(w), shapes[1]))
            out_name = self.view(out_name, shapes[2])
            for key in ("strides", "lhs_dilation", "rhs_dilation"):
                p[key] = (1, *p[key])
            p["padding"] = ((0, 0), *p["padding"])
        return x_name, w_name, out_name, shapes, p

    def prepared_image(self, e, x_shape, out_shape, window, params) -> str:
        """The name of a caller-allocated scratch for x dilated and padded, as conv2_tiles
        and conv2_filters read it when the conv pads or dilates x (one element when not):
        (N, reach_h, reach_w, C) for the rows and columns the windows span."""
        strides, dilation = params["strides"], params["rhs_dilation"]
        spans = zip(out_shape[1:-1], strides, window, dilation)
        reach = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in spans]
        direct = all(lo == 0 for lo, _ in params["padding"]) and set(params["lhs_dilation"]) == {1}
        direct = direct and all(r <= n for r, n in zip(reach, x_shape[1:-1]))
        size = 1 if direct else x_shape[0] * reach[0] * reach[1] * x_shape[-1]
        name = f"{self.name_of(e.out)}_prepared"
        self.params.append(("buffer", (max(size, 1),), e.out.aval.dtype))
        self.param_names.append(name)
        return name

    def conv_by_windows(self, e, x, w) -> None:
        """A conv with few output positions and large windows (a filter gradient) by one dot
        product per output element and window row (conv2_windows), without im2col."""
        self.call_through_symbol("conv2_windows", e.out.aval.dtype)
        self.add_buffer(e.out)
        kh, kw, c_in, c_out = w.aval.shape
        taps = f"{self.name_of(e.out)}_taps"
        self.params.append(("buffer", (kh, c_out, kw * c_in), e.out.aval.dtype))
        self.param_names.append(taps)
        operands = [*self.conv_operands(x, w), self.name_of(e.out), taps]
        self.emit(f"conv2_windows({', '.join(operands)})")

    def conv_operands(self, x: Var, w: Var) -> list[str]:
        """A convolution helper's input and filters: C-contiguous, read-only."""
        return [self.read_operand(self.contiguous_expr(v)) for v in (x, w)]

    def conv_by_scatter(self, e, x, w) -> None:
        """A conv whose output has more positions than its input (an input gradient), with
        few output channels: register tiles of input positions, their products added into
        the outputs they reach (conv2_scatter)."""
        self.call_through_symbol("conv2_scatter", e.out.aval.dtype)
        self.add_buffer(e.out)
        x_name, w_name, out_name, _, p = self.conv_as_2d(e, x, w, e.out)
        operands = [x_name, w_name, out_name]
        params = [_int64s(p["strides"]), _int64s(tuple(lo for lo, _ in p["padding"]))]
        params += [_int64s(p["lhs_dilation"]), _int64s(p["rhs_dilation"])]
        self.emit(f"conv2_scatter({', '.join(operands + params)})")

    def conv_by_columns(self, e, x, w) -> None:
        """A conv whose output has more positions than its input (an input gradient): one
        product per input position, added into the outputs it reaches (conv2_col2im)."""
        p = e.params
        self.call_through_symbol("conv2_col2im", e.out.aval.dtype)
        self.add_buffer(e.out)
        out = self.name_of(e.out)
        n, h, wd, c_in = x.aval.shape
        kh, kw, _, c_out = w.aval.shape
        dtype = e.out.aval.dtype
        for name, shape in (
            (f"{out}_columns", (n * h * wd, kh * kw * c_out)),
            (f"{out}_taps", (c_in, kh * kw * c_out)),
        ):
            self.params.append(("buffer", shape, dtype))
            self.param_names.append(name)
        operands = [*self.conv_operands(x, w), out]
        params = [
            _int64s(p["strides"]),
            _int64s(tuple(lo for lo, _ in p["padding"])),
            _int64s(p["lhs_dilation"]),
            _int64s(p["rhs_dilation"]),
        ]
        scratch = [f"{out}_columns", f"{out}_taps"]
        self.emit(f"conv2_col2im({', '.join(operands + scratch + params)})")

    def _pool_call(self, e, helper: str, operands: list) -> None:
        """A max-pool op (ops/pool.py) by its runtime helper, 2-D: a 1-d pool's arrays are
        viewed with a height of 1."""
        p = e.params
        self.call_through_symbol(helper, e.out.aval.dtype)
        self.add_buffer(e.out)
        names = [self.read_operand(self.contiguous_expr(v)) for v in operands]
        names.append(self.name_of(e.out))
        window, strides = p["window"], p["strides"]
        pads = tuple(lo for lo, _ in p["padding"])
        if len(window) == 1:
            names = [
                self.view(name, (v.aval.shape[0], 1, *v.aval.shape[1:]))
                for name, v in zip(names, [*operands, e.out])
            ]
            window, strides, pads = (1, *window), (1, *strides), (0, *pads)
        params = [_int64s(window), _int64s(strides), _int64s(pads)]
        self.emit(f"{helper}({', '.join(names + params)})")

    @emits("max_pool")
    def op_max_pool(self, e, x):
        self._pool_call(e, "max_pool2", [x])

    @emits("max_pool_scatter")
    def op_max_pool_scatter(self, e, x, g):
        self._pool_call(e, "max_pool_scatter2", [x, g])

    @emits("max_pool_gather")
    def op_max_pool_gather(self, e, x, h):
        self._pool_call(e, "max_pool_gather2", [x, h])

    @emits("philox")
    def op_philox(self, e, key, offset):
        """Random draws (ops/philox.py) by a runtime helper (backend/numba/philox.py) that
        fills the flat output in the numpy implementation's order, with its arithmetic."""
        distribution, dtype = e.params["distribution"], e.out.aval.dtype
        helper = {
            "bits": "philox_bits",
            "uniform": f"philox_uniform{8 * dtype.itemsize}",
            "normal": "philox_normal",
            "truncated_normal": "philox_truncated_normal",
        }[distribution]
        self.call_through_symbol(helper, dtype)
        out = self.name_of(e.out)
        operands = f"{self.contiguous_expr(key)}, {self.value(offset)}"  # offset: int64
        if e.out.aval.ndim == 0:  # a scalar in the kernel: drawn into a one-element array
            self.emit(f"{out}_one = np.empty(1, {np_dtype(dtype)})")
            self.emit(f"{helper}({operands}, {out}_one)")
            self.emit(f"{out} = {out}_one[0]")
        else:
            self.add_buffer(e.out)
            self.emit(f"{helper}({operands}, {self.view(out, (e.out.aval.size,))})")

    @emits("allreduce")
    def op_allreduce(self, e, x):
        """The sum over MPI ranks (ops/collective.py), by MPI_Allreduce in place on the
        buffer (backend/numba/mpi.py): on `x`'s own buffer when this kernel computed it and
        nothing else reads it (a gradient on its way to the optimizer update), else on a copy.
        A 0-d value is reduced in a one-element array."""
        helper = helper_names.MPI_ALLREDUCE[e.out.aval.dtype.name]
        self.helpers.add(helper)
        out = self.name_of(e.out)
        if e.out.aval.ndim == 0:
            self.emit(f"{out}_one = np.full(1, {self.value(x)})")
            self.emit(f"{helper}({out}_one)")
            self.emit(f"{out} = {out}_one[0]")
            return
        owned = (
            x in self.contiguous
            and x not in self.graph.inputs
            and self.read_only_by(x, lambda r: r is e)
        )
        source = self.name_of(x) if owned else f"{self.name_of(x)}.copy()"
        self.emit(f"{out} = {source}")
        self.emit(f"{helper}({self.view(out, (e.out.aval.size,))})")
        self.contiguous.add(e.out)

    def writable(self, exchange: Var) -> str:
        """The name of a writeable view of the exchange array (an input, typed read-only)."""
        name = f"{self.name_of(exchange)}_w"
        if name not in self.exchange_views:
            self.exchange_views.add(name)
            self.runtime.add("writable")
            self.emit(f"{name} = writable({self.name_of(exchange)})")
        return name

    def place_in_exchange(self) -> None:
        """Have the values a sharded update publishes be computed in the exchange array
        itself, not copied there: this rank's gradients in its row, its new shares of the
        parameters in the last row (`placements`; add_buffer then binds them there). Defined
        before the first step, so that no outlined loop function owns their names. A value
        published in two places (two equal gradients, merged) is placed in the first."""
        for e in self.graph.eqns:
            if e.op.name not in ("publish_rows", "allgather_rows"):
                continue
            exchange = self.writable(e.inputs[0])
            for v, place in self.exchange_places(e):
                start, end = place[1:]
                if (
                    end > start
                    and v not in self.graph.inputs
                    and v not in self.graph.consts
                    and v not in self.graph_outputs
                    and v not in self.placements
                ):
                    view = self.view(f"{exchange}[{place[0]}][{start}:{end}]", v.aval.shape)
                    self.placements[v] = (view, place)
                placed_here = v in self.placements and self.placements[v][1] == place
                if e.op.name == "allgather_rows" and placed_here:
                    self.mirrors.setdefault(v, []).append(e)

    @staticmethod
    def own_elements(gather: Eqn) -> tuple[int, int]:
        """The elements [first, end) of an allgather_rows's output (flat) that this rank's
        share holds: its rows."""
        shape, p = gather.out.aval.shape, gather.params
        first, end = row_share(shape, p["rank"], p["size"])
        return first * row_size(shape), end * row_size(shape)

    def own_rows_view(self, gather: Eqn) -> str:
        """A flat view of this rank's rows of a gathered parameter (the gather's output)."""
        first, end = self.own_elements(gather)
        return f"{self.view(self.name_of(gather.out), (gather.out.aval.size,))}[{first}:{end}]"

    @staticmethod
    def exchange_places(e: Eqn) -> list:
        """(value, (row, first element, end)) for each value exchange op `e` publishes."""
        p = e.params
        if e.op.name == "publish_rows":
            values = e.inputs[1:]
            offsets = value_offsets([v.aval.shape for v in values])
            return [(v, (p["rank"], offsets[i], offsets[i + 1])) for i, v in enumerate(values)]
        per_row = row_size(e.out.aval.shape)
        first, end = row_share(e.out.aval.shape, p["rank"], p["size"])
        place = (p["size"], p["offset"] + first * per_row, p["offset"] + end * per_row)
        return [(e.inputs[1], place)]

    def publish(self, e: Eqn) -> None:
        """Copy into the exchange array the values of `e` that were not computed in their
        place there (place_in_exchange)."""
        exchange = self.writable(e.inputs[0])
        for v, place in self.exchange_places(e):
            row, start, end = place
            if end > start and not (v in self.placed and self.placements[v][1] == place):
                source = self.view(self.contiguous_expr(v), (end - start,))
                self.runtime.add("copy_flat")
                target = f"{exchange}[{row}][{start}:{end}]"
                self.emit(f"copy_flat({target}, {source})  # computed elsewhere")

    def exchange_point(self, exchange, rank: int, tag: int) -> None:
        """Wait at exchange point `tag` of the step until every rank is there, unless the
        kernel already did (the gathers of one tag share a point: ops/collective.py);
        exchange_points.py keeps the tag in a 64-bit word with the count of points."""
        if tag in self.exchange_points:
            return
        self.exchange_points.add(tag)
        if not 0 <= tag < 1 << 16:
            raise ValueError(f"a sharded step has at most 65536 exchange points, not {tag + 1}")
        self.helpers.add(helper_names.EXCHANGE_POINT)
        self.emit(f"exchange_point({self.writable(exchange)}, {rank}, {tag})")

    @emits("publish_rows")
    def op_publish_rows(self, e, exchange, *values):
        """This rank's values in its row of the exchange array (computed there, see
        place_in_exchange, or copied), then exchange point 0: every rank's are there."""
        self.publish(e)
        self.exchange_point(exchange, e.params["rank"], 0)
        self.emit(f"{self.name_of(e.out)} = {literal(0, e.out.aval.dtype)}")

    @emits("exchange_rows")
    def op_exchange_rows(self, e, exchange, _published):
        """A view of the exchange array: what a rank published there. A loop that sums these
        over the ranks reads the other ranks' rows as it goes (the optimizer's update)."""
        p = e.params
        n = e.out.aval.size
        rows = f"{self.writable(exchange)}[{p['row']}][{p['start']}:{p['start'] + n}]"
        self.emit(f"{self.name_of(e.out)} = {self.view(rows, e.out.aval.shape)}")
        self.contiguous.add(e.out)

    @emits("allgather_rows")
    def op_allgather_rows(self, e, exchange, share, *_previous):
        """The whole value from the ranks' shares of its rows (ops/collective.py): this rank's
        share is in the exchange array's last row; wait at exchange point `tag` until every
        rank's is (the first gather of the tag waits), then copy the whole value out: every
        rank copies the same bits, its own share too unless the share's loop stored it there
        already (`mirrors`). The output is the caller's parameter when the train step updates
        it in place (compiler/train_step.py)."""
        p = e.params
        exchange_name, out = self.writable(exchange), self.name_of(e.out)
        if p["tag"] not in self.exchange_points:
            # Every share the point's gathers read must be in the exchange array before the
            # point: a share published after it (by a later gather of the tag) would be read
            # by the other ranks before it is written. The first gather of a tag follows all
            # of their shares (ops/collective.py), so all of them exist here.
            for gather in self.graph.eqns:
                if gather.op.name == "allgather_rows" and gather.params["tag"] == p["tag"]:
                    self.publish(gather)
        self.exchange_point(exchange, p["rank"], p["tag"])
        self.add_buffer(e.out)
        offset, total = p["offset"], e.out.aval.size
        copied = [(0, total)]
        if e.out in self.mirrored:  # this rank's rows are there already (mirrors)
            first, end = self.own_elements(e)
            copied = [(0, first), (end, total)]
        self.runtime.add("copy_flat")
        flat = self.view(out, (total,))
        for start, stop in copied:
            if stop > start:
                target = flat if (start, stop) == (0, total) else f"{flat}[{start}:{stop}]"
                source = f"{exchange_name}[{p['size']}][{offset + start}:{offset + stop}]"
                self.emit(f"copy_flat({target}, {source})")

    def _slices(self, index) -> str:
        parts = []
        for start, stop, step in index:
            stop_text = "" if stop < 0 else self.size(stop)
            parts.append(f"{self.size(start)}:{stop_text}:{step}")
        return ", ".join(parts)

    @emits("slice")
    def op_slice(self, e, x):
        out, index = self.name_of(e.out), e.params["index"]
        block = self._contiguous_block(x, index)
        if block is None:
            self.emit(f"{out} = {self.name_of(x)}[{self._slices(index)}]")
            return
        # A C-contiguous view, so that no reader copies it (Numba types x[0:1, :, :] as a
        # strided array but x[0] and x[2:5] as C-contiguous ones).
        view = f"{self.name_of(x)}[{block}]"
        if any(":" not in part for part in block.split(", ")):  # integers drop dimensions
            view += f".reshape({self.size.shape(e.out.aval.shape)})"
        self.emit(f"{out} = {view}")
        self.contiguous.add(e.out)

    def _contiguous_block(self, x: Var, index) -> str | None:
        """The index that selects the slice `index` of a C-contiguous `x` as one contiguous
        block (leading dimensions of one element, then one range of step 1, then whole
        dimensions), written with integers and at most one trailing range: e.g. `0`, `3, 2:5`,
        `2:5`; None if the slice is not such a block."""
        if x not in self.contiguous or not index:
            return None
        extents = [len(range(*triple)) for triple in index]
        if 0 in extents:
            return None
        k = 0
        while k < len(index) - 1 and extents[k] == 1:
            k += 1
        start, stop, step = index[k]
        if step != 1 and extents[k] != 1:
            return None
        for d in range(k + 1, len(index)):
            if index[d] != (0, x.aval.shape[d], 1):
                return None
        parts = [self.size(index[d][0]) for d in range(k)]
        whole = (start, stop, step) == (0, x.aval.shape[k], 1)
        if extents[k] == 1 and k == len(index) - 1:
            parts.append(f"{self.size(start)}:{self.size(start)} + 1")
        elif not whole or not parts:
            parts.append(f"{self.size(start)}:{self.size(start + extents[k])}")
        return ", ".join(parts)

    @emits("unslice")
    def op_unslice(self, e, g):
        out = self.name_of(e.out)
        shape = self.size.shape(e.params["shape"])
        self.emit(f"{out} = np.zeros({shape}, {np_dtype(e.out.aval.dtype)})")
        if g in self.elements:  # one element (see inline_element)
            starts = ", ".join(self.size(start) for start, _, _ in e.params["index"])
            self.emit(f"{out}[{starts}] = {self.elements[g]}")
        elif g.aval.ndim == 0:
            self.emit(f"{out}[{self._slices(e.params['index'])}] = {self.value(g)}")
        else:
            starts = [(start, step) for start, _, step in e.params["index"]]
            self.copy_into(out, starts, self.name_of(g), g.aval.shape)
        self.contiguous.add(e.out)

    def copy_into(self, out: str, starts: list, source: str, shape: tuple) -> None:
        """`out[start + i * step, ...] = source[i, ...]` over `shape`, as element loops: Numba
        compiles an array assignment's shape check and error message in seconds (an im2col
        convolution's 4-D copy took 8.7 s; perf/gaps.md), these loops in milliseconds."""
        for d, n in enumerate(shape):
            self.emit(f"for i{d} in range({self.size(n)}):", 1 + d)
        target = []
        for d, (start, step) in enumerate(starts):
            offset = f"{self.size(start)} + " if start else ""
            target.append(f"{offset}i{d}" if step == 1 else f"{offset}i{d} * {step}")
        source_index = ", ".join(f"i{d}" for d in range(len(shape)))
        self.emit(f"{out}[{', '.join(target)}] = {source}[{source_index}]", 1 + len(shape))

    @emits("concat")
    def op_concat(self, e, *xs):
        names = ", ".join(self.name_of(x) for x in xs)
        self.emit(f"{self.name_of(e.out)} = np.concatenate(({names},), axis={e.params['axis']})")
        self.contiguous.add(e.out)

    @emits("pad")
    def op_pad(self, e, x):
        out = self.name_of(e.out)
        fill = literal(e.params["constant"], e.out.aval.dtype)
        self.emit(f"{out} = np.full({self.size.shape(e.out.aval.shape)}, {fill})")
        # The input's block starts at `lo` and spans the input's own size.
        if x.aval.ndim == 0:
            self.emit(f"{out}[()] = {self.value(x)}")
        else:
            starts = [(lo, 1) for lo, _ in e.params["paddings"]]
            self.copy_into(out, starts, self.name_of(x), x.aval.shape)
        self.contiguous.add(e.out)

    def _three_axis(self, shape, axis):
        """(outer, axis, inner) extents of `shape` around `axis`, as source text."""
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
        return self.size(outer), self.size(shape[axis]), self.size(inner)

    def _flat_indices(self, idx: Var) -> str:
        if idx.aval.ndim == 0:
            return f"np.array([{self.value(idx)}])"
        return self.view(self.contiguous_expr(idx), (idx.aval.size,))

    @emits("gather")
    def op_gather(self, e, x, idx):
        axis = e.params["axis"]
        p, n, q = self._three_axis(x.aval.shape, axis)
        k = self.size(idx.aval.size)
        self.emit(f"src = {self.view(self.contiguous_expr(x), (p, n, q))}")
        self.emit(f"flat = {self._flat_indices(idx)}")
        self.emit(f"dst = np.empty(({p}, {k}, {q}), {np_dtype(e.out.aval.dtype)})")
        self.emit(f"for i1 in range({k}):")
        j = self.emit_checked_index(e, "gather", "flat[i1]", n, axis, depth=2)
        self.emit(f"for i0 in range({p}):", 2)
        self.emit(f"dst[i0, i1, :] = src[i0, {j}, :]", 3)
        self.emit_reshaped(e.out, "dst")

    @emits("scatter_add")
    def op_scatter_add(self, e, g, idx):
        axis = e.params["axis"]
        shape = e.params["shape"]
        p, n, q = self._three_axis(shape, axis)
        k = self.size(idx.aval.size)
        out = self.name_of(e.out)
        self.emit(f"{out} = np.zeros({self.size.shape(shape)}, {np_dtype(e.out.aval.dtype)})")
        self.emit(f"dst = {self.view(out, (p, n, q))}")
        if g.aval.ndim:
            self.emit(f"src = {self.view(self.contiguous_expr(g), (p, k, q))}")
        else:  # one element gathered from a vector: its cotangent is a scalar in the kernel
            self.emit(f"src = np.full((1, 1, 1), {self.value(g)})")
        self.emit(f"flat = {self._flat_indices(idx)}")
        self.emit(f"for i1 in range({k}):")
        # Checked here too: under jit(grad(f)) the forward gather is dead code.
        j = self.emit_checked_index(
            e, "scatter_add (the gradient of gather)", "flat[i1]", n, axis, depth=2
        )
        self.emit(f"for i0 in range({p}):", 2)
        self.emit(f"dst[i0, {j}, :] += src[i0, i1, :]", 3)
        self.contiguous.add(e.out)

    @emits("scatter_extreme")
    def op_scatter_extreme(self, e, x, updates, rows):
        """A copy of x, then each update row combined into its row by maximum or minimum
        (numpy's maximum.at: a NaN on either side wins)."""
        mode = e.params["mode"]
        n, width = x.aval.shape
        k = self.size(rows.aval.size)
        out = self.name_of(e.out)
        self.emit(f"{out} = {self.contiguous_expr(x)}.copy()")
        self.emit(f"dst = {self.view(out, (n, width))}")
        self.emit(f"src = {self.view(self.contiguous_expr(updates), (updates.aval.shape))}")
        self.emit(f"flat = {self._flat_indices(rows)}")
        self.emit(f"for i1 in range({k}):")
        j = self.emit_checked_index(e, f"scatter_{mode}", "flat[i1]", self.size(n), 0, depth=2)
        self.emit(f"for i2 in range({self.size(width)}):", 2)
        self.emit("u = src[i1, i2]", 3)
        better = ">" if mode == "max" else "<"
        self.emit(f"if u {better} dst[{j}, i2] or u != u:", 3)
        self.emit(f"dst[{j}, i2] = u", 4)
        self.contiguous.add(e.out)

    def checked_index_name(self) -> str:
        """A name for an index that a raise may report, used nowhere else in the function.
        Numba (0.65) loses the value of a variable assigned more than once by the time a raise
        passes it on: the message then named index 0 for 4, or lowering failed (KeyError)."""
        self.checked_indices += 1
        return f"j{self.checked_indices}"

    def emit_checked_index(self, e, caller: str, index: str, n: str, axis: int, depth: int):
        """`jN = index`, raising IndexError unless -n <= jN < n; returns the name of jN
        wrapped to 0 <= . < n (a second name: jN itself is assigned once, checked_index_name)."""
        j = self.checked_index_name()
        self.emit(f"{j} = {index}", depth)
        self.emit(f"if {j} < -{n} or {j} >= {n}:", depth)
        self.emit(
            raise_index_error(
                e, f"{caller}: index {{}} is out of bounds for axis {axis} of size {{}}", j, n
            ),
            depth + 1,
        )
        self.emit(f"{j}w = {j} + {n} if {j} < 0 else {j}", depth)
        return f"{j}w"

    @emits("check_index")
    def op_check_index(self, e, idx):
        sizes, what, negative = e.params["sizes"], e.params["what"], e.params["negative"]
        caller, axis = e.params["caller"], e.params["axis"]
        depth = 1
        if idx.aval.ndim == 0:
            columns = [self.value(idx)]
        else:
            rows = self.view(self.contiguous_expr(idx), (idx.aval.size // len(sizes), len(sizes)))
            self.emit(f"rows = {rows}")
            self.emit("for i0 in range(rows.shape[0]):")
            columns, depth = [f"rows[i0, {d}]" for d in range(len(sizes))], 2
        for d, (column, size) in enumerate(zip(columns, sizes)):
            n = self.size(size)
            low = f"-{n}" if negative else "0"
            tail = (
                f"is out of bounds for axis {axis + d} of size {{}}"
                if what == "index"
                else f"is outside the valid range [{'-{}' if negative else 0}, {{}})"
            )
            j = self.checked_index_name()
            self.emit(f"{j} = {column}", depth)
            self.emit(f"if {j} < {low} or {j} >= {n}:", depth)
            values = (j, n, n) if negative and what != "index" else (j, n)
            self.emit(raise_index_error(e, f"{caller}: {what} {{}} {tail}", *values), depth + 1)
        self.emit(f"{self.name_of(e.out)} = {self.value(idx)}")
        if idx in self.contiguous:
            self.contiguous.add(e.out)

    def _arg_reduce(self, e, x, better: str):
        axis = e.params["axis"]
        p, n, q = self._three_axis(x.aval.shape, axis)
        self.emit(f"src = {self.view(self.contiguous_expr(x), (p, n, q))}")
        self.emit(f"dst = np.zeros(({p}, {q}), np.int64)")
        self.emit(f"for i0 in range({p}):")
        self.emit(f"for i2 in range({q}):", 2)
        self.emit("best = src[i0, 0, i2]", 3)
        self.emit(f"for i1 in range(1, {n}):", 3)
        self.emit("y = src[i0, i1, i2]", 4)
        # numpy returns the first NaN's position; once best is NaN nothing replaces it.
        self.emit(f"if (y {better} best or (y != y and best == best)):", 4)
        self.emit("best = y", 5)
        self.emit("dst[i0, i2] = i1", 5)
        self.emit_reshaped(e.out, "dst")

    @emits("argsort")
    def op_argsort(self, e, x):
        """Each (row, column) line along the axis copied out (as its sort key, ops/sort.py),
        argsorted by Numba's mergesort (stable, NaNs last: numpy's order), and the positions
        written back along the axis."""
        p, n, q = self._three_axis(x.aval.shape, e.params["axis"])
        key = ("-" if x.aval.dtype.kind == "f" else "~") if e.params["descending"] else ""
        self.emit(f"src = {self.view(self.contiguous_expr(x), (p, n, q))}")
        self.emit(f"dst = np.empty(({p}, {n}, {q}), np.int64)")
        self.emit(f"line = np.empty({n}, src.dtype)")
        self.emit(f"for i0 in range({p}):")
        self.emit(f"for i2 in range({q}):", 2)
        self.emit(f"for i1 in range({n}):", 3)
        self.emit(f"line[i1] = {key}src[i0, i1, i2]", 4)
        self.emit("order = np.argsort(line, kind='mergesort')", 3)
        self.emit(f"for i1 in range({n}):", 3)
        self.emit("dst[i0, i1, i2] = order[i1]", 4)
        self.emit_reshaped(e.out, "dst")

    @emits("argmax")
    def op_argmax(self, e, x):
        self._arg_reduce(e, x, ">")

    @emits("argmin")
    def op_argmin(self, e, x):
        self._arg_reduce(e, x, "<")

    def emit_reshaped(self, v: Var, temp: str) -> None:
        if v.aval.ndim == 0:
            self.emit(f"{self.name_of(v)} = {temp}.reshape(-1)[0]")
        else:
            self.emit(f"{self.name_of(v)} = {self.view(temp, v.aval.shape)}")
            self.contiguous.add(v)


_NAME = re.compile(r"(?<![.\w])[a-z_][a-z_0-9]*\b(?![(.])")  # not an attribute (np.inf)
_KERNEL_GLOBALS = frozenset({"np", "math", "numba"})


def _filter_gradient_shaped(params: dict, out_spatial: list, w_shape: tuple) -> bool:
    """Whether conv2_windows computes this conv (see WINDOWS_MAX_POSITIONS)."""
    kh, kw, c_in, _ = w_shape
    return (
        params["strides"] == (1, 1)
        and params["rhs_dilation"] == (1, 1)
        and all(lo == hi == 0 for lo, hi in params["padding"])
        and out_spatial[0] * out_spatial[1] <= WINDOWS_MAX_POSITIONS
        and kh * kw * c_in >= WINDOWS_MIN_SIZE
    )


def conv_strategy(e) -> str:
    """How `Emitter.op_conv` computes the conv equation `e`: "scatter" / "columns" (an
    output with more positions than its input, with few output channels / more: conv2_scatter
    / conv2_col2im), "windows" (few outputs, large windows: conv2_windows), "tiles" (few
    output channels: conv2_tiles), "gemm" (conv2_gemm), or "direct" (conv1 / conv2: groups,
    input dilation). A 1-D conv runs as a 2-D one of height 1 by tiles or scatter, else
    directly."""
    if e.op.name != "conv":
        return "none"
    p = e.params
    rank = len(p["strides"])
    x, w = e.inputs
    _, *out_spatial, c_out = e.out.aval.shape
    if p["groups"] != 1:
        return "direct"
    if int(np.prod(x.aval.shape[1:-1])) < int(np.prod(out_spatial)):
        if c_out <= TILES_MAX_OUT_CHANNELS:
            return "scatter"
        return "columns" if rank == 2 else "direct"
    if p["lhs_dilation"] != (1,) * rank:
        return "direct"
    if rank == 2 and _filter_gradient_shaped(p, out_spatial, w.aval.shape):
        return "windows"
    if c_out <= TILES_MAX_OUT_CHANNELS:
        return "tiles"
    return "gemm" if rank == 2 else "direct"


def gemm_conv_block(positions: int, columns: int) -> int:
    """How many output positions runtime.conv2_gemm copies into its patches scratch per
    matrix product: about GEMM_CONV_BLOCK_ELEMENTS elements, so that BLAS reads them from
    the cache they were written to."""
    return max(1, min(positions, GEMM_CONV_BLOCK_ELEMENTS // columns))


def _int64s(value) -> str:
    """An int or a tuple of ints as int64 expressions: a bare literal is typed by Numba as
    that literal (`Literal[int](2)`), so a helper would compile once per value instead of
    once per installation (precompile.py)."""
    if isinstance(value, tuple):
        return "(" + ", ".join(_int64s(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return f"np.int64({int(value)})"


def _names(expr: str) -> list[str]:
    """The variables an expression of the generated code reads (names not called and not
    modules), in order of appearance."""
    return [w for w in _NAME.findall(expr) if not keyword.iskeyword(w) and w not in _KERNEL_GLOBALS]


def describe(op_names: list[str]) -> str:
    """A group's ops for a comment: their names in order, or for a large group how many of
    each (an unrolled program's group has thousands)."""
    if len(op_names) <= MAX_LISTED_OPS:
        return ", ".join(op_names)
    counts = collections.Counter(op_names).most_common()
    return f"{len(op_names)} ops ({', '.join(f'{n} {name}' for name, n in counts)})"


_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]*\b")
_VALUE = re.compile(r"^(v|x|acc|part|flat|splat)\d+(_\d+)?$")


class _Piece:
    """Kernel lines (a loop) as a function of the kernel values they read and write: `params`
    (read before written here, arrays written in place included), `returns` (values assigned
    here). `key` is the code with every value name numbered in order of appearance: two
    pieces with one key compute the same function of their parameters."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        written: set[str] = set()
        params: dict[str, None] = {}  # ordered sets: a large block has thousands of names
        returns: dict[str, None] = {}
        order: dict[str, str] = {}
        canonical = []
        for line in lines:
            code = "" if line.lstrip().startswith("#") else _STRING.sub("''", line)
            targets, reads = _reads_and_targets(code.strip())
            for name in reads:
                if name not in written:
                    params.setdefault(name)
            for target in targets:
                written.add(target)
                if target.startswith("v"):
                    returns.setdefault(target)
            canonical.append(
                _IDENTIFIER.sub(
                    lambda m: (
                        order.setdefault(m.group(), f"t{len(order)}")
                        if _VALUE.match(m.group()) or m.group() in params
                        else m.group()
                    ),
                    code,
                )
            )
        self.params: list[str] = list(params)
        self.returns: list[str] = list(returns)
        self.key = "\n".join(canonical)

    def function(self, name: str, fastmath: bool, parallel: bool = False) -> str:
        returned = ", ".join(self.returns) + ("," if len(self.returns) == 1 else "")
        tail = [f"    return ({returned})"] if self.returns else []
        flags = f"fastmath={fastmath}" + (", parallel=True" if parallel else "")
        return (
            f"@numba.njit(nogil=True, error_model='numpy', {flags}, {helper_names.KERNEL_ONLY})\n"
            f"def {name}({', '.join(self.params)}):\n" + "\n".join(self.lines + tail) + "\n"
        )

    def call(self, name: str) -> list[str]:
        comments = [line for line in self.lines if line.lstrip().startswith("# fused")]
        call = f"{name}({', '.join(self.params)})"
        if self.returns:
            call = f"{', '.join(self.returns)}{',' if len(self.returns) == 1 else ''} = {call}"
        return (
            [line.rstrip() + f": {name}" for line in comments[:1]] + comments[1:] + ["    " + call]
        )


def _reads_and_targets(code: str):
    """(the names a line assigns, the names it reads) for one generated line."""
    if not code:
        return [], []
    if code.startswith("for "):
        target, rest = code[4:].split(" in ", 1)
        return [target.strip()], _names(rest)
    if code.startswith(("if ", "elif ", "while ", "raise ", "return ")) or code == "else:":
        return [], _names(code)
    for op in (" += ", " -= ", " *= "):
        if op in code:
            left, right = code.split(op, 1)
            return ([] if "[" in left else [left.strip()]), _names(left) + _names(right)
    if " = " in code:
        left, right = code.split(" = ", 1)
        if "[" in left:  # an element or slice of an array: the array is read (and written)
            return [], _names(left) + _names(right)
        return [t.strip() for t in left.split(",") if t.strip()], _names(right)
    return [], _names(code)


def raise_index_error(e: Eqn, template: str, *values: str) -> str:
    """`raise IndexError(template, *values)`, the user's line appended to the template. Numba
    raises with runtime values but cannot format text: the caller of the kernel formats the
    message (`template.format(*values)`, see api._kernel_error)."""
    where = f" ({e.source})".replace("{", "{{").replace("}", "}}") if e.source else ""
    return f"raise IndexError({template + where!r}, {', '.join(values)})"


def accumulator_dtype(e: Eqn) -> np.dtype:
    """The dtype a full reduction accumulates in before its result is cast once.

    Integer sums and products of narrow types accumulate in int64, where Numba computes them
    anyway: arithmetic mod 2**64 wraps to the same result mod 2**32 (or 2**8, ...) as numpy's.
    float32 sums add up in float64, from float32 partial sums of at most one innermost row or
    SUM_BLOCK elements (Emitter.open_innermost_loop)."""
    dtype = e.out.aval.dtype
    widens = e.op.reduction.combine in WIDENING_COMBINES
    if widens and dtype.kind in "iu" and dtype.itemsize < 8:
        return np.dtype(np.int64)
    if is_sum(e) and dtype.kind == "f" and dtype.itemsize < 8:
        return np.dtype(np.float64)
    return dtype


def float_sums(group: LoopGroup) -> list[Eqn]:
    """The group's full sums of floats: partial sums in the loop, added in float64 (see
    Emitter.open_innermost_loop)."""
    return [
        e for e in group.eqns if is_sum(e) and e.out.aval.ndim == 0 and e.out.aval.dtype.kind == "f"
    ]


def row_sums(group: LoopGroup) -> list[Eqn]:
    """The group's float sums over its innermost dimension that keep other dimensions (the
    row sums of a softmax, a per-example norm): each row adds up in a partial sum, in a
    register and vectorised, and goes to memory once (see Emitter.close_partials), instead of
    a read-add-write of the same element for every term."""
    inner = len(group.space) - 1
    return [
        e
        for e in group.eqns
        if is_sum(e)
        and e.out.aval.ndim
        and inner in e.params["axes"]
        and e.out.aval.dtype.kind == "f"
    ]


def is_sum(e: Eqn) -> bool:
    """Whether `e` is a sum: only sums add up in partial sums (open_innermost_loop), and only
    loops whose reductions are full sums run in parallel (Emitter.is_parallel)."""
    return e.op.reduction is not None and e.op.reduction.combine == "add"


def _reduction_identity(op: OpDef, dtype: np.dtype) -> str:
    return literal(op.reduction.identity(dtype), dtype)


def _reduction_update(op: OpDef, target: str, x: str) -> str:
    return REDUCTION_UPDATES[op.reduction.combine].format(target=target, x=x)


def emit_kernel(
    schedule: Schedule, name: str, fastmath: bool = False, generic: bool = False
) -> KernelSource:
    """Generate the source of the one kernel that runs `schedule`; `generic`: sizes read from
    the arrays and scalar constants as parameters (see Sizes)."""
    with gc_paused():  # an emitter keeps what it allocates (see gcpause)
        return Emitter(schedule, name, fastmath, generic).build()


def check_emitters(registry: dict) -> None:
    """Raise ImportError naming the ops of `registry` this backend has no code for: structured
    ops without an emitter (`emits`), reductions whose combine has no update."""
    missing = [name for name, op in registry.items() if is_structured(op) and name not in EMITTERS]
    missing += [
        f"{name} (combine {op.reduction.combine!r})"
        for name, op in registry.items()
        if op.reduction is not None and op.reduction.combine not in REDUCTION_UPDATES
    ]
    if missing:
        raise ImportError(
            f"the Numba backend cannot emit op(s) {', '.join(sorted(missing))}: "
            "register an Emitter method with @emits(name)"
        )


EMITTERS.update(control.EMITTERS)  # loops and branches (control.py)
EMITTERS.update(linalg.EMITTERS)  # decompositions and solves (linalg.py)
EMITTERS.update(shards.EMITTERS)  # a batch's shards at once (shards.py)
# Importing any jitgrad module first imports `jitgrad`, which registers every op.
check_emitters(REGISTRY)
