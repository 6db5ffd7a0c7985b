"""Compile generated source into a callable kernel (the only place that imports modules it
wrote)."""

from __future__ import annotations

import collections
import importlib.util
import os
import sys
import warnings

from jitgrad.backend.numba import cache
from jitgrad.config import config
from jitgrad.core.errors import JitgradError


class CompileError(JitgradError):
    """Numba rejected generated code: a jitgrad bug. The message names the source file."""


def load_kernel(source: str, name: str, in_memory: bool = False):
    """The `kernel` dispatcher of `source` and its path, from the on-disk cache when possible
    (unless `in_memory`: the fallback after a corrupted cache entry)."""
    key = cache.source_key(source)
    path = None
    if not (config.disable_cache or in_memory):
        try:
            path = cache.write_module(source, key)
        except cache.CacheUnavailableError as exc:
            warnings.warn(f"jitgrad: the kernel cache is unavailable ({exc}); compiling in "
                          "memory", RuntimeWarning, stacklevel=3)
    if path is None:
        source = source.replace("cache=True", "cache=False")
        path = os.path.join(cache.memory_dir(), f"k_{key}.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(source)
    module_name = f"jitgrad_kernel_{key}" + ("_memory" if in_memory else "")
    module = _modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # generated code that does not import is our bug
            raise CompileError(f"jitgrad could not load the kernel for {name} ({exc}); "
                               f"generated source: {path}") from exc
        _modules[module_name] = sys.modules[module_name] = module  # Numba's cache imports it
        while len(_modules) > MAX_MODULES:
            sys.modules.pop(_modules.popitem(last=False)[0], None)
    _modules.move_to_end(module_name)
    return module.kernel, path


# Loaded kernel modules, shared by functions that generate the same source; bounded so that
# evicted versions (and their machine code) can be freed: eviction also leaves sys.modules.
MAX_MODULES = 512
_modules: collections.OrderedDict = collections.OrderedDict()


def has_disk_index(path: str) -> bool:
    """Whether Numba's cache already holds an index for the module at `path`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    pycache = os.path.join(os.path.dirname(path), "__pycache__")
    return os.path.isdir(pycache) and any(
        f.startswith(stem + ".") and f.endswith(".nbi") for f in os.listdir(pycache))


def forget_entry(path: str) -> None:
    """Remove a cache entry that failed to load (module and Numba's files)."""
    cache.remove_entry(path)
