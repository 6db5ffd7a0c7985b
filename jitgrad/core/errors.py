"""Errors that name the op, the shapes/dtypes and the user's source line."""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_frame() -> str | None:
    """`file.py:LINE` of the innermost caller outside jitgrad (the user's line), if any."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith((_PACKAGE_DIR, "<frozen", "<jitgrad")):
            return f"{os.path.basename(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def with_location(message: str, where: str | None = None) -> str:
    where = where or user_frame()
    return f"{message} ({where})" if where else message


class JitgradError(Exception):
    """Base class for jitgrad's own errors that are not plain Type/Value errors."""


class TracerError(JitgradError, TypeError):
    """A traced (symbolic) value was used where a concrete value is needed."""


class LeakedTracerError(JitgradError, RuntimeError):
    """A symbolic value escaped the trace that created it."""


def op_error(op: str, message: str, exc: type[Exception] = ValueError) -> Exception:
    """An exception `op: message (user.py:LINE)` for a bad op input."""
    return exc(with_location(f"{op}: {message}"))
