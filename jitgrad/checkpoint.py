"""Checkpoints: parameters, optimizer state and extra values in one `.npz` file, restored
exactly (same nesting, same dtypes, the same bits).

>>> checkpoint.save("run/ckpt.npz", params, opt_state, epoch=3)
>>> params, opt_state, extra = checkpoint.load("run/ckpt.npz")     # extra == {'epoch': 3}

Each array is stored under its path in the tree ("params/dense/kernel", "opt_state/m/0"), so
`np.load` shows readable names; the structure (dict key order and key types, lists vs
tuples, Python scalars and strings, None) is stored as JSON next to them. Tensors and
Variables are saved as their arrays and come back as numpy arrays. No pickle is involved.
The file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from jitgrad.core.tensor import Tensor

_STRUCTURE = "__jitgrad_structure__"


def _encode(node, path: str, arrays: dict):
    """A JSON-able description of `node`, adding its arrays to `arrays`."""
    if node is None or (
        isinstance(node, (bool, int, float, str)) and not isinstance(node, np.generic)
    ):  # np.float64 is a float
        return {"value": node}
    if isinstance(node, dict):
        items = []
        for key, child in node.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(
                    f"checkpoint.save: dict key {key!r} at {path!r} must be a str or an int"
                )
            items.append([key, _encode(child, f"{path}/{key}", arrays)])
        return {"dict": items}
    if isinstance(node, (list, tuple)):
        children = [_encode(child, f"{path}/{i}", arrays) for i, child in enumerate(node)]
        return {"list" if isinstance(node, list) else "tuple": children}
    if isinstance(node, (np.ndarray, np.generic, Tensor)):
        name = path
        while name in arrays or name == _STRUCTURE:
            name += "'"
        arrays[name] = node._value if isinstance(node, Tensor) else node
        return {"scalar" if isinstance(node, np.generic) else "array": name}
    raise TypeError(
        f"checkpoint.save: cannot store {type(node).__name__} at {path!r} (arrays, "
        "tensors, Python scalars, str and None in dicts, lists and tuples)"
    )


def _decode(spec, arrays):
    ((kind, content),) = spec.items()
    if kind == "value":
        return content
    if kind == "dict":
        return {key: _decode(child, arrays) for key, child in content}
    if kind in ("list", "tuple"):
        items = [_decode(child, arrays) for child in content]
        return items if kind == "list" else tuple(items)
    value = arrays[content]
    return value[()] if kind == "scalar" else value


def save(path, params, opt_state=None, **extra) -> str:
    """Write `params`, `opt_state` and the keyword values `extra` to `path` (".npz" is added
    if missing); returns the path written.

    >>> save("ckpt.npz", {"w": w}, opt.init({"w": w}), step=100)
    'ckpt.npz'
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays: dict = {}
    structure = {
        "params": _encode(params, "params", arrays),
        "opt_state": _encode(opt_state, "opt_state", arrays),
        "extra": _encode(extra, "extra", arrays),
    }
    arrays[_STRUCTURE] = np.array(json.dumps(structure))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # as TF's Checkpoint.save does
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a machine crash keeps the old one
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def load(path) -> tuple:
    """(params, opt_state, extra) as saved, with numpy arrays as leaves.

    >>> params, opt_state, extra = load("ckpt.npz")
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
        structure = json.loads(str(arrays.pop(_STRUCTURE)))
        return (
            _decode(structure["params"], arrays),
            _decode(structure["opt_state"], arrays),
            _decode(structure["extra"], arrays),
        )
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (ValueError, KeyError, TypeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        # numpy's own words here would be about pickles or zip files
        raise ValueError(
            f"jitgrad.checkpoint.load: {path} is not a readable jitgrad checkpoint "
            f"(truncated, corrupted, or not written by checkpoint.save: {exc!r:.120})"
        ) from exc
