"""The on-disk kernel cache: a second process loads the kernel instead of compiling it;
writes are atomic, corrupted entries are rebuilt, an unusable directory falls back to memory,
an edited backend helper invalidates the kernels that inline it. Permissions, ownership and
full disks: test_cache_security.py."""

import os
import shutil
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import cache

SCRIPT = textwrap.dedent("""
    import numpy as np
    import jitgrad as jg

    @jg.jit_grad(wrt=(1, 2))
    def w2(x, w, b):
        return jg.reduce_mean(jg.tanh(x * w + b) ** 2)

    x = np.linspace(-1, 1, 64).astype(np.float32)
    value, (dw, db) = w2(x, x, x)
    info = w2.cache_info()
    print(round(float(value), 6), round(float(np.asarray(dw).sum()), 6), info.disk_loads)
""")


def run_script(env_extra):
    env = dict(os.environ, **env_extra)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split(), out.stderr


def test_second_process_loads_the_kernel_from_disk(tmp_path):
    env = {"JITGRAD_CACHE_DIR": str(tmp_path)}
    first, _ = run_script(env)
    second, _ = run_script(env)
    assert first[:2] == second[:2]
    assert first[2] == "0"  # compiled by Numba
    assert second[2] == "1"  # machine code loaded from the cache: no Numba compilation
    root = tmp_path / "kernels"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert any(p.suffix == ".py" for p in root.iterdir())


LOADS_SCRIPT = textwrap.dedent("""
    import numpy as np
    import jitgrad as jg

    # A fresh process whose first kernels come from the cache: a product (BLAS through
    # scipy's bindings), a prange loop (Numba's threading layer) and a raising index check
    # (an exception built at run time) must all work without Numba's registries loaded.
    product = jg.jit_grad(lambda w, x: jg.reduce_sum(jg.tanh(x @ w)), wrt=0)
    wide = jg.jit(lambda x: jg.reduce_sum(jg.tanh(x) * 2.0))
    loss = jg.jit(
        lambda logits, y: jg.reduce_sum(jg.sparse_softmax_cross_entropy_with_logits(y, logits))
    )
    w = np.linspace(-1, 1, 12).reshape(4, 3)
    x = np.linspace(0, 1, 8).reshape(2, 4)
    value, grad = product(w, x)
    big = float(wide(np.linspace(-1, 1, 1 << 17).astype(np.float32)))
    float(loss(x, np.array([1, 3])))
    try:
        loss(x, np.array([1, 7]))
        message = "no error"
    except IndexError as exc:
        message = "7" if "label 7" in str(exc) else str(exc)
    loads = sum(f.cache_info().disk_loads for f in (product, wide, loss))
    print(round(float(value), 9), round(float(np.asarray(grad).sum()), 9), round(big, 3),
          message, loads)
""")


def test_a_fresh_process_runs_kernels_loaded_from_disk(tmp_path):
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(tmp_path), JITGRAD_COMPILE="blocking")
    outputs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", LOADS_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout.split())
    first, second = outputs
    assert first[:4] == second[:4]
    assert first[3] == "7"  # the kernel's IndexError names the label
    assert (first[4], second[4]) == ("0", "3")


def test_disable_cache_writes_nothing(tmp_path):
    out, _ = run_script({"JITGRAD_CACHE_DIR": str(tmp_path), "JITGRAD_DISABLE_CACHE": "1"})
    assert out[2] == "0"
    assert not (tmp_path / "kernels").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_unwritable_cache_dir_falls_back_to_memory(tmp_path):
    tmp_path.chmod(0o500)
    try:
        out, err = run_script({"JITGRAD_CACHE_DIR": str(tmp_path / "sub")})
    finally:
        tmp_path.chmod(0o700)
    assert "cache is unavailable" in err


def test_unusable_cache_dir_falls_back_to_memory_with_one_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out, err = run_script({"JITGRAD_CACHE_DIR": str(blocker)})
    assert err.count("cache is unavailable") == 1
    assert float(out[0]) > 0


def test_corrupted_module_is_detected_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(jg.config, "cache_dir", str(tmp_path))
    source = "x = 1\n"
    key = cache.source_key(source)
    path = cache.write_module(source, key)
    with open(path, "w") as fh:
        fh.write("x = ")  # truncated
    with pytest.warns(RuntimeWarning, match="corrupted"):
        again = cache.write_module(source, key)
    assert again == path
    with open(path) as fh:
        assert fh.read() == source


def test_cache_key_covers_source_and_versions():
    assert cache.source_key("a") != cache.source_key("b")
    assert "numba" in cache.versions() and "jitgrad" in cache.versions()


TANH_SCRIPT = textwrap.dedent("""
    import numpy as np
    import jitgrad as jg

    print(float(jg.jit(jg.tanh)(np.full(4, 0.5, np.float32))[0]))
""")

CONSTANT_TANH = textwrap.dedent("""

    @njit(**_JIT)
    def vtanh_f32(x):
        return np.float32(7.0)
""")


