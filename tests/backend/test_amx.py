"""amx.py: float32 products on AMX tiles, each operand cut into three exact bfloat16 parts.
Against float64 products (every layout a kernel passes, shapes that end inside a tile, k not
a multiple of the tile's 32, a's rows in several chunks, C's columns over 1 to 3 threads), on
the scale of sum |a||b| where BLAS's own error lies. BLAS's bits where the tiles decline:
operands holding an infinity or a NaN, products of only tiny terms, a process without the
OS's permission. The emitter names the tiles only for large float32 products, with
jitgrad.config.amx on, on a CPU that has AMX, and then keeps the kernel's BLAS products on one
thread (the caller's BLAS threads restored); a compiled MLP on the tiles agrees with its
gradients by hand in float64. On a CPU without AMX only the emitter's choice is tested."""

import re

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.backend.numba import amx, runtime, symbols

on_amx = pytest.mark.skipif(not amx.available(), reason="this CPU (or OS) has no AMX")


@pytest.fixture(autouse=True, scope="module")
def tile_helpers_compiled():
    """The emitter names the tiles only once their helpers are compiled (symbols.all_compiled):
    compiled here first, as the warmer process does on a new installation."""
    if amx.available():
        symbols.compile_all(amx.KERNEL_HELPERS, ("float32",))


@numba.njit
def blas_product(a, b, out):
    runtime.matmul_into(runtime.strided(a), runtime.strided(b), out)


@numba.njit
def helper_product(a, b, out, threads=2):
    amx.amx_matmul_into(runtime.strided(a), runtime.strided(b), out, threads)


def operands(rng, m, k, n, layouts):
    """a (m x k) and b (k x n) float32 in `layouts`: C (row-major), F (column-major: the
    transposed views kernels pass), S (every other column of a wider matrix)."""
    matrices = []
    for (rows, cols), layout in zip([(m, k), (k, n)], layouts):
        if layout == "S":
            x = rng.standard_normal((rows, 2 * cols)).astype(np.float32)[:, ::2]
        else:
            x = np.asarray(rng.standard_normal((rows, cols)), np.float32, order=layout)
        matrices.append(x)
    return matrices


def relative_error(out, a, b) -> float:
    """max |out - a @ b| / (|a| @ |b|), in float64: a float32 product's error is of the order
    of k unit roundoffs of that scale."""
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    return float(np.max(np.abs(out - exact) / np.maximum(scale, np.finfo(np.float32).tiny)))


@on_amx
@pytest.mark.parametrize(
    "m, k, n",
    # (600, 1024, 40): on one thread, a's parts in three chunks of rows (amx.LEFT_BYTES), the
    # last one short; on two or three, C's rows split (m > n), each range in one chunk
    [
        (32, 32, 32),
        (1, 1, 1),
        (33, 65, 47),
        (50, 70, 90),
        (128, 300, 96),
        (64, 1, 40),
        (600, 1024, 40),
    ],
)
@pytest.mark.parametrize("layouts", ["CC", "CF", "FC", "FF", "SS"])
def test_products_on_the_tiles_hold_float32_accuracy(m, k, n, layouts):
    a, b = operands(np.random.default_rng(m + 10 * k + 100 * n), m, k, n, layouts)
    blas = np.empty((m, n), np.float32)
    blas_product(np.ascontiguousarray(a), np.ascontiguousarray(b), blas)
    for threads in (1, 2, 3):  # one range; or C's columns (m <= n) or rows split, some empty
        out = np.full((m, n), np.nan, np.float32)
        assert amx.matmul(a, b, out, threads)
        # Per product term: the three part products left out (2 unit roundoffs) and the
        # roundings of adding the six in float32 (one each), beyond BLAS's own error.
        assert relative_error(out, a, b) <= relative_error(blas, a, b) + 8 * 2.0**-24


@on_amx
@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 70),
    st.integers(1, 100),
    st.integers(1, 70),
    st.sampled_from(["CC", "CF", "FC", "FF"]),
    st.sampled_from([1e-12, 1.0, 1e30]),
)
def test_any_shape_and_magnitude(m, k, n, layouts, magnitude):
    a, b = operands(np.random.default_rng(m * k * n), m, k, n, layouts)
    a = (a * np.float32(magnitude)).astype(np.float32)
    out = np.full((m, n), np.nan, np.float32)
    assert amx.matmul(a, b, out, 2)
    assert relative_error(out, a, b) <= 2e-6


