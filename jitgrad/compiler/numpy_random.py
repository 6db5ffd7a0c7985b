"""A warning when a jitted function's trace draws from numpy's random generators.

`np.random.randn(3)` inside a jitted function runs once, while tracing: the kernel holds the
numbers as constants and every call reuses them (black-box SVI then trains on one noise
sample forever). While a jitted function traces, numpy.random's module functions (they draw
from numpy's global RandomState) and `default_rng` are replaced by wrappers that warn with
the user's line when called from the tracing thread, then draw as usual; the originals come
back when the trace ends, also when it raises. Draws through a name imported before
(`from numpy.random import randn`) bypass the wrappers, so the global state is compared before
and after the trace as well, and a change that no wrapper reported warns without a line (a
draw by another thread meanwhile would be reported too: numpy's global state is shared).
A `numpy.random.Generator` made before the trace cannot be watched (its methods belong to a
compiled type); one made by `default_rng` inside the trace is reported when it is made.

jitgrad's own draws are not reported: its layers' initializers (jitgrad.nn) draw the initial
values of Variables, once, when a model is built by its first call, traced or not; those
numbers are meant to be drawn once.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import warnings

import numpy as np

from jitgrad.core.dispatch import current_trace
from jitgrad.core.errors import user_frame

_ADVICE = (
    "it runs once, at trace time, and the compiled function reuses the same numbers at every "
    "call. Draw with jitgrad.random instead (a Generator, the global one, or keys passed in)"
)
# Module functions of numpy.random that do not draw.
_NOT_DRAWS = frozenset({"seed", "get_state", "set_state", "get_bit_generator", "set_bit_generator"})

_lock = threading.Lock()
_active = 0  # traces under way (in any thread) with the wrappers installed
_originals: dict[str, object] = {}
_reported = threading.local()  # per thread: names reported during the current trace


def _draw_names() -> list[str]:
    """numpy.random's module functions that draw from its global RandomState, and
    default_rng."""
    global_state = np.random.mtrand._rand
    names = [
        name
        for name in np.random.__all__
        if name not in _NOT_DRAWS
        and getattr(getattr(np.random, name, None), "__self__", None) is global_state
    ]
    return [*names, "default_rng"]


def _warn(what: str, trace_name: str, where: str | None) -> None:
    place = f" ({where})" if where else ""
    warnings.warn(
        f"{what} while tracing {trace_name!r}{place}: {_ADVICE}",
        RuntimeWarning,
        stacklevel=3,
    )


def _wrapper(name: str, fn):
    @functools.wraps(fn)
    def traced_draw(*args, **kwargs):
        trace = current_trace.get()
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if trace is not None and not caller.startswith("jitgrad."):
            reported = getattr(_reported, "names", None)
            if reported is not None:
                reported.add(name)
            _warn(f"np.random.{name} called", trace.name, user_frame())
        return fn(*args, **kwargs)

    return traced_draw


def _install() -> None:
    global _active
    with _lock:
        if _active == 0:
            for name in _draw_names():
                fn = getattr(np.random, name)
                _originals[name] = fn
                setattr(np.random, name, _wrapper(name, fn))
        _active += 1


def _uninstall() -> None:
    global _active
    with _lock:
        _active -= 1
        if _active == 0:
            for name, fn in _originals.items():
                setattr(np.random, name, fn)
            _originals.clear()


def _global_state():
    """A comparable copy of numpy's global RandomState (its bit generator's state)."""
    return _comparable(np.random.mtrand._rand.get_state(legacy=False))


def _comparable(state):
    if isinstance(state, dict):
        return tuple((k, _comparable(v)) for k, v in sorted(state.items()))
    if isinstance(state, np.ndarray):
        return state.tobytes()
    return state


@contextlib.contextmanager
def watch_numpy_random(trace_name: str):
    """Warn about numpy.random draws made while the block (a jitted function's trace) runs."""
    before = _global_state()
    outer = getattr(_reported, "names", None)
    _reported.names = set()
    _install()
    try:
        yield
    finally:
        _uninstall()
        reported, _reported.names = _reported.names, outer
    if not reported and _global_state() != before:
        _warn("numpy's global random generator drew", trace_name, None)
