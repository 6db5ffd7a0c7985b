"""The kernel cache is a code-execution surface (modules are imported, Numba unpickles its
index): directories are private whatever the umask, and a directory another user owns or can
write to is refused. A full or read-only disk costs the disk copy only: the kernel still works,
with one warning, and no temporary file is left behind."""

import errno
import os
import stat
import zlib

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import cache
from jitgrad.backend.numba.compile import load_kernel
from jitgrad.core.config import Config

NOBODY = 65534
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving a directory to another user (chown) needs root"
)
DISK_ERRORS = [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT]


def kernel_source(tmp_path, offset=0):
    """A tiny cacheable kernel module, different for each test (loaded kernels are shared by
    source within a process)."""
    constant = zlib.crc32(str(tmp_path).encode()) + offset
    return (
        f"import numba\n\n\n@numba.njit(cache=True)\ndef kernel(x):\n    return x + {constant}.0\n"
    ), constant


def compile_and_call(tmp_path, offset=0):
    """Load, compile (Numba writes its cache files then) and run a kernel."""
    source, constant = kernel_source(tmp_path, offset)
    kernel, _ = load_kernel(source, "test_kernel")
    kernel.compile("float64(float64)")
    assert kernel(1.0) == constant + 1.0


def cache_warnings(record):
    return [str(w.message) for w in record if "cache is unavailable" in str(w.message)]


def files_under(path, prefix=""):
    return [
        os.path.join(d, f)
        for d, _, names in os.walk(path, followlinks=True)
        for f in names
        if f.startswith(prefix)
    ]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setattr(jg.config, "cache_dir", str(path))
    return path


def test_umask_000_still_gives_private_directories_and_files(tmp_path, monkeypatch):
    top = tmp_path / "created"
    monkeypatch.setattr(jg.config, "cache_dir", str(top / "by" / "jitgrad"))
    old = os.umask(0)
    try:
        compile_and_call(tmp_path)
    finally:
        os.umask(old)
    assert files_under(top, "k_") and [f for f in files_under(top) if f.endswith(".nbi")]
    for directory, _, names in os.walk(top):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
        for name in names:
            assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o600, name


def _world_writable_cache_dir(path, tmp_path):
    path.mkdir(mode=0o700)
    path.chmod(0o777)


def _group_writable_kernels_dir(path, tmp_path):
    (path / "kernels").mkdir(parents=True)
    (path / "kernels").chmod(0o770)


def _cache_dir_of_another_user(path, tmp_path):
    path.mkdir(mode=0o755)
    os.chown(path, NOBODY, NOBODY)


def _kernels_dir_of_another_user(path, tmp_path):
    (path / "kernels").mkdir(parents=True, mode=0o755)
    os.chown(path / "kernels", NOBODY, NOBODY)


def _pycache_of_another_user(path, tmp_path):
    pycache = path / "kernels" / "__pycache__"
    pycache.mkdir(parents=True, mode=0o755)
    os.chown(pycache, NOBODY, NOBODY)


