"""Numba code for the linear-algebra primitives (jitgrad/ops/decompositions.py).

Each op is a loop over its batch (the leading axes, flattened) calling one runtime helper per
matrix (runtime.cholesky_into, ...): np.linalg in nopython mode for the factorizations, and a
substitution for triangular solves (Numba has no triangular solver). A helper writes into the
op's output, a buffer the kernel's caller allocates, one matrix (or one packed row) at a time.
Helpers are compiled once per installation (cache=True), not once per kernel: Numba takes
seconds to compile each np.linalg function.
"""

from __future__ import annotations

import math

# Op name -> (its runtime helper, the op's params that the helper takes after the output).
HELPERS = {
    "cholesky": ("cholesky_into", ()),
    "triangular_solve": ("triangular_solve_into", ("lower", "adjoint")),
    "solve": ("solve_into", ("adjoint",)),
    "slogdet": ("slogdet_into", ()),
    "qr": ("qr_into", ("full_matrices",)),
    "eigh": ("eigh_into", ()),
    "svd": ("svd_into", ()),
    "lstsq": ("lstsq_into", ("rcond",)),
}


def _param(value) -> str:
    """A param typed int64 or float64: a bare literal would be typed as that literal by Numba,
    which would compile the helper once per value instead of once per installation."""
    if isinstance(value, float):
        return f"np.float64({value!r})"
    return f"np.int64({int(value)})"


def batched_call(self, e, helper: str, operands, extra=()) -> None:
    """`helper(operand matrices..., output row, *extra)` for each matrix of the batch."""
    self.call_through_symbol(helper, e.out.aval.dtype)
    self.add_buffer(e.out)
    out = self.name_of(e.out)
    batch = operands[0].aval.shape[:-2]
    core = e.out.aval.shape[len(batch) :]
    if not batch:
        names = [self.contiguous_expr(x) for x in operands]
        self.emit(f"{helper}({', '.join(names + [out, *extra])})")
        return
    count = self.size(math.prod(batch))
    names = []
    for k, x in enumerate(operands):
        name = f"{out}_in{k}"
        m, n = (self.size(d) for d in x.aval.shape[-2:])
        self.emit(f"{name} = {self.view(self.contiguous_expr(x), (count, m, n))}")
        names.append(f"{name}[i0]")
    self.emit(f"{out}_rows = {self.view(out, (count, *core))}")
    self.emit(f"for i0 in range({count}):")
    self.emit(f"{helper}({', '.join(names + [f'{out}_rows[i0]', *extra])})", 2)


def emit_linalg(self, e, *operands) -> None:
    """A linear-algebra op (`self` is the kernel's Emitter), by its helper in HELPERS."""
    helper, params = HELPERS[e.op.name]
    batched_call(self, e, helper, operands, [_param(e.params[k]) for k in params])


# Op name -> its emitter, called as emitter(self, eqn, *eqn.inputs); emit.py registers them.
EMITTERS = dict.fromkeys(HELPERS, emit_linalg)
