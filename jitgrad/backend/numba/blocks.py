"""Scalar blocks: straight-line scalar code that jitgrad compiles to LLVM itself.

Numba spends about a millisecond of typing and lowering on every operation of a kernel, in
Python, whatever the operation (measured in perf/gaps.md): an unrolled ODE of a few thousand
scalar operations takes seconds before LLVM sees it. A fused group over no dimensions (0-d
values: a model written with scalars) is straight-line code made of a few kinds of statement,
so the emitter writes it as a module-level function decorated with `scalar_block`, and the
kernel calls it. The function stays plain, readable Python (it runs as it is without Numba);
`scalar_block` makes it a Numba intrinsic that translates its statements to LLVM instructions
directly, at a few microseconds each:

- float `+ - * /` on two values of one float type and float negation: the instructions
  Numba's own lowering emits for them (`fadd`, ..., `fsub -0.0, x`), so results are bitwise
  the same as Numba's;
- typed constants (`np.float32(0.5)`) and reads of one array element (`v0[3]`, `v2[1, 0]`);
- every other statement (comparisons, selects, casts, integer arithmetic, math and vmath
  calls): compiled by Numba as a tiny function of its operands, once per process for each
  distinct expression and operand types (`x12 = math.sin(x11)` and `x30 = math.sin(x29)`
  share one), and called; LLVM inlines it.

A fused group over no dimensions gets an LLVM function of its own (`own_function`), which
LLVM optimises apart from the kernel's loops; a loop body's block stays inline in its loop, so
that LLVM still vectorises the loop (see `_Plan.emit`). The emitter makes blocks of large
bodies only (emit.MIN_BLOCK, emit.MIN_LOOP_BLOCK): a block costs a call in Numba's typing.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import textwrap
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from jitgrad.ir.gcpause import gc_paused

_FLOAT_OPS = {ast.Add: "fadd", ast.Sub: "fsub", ast.Mult: "fmul", ast.Div: "fdiv"}
_TYPED_CONSTANTS = {
    name: getattr(types, name)
    for name in ("float32", "float64", "int8", "int16", "int32", "int64")
    + ("uint8", "uint16", "uint32", "uint64")
}

# (normalised expression, operand types, fastmath) -> Numba dispatcher compiled for it.
_OPERATIONS: dict = {}
_OPERATIONS_LOCK = threading.Lock()


def scalar_block(fastmath: bool = False, own_function: bool = False):
    """Decorator: the function's straight-line body compiled by jitgrad (see the module
    docstring). The decorated name is a Numba intrinsic; `.py_func` is the Python function."""

    def wrap(fn):
        block = _Block(fn, fastmath, own_function)
        params = ", ".join(block.params)
        namespace = {"block": block}
        exec(
            f"def {fn.__name__}(typingctx, {params}):\n    return block.typer(({params},))\n",
            namespace,
        )
        compiled = intrinsic(namespace[fn.__name__])
        compiled.py_func = fn
        return compiled

    return wrap


class _Block:
    """One scalar block: its parsed statements and, per argument types, its typed plan."""

    def __init__(self, fn, fastmath: bool, own_function: bool):
        self.name = fn.__name__
        self.fastmath = fastmath
        self.own_function = own_function
        self.globals = fn.__globals__
        self.params = list(inspect.signature(fn).parameters)
        self.fn = fn
        self.parsed = False
        self.lock = threading.Lock()
        self.plans: dict = {}

    def parse(self) -> None:
        """Read the statements (at the first typing: a kernel loaded from Numba's disk cache
        never needs them)."""
        tree = ast.parse(textwrap.dedent(_function_source(self.fn)))
        fdef = tree.body[0]
        body = [s for s in fdef.body if not _is_docstring(s)]
        *assigns, ret = body
        if not isinstance(ret, ast.Return):
            raise TypeError(f"scalar block {self.name}: the last statement must be a return")
        self.assigns = []
        for s in assigns:
            if not (
                isinstance(s, ast.Assign)
                and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name)
            ):
                raise TypeError(f"scalar block {self.name}: {ast.unparse(s)} is not `name = expr`")
            self.assigns.append((s.targets[0].id, s.value))
        value = ret.value
        items = value.elts if isinstance(value, ast.Tuple) else [value]
        if not all(isinstance(n, ast.Name) for n in items):
            raise TypeError(f"scalar block {self.name}: it must return names")
        self.returns = [n.id for n in items]
        self.parsed = True

    def typer(self, argtypes: tuple):
        """The intrinsic's typing: the signature and the code generator for `argtypes`."""
        with self.lock, gc_paused():  # keeps what it builds (see gcpause)
            if not self.parsed:
                self.parse()
            plan = self.plans.get(argtypes)
            if plan is None:
                plan = self.plans[argtypes] = _Plan(self, argtypes)
        rtypes = [plan.types[n] for n in self.returns]
        sig = types.Tuple(rtypes)(*argtypes)

        def codegen(context, builder, signature, args):
            with gc_paused():
                return plan.emit(context, builder, signature, args)

        return sig, codegen


