"""numpy's array-building and index-making functions (jitgrad/numpy/shaping.py): values and
dtypes against numpy eagerly and under jit (the cases grouped into a few compiled functions),
gradients against finite differences (eager and one compiled), numpy's own functions on
tensors, the dtype helpers, and the errors (eager, and compiled index checks)."""

from __future__ import annotations

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.numpy as jnp
from jitgrad.core.errors import TracerError
from jitgrad.testing import check_grads

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
X3 = RNG.standard_normal((2, 3, 4))
V = RNG.standard_normal(5)
F32 = RNG.standard_normal((3, 2)).astype(np.float32)
I32 = np.arange(3, dtype=np.int32)
CHOICE = np.array([[0, 2, 1, 1], [2, 0, 0, 1], [1, 1, 2, 0]])
FLAT = np.array([[0, 5], [11, 7]])
SPECIAL = np.array([np.nan, -0.0, np.inf, 1.0, -np.inf])
EMPTY = np.zeros((0, 3))

# (name, the call on the module `m` (numpy or jitgrad.numpy), its array arguments): under jit
# the arrays are the traced arguments; shapes, positions and modes are static.
CASES = [
    ("flipud", lambda m, x: m.flipud(x), [X]),
    ("fliplr", lambda m, x: m.fliplr(x), [X3]),
    ("rot90", lambda m, x: m.rot90(x), [X]),
    ("rot90 k=2", lambda m, x: m.rot90(x, 2), [X]),
    ("rot90 k=3", lambda m, x: m.rot90(x, 3), [X]),
    ("rot90 k=4", lambda m, x: m.rot90(x, 4), [X]),
    ("rot90 k=-1 axes", lambda m, x: m.rot90(x, -1, (2, 0)), [X3]),
    ("rot90 negative axes", lambda m, x: m.rot90(x, 1, (-1, 1)), [X3]),
    ("column_stack dtypes", lambda m, i, f: m.column_stack([i, f]), [I32, F32]),
    ("column_stack scalar", lambda m, x: m.column_stack([x[0, 0], x[:1]]), [X]),
    ("dstack", lambda m, x: m.dstack([x, 2 * x]), [X]),
    ("dstack vectors", lambda m, v: m.dstack([v, v]), [V]),
    ("atleast_3d", lambda m, x: m.atleast_3d(x), [X]),
    ("atleast_3d several", lambda m, v, x: m.atleast_3d(v[0], v, x, x[None]), [V, X]),
    (
        "block 2-d",
        lambda m, x, i: m.block([[x[:2, :2], x[:2] * 2], [i[None, :2], x[2:]]]),
        [X, I32],
    ),
    ("block scalar leaf", lambda m, v: m.block([1.0, v]), [V]),
    ("block 3 deep", lambda m, x: m.block([[[x]], [[x + 1]]]), [X3]),
    ("block one array", lambda m, x: m.block(x), [X]),
    ("append flat", lambda m, x, v: m.append(x, v), [X, V]),
    ("append axis", lambda m, x: m.append(x, x[:1], axis=0), [X]),
    ("append weak float", lambda m, f: m.append(f, 2.5), [F32]),
    ("insert int", lambda m, x: m.insert(x, 1, 5.0, axis=1), [X]),
    ("insert values broadcast", lambda m, x, v: m.insert(x, 1, v[:3], axis=1), [X, V]),
    ("insert list of one", lambda m, x, v: m.insert(x, [1], v[:3, None], axis=1), [X, V]),
    ("insert positions", lambda m, x, v: m.insert(x, [0, 2, 2, -1], v[:4], axis=1), [X, V]),
    ("insert slice", lambda m, v: m.insert(v, slice(0, 4, 2), [9.0, 8.0]), [V]),
    ("insert flat", lambda m, x: m.insert(x, 3, [1.0, 2.0]), [X]),
    ("insert negative axis", lambda m, x: m.insert(x, -1, 0.0, axis=-2), [X3]),
    ("insert truncates", lambda m, i: m.insert(i, 1, 2.7), [I32]),
    ("insert into empty", lambda m, e: m.insert(e, 0, 1.0, axis=0), [EMPTY]),
    ("delete", lambda m, x: m.delete(x, 1, axis=1), [X]),
    ("delete flat", lambda m, x: m.delete(x, [0, -1, 5]), [X]),
    ("delete slice", lambda m, x: m.delete(x, slice(None, None, 2), axis=0), [X]),
    ("delete mask", lambda m, v: m.delete(v, [True, False, True, False, False]), [V]),
    ("delete nothing", lambda m, x: m.delete(x, [], axis=1), [X]),
    ("resize", lambda m, x: m.resize(x, (5, 3)), [X]),
    ("resize int", lambda m, x: m.resize(x, 2), [X]),
    ("resize empty", lambda m, e: m.resize(e, (2, 2)), [EMPTY]),
    ("resize to empty", lambda m, x: m.resize(x, (0, 4)), [X]),
    ("diagflat", lambda m, x: m.diagflat(x[:2, :2], k=-1), [X]),
    ("choose", lambda m, i, x: m.choose(i, [x, 2 * x, 0.5]), [CHOICE, X]),
    ("choose wrap", lambda m, i, x: m.choose(i - 4, [x, -x, x * x], mode="wrap"), [CHOICE, X]),
    (
        "choose clip broadcast",
        lambda m, i, f: m.choose(i[:2, :1] * 3 - 1, [f[:, 0], 2], mode="clip"),
        [CHOICE, F32],
    ),
    ("choose from an array", lambda m, i, x: m.choose(i[0], x), [CHOICE, X]),
    ("copy", lambda m, x: m.copy(x), [SPECIAL]),
    ("astype", lambda m, x: m.astype(x, np.float32), [X]),
    ("astype truncates", lambda m, x: m.astype(x * 3, np.int32), [X]),
    ("unravel_index", lambda m, i: m.unravel_index(i, (3, 4)), [FLAT]),
    ("unravel_index F", lambda m, i: m.unravel_index(i.astype(np.int32), (3, 4), "F"), [FLAT]),
    ("unravel_index 3-d", lambda m, i: m.unravel_index(i[1, 1], (2, 2, 2)), [FLAT]),
    ("ravel_multi_index", lambda m, i: m.ravel_multi_index((i[0], i[:, :1]), (12, 12)), [FLAT]),
    (
        "ravel_multi_index modes",
        lambda m, i: m.ravel_multi_index((i[0] - 6, i[1]), (2, 3), ("wrap", "clip"), "F"),
        [FLAT],
    ),
    ("ravel_multi_index array", lambda m, i: m.ravel_multi_index(i, (12, 8), "wrap"), [FLAT]),
    ("ix_", lambda m, i: m.ix_(i[0], [1, 3], i[:, 1]), [FLAT]),
    ("tri", lambda m: m.tri(3, 4, 1), []),
    ("tri int32", lambda m: m.tri(2, dtype=np.int32), []),
    ("triu_indices", lambda m: m.triu_indices(4, 1), []),
    ("tril_indices", lambda m: m.tril_indices(3, -1, 5), []),
    ("triu_indices_from", lambda m, x: m.triu_indices_from(x, 1), [X]),
    ("tril_indices_from", lambda m, x: m.tril_indices_from(x), [X]),
    ("diag_indices", lambda m: m.diag_indices(3, 3), []),
    ("diag_indices_from", lambda m, x: m.diag_indices_from(x[:, :3]), [X]),
    ("indices", lambda m: m.indices((2, 3)), []),
    ("indices sparse int32", lambda m: m.indices((2, 3), np.int32, True), []),
    ("mgrid", lambda m: m.mgrid[0:3, 0:1:4j], []),
    ("mgrid 1-d", lambda m: m.mgrid[0:5:2], []),
    ("ogrid", lambda m: m.ogrid[0:2, 1:4], []),
    ("ogrid 1-d count", lambda m: m.ogrid[0:1:3j], []),
    ("logspace", lambda m: m.logspace(0, 2, 5), []),
    ("logspace base", lambda m: m.logspace(1, 3, 4, base=2.0, endpoint=False), []),
    ("logspace int", lambda m: m.logspace(0, 3, 4, dtype=np.int32), []),
    ("logspace arrays", lambda m: m.logspace([0, 1], [2, 3], 3, axis=1), []),
    ("geomspace", lambda m: m.geomspace(1, 1000, 4), []),
    ("geomspace negative", lambda m: m.geomspace(-1, -100, 3), []),
]
# numpy's results depend on the data here: no size under jit (see test_compress_under_jit).
EAGER_CASES = [
    ("compress axis", lambda m, x: m.compress([1, 0, 1], x, axis=0), [X]),
    ("compress flat", lambda m, x: m.compress([0, 1, 0, 0, 0, 1], x), [X]),
    ("compress shorter", lambda m, x: m.compress([True], x, axis=-1), [X]),
    ("compress longer", lambda m, x: m.compress([1, 0, 1, 0, 0], x, axis=0), [X]),
    ("compress none", lambda m, x: m.compress([0.0, 0.0], x, axis=1), [X]),
    ("compress empty", lambda m, e: m.compress([1, 0], e, axis=1), [EMPTY]),
    ("ix_ mask", lambda m, x: m.ix_(x[0] > 0, [0, 2]), [X]),
    ("ix_ empty list", lambda m: m.ix_([], [1]), []),
]