def test_editing_a_backend_helper_recompiles_cached_kernels(tmp_path):
    """Kernels inline vmath's helpers into their machine code: after an edit of vmath (an
    editable install), a kernel cached before must not keep running the old helper."""
    package = tmp_path / "copy" / "jitgrad"
    shutil.copytree(
        os.path.dirname(jg.__file__), package, ignore=shutil.ignore_patterns("__pycache__")
    )
    env = dict(os.environ, PYTHONPATH=str(package.parent), JITGRAD_CACHE_DIR=str(tmp_path))

    def tanh_of_half():
        out = subprocess.run(
            [sys.executable, "-c", TANH_SCRIPT],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        return float(out.stdout)

    assert tanh_of_half() == pytest.approx(np.tanh(0.5))
    with open(package / "backend" / "numba" / "vmath.py", "a") as fh:
        fh.write(CONSTANT_TANH)
    assert tanh_of_half() == 7.0


def test_no_temporary_files_left_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(jg.config, "cache_dir", str(tmp_path))
    for k in range(3):
        cache.write_module(f"y = {k}\n", cache.source_key(f"y = {k}\n"))
    names = [n for n in os.listdir(tmp_path / "kernels") if n != "__pycache__"]
    assert len(names) == 3 and not [n for n in names if n.startswith(".tmp_")]
    np.testing.assert_equal(len(set(names)), 3)


def _numba_files(root, suffix):
    pycache = root / "kernels" / "__pycache__"
    return [p for p in pycache.iterdir() if p.suffix == suffix]


@pytest.mark.parametrize("suffix", [".nbc", ".nbi"])
def test_truncated_numba_cache_file_falls_back_with_one_warning(tmp_path, suffix):
    env = {"JITGRAD_CACHE_DIR": str(tmp_path)}
    first, _ = run_script(env)
    for f in _numba_files(tmp_path, suffix):
        f.write_bytes(f.read_bytes()[:20])
    second, err = run_script(env)
    assert second[:2] == first[:2]
    assert err.count("could not be loaded") == 1
    third, err = run_script(env)  # the entry was rebuilt
    assert third[:2] == first[:2] and "could not be loaded" not in err


def test_cache_entry_from_another_numba_version_is_recompiled_with_one_warning(tmp_path):
    import pickle

    env = {"JITGRAD_CACHE_DIR": str(tmp_path)}
    first, _ = run_script(env)
    for f in _numba_files(tmp_path, ".nbi"):
        data = f.read_bytes()
        version_length = len(pickle.dumps(pickle.loads(data)))
        f.write_bytes(pickle.dumps("0.0.1") + data[version_length:])
    second, err = run_script(env)
    assert second[:2] == first[:2]
    assert err.count("held no machine code for this CPU and Numba version") == 1


def test_two_processes_compiling_into_one_cache_at_once(tmp_path):
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(tmp_path))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    results = [out.split()[:2] for out, _ in outs]
    assert results[0] == results[1]
    third, _ = run_script({"JITGRAD_CACHE_DIR": str(tmp_path)})
    assert third[:2] == results[0] and third[2] == "1"


def test_kernel_modules_import_by_name_from_the_cache(tmp_path):
    """Numba names the helpers it compiles once per process (a float power in a train step's
    scalar code) after the first kernel module that needed them, so a later kernel's cached
    machine code can refer to an earlier kernel's module (two Adam steps of different shapes
    here), which another process, a rank of the same job or the next run, may never have
    loaded. Such a module imports by its name from its file in the cache; a file whose
    contents are not what its name says does not."""
    script = textwrap.dedent("""
        import numpy as np
        import jitgrad as jg

        def loss(p, x):
            return jg.reduce_sum(jg.sin(x @ p["w"]))

        for n in (3, 5):
            p = {"w": np.ones((4, n), np.float32)}
            opt = jg.optim.Adam(0.01)
            jg.jit_train_step(loss, opt)(p, opt.init(p), np.ones((2, 4), np.float32))
    """)
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(tmp_path), JITGRAD_COMPILE="blocking")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    root = tmp_path / "kernels"
    keys = sorted(p.stem[2:] for p in root.glob("k_*.py"))
    machine_code = [p.read_bytes() for p in (root / "__pycache__").glob("*.nbc")]
    assert any(  # the situation this is for: one kernel's code names another's module
        sum(f"jitgrad_kernel_{key}".encode() in code for key in keys) > 1 for code in machine_code
    )
    (root / f"k_{'0' * 24}.py").write_text((root / f"k_{keys[0]}.py").read_text())
    check = textwrap.dedent(f"""
        import importlib
        import jitgrad.backend.numba.compile
        for key in {keys!r}:
            module = importlib.import_module("jitgrad_kernel_" + key)
            assert callable(module.kernel), key
        try:
            importlib.import_module("jitgrad_kernel_" + "0" * 24)
        except ModuleNotFoundError:
            print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]
