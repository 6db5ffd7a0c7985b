"""Nested dicts/lists/tuples of leaves: flatten to a list plus a hashable structure, and back."""

from __future__ import annotations

LEAF = "*"


def flatten(tree) -> tuple[list, object]:
    """(leaves, treedef); dicts are walked in sorted-key order, as JAX does."""
    leaves: list = []
    treedef = _flatten(tree, leaves)
    return leaves, treedef


def _flatten(tree, leaves):
    if isinstance(tree, dict):
        keys = tuple(sorted(tree))
        return ("dict", keys, tuple(_flatten(tree[k], leaves) for k in keys))
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        kind = "list" if isinstance(tree, list) else "tuple"
        return (kind, len(tree), tuple(_flatten(t, leaves) for t in tree))
    if tree is None:
        return None
    leaves.append(tree)
    return LEAF


def unflatten(treedef, leaves):
    """Rebuild the structure `treedef` with `leaves` in order."""
    it = iter(leaves)
    out = _unflatten(treedef, it)
    return out


def _unflatten(treedef, it):
    if treedef == LEAF:
        return next(it)
    if treedef is None:
        return None
    kind, meta, children = treedef
    if kind == "dict":
        return {k: _unflatten(c, it) for k, c in zip(meta, children)}
    items = [_unflatten(c, it) for c in children]
    return items if kind == "list" else tuple(items)


def describe(treedef) -> str:
    """A short readable form of a structure, for error messages."""
    if treedef == LEAF:
        return "array"
    if treedef is None:
        return "None"
    kind, meta, children = treedef
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {describe(c)}" for k, c in zip(meta, children)) + "}"
    inner = ", ".join(describe(c) for c in children)
    return f"[{inner}]" if kind == "list" else f"({inner}{',' if len(children) == 1 else ''})"
