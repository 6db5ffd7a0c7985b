"""The helper warmer: a process beside the compile worker that compiles jitgrad's own helpers
(precompile.py: vmath, the BLAS wrappers, the convolution and linear-algebra helpers) into
Numba's cache, once per installation.

Numba compiles a helper when it types a kernel's call to it, so on an installation's first
kernel the helpers are a third of the wait (W4, cold: matmul_into 0.3 s, vexp and vlog
0.3 s, of 2.2 s). The worker tells the warmer which helpers its kernel calls, in the order it
will reach them, and the warmer compiles them from the last: the two processes meet in the
middle and the worker loads the rest from the cache (on a 2-core machine whose program is
waiting, each has a core). Otherwise the warmer compiles the remaining signatures while the
worker is idle, one at a time; both run at idle priority (subprocesses.take_only_idle_time).

Protocol: the worker writes JSON lines: `{"helpers": [[module, name], ...], "dtypes": [...]}`
when it begins a kernel (the dtypes of the kernel's arguments), `{"idle": bool}`, and
`{"deadline": t}` (a `time.monotonic()` reading, system-wide) when its program has exited:
the warmer goes on until t at most, as the worker does. Its end of the pipe closing means the
same, `exit_budget` seconds from then. The warmer never answers.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import threading
import time

from jitgrad.backend.numba import subprocesses

# The import lines of generated kernels (emit.py), which name the helpers they call.
_IMPORT = re.compile(r"^from (jitgrad\.backend\.numba\.\w+) import (.+)$", re.MULTILINE)


def kernel_helpers(source: str) -> list[list[str]]:
    """[module, name] of the jitgrad helpers the kernel `source` imports, in the order its
    code first calls them (the order in which compiling it reaches them)."""
    imports = [
        (match.group(1), name.strip(), match.end())
        for match in _IMPORT.finditer(source)
        for name in match.group(2).split(",")
    ]
    if not imports:
        return []
    body = source[max(end for _, _, end in imports) :]
    first_call = {name: body.find(f"{name}(") for _, name, _ in imports}
    called = [(module, name) for module, name, _ in imports if first_call[name] >= 0]
    return [[module, name] for module, name in sorted(called, key=lambda mn: first_call[mn[1]])]


class HelperWarmer:
    """The worker's handle on its warmer. Messages to a warmer that has gone are dropped:
    kernels then compile the helpers they call themselves, as without a warmer."""

    def __init__(self, exit_budget: float):
        # In the worker's process group (not a session of its own): whoever ends the worker's
        # group ends the warmer too.
        self.process = subprocesses.start(
            f"{__name__}:main", float(exit_budget), new_session=False, replies=False
        )
        self._lock = threading.Lock()

    def tell(self, **message) -> None:
        with self._lock:
            try:
                self.process.stdin.write(json.dumps(message).encode() + b"\n")
                self.process.stdin.flush()
            except (OSError, ValueError):
                pass


# -- the warmer process --------------------------------------------------------------------


def main(exit_budget: float) -> None:
    from jitgrad.backend.numba.precompile import (
        helper_signatures,
        helpers_ready,
        mark_helpers_ready,
    )

    subprocesses.take_only_idle_time()
    messages: queue.Queue = queue.Queue()

    def read_messages() -> None:
        for line in sys.stdin.buffer:
            messages.put(json.loads(line))
        messages.put({"deadline": time.monotonic() + exit_budget})  # the worker has gone

    threading.Thread(target=read_messages, daemon=True).start()
    subprocesses.import_blas_bindings()
    if helpers_ready():
        return
    signatures = list(helper_signatures())
    left = dict.fromkeys(range(len(signatures)))  # not compiled yet, in the warm-up's order
    urgent: list[int] = []  # what the worker's kernel calls, last call first
    idle = False  # the worker has nothing to compile: the warm-up may use a core
    ends = None
    while left:
        for message in _received(messages, wait=not (urgent or idle)):
            if "deadline" in message and ends is None:
                seconds = max(0.0, message["deadline"] - time.monotonic())
                ends = threading.Timer(seconds, os._exit, args=(3,))
                ends.daemon = True
                ends.start()
            # After the deadline message the worker only finishes its queue: idle from then.
            idle = ends is not None or message.get("idle", idle)
            if "helpers" in message:
                urgent = wanted(signatures, message["helpers"], message.get("dtypes", ()))
        urgent = [index for index in urgent if index in left]
        if not urgent and not idle:
            continue
        index = urgent.pop(0) if urgent else next(iter(left))
        dispatcher, signature = signatures[index]
        try:
            dispatcher.compile(signature)
        except Exception:
            return  # a helper that fails here fails in the kernel too, and is reported there
        del left[index]
    mark_helpers_ready()


def _received(messages: queue.Queue, wait: bool):
    """The messages that have arrived; if `wait`, at least one."""
    try:
        yield messages.get(block=wait)
        while True:
            yield messages.get_nowait()
    except queue.Empty:
        return


def wanted(signatures: list, helpers: list, dtypes) -> list[int]:
    """Indices into `signatures` (precompile.helper_signatures) of `helpers` ([module, name],
    in the order a kernel calls them) whose float types are among `dtypes`, the kernel's: the
    last called first, and without the first, which the worker compiles at once."""
    from numba import types

    floats = {name for name in dtypes if name.startswith("float")}

    def float_types(signature) -> set:
        found = set()
        for t in signature:
            t = t.dtype if isinstance(t, types.Array) else t
            if isinstance(t, types.Float):
                found.add(str(t))
        return found

    order = []
    for module, name in reversed(helpers[1:]):
        dispatcher = getattr(sys.modules.get(module), name, None)
        for index, (candidate, signature) in enumerate(signatures):
            if candidate is dispatcher and float_types(signature) <= floats:
                order.append(index)
    return order