def leaves(result):
    items = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(r) for r in items]


def assert_matches(got, want, name=""):
    got, want = leaves(got), leaves(want)
    assert len(got) == len(want), name
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name, call, args", CASES + EAGER_CASES, ids=lambda v: v)
def test_eager_values_and_dtypes_are_numpys(name, call, args):
    got = call(jnp, *args)
    assert all(isinstance(g, jg.Tensor) for g in (got if isinstance(got, tuple) else [got]))
    assert_matches(got, call(np, *args))


GROUPS = [CASES[i : i + 10] for i in range(0, len(CASES), 10)]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: f"{g[0][0]}..{g[-1][0]}")
def test_values_under_jit_are_numpys(group):
    """One compiled function per group of cases; every array argument is traced."""
    counts = [len(args) for _, _, args in group]

    def compiled(*flat):
        out, at = [], 0
        for (_, call, _), n in zip(group, counts):
            out.append(call(jnp, *flat[at : at + n]))
            at += n
        return out

    results = jg.jit(compiled)(*[a for _, _, args in group for a in args])
    for (name, call, args), got in zip(group, results):
        assert_matches(got, call(np, *args), name)


def test_compress_under_jit_takes_size():
    """JAX's size=: the first `size` slices, padded with fill_value."""
    fn = jg.jit(
        lambda c, x: (
            jnp.compress(c, x, axis=1, size=3, fill_value=-1.0),
            jnp.compress(c[:3], x, size=2),
            jnp.compress(c[:3], x, axis=0, size=1),
        )
    )
    condition = np.array([False, True, False, True])
    wide, flat, rows = fn(condition, X)
    want = np.concatenate([np.compress(condition, X, axis=1), np.full((3, 1), -1.0)], axis=1)
    np.testing.assert_array_equal(wide.numpy(), want)
    np.testing.assert_array_equal(flat.numpy(), [X.flat[1], 0.0])  # one selected, one fill
    np.testing.assert_array_equal(rows.numpy(), X[1:2])


