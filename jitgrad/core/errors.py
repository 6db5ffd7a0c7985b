"""Errors that name the op, the shapes/dtypes and the user's source line."""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# File name -> its base name for a user's file, False for jitgrad's own (the package, frozen
# modules, generated code): decided once per file name, since tracing asks for every op.
_BASENAMES: dict[str, str | bool] = {}


def _basename(filename: str) -> str | bool:
    if filename.startswith((_PACKAGE_DIR, "<frozen", "<jitgrad")):
        base = False
    else:
        base = os.path.basename(filename)
    if len(_BASENAMES) < 10_000:  # bounded: exec'd code may make a name per call
        _BASENAMES[filename] = base
    return base


def user_frame(known: dict | None = None) -> str | None:
    """`file.py:LINE` of the innermost caller outside jitgrad (the user's line), if any.

    `known`: frames (of jitgrad's own code, still running) whose answer is already known ->
    that answer; the walk up the stack stops at them (a backward pass asks for every op it
    emits from deep in jitgrad, always with the same answer above its own frame)."""
    frame = sys._getframe(1)
    names = _BASENAMES
    while frame is not None:
        if known and frame in known:
            return known[frame]
        filename = frame.f_code.co_filename
        base = names.get(filename)
        if base is None:
            base = _basename(filename)
        if base is not False:
            return f"{base}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def entry_point(frame) -> tuple[str | None, str | None]:
    """(the jitgrad function the user called, `file.py:LINE` of that call) for a stack whose
    innermost frame is `frame` (another thread's: a watchdog naming where a rank waits)."""
    called = None
    while frame is not None:
        filename = frame.f_code.co_filename
        base = _BASENAMES.get(filename)
        if base is None:
            base = _basename(filename)
        if base is not False:
            return called, f"{base}:{frame.f_lineno}"
        if not filename.startswith("<"):  # not generated code: a function of the package's
            module = frame.f_globals.get("__name__", "")
            code = frame.f_code
            called = f"{module}.{getattr(code, 'co_qualname', code.co_name)}"  # 3.10: no qualname
        frame = frame.f_back
    return called, None


def with_location(message: str, where: str | None = None) -> str:
    where = where or user_frame()
    return f"{message} ({where})" if where else message


class JitgradError(Exception):
    """Base class for jitgrad's own errors that are not plain Type/Value errors."""


class TracerError(JitgradError, TypeError):
    """A traced (symbolic) value was used where a concrete value is needed."""


class VariableCreationError(TracerError):
    """A Variable was created from a traced value: its initial value must be concrete. Under
    `jitgrad.function` the call then runs eagerly (TensorFlow's first-call rule)."""


class LeakedTracerError(JitgradError, RuntimeError):
    """A symbolic value escaped the trace that created it."""


def op_error(op: str, message: str, exc: type[Exception] = ValueError) -> Exception:
    """An exception `op: message (user.py:LINE)` for a bad op input."""
    return exc(with_location(f"{op}: {message}"))
