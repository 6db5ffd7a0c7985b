"""The on-disk kernel cache: generated modules written atomically under a user-only directory,
keyed by a hash of the source and of the versions that compiled it. Numba's own cache
(`cache=True`) then stores the machine code beside each module, so a second process loads the
kernel instead of compiling it.

The cache is a code-execution surface: the modules are imported and Numba unpickles its index
and data files. So every directory jitgrad uses (the configured one, the directories it creates
on the way to it, `kernels` and its `__pycache__`) is created 0700 whatever the umask, and is
used only if it belongs to the current user and nobody else can write to it; files are written
0600. A directory that fails the check, or a write that fails (full or read-only disk, quota),
makes kernels compile in memory, with one warning."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import sys
import tempfile
import warnings

import numpy as np

from jitgrad.core.config import config


@functools.cache
def versions() -> str:
    """What compiled the cached kernels. Read from the packages' metadata: importing numba
    here would cost a first call (served by the numpy fallback) a quarter of a second."""
    from importlib.metadata import version

    return (
        f"python {sys.version.split()[0]}, numpy {np.__version__}, numba {version('numba')}"
        f", llvmlite {version('llvmlite')}, jitgrad backend {backend_hash()}"
    )


@functools.cache
def backend_hash() -> str:
    """A hash of this backend's sources, read once per process. Kernels inline helpers such as
    vmath into their machine code, and Numba keys its cache on the kernel's own file only: an
    edited helper (an editable install) must change the key, or the old code keeps running."""
    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as fh:
                digest.update(name.encode() + b"\0" + fh.read() + b"\0")
    return digest.hexdigest()[:16]


def source_key(source: str) -> str:
    digest = hashlib.sha256((versions() + "\n" + source).encode()).hexdigest()
    return digest[:24]


class CacheUnavailableError(Exception):
    """The cache directory cannot be used; compile in memory instead."""


def cache_root() -> str:
    """The `kernels` directory, with the configured directory above it and the `__pycache__`
    (where Numba unpickles) below it created and checked: once per directory and process."""
    root = os.path.join(os.path.abspath(config.cache_dir), "kernels")
    for directory in (os.path.dirname(root), root, pycache_dir(root)):
        private_dir(directory)
    return root


def pycache_dir(root: str) -> str:
    """Where Numba keeps the machine code of the modules in `root`."""
    return os.path.join(root, "__pycache__")


def private_dir(path: str) -> None:
    """Create `path` (and missing parents) 0700, then raise CacheUnavailableError unless it is
    safe to load code from. The verdict is kept: the checks run once per directory."""
    if path not in _DIR_VERDICTS:
        try:
            checked = _make_private_dirs(path) or [path]
            _DIR_VERDICTS[path] = next(filter(None, map(_unsafe_reason, checked)), None)
        except OSError as exc:  # not kept: a full disk may have room again later
            raise CacheUnavailableError(f"cannot create {path}: {exc.strerror}") from exc
    if _DIR_VERDICTS[path]:
        raise CacheUnavailableError(_DIR_VERDICTS[path])


def _make_private_dirs(path: str) -> list[str]:
    """Create the missing directories of `path`, top down, 0700 whatever the umask; return
    them (`path` last), created here or not: another user may have created one first."""
    missing = []
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)  # a umask such as 0o277 takes bits from the owner too
    return missing[::-1]


def _unsafe_reason(path: str) -> str | None:
    """Why code in directory `path` could have been written by someone else, or None. A
    symlink counts as its owner's, and its target is checked too."""
    if os.name != "posix":  # no owners and modes to check
        return None
    uid = os.geteuid()
    link = os.lstat(path)
    info = os.stat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
        problem = f"is a symlink owned by uid {link.st_uid}, not by the current user ({uid})"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid != uid:
        problem = f"is owned by uid {info.st_uid}, not by the current user ({uid})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is group- or world-writable (mode {stat.S_IMODE(info.st_mode):o})"
    elif not os.access(path, os.W_OK):
        problem = "is not writable"
    else:
        return None
    return f"{path} {problem}"


# Cache directory -> why it must not be used (None: it is safe), checked once per process.
_DIR_VERDICTS: dict[str, str | None] = {}


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
        warnings.warn(
            f"jitgrad: cache entry {path} was corrupted; rebuilding it",
            RuntimeWarning,
            stacklevel=2,
        )
        remove_entry(path)
    try:
        with private_writer(path) as fh:
            fh.write(source.encode("utf-8"))
    except OSError as exc:
        raise CacheUnavailableError(f"cannot write {path}: {exc.strerror}") from exc
    return path


@contextlib.contextmanager
def private_writer(path: str):
    """A binary file whose content replaces `path` atomically when the block ends, with mode
    0600 whatever the umask. On any error (a full disk, a failed rename) the temporary file is
    removed, so no `.tmp_*` is left behind."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp_")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, 0o600)
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def warn_unavailable(reason: str) -> None:
    """Warn that kernels compile in memory, and why: once per process and cache directory (a
    full disk would otherwise warn at every new kernel)."""
    if config.cache_dir not in _WARNED:
        _WARNED.add(config.cache_dir)
        warnings.warn(
            f"jitgrad: the kernel cache is unavailable ({reason}); compiling in memory",
            RuntimeWarning,
            stacklevel=4,
        )


_WARNED: set[str] = set()


def remove_entry(path: str) -> None:
    """Remove a module and Numba's cache files for it."""
    stem = os.path.splitext(os.path.basename(path))[0]
    pycache = pycache_dir(os.path.dirname(path))
    candidates = [path]
    if os.path.isdir(pycache):
        candidates += [
            os.path.join(pycache, f) for f in os.listdir(pycache) if f.startswith(stem + ".")
        ]
    for f in candidates:
        try:
            os.remove(f)
        except OSError:
            pass


def has_disk_index(path: str) -> bool:
    """Whether Numba's cache already holds an index for the kernel of the module at `path`
    (Numba names it `<module>.kernel-<line>.<python>.nbi`; the module's other functions
    cached on their own, a shard body say, have indexes of their own names)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    pycache = pycache_dir(os.path.dirname(path))
    return os.path.isdir(pycache) and any(
        f.startswith(stem + ".kernel-") and f.endswith(".nbi") for f in os.listdir(pycache)
    )


@contextlib.contextmanager
def entry_lock(path: str):
    """Hold an exclusive lock on the cache entry of the module at `path` while compiling it:
    a second process (or compile worker) that wants the same kernel waits, then finds Numba's
    machine code on disk and loads it instead of compiling it again. A lock file that cannot
    be opened (read-only cache) only loses the sharing."""
    import fcntl

    stem = os.path.splitext(os.path.basename(path))[0]
    lock_path = os.path.join(pycache_dir(os.path.dirname(path)), stem + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def memory_dir() -> str:
    """A private temporary directory for modules when the cache is off or unusable."""
    global _MEMORY_DIR
    if _MEMORY_DIR is None:
        _MEMORY_DIR = tempfile.mkdtemp(prefix="jitgrad-")
    return _MEMORY_DIR


_MEMORY_DIR = None