def _function_source(fn) -> str:
    """The source of module-level function `fn`: its decorators, `def` line and the indented
    lines after it (inspect.getsource tokenizes every line: seconds for 50,000 statements)."""
    lines = linecache.getlines(fn.__code__.co_filename)
    if not lines:
        return inspect.getsource(fn)
    start = fn.__code__.co_firstlineno - 1  # its first decorator's line, or its `def`
    end = start
    while end < len(lines) and not lines[end].lstrip().startswith("def "):
        end += 1
    end += 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    return "".join(lines[start:end])


def _is_docstring(s) -> bool:
    return isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)


class _Plan:
    """A block typed for given argument types: each statement's type and how it is built."""

    def __init__(self, block: _Block, argtypes: tuple):
        self.block = block
        self.argtypes = argtypes
        self.types = dict(zip(block.params, argtypes))
        self.steps = []  # (target, build(cg) -> llvm value)
        for target, expr in block.assigns:
            ty, build = self.direct(expr)
            if build is None:
                ty, build = self.operation(expr)
            self.types[target] = ty
            self.steps.append((target, build))

    # -- statements translated here --------------------------------------------------------
    def direct(self, node):
        """(type, build) for an expression translated to LLVM here, or (None, None)."""
        if isinstance(node, ast.Name) and node.id in self.types:
            name = node.id
            return self.types[name], lambda cg: cg.values[name]
        if isinstance(node, ast.Constant) and type(node.value) is float:
            value = node.value
            return types.float64, lambda cg: ir.Constant(ir.DoubleType(), value)
        if isinstance(node, ast.Call):
            return self.typed_constant(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _FLOAT_OPS:
            lt, lb = self.direct(node.left)
            rt, rb = self.direct(node.right)
            if lb and rb and lt == rt and isinstance(lt, types.Float):
                op = _FLOAT_OPS[type(node.op)]
                return lt, lambda cg: getattr(cg.builder, op)(lb(cg), rb(cg))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            t, b = self.direct(node.operand)
            if b and isinstance(t, types.Float):
                # As Numba (mathimpl.negate_real): -0.0 - x keeps signed zeros right.
                return t, lambda cg: cg.builder.fsub(
                    ir.Constant(cg.context.get_value_type(t), -0.0), b(cg)
                )
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and isinstance(self.types.get(node.value.id), types.Array)
        ):
            array = node.value.id
            aty = self.types[array]
            index = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            parts = []  # non-negative integer constants, or integer values (sizes)
            for item in index:
                if isinstance(item, ast.Constant) and type(item.value) is int and item.value >= 0:
                    parts.append(item.value)
                elif isinstance(item, ast.Name) and isinstance(
                    self.types.get(item.id), types.Integer
                ):
                    parts.append((item.id, self.types[item.id]))
                else:
                    return None, None
            if len(parts) != aty.ndim:
                return None, None
            return aty.dtype, lambda cg: cg.load(array, aty, parts)
        return None, None

    def typed_constant(self, node):
        """(type, build) of `np.float32(0.5)` and the like, or (None, None)."""
        if (
            isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and self.block.globals.get(node.func.value.id) is np
            and node.func.attr in _TYPED_CONSTANTS
            and len(node.args) == 1
            and not node.keywords
        ):
            value = _constant(node.args[0])
            if value is not None:
                ty = _TYPED_CONSTANTS[node.func.attr]
                value = getattr(np, node.func.attr)(value)
                value = value.item() if ty in types.real_domain else int(value)
                return ty, lambda cg: ir.Constant(cg.context.get_value_type(ty), value)
        return None, None

    # -- other statements: compiled by Numba -----------------------------------------------
    def operation(self, expr):
        """(type, build) for a statement compiled by Numba as a function of its operands: the
        values it reads and its typed constants, so that statements differing only in those
        share one compiled function."""
        operands: list = []  # names of values, or (type, build) of typed constants

        class Lift(ast.NodeTransformer):
            def visit_Name(inner, node):  # noqa: N805 - the transformer's self is `inner`
                if node.id not in self.types:
                    return node
                if node.id not in operands:
                    operands.append(node.id)
                return ast.Name(f"a{operands.index(node.id)}", ast.Load())

            def visit_Call(inner, node):  # noqa: N805
                ty, build = self.typed_constant(node)
                if build is None:
                    return inner.generic_visit(node)
                operands.append((ty, build))
                return ast.Name(f"a{len(operands) - 1}", ast.Load())

        lifted = Lift().visit(_copy(expr))
        text = ast.unparse(lifted)
        argtypes = tuple(self.types[o] if isinstance(o, str) else o[0] for o in operands)
        dispatcher = _operation(text, len(operands), argtypes, self.block, lifted)
        cres = dispatcher.overloads[argtypes]

        def build(cg):
            cg.context.add_linking_libs([cres.library])
            args = [cg.values[o] if isinstance(o, str) else o[1](cg) for o in operands]
            # Elementwise templates do not raise (error_model='numpy'): the status is always
            # ok, and a block in a function of its own has no Numba status to propagate.
            _, value = cg.context.call_internal_no_propagate(
                cg.builder, cres.fndesc, cres.signature, args
            )
            return value

        return cres.signature.return_type, build

    # -- code generation -------------------------------------------------------------------
    def emit(self, context, builder, signature, args):
        """The block's instructions: in the caller's code (a loop body, where LLVM must see
        them to vectorise the loop), or in an LLVM function of their own that the caller
        calls (`own_function`: a kernel's straight-line scalar code, which LLVM then
        optimises apart from the kernel's loops)."""
        if not self.block.own_function:
            return self.build(context, builder, signature.return_type, args)
        rtype = context.get_value_type(signature.return_type)
        fnty = ir.FunctionType(rtype, [a.type for a in args])
        name = builder.module.get_unique_name(f"jitgrad.{self.block.name}")
        fn = ir.Function(builder.module, fnty, name=name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")  # LLVM would inline a function called once
        body = ir.IRBuilder(fn.append_basic_block("entry"))
        body.ret(self.build(context, body, signature.return_type, list(fn.args)))
        return builder.call(fn, args)

    def build(self, context, builder, rtype, args):
        cg = _Codegen(context, builder, dict(zip(self.block.params, args)))
        for target, build in self.steps:
            cg.values[target] = build(cg)
        return context.make_tuple(builder, rtype, [cg.values[n] for n in self.block.returns])


class _Codegen:
    """Where a plan's instructions go: the builder, and the LLVM value of each name."""

    def __init__(self, context, builder, values):
        self.context = context
        self.builder = builder
        self.values = values
        self.arrays = {}

    def load(self, name: str, aty, parts):
        """The element of array `name` at `parts` (constants, or (name, integer type)); the
        indices are in bounds and non-negative (the emitter writes them from the shapes)."""
        array = self.arrays.get(name)
        if array is None:
            array = self.arrays[name] = self.context.make_array(aty)(
                self.context, self.builder, self.values[name]
            )
        index = [
            self.context.get_constant(types.intp, p)
            if isinstance(p, int)
            else self.context.cast(self.builder, self.values[p[0]], p[1], types.intp)
            for p in parts
        ]
        ptr = cgutils.get_item_pointer(
            self.context, self.builder, aty, array, index, wraparound=False
        )
        return self.context.unpack_value(self.builder, aty.dtype, ptr)


def _copy(node):
    return ast.parse(ast.unparse(node), mode="eval").body


def _constant(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        return -node.operand.value
    return None


def _operation(text: str, arity: int, argtypes: tuple, block: _Block, tree):
    """The dispatcher computing `text` from a0, a1, ..., compiled for `argtypes`, shared by
    every block whose module gives the names `text` reads the same objects."""
    names = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})
    objects = tuple(id(block.globals.get(n)) for n in names)
    key = (text, argtypes, block.fastmath, objects)
    with _OPERATIONS_LOCK:
        dispatcher = _OPERATIONS.get(key)
        if dispatcher is None:
            params = ", ".join(f"a{k}" for k in range(arity))
            namespace = dict(block.globals)
            exec(f"def operation({params}):\n    return {text}\n", namespace)
            dispatcher = numba.njit(nogil=True, error_model="numpy", fastmath=block.fastmath)(
                namespace["operation"]
            )
            dispatcher.compile(argtypes)
            _OPERATIONS[key] = dispatcher
    return dispatcher
