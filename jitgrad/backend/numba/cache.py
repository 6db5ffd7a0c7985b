"""The on-disk kernel cache: generated modules written atomically under a user-only directory,
keyed by a hash of the source and of the versions that compiled it. Numba's own cache
(`cache=True`) then stores the machine code beside each module, so a second process loads the
kernel instead of compiling it."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import warnings

import numpy as np

from jitgrad.config import config


def versions() -> str:
    import llvmlite
    import numba

    from jitgrad import __version__

    return (f"python {sys.version.split()[0]}, numpy {np.__version__}, numba {numba.__version__}"
            f", llvmlite {llvmlite.__version__}, jitgrad {__version__}")


def source_key(source: str) -> str:
    digest = hashlib.sha256((versions() + "\n" + source).encode()).hexdigest()
    return digest[:24]


class CacheUnavailableError(Exception):
    """The cache directory cannot be used; compile in memory instead."""


def cache_root() -> str:
    root = os.path.join(config.cache_dir, "kernels")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(f"{root} is not writable")
    except OSError as exc:
        raise CacheUnavailableError(str(exc)) from exc
    return root


def write_module(source: str, key: str) -> str:
    """Path of the module for `source`, written atomically if missing or corrupted."""
    root = cache_root()
    path = os.path.join(root, f"k_{key}.py")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                if fh.read() == source:
                    return path
        except OSError:
            pass
        warnings.warn(f"jitgrad: cache entry {path} was corrupted; rebuilding it",
                      RuntimeWarning, stacklevel=2)
        remove_entry(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp_", suffix=".py")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(source)
        os.replace(tmp, path)
    except OSError as exc:
        raise CacheUnavailableError(str(exc)) from exc
    return path


def remove_entry(path: str) -> None:
    """Remove a module and Numba's cache files for it."""
    stem = os.path.splitext(os.path.basename(path))[0]
    pycache = os.path.join(os.path.dirname(path), "__pycache__")
    candidates = [path]
    if os.path.isdir(pycache):
        candidates += [os.path.join(pycache, f) for f in os.listdir(pycache)
                       if f.startswith(stem + ".")]
    for f in candidates:
        try:
            os.remove(f)
        except OSError:
            pass


def memory_dir() -> str:
    """A private temporary directory for modules when the cache is off or unusable."""
    global _MEMORY_DIR
    if _MEMORY_DIR is None:
        _MEMORY_DIR = tempfile.mkdtemp(prefix="jitgrad-")
    return _MEMORY_DIR


_MEMORY_DIR = None