@on_amx
def test_products_of_only_tiny_terms_go_to_blas():
    """Below ~2^-105 AMX's bfloat16 arithmetic loses the parts' low bits (amx.py): where no
    term can reach 2^-80 the product is BLAS's, bit for bit."""
    m, k, n = 256, 512, 512
    a, b = operands(np.random.default_rng(6), m, k, n, "CC")
    a = (a * np.float32(1e-30)).astype(np.float32)
    assert not amx.matmul(a, b, np.empty((m, n), np.float32), 2)
    ours, blas = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    helper_product(a, b, ours)
    blas_product(a, b, blas)
    np.testing.assert_array_equal(ours, blas)
    a[0, 0] = 1.0  # one ordinary term: the tiles again, within float32's accuracy
    assert amx.matmul(a, b, ours, 2)
    assert relative_error(ours, a, b) <= 2e-6


@on_amx
def test_a_range_of_rows_of_only_tiny_terms_sends_the_product_to_blas():
    """With C's rows split over the threads (m > n), a range whose rows of a are all tiny
    declines, and the whole product is BLAS's."""
    m, k, n = 512, 256, 128
    a, b = operands(np.random.default_rng(8), m, k, n, "FC")
    a[256:] *= np.float32(1e-30)
    assert amx.matmul(a, b, np.empty((m, n), np.float32), 1)  # one range: a's largest is 1
    assert not amx.matmul(a, b, np.empty((m, n), np.float32), 2)
    ours, blas = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    helper_product(a, b, ours)
    blas_product(a, b, blas)
    np.testing.assert_array_equal(ours, blas)


@on_amx
def test_a_subnormal_last_part_does_not_spill_into_its_pair():
    """1.6187456e-34's last part is subnormal: its low 16 bits, kept, were or-ed into the
    other element of its pair's word (a product came out as -2.4e23)."""
    x = np.array([0x07572B0F], np.uint32).view(np.float32)[0]
    a = np.full((32, 64), x, np.float32)
    a[:, 0] = 1.0
    b = np.ones((64, 32), np.float32)
    out = np.empty((32, 32), np.float32)
    assert amx.matmul(a, b, out, 2)
    assert relative_error(out, a, b) <= 2e-6


@on_amx
@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", ["a", "b"])
def test_an_operand_holding_inf_or_nan_goes_to_blas(special, where):
    """The parts of an infinity are inf and NaN (inf - inf): the tiles would return NaN where
    BLAS returns inf. The helper gives BLAS's bits."""
    m, k, n = 256, 512, 512  # >= amx.MIN_WORK multiply-adds: the helper tries the tiles first
    assert m * k * n >= amx.MIN_WORK
    a, b = operands(np.random.default_rng(3), m, k, n, "CC")
    (a if where == "a" else b)[5, 7] = special
    assert not amx.matmul(a, b, np.empty((m, n), np.float32), 2)
    ours, blas = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    helper_product(a, b, ours)
    blas_product(a, b, blas)
    np.testing.assert_array_equal(ours, blas)


@on_amx
def test_the_helper_uses_the_tiles_for_large_products_and_blas_for_small_ones():
    rng = np.random.default_rng(4)
    small = operands(rng, 8, 9, 10, "CC")
    ours, blas = np.empty((8, 10), np.float32), np.empty((8, 10), np.float32)
    helper_product(*small, ours)
    blas_product(*small, blas)
    np.testing.assert_array_equal(ours, blas)
    a, b = operands(rng, 256, 512, 512, "CF")
    out, tiles = np.empty((256, 512), np.float32), np.empty((256, 512), np.float32)
    helper_product(a, b, out)
    assert amx.matmul(a, b, tiles, 2)
    np.testing.assert_array_equal(out, tiles)
    with pytest.raises(ValueError, match="shapes do not agree"):
        helper_product(a, b, np.empty((256, 511), np.float32))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_smallest_product_on_the_tiles_depends_on_the_threads(threads):
    """One thread: the tiles win from 2^22 multiply-adds; several: only from 2^24."""
    smallest = amx.MIN_WORK_ONE_THREAD if threads == 1 else amx.MIN_WORK
    assert amx.MIN_WORK_ONE_THREAD < amx.MIN_WORK
    assert not amx.wins(np.float32, smallest - 1, threads)
    assert amx.wins(np.float32, smallest, threads) == amx.available()
    assert not amx.wins(np.float64, smallest, threads)