def test_empty_copy_and_astype():
    """empty gives zeros (a valid uninitialised array: tensors are immutable); copy is a new
    tensor holding a Variable's value at the time; astype's gradient is cast back."""
    for got, want in [
        (jnp.empty((2, 3)), np.empty((2, 3))),
        (jnp.empty(4, np.int32, device="cpu"), np.empty(4, np.int32)),
        (jnp.empty_like(F32), np.empty_like(F32)),
        (jnp.empty_like(X, dtype=np.int64), np.empty_like(X, dtype=np.int64)),
        (jnp.empty_like(X, shape=(2, 3)), np.empty_like(X, shape=(2, 3))),
    ]:
        assert got.shape == want.shape and got.dtype == want.dtype
        assert not got.numpy().any()
    variable = jg.Variable(X)
    snapshot = jnp.copy(variable)
    variable.assign(X + 1)
    np.testing.assert_array_equal(snapshot.numpy(), X)
    assert jnp.copy([1, 2]).dtype == np.int64
    x = jg.Variable(X)
    with jg.GradientTape() as tape:
        y = jnp.sum(jnp.astype(x, np.float32) * np.float32(3.0))
    grad = tape.gradient(y, x)
    assert grad.dtype == np.float64 and np.all(grad.numpy() == 3.0)


