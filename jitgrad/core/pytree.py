"""Nested dicts/lists/tuples/namedtuples of leaves: flatten to a list plus a hashable
structure, and back."""

from __future__ import annotations

from jitgrad.core.errors import with_location

LEAF = "*"
_NUMBERS = frozenset((int, float, bool))  # exact types: numpy's float64 subclasses float


def flatten(tree, is_leaf=None) -> tuple[list, object]:
    """(leaves, treedef); dicts are walked in `sorted_keys` order, as JAX does. A namedtuple is
    a node whose treedef holds its type (two types with the same fields are different
    structures). `is_leaf(subtree)` true makes a subtree one leaf (see `is_number_list`)."""
    leaves: list = []
    treedef = _flatten(tree, leaves, is_leaf)
    return leaves, treedef


def _flatten(tree, leaves, is_leaf):
    if is_leaf is not None and is_leaf(tree):
        leaves.append(tree)
        return LEAF
    if isinstance(tree, dict):
        keys = sorted_keys(tree)
        return ("dict", keys, tuple(_flatten(tree[k], leaves, is_leaf) for k in keys))
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        return ("namedtuple", type(tree), tuple(_flatten(t, leaves, is_leaf) for t in tree))
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return (kind, len(tree), tuple(_flatten(t, leaves, is_leaf) for t in tree))
    if tree is None:
        return None
    leaves.append(tree)
    return LEAF


def sorted_keys(tree: dict) -> tuple:
    """A dict's keys in pytree order: sorted, and keys of types that do not compare with each
    other (`{1: a, "b": c}`) by type name, then value; the order never depends on insertion."""
    try:
        return tuple(sorted(tree))
    except TypeError:
        pass
    try:
        return tuple(sorted(tree, key=lambda k: (type(k).__name__, k)))
    except TypeError:
        raise TypeError(
            with_location(
                f"dict keys {list(tree)!r} cannot be put in a deterministic order (keys of one "
                "type must be comparable with each other); use str keys"
            )
        ) from None


def is_number_list(tree) -> bool:
    """Whether `tree` is a non-empty list (possibly of lists/tuples) whose leaves are all Python
    numbers: to `jit`, data like `jitgrad.constant([1.0, 2.0])`, not a structure."""
    if type(tree) is not list or not tree:
        return False
    stack = list(tree)
    while stack:
        item = stack.pop()
        if type(item) is list or type(item) is tuple:
            if not item:
                return False
            stack.extend(item)
        elif type(item) not in _NUMBERS:
            return False
    return True


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
    if kind == "namedtuple":
        return meta(*items)
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
    if kind == "namedtuple":
        fields = ", ".join(f"{f}={describe(c)}" for f, c in zip(meta._fields, children))
        return f"{meta.__name__}({fields})"
    inner = ", ".join(describe(c) for c in children)
    return f"[{inner}]" if kind == "list" else f"({inner}{',' if len(children) == 1 else ''})"


def leaf_paths(name: str, treedef) -> list[str]:
    """`name['w'][0]`-style paths of a structure's leaves, in flatten order.

    >>> leaf_paths("params", flatten({"w": 1, "b": [2]})[1])
    ["params['b'][0]", "params['w']"]
    """
    if treedef == LEAF:
        return [name]
    if treedef is None:
        return []
    kind, meta, children = treedef
    keys = meta if kind == "dict" else range(len(children))
    return [
        path for key, child in zip(keys, children) for path in leaf_paths(f"{name}[{key!r}]", child)
    ]
