"""Fused loops whose innermost dimension is one SIMD vector (4, 8 or 16 float32 channels; 2, 4
or 8 float64) or whole 64-byte ones (any multiple of 16 float32 channels, of 8 float64), written
in simd.py's Vecs.

Why: a CNN's relu gradient and bias gradient fuse into one loop over (batch, h, w, channels),
`x = g if a > 0 else 0; out[...] = x; db[c] += x`. With 8 channels LLVM's loop vectoriser gives
up on the innermost loop (8 iterations, and `db[c]` may alias `out`), and the SLP vectoriser
does not rewrite the reduction chains either: each element is a scalar compare, select, store
and a read-add-write of `db[c]` through memory (W10's (32, 12, 12, 8) group: 37 us; in 8-lane
vectors 5.4 us; with 32 to 128 channels LLVM vectorises the row but keeps the sums in memory:
(8, 12, 12, 32) 21 us, in vectors 7 us; a dense layer's (128, 1024) 86 us, 50 us). Each outer
iteration is one vector load per input and row vector, the ops lane by lane, one vector store
per output, and a sum over the outer dimensions is a vector accumulator in a register, added to
its output once after the loops. Rows of more than MAX_ROW_VECTORS vectors are a loop over their
vectors instead, and add into the sum's row in memory, vector by vector; without a sum, LLVM's
own vectorised loop is as fast there.

Bit for bit the scalar loop: every lane runs the same IEEE operations (simd.py's lane-wise
intrinsics, no fast-math), and each lane's sum adds the same terms in the same order.

A group qualifies when its innermost extent fills one vector (16, 32 or 64 bytes) or a whole
number of 64-byte ones, its sizes are known (not a shape-polymorphic kernel), it runs
serially, every value is of one float dtype or boolean (masks: a comparison's, or a mask
array the forward pass stored), every op has a vector form below, every array it reads is
C-contiguous, and its reductions are sums over every dimension but the innermost one. Others
keep the scalar loop (Emitter.loop).
"""

from __future__ import annotations

import re

import numpy as np

from jitgrad.ir.graph import Var
from jitgrad.ir.schedule import LoopGroup

