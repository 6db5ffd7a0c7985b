"""Numba code for the `shards` primitive (jitgrad/control/shards.py): a prange over shards.

    # shards: 64 examples as 2 shards of 32 (passes/shard.py)
    write_addresses(v14_addresses, (v6, v0, v4, ..., v14_workspace, v14_p0))
    shards3(v14_addresses.ctypes.data)
    (v14_part1_0, v14_part1_1, ...) = shard_arrays(v14_addresses.ctypes.data, 0, "...")
    for v14_o1_i in range(200):
        v14_o1_flat[v14_o1_i] = v14_part1_0[v14_o1_i] + v14_part1_1[v14_o1_i]

- The body (`shard0`) is a module-level function emitted by control.sub_function, compiled once
  and called through a symbol (symbols.local_symbol): linked in, its code would be generated
  again in each function above it.
- The shard step (`shard_step2(s, table)`) rebuilds shard s's arrays from a table of addresses
  (runtime.shard_arrays: its slice of each batch input, the shared parameters, its scratch
  buffers in the workspace), calls the body, and stores the results not already in place.
- The parallel function (`shards3(table)`) is a prange calling the step: its loop sees one
  integer, whatever the number of arrays (Numba's parfor pass costs seconds for a loop over
  60 array arguments).
- The kernel writes the table, calls the parallel function, and adds the shards' partial sums
  up in shard order (the same order at every call: results are reproducible for a thread
  count); per-example outputs are written in place, each shard in its rows.

The body holds no op that can raise (the sharding pass keeps those outside the shards): an
exception inside Numba's parallel region would reach the caller as a SystemError.
"""

from __future__ import annotations

import numpy as np

from jitgrad.backend.numba import control, helper_names
from jitgrad.ir.graph import value_numbers

EMITTERS = {}


def emits(op_name: str):
    def register(fn):
        EMITTERS[op_name] = fn
        return fn

    return register


@emits("shards")
def op_shards(self, e, *inputs):
    p = e.params
    body, n, in_axes, out_kinds = p["body"], p["shards"], p["in_axes"], p["out_kinds"]
    out = self.name_of(e.out)
    size = next(v.aval.shape[0] for v, axis in zip(body.inputs, in_axes) if axis == 0)
    body_name, extra = control.sub_function(
        self, body, "shard", f"One shard of {out}: {size} of the batch's examples.", shards=n
    )
    # A body output held in a buffer of its own stays there: a per-example output in its rows
    # of the whole output, a partial sum in the workspace, where each shard's part has cache
    # lines of its own (a filter gradient accumulates there: shards sharing a line stall).
    numbers = value_numbers(body)
    in_place = {}
    for j, v in enumerate(body.outputs):
        name = f"{body_name}_v{numbers[v]}"
        if v.aval.ndim and name in extra and name not in in_place.values():
            in_place[j] = name
    concat = {in_place[j] for j, kind in enumerate(out_kinds) if kind == "concat" and j in in_place}
    table = _Table(self, out, n)
    for k, (v, axis) in enumerate(zip(inputs, in_axes)):
        name = control.argument(self, v, f"{out}_a{k}")
        if v.aval.ndim == 0:
            table.scalars.append(name)
            continue
        shape = body.inputs[k].aval.shape
        table.add(f"input{k}", name, v.aval.dtype, shape, axis == 0)
    for name in extra:
        k = self.param_names.index(name)
        spec = self.params[k]
        if spec[0] == "buffer" and name in concat:
            table.add(name, name, spec[2], spec[1][1:], True)
        elif spec[0] == "buffer":  # each shard's own scratch, in the workspace
            del self.params[k], self.param_names[k]
            table.add_scratch(name, spec[2], spec[1][1:])
        elif spec[0] == "const":
            table.add(name, name, spec[1].dtype, spec[1].shape, False)
        else:  # a scalar constant of a shape-polymorphic kernel
            table.scalars.append(name)
    stored = {}  # output j -> the stacked buffer the step copies it into
    for j, v in enumerate(body.outputs):
        if j not in in_place:  # a scalar, or a value not in a buffer of its own
            a = v.aval
            stored[j] = _buffer(self, f"{out}_p{j}", (n, *a.shape), a.dtype)
            table.add(stored[j], stored[j], a.dtype, a.shape or (1,), True)
    name = _parallel_function(self, out, body_name, body, extra, table, stored)
    self.parallel = True
    self.emit(f"# shards: {n * size} examples as {n} shards of {size} (passes/shard.py)")
    table.write()
    # The BLAS on one thread meanwhile: each shard's products run on its own core.
    self.emit(f"{out}_blas_threads = set_blas_threads(np.int32(1))")
    self.emit(f"{name}({', '.join([f'{table.name}.ctypes.data', *table.scalars])})")
    self.emit(f"set_blas_threads({out}_blas_threads)")
    finals, sums = [], []
    for j, (v, kind) in enumerate(zip(body.outputs, out_kinds)):
        a = v.aval
        if kind == "concat":
            self.runtime.add("view")
            rows = in_place.get(j) or stored[j]
            finals.append(f"view({rows}, {_shape((n * a.shape[0], *a.shape[1:]))})")
        elif a.ndim:
            finals.append(_buffer(self, f"{out}_o{j}", a.shape, a.dtype))
            sums.append((j, finals[-1], in_place.get(j) or stored[j]))
        else:
            finals.append(" + ".join(f"{stored[j]}[{s}]" for s in range(n)))
    _add_up(self, table, out, sums, body)
    self.emit(f"{out} = ({', '.join(finals)},)")


