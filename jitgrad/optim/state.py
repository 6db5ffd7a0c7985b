"""Checking an optimizer state against the layout `init(params)` makes, with errors that say
what was expected where (a state missing a slot used to fail with a bare `KeyError: 'm'`)."""

from __future__ import annotations

import numpy as np

from jitgrad.core import pytree
from jitgrad.core.errors import with_location


def layout(tree) -> tuple:
    """(structure, [(shape, dtype) of each leaf]) of a tree of arrays, tensors or tracers."""
    leaves, treedef = pytree.flatten(tree)
    return treedef, [(tuple(np.shape(x)), np.dtype(_dtype(x))) for x in leaves]


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def check_state(optimizer: str, expected: tuple, state) -> None:
    """Raise unless `state` has the `expected` layout (see `layout`) that `optimizer`'s
    init makes: the structure first, naming both, then each leaf's shape and dtype by path."""
    want_tree, want_leaves = expected
    got_tree, got_leaves = layout(state)
    if got_tree != want_tree:
        raise ValueError(
            with_location(
                f"{optimizer}.update: opt_state has the structure {pytree.describe(got_tree)}, but "
                f"{optimizer}.init(params) makes {pytree.describe(want_tree)}; pass the state that "
                "init returned for these params (and this optimizer)"
            )
        )
    for path, got, want in zip(pytree.leaf_paths("opt_state", want_tree), got_leaves, want_leaves):
        if got != want:
            raise TypeError(
                with_location(
                    f"{optimizer}.update: {path} is {_short(got)}, but init(params) makes "
                    f"{_short(want)}{_hint(path, got, want)}"
                )
            )


def _short(leaf: tuple) -> str:
    shape, dtype = leaf
    return f"{dtype.name}{list(shape)}"


def _hint(path: str, got: tuple, want: tuple) -> str:
    if path == "opt_state['step']" and got[1].kind in "iu" and got[0] == want[0]:
        return (
            " (the step count is int64 so that it cannot overflow; convert a state saved "
            "with an int32 count: state['step'] = state['step'].astype(np.int64))"
        )
    return ""
