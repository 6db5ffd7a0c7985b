"""Row loops: consecutive fused loops that share their leading dimension, run as ONE loop over
the rows with each group's remaining dimensions inside it.

A softmax cross-entropy over (batch, classes) fuses into several loop groups, because a
reduction over the classes (the row maximum, the row sum) must finish before its result is
broadcast back over the row: over (128, 10), (128, 1) and (128,) that is six loops, each a pass
over memory and a piece of code for Numba to compile. They depend on each other only row by
row, so one `for i0 in range(128)` holding the six loop bodies computes the same values in one
pass, as a hand-written kernel does.

Merging is safe when every value that a group of the run produces and a later group of the
run reads is complete for row i0 once iteration i0 of the earlier group is done, and is read at
row i0 only: its leading dimension is the row dimension, it is not reduced over the rows, and
the reader indexes it with i0 (no broadcast along the rows). Reshapes between such groups that
keep the row dimension (e.g. (128,) -> (128, 1)) are views of contiguous buffers, made before
the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from jitgrad.ir.graph import Var
from jitgrad.ir.schedule import LoopGroup, OpStep


@dataclass(eq=False)
class RowLoop:
    """Loop groups run inside one loop over `rows`, after the `views` (reshapes) they read."""

    rows: int
    groups: list
    views: list  # OpSteps of reshapes


def plan_row_loops(steps: list, is_parallel, contiguous: set) -> list:
    """`steps` with runs of row-compatible loop groups replaced by RowLoops. `is_parallel`
    tells which groups run as parallel loops (those stay as they are); `contiguous` holds the
    values known to be C-contiguous before any step runs (inputs, constants)."""
    out, run = [], []
    for step in steps:
        if run and _extends(run, step, is_parallel, contiguous):
            run.append(step)
            continue
        out += _close(run)
        run = [step] if _starts(step, is_parallel) else []
        if not run:
            out.append(step)
    return out + _close(run)


def _starts(step, is_parallel) -> bool:
    return isinstance(step, LoopGroup) and len(step.space) >= 1 and not is_parallel(step)


def _close(run: list) -> list:
    """The run as a RowLoop if it merges two groups or more, then the views that trail it."""
    end = len(run)
    while end and not isinstance(run[end - 1], LoopGroup):
        end -= 1
    body, tail = run[:end], run[end:]
    if sum(isinstance(s, LoopGroup) for s in body) < 2:
        return run
    return [
        RowLoop(
            body[0].space[0],
            [s for s in body if isinstance(s, LoopGroup)],
            [s for s in body if not isinstance(s, LoopGroup)],
        )
    ] + tail


def _extends(run: list, step, is_parallel, contiguous: set) -> bool:
    rows = run[0].space[0]
    produced = _row_values(run, rows)
    if isinstance(step, OpStep):
        e = step.eqn
        x = e.inputs[0] if e.inputs else None
        return (
            e.op.name == "reshape"
            and x.aval.ndim >= 1
            and e.out.aval.ndim >= 1
            and x.aval.shape[0] == rows
            and e.out.aval.shape[0] == rows
            and (x in produced or x in contiguous)
        )
    if not _starts(step, is_parallel) or step.space[0] != rows:
        return False
    made_here = {e.out for e in step.eqns}
    ndim = len(step.space)
    for e in step.eqns:
        for x in e.inputs:
            if x in made_here or not _made_by(run, x):
                continue  # computed in this group, or before the run: complete already
            if x not in produced:
                return False  # reduced over the rows, or not indexed by row
            if e.op.name == "broadcast_to" and x.aval.ndim != ndim:
                return False  # broadcast along the rows: every row of x is read
    return True


def _made_by(run: list, v: Var) -> bool:
    for step in run:
        if isinstance(step, LoopGroup):
            if any(e.out is v for e in step.eqns):
                return True
        elif step.eqn.out is v:
            return True
    return False


def _row_values(run: list, rows: int) -> set:
    """Values made in `run` whose row i0 is complete after iteration i0 of their group."""
    done = set()
    for step in run:
        if isinstance(step, LoopGroup):
            for e in step.eqns:
                reduced_rows = e.op.reduction is not None and 0 in e.params["axes"]
                if e.out.aval.ndim and e.out.aval.shape[0] == rows and not reduced_rows:
                    done.add(e.out)
        elif step.eqn.inputs[0] in done or not _made_by(run, step.eqn.inputs[0]):
            done.add(step.eqn.out)
    return done
