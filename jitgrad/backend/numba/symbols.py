"""Calls from a kernel to jitgrad's array helpers (convolutions, pooling, matrix products, linear
algebra, random draws, a loop's copies) through a symbol, instead of linking the helper in.

Numba links every njit function a kernel calls into the kernel's LLVM module, then optimises
and generates machine code for the whole module: each kernel pays again for the code of every
helper it calls, although Numba has cached that helper's machine code since installation. W10's
kernel (LeNet value+grad) spent 2-3 s of its 8.4-9.4 s compile on its seven helpers.

Here the helper is compiled (or loaded from Numba's cache) once per process, its entry point is
registered with LLVM's symbol table under a stable alias (`jitgrad_<name>_<hash>`: the helper,
its argument types and the versions that compiled it), and the kernel calls that alias with
Numba's calling convention, status and exceptions included. The kernel's cached machine code
then holds the alias, resolved when the kernel is loaded: so the generated module binds its
helpers at import (`through_symbol`, module level), before Numba loads the kernel from its
cache; an unresolved alias would abort the process in LLVM's linker.

Only the signatures the installation precompiles (precompile.helper_signatures: the ones the
emitter's calls produce) are bound; a call with other argument types links the helper as
Numba would. The alias is never used for a signature the module did not bind at import.

A compile worker on a new installation does not wait for a helper that is not compiled yet
(defer_uncompiled_helpers): it compiles the kernel against a placeholder, and the helper
after it (or loads it from the warmer process that compiled it meanwhile, worker.py).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import weakref

import llvmlite.binding as ll
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from jitgrad.backend.numba import cache, precompile

_lock = threading.Lock()
_aliases: dict[tuple, str] = {}  # (helper name, argument types) -> its registered alias
_linked: set[tuple] = set()  # (helper name, argument types) linked in instead
# In a compile worker whose helpers another process is compiling: (dispatcher, argument
# types) bound to the placeholder, to be compiled (or loaded) before the kernel is reported.
_deferring = False
_deferred: list[tuple] = []


@functools.cache
def through_symbol(name: str, dtypes: tuple[str, ...], ranks: tuple[int, ...] | None = None):
    """The runtime helper `name` as a kernel calls it: through a symbol for the signatures the
    installation precompiles with arrays of `dtypes` (and a first array of one of `ranks`,
    for the helpers precompiled per rank), bound now; linked in for any other. Generated
    modules call this at import, one line per helper."""
    dispatcher = precompile.helper(name)
    bound = {}
    for argtypes in precompile.signatures_of(name, dtypes, ranks):
        bound[argtypes] = _bind(dispatcher, argtypes)
    return _symbol_call(dispatcher, bound)


def defer_uncompiled_helpers() -> None:
    """For the compile worker of a new installation, while its warmer process compiles the
    helpers (worker.py): bind a helper that is not in Numba's cache yet to a placeholder
    instead of compiling it first, so that the kernel's compile does not wait for it. The
    kernel's machine code holds only the alias, which the process that runs the kernel binds
    to the helper when it loads it; the worker never runs a kernel (the placeholder is libc's
    `abort`: loud, were it ever called). compile_deferred_helpers puts them in the cache."""
    global _deferring
    _deferring = True


def compile_deferred_helpers() -> None:
    """Load (the warmer compiled them meanwhile) or compile the helpers bound to the
    placeholder, so that they are in Numba's cache when the worker reports its kernel; the
    ones the warmer is compiling now, after it (precompile.compile_shared)."""
    with _lock:
        precompile.compile_shared(list(_deferred), _compiled)
        _deferred.clear()


def _bind(dispatcher, argtypes: tuple) -> str:
    """Register the entry point of `dispatcher`'s compiled `argtypes` under its alias."""
    key = (dispatcher.py_func.__qualname__, argtypes)
    with _lock:
        alias = _aliases.get(key)
        if alias is None:
            compiled = _compiled(dispatcher, argtypes, load_only=_deferring)
            if compiled is None:
                address = _placeholder_address()
                _deferred.append((dispatcher, argtypes))
            else:
                address = compiled.library.get_pointer_to_function(compiled.fndesc.mangled_name)
            digest = hashlib.sha256(f"{cache.versions()}\n{argtypes}".encode()).hexdigest()
            alias = f"jitgrad_{key[0]}_{digest[:16]}"
            ll.add_symbol(alias, address)
            _aliases[key] = alias
        return alias


def _placeholder_address() -> int:
    import ctypes

    return ctypes.cast(ctypes.CDLL(None).abort, ctypes.c_void_p).value


_ready: set[tuple] = set()  # (helper names, dtypes) found compiled: stay so in the process


def all_compiled(names: tuple[str, ...], dtypes: tuple[str, ...]) -> bool:
    """Whether every signature the installation precompiles for the helpers `names` with
    arrays of `dtypes` is compiled, in this process or in Numba's cache (loaded now), without
    compiling any. Why: a kernel is served only once the helpers it calls are in the cache,
    and some take seconds to compile on a new installation: AMX's tile helpers ~7 s, against
    W4's target of 2 s to a served kernel. The emitter names such helpers only once they are
    (emit.py: product_call); until the warmer process has compiled them, it multiplies by
    BLAS."""
    key = (names, dtypes)
    if key not in _ready:
        signatures = [
            (precompile.helper(name), argtypes)
            for name in names
            for argtypes in precompile.signatures_of(name, dtypes)
        ]
        if all(_compiled(*signature, load_only=True) is not None for signature in signatures):
            _ready.add(key)
    return key in _ready