@on_amx
def test_the_helper_on_one_thread_uses_the_tiles_from_the_smaller_size():
    """A product of 2^22 multiply-adds: the tiles' bits on one thread, BLAS's on two."""
    m, k, n = 64, 256, 256
    assert m * k * n == amx.MIN_WORK_ONE_THREAD
    a, b = operands(np.random.default_rng(6), m, k, n, "FC")
    tiles, blas = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    assert amx.matmul(a, b, tiles, 1)
    blas_product(a, b, blas)
    assert not np.array_equal(tiles, blas)  # the two differ in their last bits here
    for threads, expected in ((1, tiles), (2, blas)):
        out = np.empty((m, n), np.float32)
        helper_product(a, b, out, threads)
        np.testing.assert_array_equal(out, expected)


def mlp_loss(params, x):
    h = jg.nn.relu(x @ params["w1"] + params["b1"])
    return jg.reduce_sum(jg.tanh(h @ params["w2"]))


def mlp_args(dtype=np.float32):
    """A product of 128 x 512 x 1024 = 2^26 multiply-adds (above amx.MIN_WORK) and a small
    one."""
    rng = np.random.default_rng(5)
    params = {
        "w1": (rng.standard_normal((512, 1024)) / 23).astype(dtype),
        "b1": np.zeros(1024, dtype),
        "w2": (rng.standard_normal((1024, 4)) / 32).astype(dtype),
    }
    return params, rng.standard_normal((128, 512)).astype(dtype)