def test_dtype_helpers_are_numpys():
    assert jnp.finfo(jnp.float32).eps == np.finfo(np.float32).eps
    assert jnp.iinfo(jnp.int32).max == 2**31 - 1
    assert jnp.promote_types(jnp.int32, jnp.float32) == np.float64
    assert jnp.can_cast(jnp.int32, jnp.float64) and not jnp.can_cast(jnp.float64, jnp.int32)
    assert jnp.dtype("float32") == np.float32 and jnp.finfo is np.finfo
    t = jg.constant(X)
    assert jnp.isrealobj(t) and not jnp.iscomplexobj(t) and not jnp.iscomplexobj([1.0])
    assert jnp.iscomplexobj(np.ones(2, complex)) and jnp.iscomplexobj(1j)
    assert not np.iscomplexobj(t) and np.isrealobj(t)  # numpy's, dispatched here


def test_numpy_calls_on_tensors_come_here():
    t = jg.constant(X)
    for got, want in [
        (np.rot90(t), np.rot90(X)),
        (np.insert(t, 1, 0.0, axis=0), np.insert(X, 1, 0.0, axis=0)),
        (np.delete(t, [0, 2], axis=1), np.delete(X, [0, 2], axis=1)),
        (np.block([[t, t]]), np.block([[X, X]])),
        (np.choose(CHOICE, [t, -t, 0.0]), np.choose(CHOICE, [X, -X, 0.0])),
        (np.astype(t, np.float32), np.astype(X, np.float32)),
        (np.unravel_index(jg.constant(FLAT), (3, 4)), np.unravel_index(FLAT, (3, 4))),
    ]:
        assert isinstance(got, jg.Tensor) or isinstance(got[0], jg.Tensor)
        assert_matches(got, want)


# Differentiable in their float arguments: eager gradients against finite differences.
WEIGHTS = RNG.standard_normal(100)


def weighted(y):
    """A sum that weighs every entry differently, so that a misplaced gradient shows."""
    flat = jnp.ravel(y)
    return jnp.sum(flat * WEIGHTS[: flat.shape[0]])


