"""Which kernel a fused graph gets: one specialised to its input shapes, or a shape-polymorphic
one shared by every shape (and constant values) of the same structure.

Numba never gives a compiled kernel's machine code back (measured here: ~0.9 MiB per small
kernel, kept after its dispatcher is deleted and collected), so a function called with many
shapes must not compile a kernel per shape. The first signature of a structure gets a kernel
with its sizes and constants written in as numbers (the fastest code); from the second one on,
every signature of that structure shares one kernel that reads its sizes from the arrays and
takes its scalar constants as parameters (`emit.Sizes`), as torch.compile does after a second
shape ("automatic dynamic shapes"). The structure is the polymorphic kernel's source itself:
two signatures share a kernel exactly when they generate the same polymorphic source, which is
what makes the sharing safe (see `emit.Sizes`).
"""

from __future__ import annotations

import collections
import hashlib
import threading

from jitgrad.backend.numba.emit import KernelSource, emit_kernel
from jitgrad.ir.schedule import Schedule

# Polymorphic source digest -> digest of the first specialised source seen for it. Bounded:
# forgetting a structure only means its next signature gets a specialised kernel again.
MAX_STRUCTURES = 4096
_first_specialised: collections.OrderedDict = collections.OrderedDict()
_lock = threading.Lock()


def kernel_source(schedule: Schedule, name: str, fastmath: bool) -> KernelSource:
    """The kernel for `schedule`: specialised for the first signature of its structure (or the
    same signature again), polymorphic for any other."""
    specialised = _with_signature(emit_kernel(schedule, name, fastmath), schedule, False)
    polymorphic = _with_signature(
        emit_kernel(schedule, name, fastmath, generic=True), schedule, True
    )
    structure, signature = _digest(polymorphic.source), _digest(specialised.source)
    with _lock:
        first = _first_specialised.setdefault(structure, signature)
        _first_specialised.move_to_end(structure)
        while len(_first_specialised) > MAX_STRUCTURES:
            _first_specialised.popitem(last=False)
    return specialised if first == signature else polymorphic


def _with_signature(source: KernelSource, schedule: Schedule, polymorphic: bool):
    """Head the module with the input types it was generated for (one module per signature:
    a module's dispatcher stops compiling after its first call)."""
    avals = [v.aval for v in schedule.graph.inputs]
    if polymorphic:
        spelled = ", ".join(
            a.short().split("[")[0] + "[" + ",".join("?" * a.ndim) + "]" for a in avals
        )
    else:
        spelled = ", ".join(a.short() for a in avals)
    source.source = f"# signature: ({spelled})\n" + source.source
    return source


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