@pytest.mark.parametrize("amx_on", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_emitter_names_the_tiles_for_large_float32_products_only(amx_on, threads, monkeypatch):
    monkeypatch.setattr(jg.config, "amx", amx_on)
    monkeypatch.setattr(jg.config, "num_threads", threads)
    source = jg.jit_grad(mlp_loss, wrt=0).lower(*mlp_args()).source
    tiles = amx_on and amx.available()
    assert ("amx_matmul_into(" in source) == tiles
    if tiles:  # C's columns over the kernel's threads
        assert re.search(rf"amx_matmul_into\(.*, {threads}\)", source)
    # The small products stay on BLAS: on one thread beside tiles on several (OpenBLAS's
    # spinning worker would take the core of the tiles' second range).
    assert ("matmul_into_one_thread(" in source) == (tiles and threads > 1)
    assert re.search(r"(?<!amx_)matmul_into(_one_thread)?\(strided", source)
    source64 = jg.jit_grad(mlp_loss, wrt=0).lower(*mlp_args(np.float64)).source
    assert "amx_matmul_into(" not in source64 and "one_thread" not in source64


def test_the_emitter_uses_blas_until_the_tile_helpers_are_compiled(monkeypatch):
    """On a new installation the tile helpers take seconds to compile: a kernel emitted
    before they are in Numba's cache multiplies by BLAS, so that it is served without
    waiting for them; once they are, kernels use the tiles."""
    monkeypatch.setattr(jg.config, "amx", True)
    monkeypatch.setattr(jg.config, "num_threads", 2)
    monkeypatch.setattr(symbols, "_ready", set())
    monkeypatch.setattr(symbols, "_compiled", lambda dispatcher, argtypes, load_only: None)
    assert not symbols.all_compiled(amx.KERNEL_HELPERS, ("float32",)) or not amx.available()
    source = jg.jit_grad(mlp_loss, wrt=0).lower(*mlp_args()).source
    assert "amx_matmul_into(" not in source and "one_thread" not in source
    monkeypatch.undo()
    monkeypatch.setattr(jg.config, "amx", True)
    monkeypatch.setattr(jg.config, "num_threads", 2)
    source = jg.jit_grad(mlp_loss, wrt=0).lower(*mlp_args()).source
    assert ("amx_matmul_into(" in source) == amx.available()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_one_thread_kernel_puts_smaller_products_on_the_tiles(threads, monkeypatch):
    """Products of 64 x 512 x 256 (2^23 multiply-adds): on the tiles in a kernel of one thread
    (W11's ranks), on BLAS in one of two."""
    monkeypatch.setattr(jg.config, "amx", True)
    monkeypatch.setattr(jg.config, "num_threads", threads)
    rng = np.random.default_rng(7)
    params = {
        "w1": rng.standard_normal((512, 256)).astype(np.float32),
        "b1": np.zeros(256, np.float32),
        "w2": rng.standard_normal((256, 4)).astype(np.float32),
    }
    x = rng.standard_normal((64, 512)).astype(np.float32)
    source = jg.jit_grad(mlp_loss, wrt=0).lower(params, x).source
    tiles = threads == 1 and amx.available()
    assert source.count("amx_matmul_into(") == (2 if tiles else 0)  # forward, w1's gradient


def mlp_reference(params, x):
    """mlp_loss and its gradients by hand, in float64."""
    w1, b1, w2 = (params[name].astype(np.float64) for name in ("w1", "b1", "w2"))
    z1 = x.astype(np.float64) @ w1 + b1
    h = np.maximum(z1, 0)
    t = np.tanh(h @ w2)
    dz2 = 1 - t**2
    dz1 = (dz2 @ w2.T) * (z1 > 0)
    grads = {"w1": x.astype(np.float64).T @ dz1, "b1": dz1.sum(0), "w2": h.T @ dz2}
    return t.sum(), grads


@on_amx
def test_a_compiled_mlp_on_the_tiles_agrees_with_float64():
    params, x = mlp_args()
    function = jg.jit_grad(mlp_loss, wrt=0)
    assert "amx_matmul_into(" in function.lower(params, x).source
    value, grads = function(params, x)
    expected_value, expected = mlp_reference(params, x)
    np.testing.assert_allclose(value, expected_value, rtol=1e-4)
    for name, exact in expected.items():
        np.testing.assert_allclose(grads[name], exact, rtol=0, atol=1e-5 * np.max(np.abs(exact)))


@on_amx
def test_a_kernel_with_tiles_on_two_threads_leaves_the_blas_threads_as_they_were(monkeypatch):
    """Its BLAS products run on one thread (amx.matmul_into_one_thread), each restoring the
    caller's count."""
    from jitgrad.backend.numba.blas_threads import scipy_openblas

    threads = getattr(scipy_openblas(), "scipy_openblas_get_num_threads", None)
    if threads is None:
        pytest.skip("scipy does not bundle OpenBLAS here")
    monkeypatch.setattr(jg.config, "num_threads", 2)
    monkeypatch.setattr(jg.config, "compile", "blocking")
    function = jg.jit_grad(mlp_loss, wrt=0)
    params, x = mlp_args()
    assert "matmul_into_one_thread(" in function.lower(params, x).source
    before = threads()
    value, grads = function(params, x)
    assert threads() == before
    expected_value, expected = mlp_reference(params, x)
    np.testing.assert_allclose(value, expected_value, rtol=1e-4)
    for name, exact in expected.items():
        np.testing.assert_allclose(grads[name], exact, rtol=0, atol=1e-5 * np.max(np.abs(exact)))


@on_amx
def test_a_process_without_the_permission_multiplies_by_blas():
    """The tile instructions raise SIGILL until Linux grants the tile state: the helper reads
    the flag amx.available() sets and, without it, gives BLAS's product."""
    m, k, n = 256, 512, 512
    a, b = operands(np.random.default_rng(7), m, k, n, "CC")
    ours, blas = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    blas_product(a, b, blas)
    amx._PERMITTED.value = 0
    try:
        helper_product(a, b, ours)
    finally:
        amx._PERMITTED.value = 1
    np.testing.assert_array_equal(ours, blas)
    helper_product(a, b, ours)
    assert not np.array_equal(ours, blas)  # the tiles again: not BLAS's bits


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 100),
    st.integers(1, 70),
    st.integers(0, 3),
    st.integers(1, 4),
    st.sampled_from(["C", "F"]),
)
def test_the_vector_cuts_of_b_equal_the_cut_element_by_element(k, n, first_block, blocks, layout):
    """pack_right's row-major and column-major paths write the very words (and padding) that
    its element-by-element path writes for the same b held with other strides."""
    wide = np.random.default_rng(k * n).standard_normal((k, 2 * n)).astype(np.float32)
    strided = wide[:, ::2]  # neither layout: every tile element by element
    held = np.asarray(strided, order=layout)
    shape = (amx.PARTS, blocks, (k + amx.K_TILE - 1) // amx.K_TILE, amx.ROWS, amx.ROWS)
    by_vectors, by_elements = np.zeros(shape, np.uint32), np.ones(shape, np.uint32)
    assert amx.pack_right(held, by_vectors, first_block, blocks) == amx.pack_right(
        strided, by_elements, first_block, blocks
    )
    np.testing.assert_array_equal(by_vectors, by_elements)