@pytest.mark.parametrize(
    "name, fn, args",
    [
        ("flipud fliplr", lambda x: weighted(jnp.flipud(x)) * weighted(jnp.fliplr(x)), [X]),
        ("rot90", lambda x: weighted(jnp.rot90(x, 1, (2, 0))) ** 2, [X3]),
        ("rot90 k=3", lambda x: jnp.rot90(x, 3) ** 2, [X]),
        (
            "column_stack dstack",
            lambda x, v: weighted(jnp.column_stack([v[:3], x])) * weighted(jnp.dstack([x, x * x])),
            [X, V],
        ),
        ("atleast_3d", lambda x: jnp.atleast_3d(x) ** 2, [X]),
        ("block", lambda x, v: jnp.block([[x, v[:3, None]], [v[None, :4], 1.0]]) ** 2, [X, V]),
        ("append", lambda x, v: jnp.append(x, v * v) ** 2, [X, V]),
        ("insert", lambda x, v: jnp.insert(x, [0, 2, 2, -1], v[:4], axis=1) ** 2, [X, V]),
        ("insert broadcast", lambda x, v: weighted(jnp.insert(x, 1, v[:3], axis=1)) ** 2, [X, V]),
        ("delete", lambda x: jnp.delete(x, [0, 5, -1]) ** 2, [X]),
        ("resize", lambda x: weighted(jnp.resize(x, (5, 4))) ** 2, [X]),
        ("diagflat", lambda x: jnp.diagflat(x, 1) ** 2, [X[:2]]),
        ("choose", lambda x, y: jnp.choose(CHOICE, [x, y, x * y], mode="clip") ** 2, [X, 2 * X]),
        ("compress", lambda x: jnp.compress([1, 0, 1], x, axis=0) ** 2, [X]),
        ("compress size", lambda x: jnp.compress([0, 1], x, axis=1, size=3) ** 2, [X]),
        ("copy", lambda x: jnp.copy(x) * x, [X]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_gradients_match_finite_differences(name, fn, args):
    check_grads(fn, args, order=2)


def test_compiled_gradient_matches_the_tape():
    def loss(x, v):
        joined = jnp.block([[jnp.insert(x, 2, v[:3], axis=1)], [jnp.resize(v, (1, 5))]])
        moved = jnp.rot90(jnp.delete(joined, 0, axis=1), 3)
        chosen = jnp.choose(CHOICE, [x, v[:4] * x, 1.0], mode="wrap")
        kept = jnp.compress([True, False, True], x, axis=0, size=3, fill_value=2.0)
        return weighted(moved) * weighted(chosen) + weighted(kept * kept)

    value, grads = jg.jit_grad(loss, wrt=(0, 1))(X, V)
    xv, vv = jg.Variable(X), jg.Variable(V)
    with jg.GradientTape() as tape:
        eager = loss(xv, vv)
    want = tape.gradient(eager, [xv, vv])
    np.testing.assert_allclose(float(value), float(eager), rtol=1e-12)
    for got, expected in zip(grads, want):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_compiled_index_checks_raise_when_the_function_runs():
    """Out-of-range traced indices raise jitgrad's IndexError at run time (eagerly: numpy's
    ValueError); wrap and clip modes take any index."""
    fn = jg.jit(
        lambda i, j, k: (
            jnp.unravel_index(i, (3, 4)),
            jnp.ravel_multi_index((j, j), (2, 3)),
            jnp.choose(k, [X[0], X[1]]),
        )
    )
    good = np.array([1, 0, 1, 1])
    fn(np.array([11, 0]), np.array([1, 0]), good)  # valid: no error
    cases = [
        (([12], [1], good), r"unravel_index: index 12 is out of bounds for axis 0 of size 12"),
        (([1], [-1], good), r"ravel_multi_index: index -1 is out of bounds for axis 0 of size 2"),
        (([1], [1], [0, 2, 0, 0]), r"choose: index 2 is out of bounds for axis 0 of size 2"),
    ]
    for args, message in cases:
        with pytest.raises(IndexError, match=message + r".*test_numpy_shaping.py"):
            fn(*[np.asarray(a) for a in args])


def test_errors():
    def raises(exc, message, fn, *args, **kwargs):
        with pytest.raises(exc, match=message + r".*\(test_numpy_shaping.py:\d+\)"):
            fn(*args, **kwargs)

    raises(ValueError, r"flipud: input must be >= 1-d", jnp.flipud, 1.0)
    raises(ValueError, r"fliplr: input must be >= 2-d, got shape \(5,\)", jnp.fliplr, V)
    raises(ValueError, r"rot90: len\(axes\) must be 2", jnp.rot90, X, axes=(0,))
    raises(ValueError, r"rot90: axes must be different", jnp.rot90, X, axes=(1, -1))
    raises(ValueError, r"rot90: axes=\(0, 2\) out of range", jnp.rot90, X, axes=(0, 2))
    raises(ValueError, r"column_stack: needs at least one array", jnp.column_stack, [])
    raises(ValueError, r"append: shapes \[\(3, 4\), \(5,\)\] differ", jnp.append, X, V, axis=0)
    raises(ValueError, r"dstack: shapes .* differ outside axis 2", jnp.dstack, [X, V])
    raises(TypeError, r"block: arrays\[1\] is a tuple", jnp.block, [[X], (X,)])
    raises(ValueError, r"block: the list at arrays\[1\] cannot be empty", jnp.block, [[X], []])
    raises(ValueError, r"block: list depths are mismatched", jnp.block, [[X, X], X])
    raises(IndexError, r"insert: index 5 is out of bounds for axis 0", jnp.insert, V[:3], 5, 1.0)
    raises(ValueError, r"insert: shape mismatch", jnp.insert, V, [1, 2], [1.0, 2.0, 3.0])
    raises(IndexError, r"delete: index 5 is out of bounds", jnp.delete, V, 5)
    raises(ValueError, r"resize: all elements of `new_shape` must be", jnp.resize, V, (-1, 2))
    raises(
        ValueError,
        r"choose: invalid entry in choice array: 3 is not in \[0, 2\)",
        jnp.choose,
        [0, 3],
        [X[0, :2], X[1, :2]],
    )
    raises(ValueError, r"choose: mode must be one of", jnp.choose, [0], [V], mode="bad")
    raises(TypeError, r"choose: a must hold integers, got float64", jnp.choose, [0.0], [V])
    raises(ValueError, r"choose: choices is a 0-length sequence", jnp.choose, 0, [])
    raises(ValueError, r"compress: condition must be a 1-d array", jnp.compress, X > 0, X)
    raises(
        IndexError,
        r"compress: index 3 is out of bounds for axis 0 with size 3",
        jnp.compress,
        [0, 0, 0, 1],
        X,
        axis=0,
    )
    raises(
        ValueError,
        r"unravel_index: index 12 is out of bounds for an array of size 12",
        jnp.unravel_index,
        [3, 12],
        (3, 4),
    )
    raises(ValueError, r"unravel_index: index -1 is out of bounds", jnp.unravel_index, -1, (3, 4))
    raises(TypeError, r"unravel_index: only int indices permitted", jnp.unravel_index, 1.0, (3,))
    raises(
        ValueError,
        r"unravel_index: cannot unravel if the shape has zero",
        jnp.unravel_index,
        0,
        (2, 0),
    )
    raises(
        ValueError,
        r"ravel_multi_index: invalid entry in coordinates array: 3 on axis 1",
        jnp.ravel_multi_index,
        ([0], [3]),
        (2, 3),
    )
    raises(
        ValueError,
        r"ravel_multi_index: multi_index must be a sequence of length 2",
        jnp.ravel_multi_index,
        ([0],),
        (2, 3),
    )
    raises(
        ValueError,
        r"ravel_multi_index: mode must be one of",
        jnp.ravel_multi_index,
        ([0], [0]),
        (2, 3),
        "bad",
    )
    raises(
        ValueError,
        r"ravel_multi_index: 3 modes for the 2 axes",
        jnp.ravel_multi_index,
        ([0], [0]),
        (2, 3),
        ("wrap",) * 3,
    )
    raises(ValueError, r"unravel_index: order must be 'C' or 'F'", jnp.unravel_index, 0, (2,), "A")
    raises(ValueError, r"ix_: cross index must be 1-dimensional", jnp.ix_, X)
    raises(ValueError, r"triu_indices_from: input array must be 2-d", jnp.triu_indices_from, V)
    raises(
        ValueError,
        r"diag_indices_from: all dimensions of input must be of equal",
        jnp.diag_indices_from,
        X,
    )
    raises(
        ValueError, r"diag_indices_from: input array must be at least 2-d", jnp.diag_indices_from, V
    )
    raises(TypeError, r"copy: order='F' is not supported", jnp.copy, X, order="F")
    raises(ValueError, r"empty: device='gpu' is not supported", jnp.empty, 3, device="gpu")
    raises(TypeError, r"tri: dtype complex128", jnp.tri, 2, dtype=np.complex128)
    raises(TypeError, r"compress: out=.*not supported", jnp.compress, [1], V, out=np.zeros(1))


def test_traced_arguments_that_set_shapes_are_refused():
    def refused(exc, message, fn, *args):
        with pytest.raises(exc, match=message):
            jg.jit(fn)(*args)

    refused(TracerError, r"insert's obj", lambda x, i: jnp.insert(x, i, 0.0), V, np.int64(1))
    refused(TracerError, r"delete's obj", lambda x, i: jnp.delete(x, i), V, np.array([1]))
    refused(TracerError, r"logspace's start", lambda s: jnp.logspace(s, 2.0, 3), np.float64(0))
    refused(TracerError, r"ix_: a boolean array stands for", lambda x: jnp.ix_(x > 0), V)
    refused(TracerError, r"compress: .*pass size=", lambda x: jnp.compress(x > 0, x), V)
    refused(
        ValueError,
        r"compress: a traced condition of 6 entries for an axis of 5",
        lambda c, x: jnp.compress(c, x, size=2),
        np.ones(6, bool),
        V,
    )
