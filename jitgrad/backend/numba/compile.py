"""Compile generated source into a callable kernel (the only place that imports modules it
wrote)."""

from __future__ import annotations

import collections
import contextlib
import importlib.abc
import importlib.machinery
import linecache
import os
import re
import sys
import types

from numba.core import caching

from jitgrad.backend.numba import cache
from jitgrad.core.config import config
from jitgrad.core.errors import JitgradError


class CompileError(JitgradError):
    """Numba rejected generated code: a jitgrad bug. The message names the source file."""


def load_kernel(source: str, name: str, in_memory: bool = False):
    """The `kernel` dispatcher of `source` and its path, from the on-disk cache when possible
    (unless `in_memory`: the fallback after a corrupted cache entry)."""
    key = cache.source_key(source)
    path = None if config.disable_cache or in_memory else _disk_module(source, key)
    module_name = f"jitgrad_kernel_{key}" + ("_memory" if in_memory else "")
    module = _modules.get(module_name)
    if module is None:
        module = _run_module(module_name, path or _memory_module(source, key), source, name)
        local = [v.jitgrad_local for v in vars(module).values() if hasattr(v, "jitgrad_local")]
        if path is not None:
            for dispatcher in (module.kernel, *(d for d, _ in local)):
                _attach_disk_cache(dispatcher)
        _modules[module_name] = sys.modules[module_name] = module  # Numba's cache imports it
        while len(_modules) > MAX_MODULES:
            sys.modules.pop(_modules.popitem(last=False)[0], None)
        _bind_local_symbols(module, local, name)
    _modules.move_to_end(module_name)
    return module.kernel, module.__file__


def _bind_local_symbols(module, local: list, name: str) -> None:
    """Bind the module's functions called through a symbol (symbols.local_symbol) before its
    kernel compiles or loads: its cached machine code calls them by their symbols (and the
    BLAS's thread setting, which a kernel running shards calls: blas_threads.set_blas_threads)."""
    from jitgrad.backend.numba.blas_threads import bind_blas_threads

    if local:
        bind_blas_threads()
    for dispatcher, bind in local:
        try:
            bind()
        except Exception as exc:  # generated code that does not compile is our bug
            _modules.pop(module.__name__, None)
            sys.modules.pop(module.__name__, None)
            raise CompileError(
                f"jitgrad could not compile {dispatcher.__name__} of the kernel for {name} "
                f"({exc}); generated source: {module.__file__}"
            ) from exc


def prepare_loading() -> None:
    """Do now the one-time set-up that loading a kernel from the cache needs: Numba's code
    generator, and scipy's BLAS bindings, which Numba's BLAS wrappers import at a kernel's
    first matrix product (importing scipy.linalg: 0.13 s, on the caller's thread if left to
    that call). Called while the compile worker is busy, so that loading its kernel takes
    milliseconds (W8b's kernel served 0.35 s after the worker finished, all of it set-up)."""
    from numba.core.registry import cpu_target

    cpu_target.target_context.codegen()
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        pass  # a kernel without products runs; one with them reports it


def _disk_module(source: str, key: str) -> str | None:
    """The cached module's path, or None (with one warning) when the cache cannot be used."""
    try:
        return cache.write_module(source, key)
    except cache.CacheUnavailableError as exc:
        cache.warn_unavailable(str(exc))
        return None


def _attach_disk_cache(kernel) -> None:
    """Give `kernel` (or another function of a kernel module) jitgrad's Numba cache; a module
    that vanished since it was written (another process removed a corrupted entry) leaves it
    compiling in memory."""
    try:
        kernel._cache = KernelCache(kernel.py_func)
    except OSError as exc:
        cache.warn_unavailable(f"cannot read {kernel.py_func.__code__.co_filename}: {exc.strerror}")


def _memory_module(source: str, key: str) -> str:
    """A file name for a kernel kept out of the cache: a private temporary file, so that
    tracebacks and pdb can show the code; if even that cannot be written (a full disk), a
    pseudo-file that only the traceback machinery (linecache) knows."""
    try:
        path = os.path.join(cache.memory_dir(), f"k_{key}.py")
        with cache.private_writer(path) as fh:
            fh.write(source.encode("utf-8"))
    except OSError:
        path = f"<jitgrad kernel k_{key}>"
        linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    return path