def _symlink_to_a_dir_of_another_user(path, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    path.symlink_to(theirs)


def _symlink_of_another_user_to_a_private_dir(path, tmp_path):
    (tmp_path / "mine").mkdir(mode=0o700)
    path.symlink_to(tmp_path / "mine")
    os.lchown(path, NOBODY, NOBODY)


@pytest.mark.parametrize(
    "setup, refused, reason",
    [
        (_world_writable_cache_dir, "", "group- or world-writable (mode 777)"),
        (_group_writable_kernels_dir, "kernels", "group- or world-writable (mode 770)"),
        pytest.param(_cache_dir_of_another_user, "", f"owned by uid {NOBODY}", marks=needs_root),
        pytest.param(
            _kernels_dir_of_another_user, "kernels", f"owned by uid {NOBODY}", marks=needs_root
        ),
        pytest.param(
            _pycache_of_another_user,
            "kernels/__pycache__",
            f"owned by uid {NOBODY}",
            marks=needs_root,
        ),
        pytest.param(
            _symlink_to_a_dir_of_another_user, "", f"owned by uid {NOBODY}", marks=needs_root
        ),
        pytest.param(
            _symlink_of_another_user_to_a_private_dir,
            "",
            f"a symlink owned by uid {NOBODY}",
            marks=needs_root,
        ),
    ],
)
def test_unsafe_directory_is_refused_with_one_warning(cache_dir, tmp_path, setup, refused, reason):
    setup(cache_dir, tmp_path)
    with pytest.warns(RuntimeWarning) as record:
        compile_and_call(tmp_path)
        compile_and_call(tmp_path, offset=1)
    messages = cache_warnings(record)
    assert len(messages) == 1, messages
    assert f"{os.path.join(cache_dir, refused).rstrip('/')} is " in messages[0]
    assert reason in messages[0]
    assert not [f for f in files_under(tmp_path) if f.endswith((".py", ".nbi", ".nbc"))]


def test_directories_are_checked_once_per_process(cache_dir, tmp_path, monkeypatch):
    checked = []
    lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, **kw: checked.append(str(p)) or lstat(p, **kw))
    compile_and_call(tmp_path)
    first = {p for p in checked if p.startswith(str(cache_dir))}
    checked.clear()
    compile_and_call(tmp_path, offset=1)
    assert {str(cache_dir), str(cache_dir / "kernels")} <= first
    assert not [p for p in checked if p in first]


def test_empty_cache_dir_variable_means_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("JITGRAD_CACHE_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Config().cache_dir == os.path.join(str(tmp_path), ".cache", "jitgrad")


def _failing_replace(code, only_suffixes=None):
    """os.replace failing with `code` (for destinations ending in `only_suffixes`, if given),
    as it does on a full or read-only disk."""
    replace = os.replace

    def failing(src, dst, **kw):
        if only_suffixes is None or str(dst).endswith(only_suffixes):
            raise OSError(code, os.strerror(code), str(dst))
        return replace(src, dst, **kw)

    return failing


@pytest.mark.parametrize("code", DISK_ERRORS, ids=errno.errorcode.get)
def test_failed_module_write_compiles_in_memory_with_one_warning(
    cache_dir, tmp_path, monkeypatch, code
):
    monkeypatch.setattr(os, "replace", _failing_replace(code))
    with pytest.warns(RuntimeWarning) as record:
        compile_and_call(tmp_path)
        compile_and_call(tmp_path, offset=1)
    assert not files_under(cache_dir, ".tmp") and not files_under(cache.memory_dir(), ".tmp")
    messages = cache_warnings(record)
    assert len(messages) == 1 and os.strerror(code) in messages[0], messages


def nested_sines(depth):
    """sin(sin(...(x) + 0.5...) + 0.5): one structure per depth, so that each case compiles its
    own kernel (kernels are shared by structure within a process)."""

    def f(x):
        for _ in range(depth):
            x = jg.sin(x) + 0.5
        return x

    return f


@pytest.mark.parametrize("code", DISK_ERRORS, ids=errno.errorcode.get)
def test_failed_numba_cache_write_still_gives_the_kernel(cache_dir, monkeypatch, code):
    monkeypatch.setattr(os, "replace", _failing_replace(code, (".nbi", ".nbc")))
    depth = 5 + DISK_ERRORS.index(code)
    f = jg.jit(nested_sines(depth))
    x = np.linspace(-1.0, 1.0, 6)
    with pytest.warns(RuntimeWarning) as record:
        np.testing.assert_allclose(f(x), nested_sines(depth)(x).numpy(), rtol=1e-12)
        np.testing.assert_allclose(f(x[:4]), nested_sines(depth)(x[:4]).numpy(), rtol=1e-12)
    messages = cache_warnings(record)
    assert len(messages) == 1 and os.strerror(code) in messages[0], messages
    leftovers = [
        p
        for p in files_under(cache_dir)
        if ".tmp" in os.path.basename(p) or p.endswith((".nbi", ".nbc"))
    ]
    assert not leftovers