def compile_all(names: tuple[str, ...], dtypes: tuple[str, ...]) -> None:
    """Compile (or load) now the signatures all_compiled asks about, as the warmer process
    does: for a test whose kernels must call them on a new installation."""
    for name in names:
        for argtypes in precompile.signatures_of(name, dtypes):
            _compiled(precompile.helper(name), argtypes)


def _compiled(dispatcher, argtypes: tuple, load_only: bool = False):
    """`dispatcher`'s compiled `argtypes`: loaded from Numba's cache when it is there, without
    the refresh of every registry of Numba's CPU target that Numba's own load starts with
    (0.2 s in a process's first load: a kernel loaded from jitgrad's cache needs none of it,
    compile.KernelCache), else compiled (Numba's compile refreshes what it needs), or None
    if `load_only`."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.runtime import rtsys

    compiled = dispatcher.overloads.get(argtypes)
    if compiled is not None:
        return compiled
    context = dispatcher.targetctx
    with global_compiler_lock:
        rtsys.initialize(context)  # the part of the refresh that machine code needs: NRT
        with dispatcher._cache._guard_against_spurious_io_errors():
            loaded = dispatcher._cache._load_overload(argtypes, context)
        if loaded is None:
            if load_only:
                return None
            dispatcher.compile(argtypes)
        else:
            context.insert_user_function(loaded.entry_point, loaded.fndesc, [loaded.library])
            dispatcher.add_overload(loaded)
    return dispatcher.overloads[argtypes]


def _symbol_call(dispatcher, bound: dict):
    """An intrinsic calling `dispatcher`: by the alias `bound` gives for its argument types,
    or linked in (Numba's own call: the helper's code joins the kernel's) for the others."""

    def call(typingctx, *args):
        args = tuple(args)
        alias = bound.get(args)
        if alias is None:
            dispatcher.compile(args)
            _linked.add((dispatcher.__name__, args))
        compiled = dispatcher.overloads.get(args)  # None: deferred (defer_uncompiled_helpers)
        if compiled is None:
            result = declared_return_type(dispatcher.__name__, args)
        else:
            result = compiled.signature.return_type

        def codegen(context, builder, signature, packed):
            values = cgutils.unpack_tuple(builder, packed[0], len(args))
            if alias is None:
                context.add_linking_libs([compiled.library])
                return context.call_internal(builder, compiled.fndesc, compiled.signature, values)
            return _call_alias(context, builder, alias, result, args, values)

        return result(types.StarArgTuple.from_types(args)), codegen

    call.__name__ = call.__qualname__ = dispatcher.__name__  # in Numba's typing errors
    return intrinsic(prefer_literal=False)(call)


def local_symbol(dispatcher, argtypes: tuple):
    """A generated module's own function (a batch's shard body, shards.py) as the module's
    other functions call it: through a symbol, as the helpers above. Linked in, its code
    would be optimised and generated again in each function that calls it, directly or not
    (the shard step, the parallel function, its parfor, the kernel: W10's body five times).

    The symbol is bound by `bind()`: the function compiled, or loaded from its disk cache,
    for `argtypes`, and its entry point registered under an alias unique to its module (the
    module's name holds its source's digest). compile.load_kernel binds the module's local
    symbols before the kernel compiles or loads, so that cached machine code finds them."""
    alias = f"jitgrad_{dispatcher.py_func.__module__}_{dispatcher.__name__}"

    def bind():
        with _local_lock:
            if _local_bindings.get(alias) is not dispatcher:
                try:
                    compiled = _compiled(dispatcher, argtypes, load_only=True)
                except Exception:  # an unreadable cache entry: compiled again, and replaced
                    compiled = None
                if compiled is None:
                    dispatcher.compile(argtypes)
                    compiled = dispatcher.overloads[argtypes]
                address = compiled.library.get_pointer_to_function(compiled.fndesc.mangled_name)
                ll.add_symbol(alias, address)
                _local_bindings[alias] = dispatcher
        return dispatcher.overloads[argtypes]

    def call(typingctx, *args):
        if tuple(args) != argtypes:
            return None
        result = bind().signature.return_type

        def codegen(context, builder, signature, packed):
            values = cgutils.unpack_tuple(builder, packed[0], len(args))
            return _call_alias(context, builder, alias, result, args, values)

        return result(types.StarArgTuple.from_types(args)), codegen

    call.__name__ = call.__qualname__ = dispatcher.__name__
    function = intrinsic(prefer_literal=False)(call)
    function.jitgrad_local = (dispatcher, bind)
    return function


# alias -> the dispatcher bound to it in this process (weakly: an evicted kernel module's
# functions are not kept alive by their binding); held while one compiles or loads.
_local_bindings: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_local_lock = threading.RLock()


def _call_alias(context, builder, alias: str, result, args, values):
    """Call the function registered as `alias` with Numba's calling convention, propagating
    its exceptions."""
    function_type = context.call_conv.get_function_type(result, args)
    function = cgutils.get_or_insert_function(builder.module, function_type, alias)
    status, value = context.call_conv.call_function(builder, function, result, args, values)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return value


def declared_return_type(name: str, args: tuple):
    """What helper `name` returns for `args`, known without compiling it (a deferred helper
    is not compiled in the worker): nothing, they write into their last argument, but for a
    strided view made contiguous, which returns the copy."""
    if name == "contiguous_copy":
        return types.Array(args[0].dtype, args[0].ndim, "C")
    return types.none


def linked_signatures() -> frozenset:
    """(helper name, argument types) of the calls this process linked into a kernel instead
    of calling them through a symbol: argument types that precompile.helper_signatures does
    not list. An emitter call that lands here pays the helper's code generation in every
    kernel; its signature belongs in that list."""
    return frozenset(_linked)