def _run_module(module_name: str, path: str, source: str, name: str) -> types.ModuleType:
    """Run the kernel module `source` (its file: `path`) with Numba's caching off: Numba would
    choose a cache directory itself, falling back to ones jitgrad does not check
    (~/.cache/numba); load_kernel attaches a KernelCache to kernels kept on disk instead."""
    module = types.ModuleType(module_name)
    module.__file__ = path
    try:
        code = compile(source.replace("cache=True", "cache=False"), path, "exec")
        exec(code, module.__dict__)
    except Exception as exc:  # generated code that does not import is our bug
        raise CompileError(
            f"jitgrad could not load the kernel for {name} ({exc}); generated source: {path}"
        ) from exc
    return module


# Loaded kernel modules, shared by functions that generate the same source; bounded so that
# evicted versions (and their machine code) can be freed: eviction also leaves sys.modules.
MAX_MODULES = 512
_modules: collections.OrderedDict = collections.OrderedDict()


class _KernelLocator(caching.InTreeCacheLocator):
    """Numba's files for a kernel go to the `__pycache__` beside its module, which
    cache.cache_root created and checked, and never to Numba's fallback directories."""

    def ensure_cache_path(self):
        """Nothing to do: Numba's version would create the directory with the umask's mode."""


class _KernelCacheImpl(caching.CompileResultCacheImpl):
    """Numba's compile-result cache, located by _KernelLocator only."""

    _locator_classes = [_KernelLocator]


class _PrivateCacheFile(caching.IndexDataCacheFile):
    """Numba's index and data files, written 0600 whatever the umask, leaving no temporary
    file behind when a write fails."""

    @contextlib.contextmanager
    def _open_for_write(self, filepath):
        with cache.private_writer(filepath) as fh:
            yield fh


class KernelCache(caching.FunctionCache):
    """Numba's cache for a kernel module in jitgrad's cache: private files, and a failed write
    (full or read-only disk, quota, permissions) costs only the disk copy, with one warning."""

    _impl_class = _KernelCacheImpl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _PrivateCacheFile(
            self._cache_path, self._impl.filename_base, self._impl.locator.get_source_stamp()
        )

    def load_overload(self, sig, target_context):
        """Numba's, without the refresh of every registry of its CPU target that it starts
        with (0.17 s, and the import of scipy.linalg, in a process's first load): rebuilding
        a cached kernel needs only the code generator and Numba's runtime (NRT), which the
        refresh would initialise first. A compile after a miss refreshes them itself
        (numba.core.compiler)."""
        from numba.core.runtime import rtsys

        rtsys.initialize(target_context)  # the one part of the refresh a kernel needs: NRT
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    def save_overload(self, sig, data):
        """Numba calls this after compiling, with the kernel already in memory: a write
        error must not fail the compilation."""
        try:
            super().save_overload(sig, data)
        except OSError as exc:
            cache.warn_unavailable(f"cannot write to {self._cache_path}: {exc.strerror}")


def disk_cache_lock(kernel, path: str):
    """Held while compiling `kernel` (module at `path`): processes that compile the same kernel
    share the work through the disk cache (cache.entry_lock); a kernel kept in memory has no
    entry to share."""
    if isinstance(kernel._cache, KernelCache):
        return cache.entry_lock(path)
    return contextlib.nullcontext()


def forget_entry(path: str) -> None:
    """Remove a cache entry that failed to load (module and Numba's files)."""
    cache.remove_entry(path)


class _CachedKernelFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a kernel module by name from the cache, for Numba's unpickler. Numba compiles
    the helpers a kernel's scalar code needs (float powers, say) once per process and names
    them after the module that needed them first; a kernel compiled later in that process
    reuses them, so its cached machine code refers to the first kernel's module. Another
    process loading it (a rank of the same job, the next run) may never have loaded that
    module: it is loaded here from its file in the cache, which the writer put there first."""

    _NAME = re.compile(r"jitgrad_kernel_([0-9a-f]{24})")

    def find_spec(self, fullname, path=None, target=None):
        match = self._NAME.fullmatch(fullname)
        if match is None or config.disable_cache:
            return None
        try:
            file = os.path.join(cache.cache_root(), f"k_{match.group(1)}.py")
            with open(file, encoding="utf-8") as fh:
                source = fh.read()
        except (OSError, cache.CacheUnavailableError):
            return None
        if cache.source_key(source) != match.group(1):
            return None  # not what that module's name says (corrupted, or another version)
        return importlib.machinery.ModuleSpec(fullname, self, origin=file, loader_state=source)

    def create_module(self, spec):
        load_kernel(spec.loader_state, f"the cached kernel {spec.origin}")
        return sys.modules[spec.name]

    def exec_module(self, module):
        pass  # load_kernel ran it


sys.meta_path.append(_CachedKernelFinder())
