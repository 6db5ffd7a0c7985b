"""Graph -> Graph passes. Each is a pure function; `optimize` runs them to a fixed point."""

from jitgrad.passes.cse import cse
from jitgrad.passes.dce import dce
from jitgrad.passes.fold import fold_constants
from jitgrad.passes.pipeline import optimize
from jitgrad.passes.simplify import simplify

__all__ = ["cse", "dce", "fold_constants", "optimize", "simplify"]