class _Table:
    """The table of addresses a shard reads its arrays from (shards.py's module docstring),
    and the workspace holding every shard's scratch buffers: one kernel parameter instead of
    one per buffer (each costs the caller a pooled buffer per call, and Numba's wrapper ~5 ms
    of compile). The workspace is laid out shard by shard, and each buffer starts a cache
    line, so that two shards never write the same line."""

    ALIGN = 64  # bytes: a cache line

    def __init__(self, emitter, out: str, shards: int):
        self.emitter = emitter
        self.shards = shards
        self.name = f"{out}_addresses"
        self.workspace = f"{out}_workspace"
        self.arrays: list[str] = []  # the kernel's arrays whose addresses the table holds
        # key -> (dtype, a shard's shape, table entry, offset, per shard: True for a batch
        # slice, False for the whole array every shard reads, None for a scratch buffer)
        self.items: dict[str, tuple] = {}
        self.scalars: list[str] = []
        self.region = 0  # bytes of one shard's scratch buffers

    def entry(self, array: str) -> int:
        if array not in self.arrays:
            self.arrays.append(array)
        return self.arrays.index(array)

    def add(self, key: str, array: str, dtype, shape: tuple, sliced: bool) -> None:
        self.items[key] = (np.dtype(dtype), tuple(shape), self.entry(array), 0, sliced)

    def add_scratch(self, key: str, dtype, shape: tuple) -> None:
        entry = self.entry(self.workspace)
        self.items[key] = (np.dtype(dtype), tuple(shape), entry, self.region, None)
        self.region += -(-_bytes(shape, dtype) // self.ALIGN) * self.ALIGN

    def stride(self, item: tuple) -> int:
        """Bytes from shard s's part of an array to shard s + 1's."""
        dtype, shape, _, _, sliced = item
        if sliced is None:
            return self.region + self.ALIGN
        return _bytes(shape, dtype) if sliced else 0

    def layout(self, items: list) -> str:
        """shard_arrays' literal layout of `items`, one per line of the generated code."""
        return (
            "\n".join(
                f'"{dtype.name}:{",".join(map(str, shape))}:{entry}:{offset}:{self.stride(item)};"'
                for item in items
                for dtype, shape, entry, offset, _ in [item]
            ).rstrip(';"')
            + '"'
        )

    def write(self) -> None:
        """The kernel's lines that write the table (and the parameters they read)."""
        e = self.emitter
        _buffer(e, self.name, (len(self.arrays),), np.dtype(np.int64))
        if self.region:
            size = self.shards * (self.region + self.ALIGN)
            _buffer(e, self.workspace, (size,), np.dtype(np.uint8))
        e.runtime.add("write_addresses")
        arrays = ", ".join(self.arrays) + ("," if len(self.arrays) == 1 else "")
        e.emit(f"write_addresses({self.name}, ({arrays}))")


def _bytes(shape: tuple, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _shard_arrays(self, names: list, table_address: str, shard: str, layout: str, depth: int):
    """`names` = shard_arrays(...): the lines that rebuild arrays from the table."""
    self.runtime.add("shard_arrays")
    targets = ", ".join(names) + ("," if len(names) == 1 else "")
    indent = "    " * (depth + 1)
    self.emit(f"({targets}) = shard_arrays(", depth)
    self.emit(f"{table_address}, {shard},", depth + 1)
    for line in layout.split("\n"):
        self.lines.append(indent + line)
    self.emit(")", depth)


def _parallel_function(self, out, body_name, body, extra, table, stored) -> str:
    """Add the function running the shards (and what it calls); return its name. A prange
    loop calling the shard step (_shard_step) with the table's address and an int64 shard
    number: the same types in the function's typing and in its parfor (the step compiles
    once, not twice). The loop holds nothing else: Numba's parfor pass costs seconds for a
    loop over 60 arrays, and over a minute for one that unpacks 47 of them (W10)."""
    call = _through_symbol(self, body_name, body, extra, table)
    step = _shard_step(self, out, call, body, extra, table, stored)
    name = f"shards{len(self.functions)}"
    params = ", ".join(["table", *table.scalars])
    flags = f"nogil=True, error_model='numpy', fastmath={self.fastmath}"
    self.functions.append(
        f"@numba.njit(parallel=True, {flags}, {helper_names.KERNEL_ONLY})\n"
        f"def {name}({params}):\n"
        f'    """{out}\'s {table.shards} shards at once."""\n'
        f"    for s in numba.prange({table.shards}):\n"
        f"        {step}(np.int64(s), {params})\n"
    )
    return name


def _through_symbol(self, body_name: str, body, extra: list, table) -> str:
    """The module-level line binding the body to a symbol (symbols.local_symbol) with the
    types the step passes: C-contiguous arrays from the table, and scalars."""
    types = []
    scalars = iter(table.scalars)
    for k, v in enumerate(body.inputs):
        key = f"input{k}" if v.aval.ndim else next(scalars)
        types.append(_numba_type(table.items.get(key), v.aval.dtype))
    for name in extra:
        if name in table.items:
            types.append(_numba_type(table.items[name], table.items[name][0]))
        else:  # a scalar constant of a shape-polymorphic kernel
            next(scalars)
            types.append(_numba_type(None, self.params[self.param_names.index(name)][1].dtype))
    call = f"{body_name}_call"
    self.local_symbols = True
    listed = ",\n    ".join(types)
    self.functions.append(
        f"# {body_name} is compiled once and called through a symbol (symbols.local_symbol)\n"
        f"{call} = local_symbol({body_name}, (\n    {listed},\n))\n"
    )
    return call


def _numba_type(item, dtype) -> str:
    """The Numba type spelled in the module: a table item's array, else a scalar."""
    name = f"types.{np.dtype(dtype).name}" if np.dtype(dtype) != np.bool_ else "types.boolean"
    if item is None:
        return name
    return f"types.Array({name}, {len(item[1])}, 'C')"


def _shard_step(self, out, call, body, extra, table, stored) -> str:
    """A serial function doing shard `s`'s work: its part of each array read from the table,
    the body called (`call`, its symbol), the results not already in place stored in its rows."""
    kernel_lines, self.lines = self.lines, []
    keys = list(table.items)
    local = {key: f"s{k}" for k, key in enumerate(keys)}
    layout = table.layout([table.items[k] for k in keys])
    _shard_arrays(self, list(local.values()), "table", "s", layout, 1)
    # The body takes its inputs, then `extra` (constants and buffers), in order.
    scalars = iter(table.scalars)
    args = [
        next(scalars) if v.aval.ndim == 0 else local[f"input{k}"] for k, v in enumerate(body.inputs)
    ]
    args += [local[name] if name in local else next(scalars) for name in extra]
    self.emit(f"r = {call}({', '.join(args)})")
    for j, rows in stored.items():
        aval = body.outputs[j].aval
        if aval.ndim:
            control.copy(self, f"{local[rows]}[", f"r[{j}]", aval, f"r{j}", 1)
        else:
            self.emit(f"{local[rows]}[0] = r[{j}]")
    lines, self.lines = self.lines, kernel_lines
    step = f"shard_step{len(self.functions)}"
    flags = f"nogil=True, error_model='numpy', fastmath={self.fastmath}"
    self.functions.append(
        f"@numba.njit({flags}, {helper_names.KERNEL_ONLY})\n"
        f"def {step}({', '.join(['s', 'table', *table.scalars])}):\n"
        f'    """Shard s of {out}: its part of each array, read from the table."""\n'
        + "\n".join(lines)
        + "\n"
    )
    return step


def _add_up(self, table, out: str, sums: list, body) -> None:
    """Each (j, total, rows) of `sums`: `total` = the sum of the shards' parts of `rows` (a
    stacked buffer or a workspace buffer), in shard order."""
    if not sums:
        return
    names, items = [], []
    for j, _, rows in sums:
        dtype, shape, entry, offset, sliced = table.items[rows]
        count = int(np.prod(shape, dtype=np.int64))
        stride = table.stride(table.items[rows])
        for s in range(table.shards):
            names.append(f"{out}_part{j}_{s}")
            items.append((dtype, (count,), entry, offset + s * stride, False))
    _shard_arrays(self, names, f"{table.name}.ctypes.data", "0", table.layout(items), 1)
    self.runtime.add("view")
    for j, total, _ in sums:
        count = int(np.prod(body.outputs[j].aval.shape, dtype=np.int64))
        flat, i = f"{total}_flat", f"{total}_i"
        self.emit(f"{flat} = view({total}, ({count},))")
        self.emit(f"for {i} in range({count}):")
        parts = " + ".join(f"{out}_part{j}_{s}[{i}]" for s in range(table.shards))
        self.emit(f"{flat}[{i}] = {parts}", 2)


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _buffer(self, name: str, shape: tuple, dtype) -> str:
    """A caller-allocated buffer parameter of the kernel, as the kernel's other outputs."""
    self.params.append(("buffer", tuple(shape), dtype))
    self.param_names.append(name)
    return name