# Bytes of one vector the innermost dimension may fill: SSE, AVX2 and AVX-512 registers.
VECTOR_BYTES = (16, 32, 64)
# Rows of up to this many 64-byte vectors have each vector's lines and accumulators in the loop
# body (registers: 16 float32 accumulators at most for 4 sums); longer rows loop over them.
MAX_ROW_VECTORS = 4
# Op name -> its expression on Vecs ({0}, {1}, {2}: the operands), as each op's scalar template.
VECTOR_TEMPLATES = {
    "add": "vadd({0}, {1})",
    "sub": "vsub({0}, {1})",
    "mul": "vmul({0}, {1})",
    "div": "vdiv({0}, {1})",
    "neg": "vneg({0})",
    "abs": "vabs({0})",
    "sqrt": "vsqrt({0})",
    # numpy's maximum and minimum, as their scalar templates: NaN wins, ties give the second.
    "maximum": "vselect(vor(vgreater({0}, {1}), vnot_equal({0}, {0})), {0}, {1})",
    "minimum": "vselect(vor(vless({0}, {1}), vnot_equal({0}, {0})), {0}, {1})",
    "equal": "vequal({0}, {1})",
    "not_equal": "vnot_equal({0}, {1})",
    "less": "vless({0}, {1})",
    "less_equal": "vless_equal({0}, {1})",
    "greater": "vgreater({0}, {1})",
    "greater_equal": "vgreater_equal({0}, {1})",
    "logical_and": "vand({0}, {1})",
    "logical_or": "vor({0}, {1})",
    "logical_not": "vnot({0})",
    "select": "vselect({0}, {1}, {2})",
    "stop_gradient": "{0}",
}
# Ops whose result is a mask (a Vec of booleans) from float operands or masks.
MASK_OPS = frozenset(
    {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"}
    | {"logical_and", "logical_or", "logical_not"}
)
# The simd.py functions generated loops call, found in their lines for the module's imports.
SIMD_FUNCTIONS = frozenset(
    ["vload", "vstore", "vload_mask", "vstore_mask", "vsplat", "vzeros", "vadd", "vaddto", "load"]
    + re.findall(r"\b(v[a-z_]+)\(", " ".join(VECTOR_TEMPLATES.values()))
)
_CALLED = re.compile(r"\b([a-z_]+)\(")
BOOLEAN = np.dtype(np.bool_)


def vector_lanes(
    group: LoopGroup, consts: dict, contiguous: set, generic: bool, in_place: set
) -> int:
    """The lanes of the vectors that `group`'s innermost dimension is made of, or 0 when the
    group keeps its scalar loop (see the module docstring); `in_place`: the kernel's outputs
    that a caller may have it write into one of its inputs' arrays (Emitter.in_place). The
    caller checks that it runs serially."""
    space = group.space
    if generic or len(space) < 2 or not all(isinstance(n, int) for n in space):
        return 0
    made = {e.out for e in group.eqns}
    dtype = _float_dtype(group)
    if dtype is None:
        return 0
    row_bytes = space[-1] * dtype.itemsize
    if row_bytes in VECTOR_BYTES:
        lanes = space[-1]
    elif row_bytes % 64 == 0:
        lanes = 64 // dtype.itemsize
    else:
        return 0
    sums = any(e.op.reduction is not None for e in group.eqns)
    if row_bytes > 64 * MAX_ROW_VECTORS and not sums and not in_place.intersection(group.outputs):
        # LLVM vectorises a long row itself (and unrolls it: (64, 1024) 12.5 us, 13.3), but
        # not when an output is an input's own array (a train step's update written in place):
        # its run-time overlap check then takes the scalar loop, with a call per math.sqrt.
        return 0
    outer = tuple(range(len(space) - 1))
    for e in group.eqns:
        if e.op.reduction is not None:
            if e.op.reduction.combine != "add" or tuple(e.params["axes"]) != outer:
                return 0
            if e.out.aval.dtype != dtype or any(e.out in other.inputs for other in group.eqns):
                return 0
        elif e.op.name == "broadcast_to":
            if e.out.aval.dtype != dtype or e.inputs[0] in made:
                return 0
        elif e.op.name not in VECTOR_TEMPLATES:
            return 0
        elif e.out.aval.dtype != (BOOLEAN if e.op.name in MASK_OPS else dtype):
            return 0
        elif [x.aval.dtype for x in e.inputs] != _operand_dtypes(e.op.name, len(e.inputs), dtype):
            return 0  # e.g. booleans compared: the vector forms compare floats
        for x in e.inputs:
            if x in made:
                continue
            if _is_scalar(x, consts):
                if x.aval.dtype != dtype:  # a boolean or integer number: the scalar loop
                    return 0
            elif x.aval.dtype not in (dtype, BOOLEAN) or x not in contiguous:
                return 0
    if any(v.aval.dtype not in (dtype, BOOLEAN) for v in group.outputs if v.aval.ndim):
        return 0
    return lanes


def _operand_dtypes(name: str, arity: int, dtype: np.dtype) -> list:
    """The operand dtypes the vector form of op `name` takes in a loop of `dtype`."""
    if name == "select":
        return [BOOLEAN, dtype, dtype]
    return [BOOLEAN if name.startswith("logical") else dtype] * arity


def _float_dtype(group: LoopGroup) -> np.dtype | None:
    """The one float dtype of the group's non-boolean values, if there is one."""
    found = {
        v.aval.dtype for e in group.eqns for v in (*e.inputs, e.out) if v.aval.dtype != BOOLEAN
    }
    if len(found) != 1:
        return None
    (dtype,) = found
    return dtype if dtype in (np.dtype(np.float32), np.dtype(np.float64)) else None


def _is_scalar(v: Var, consts: dict) -> bool:
    """Whether the loop reads `v` as one number: a 0-d value or a one-element constant."""
    return v.aval.ndim == 0 or (v in consts and np.asarray(consts[v]).size == 1)


class VectorLoop:
    """The lines of one qualifying group's loops (vector_lanes), for the Emitter `em`. A row
    of several vectors has the body's lines once per vector (`x12_0`, `x12_1`, ...: the
    vectors of element x12's row), its sums an accumulator per vector."""

    def __init__(self, em, group: LoopGroup, lanes: int):
        self.em, self.group, self.lanes = em, group, lanes
        self.space = group.space
        self.row_vectors = group.space[-1] // lanes
        # a long row: a loop over its vectors, sums added into their output row in memory
        self.looped = self.row_vectors > MAX_ROW_VECTORS
        self.last = len(group.space) - 1
        self.flats: dict[Var, str] = {}  # array -> its 1-D view
        # a sharded step's gather (allgather_rows) -> the 1-D view of this rank's rows of its
        # output, the parameter (Emitter.mirrors)
        self.mirrors: dict = {}
        self.splats: dict[str, str] = {}  # scalar expression -> its Vec, made before the loops
        self.offsets: dict[str, str] = {}  # offset expression -> its name in the loop
        self.like = self._some_array()  # an array of the dtype, for vsplat and vzeros

    def emit(self) -> None:
        em, space = self.em, self.space
        vectors = 1 if self.looped else self.row_vectors
        body = [line for vector in range(vectors) for line in self._body(vector)]
        lines: list[tuple[str, int]] = []
        for v, flat in self.flats.items():
            lines.append((f"{flat} = {em.view(em.name_of(v), (int(np.prod(v.aval.shape)),))}", 1))
        for gather, mirror in self.mirrors.items():
            lines.append((f"{mirror} = {em.own_rows_view(gather)}", 1))
            em.mirrored.add(gather.out)
        lines += [(f"{name} = {self._splat(expr)}", 1) for expr, name in self.splats.items()]
        # (sum, row vector) of each register accumulator; a long row's sums have none
        sums = [
            (em.name_of(e.out), vector)
            for e in self.group.eqns
            if e.op.reduction is not None and not self.looped
            for vector in range(self.row_vectors)
        ]
        for out, vector in sums:
            acc = f"acc{out[1:]}{self._suffix(vector)}"
            lines.append((f"{acc} = vzeros({self.like}, {self.lanes})", 1))
        depth = 1
        for d, n in enumerate(space[:-1]):
            if n != 1:  # a size-1 dimension gets no loop, as in Emitter.loop
                lines.append((f"for i{d} in range({n}):", depth))
                depth += 1
        if self.looped:  # i{last}: the first element of the row's vector
            lines.append((f"for i{self.last} in range(0, {space[-1]}, {self.lanes}):", depth))
            depth += 1
        lines += [(f"{name} = {expr}", depth) for expr, name in self.offsets.items()]
        lines += [(line, depth) for line in body]
        for out, vector in sums:
            acc = f"acc{out[1:]}{self._suffix(vector)}"
            lines.append((f"vaddto({out}, {vector * self.lanes}, {acc})", 1))
        for line, depth in lines:
            em.emit(line, depth)
            em.simd.update(name for name in _CALLED.findall(line) if name in SIMD_FUNCTIONS)

    def _some_array(self) -> str:
        for v in (*self.group.inputs, *self.group.outputs):
            if v.aval.ndim and v.aval.dtype != BOOLEAN:
                if not _is_scalar(v, self.em.graph.consts):
                    return self.em.name_of(v)
        raise AssertionError("a vector loop over no array")

    def _mirror(self, gather) -> str:
        """The 1-D view of this rank's rows of `gather`'s output, made before the loops."""
        if gather not in self.mirrors:
            self.mirrors[gather] = f"mirror{self.em.name_of(gather.out)[1:]}"
        return self.mirrors[gather]

    def _suffix(self, vector: int) -> str:
        """The suffix of a row's `vector`-th vector's names: none in a row of one vector."""
        return f"_{vector}" if self.row_vectors > 1 and not self.looped else ""

    def _splat(self, expr: str) -> str:
        """A Vec with the number `expr` in every lane."""
        return f"vsplat({self.like}, {expr}, {self.lanes})"

    def _flat(self, v: Var) -> str:
        """`v` as a 1-D array: itself, or a view made before the loops."""
        if v.aval.ndim == 1:
            return self.em.name_of(v)
        if v not in self.flats:
            self.flats[v] = f"flat{self.em.name_of(v)[1:]}"
        return self.flats[v]

    def _offset(self, shape: tuple) -> str:
        """The flat offset (a name for a sum) of the element (i0, i1, ...) of an array of
        `shape`, aligned with the loop's trailing dimensions (a broadcast source's size-1
        dimensions stay at 0): of its row's first element, or in a long row's loop of the
        vector's (i{last})."""
        lead = len(self.space) - len(shape)
        terms = []
        stride = 1
        for k in range(len(shape) - 1, -1, -1):
            d = lead + k
            in_row = k == len(shape) - 1
            if (self.looped or not in_row) and shape[k] != 1 and self.space[d] != 1:
                terms.append(f"i{d} * {stride}" if stride != 1 else f"i{d}")
            stride *= shape[k]
        if len(terms) < 2:
            return terms[0] if terms else "0"
        expr = " + ".join(reversed(terms))
        if expr not in self.offsets:
            self.offsets[expr] = "at" if not self.offsets else f"at{len(self.offsets)}"
        return self.offsets[expr]

    def _body(self, vector: int) -> list[str]:
        """The loop body's lines for the row's `vector`-th vector."""
        em, lanes = self.em, self.lanes
        consts = em.graph.consts
        outputs = set(self.group.outputs)
        suffix, shift = self._suffix(vector), vector * lanes
        vectors: dict[Var, str] = {}
        lines: list[str] = []

        def at(shape: tuple) -> str:
            """Where the vector starts in a flat array of `shape`."""
            row = self._offset(shape)
            if not shift:
                return row
            return str(shift) if row == "0" else f"{row} + {shift}"

        def load(v: Var) -> str:
            if v not in vectors:
                if _is_scalar(v, consts):
                    expr = em.value(v) if v.aval.ndim == 0 else em.element(v)
                    vectors[v] = self.splats.setdefault(expr, f"splat{len(self.splats)}")
                else:
                    name = f"x{em.name_of(v)[1:]}{suffix}"
                    loader = "vload_mask" if v.aval.dtype == BOOLEAN else "vload"
                    flat, start = self._flat(v), at(v.aval.shape)
                    lines.append(f"{name} = {loader}({flat}, {start}, {lanes})")
                    vectors[v] = name
            return vectors[v]

        for e in self.group.eqns:
            name = f"x{em.name_of(e.out)[1:]}{suffix}"
            if e.op.name == "broadcast_to":
                src = e.inputs[0]
                if _is_scalar(src, consts):
                    vectors[e.out] = load(src)
                elif src.aval.shape[-1] == 1:  # the same number in every lane
                    row = self._offset(src.aval.shape)
                    lines.append(f"{name} = {self._splat(f'load({self._flat(src)}, {row})')}")
                    vectors[e.out] = name
                else:
                    lines.append(
                        f"{name} = vload({self._flat(src)}, {at(src.aval.shape)}, {lanes})"
                    )
                    vectors[e.out] = name
            elif e.op.reduction is not None:
                if self.looped:
                    row = f"i{self.last}"
                    lines.append(f"vaddto({em.name_of(e.out)}, {row}, {load(e.inputs[0])})")
                    continue
                acc = f"acc{em.name_of(e.out)[1:]}{suffix}"
                lines.append(f"{acc} = vadd({acc}, {load(e.inputs[0])})")
                continue
            else:
                expr = VECTOR_TEMPLATES[e.op.name].format(*[load(x) for x in e.inputs])
                lines.append(f"{name} = {expr}")
                vectors[e.out] = name
            if e.out in outputs:
                store = "vstore_mask" if e.out.aval.dtype == BOOLEAN else "vstore"
                lines.append(
                    f"{store}({self._flat(e.out)}, {at(e.out.aval.shape)}, {vectors[e.out]})"
                )
                for gather in em.mirrors.get(e.out, ()):  # a sharded step's new rows
                    mirror = self._mirror(gather)
                    lines.append(f"vstore({mirror}, {at(e.out.aval.shape)}, {vectors[e.out]})")
        return lines
