"""einsum against np.einsum: every two-operand pattern numpy accepts (repeated labels, size-1
broadcasting, ellipsis, implicit output), three and more operands, gradients by finite
differences in float64, and compiled = eager (one compiled function for all the patterns)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.testing import check_grads

LETTERS = "abcdE"


@st.composite
def equations(draw, n_operands=2, repeats=True, ellipsis=True):
    """(equation, operand shapes): random terms over a few labels, a label's axis sometimes
    of size 1 where another operand has it larger (numpy broadcasts it), an optional ellipsis,
    and an explicit or implicit output."""
    labels = LETTERS[: draw(st.integers(1, len(LETTERS)))]
    sizes = {c: draw(st.integers(1, 3)) for c in labels}
    terms = [
        draw(st.lists(st.sampled_from(labels), max_size=4, unique=not repeats))
        for _ in range(n_operands)
    ]
    counts = {c: sum(c in t for t in terms) for c in labels}
    shapes = []
    for t in terms:
        ones = {c for c in set(t) if counts[c] > 1 and draw(st.booleans()) and draw(st.booleans())}
        shapes.append([1 if c in ones else sizes[c] for c in t])
    dots = ellipsis and draw(st.booleans())
    base = draw(st.lists(st.integers(1, 3), max_size=2)) if dots else []
    texts = []
    for k, t in enumerate(terms):
        if not dots:
            texts.append("".join(t))
            continue
        split = draw(st.integers(0, len(t)))
        rank = draw(st.integers(0, len(base)))
        ell = [1 if draw(st.booleans()) else d for d in base[len(base) - rank :]]
        texts.append("".join(t[:split]) + "..." + "".join(t[split:]))
        shapes[k] = shapes[k][:split] + ell + shapes[k][split:]
    terms = texts
    inputs = ",".join(terms)
    if draw(st.booleans()):
        used = sorted({c for t in terms for c in t if c.isalpha()})
        out = draw(st.permutations(used))
        out = out[: draw(st.integers(0, len(out)))]
        equation = inputs + "->" + ("..." if dots else "") + "".join(out)
    else:
        equation = inputs
    return equation, [tuple(s) for s in shapes]


def _operands(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) for s in shapes]


@settings(max_examples=200)
@given(equations())
def test_two_operands_match_numpy(case):
    equation, shapes = case
    xs = _operands(shapes)
    want = np.einsum(equation, *xs)
    got = jg.einsum(equation, *xs).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=60)
@given(equations(n_operands=3, ellipsis=False))
def test_three_operands_match_numpy(case):
    equation, shapes = case
    xs = _operands(shapes)
    np.testing.assert_allclose(
        jg.einsum(equation, *xs).numpy(), np.einsum(equation, *xs), rtol=1e-12, atol=1e-12
    )


@settings(max_examples=40)
@given(equations())
def test_two_operand_gradients_match_finite_differences(case):
    equation, shapes = case
    check_grads(lambda a, b: jg.einsum(equation, a, b), _operands(shapes, 1), order=1)


@settings(max_examples=15)
@given(equations(n_operands=4, repeats=False, ellipsis=False))
def test_four_operand_gradients_match_finite_differences(case):
    equation, shapes = case
    check_grads(lambda *xs: jg.einsum(equation, *xs), _operands(shapes, 2), order=1)


@pytest.mark.parametrize(
    "equation, shapes",
    [
        ("bxby->bxy", [(2, 3, 2, 3)]),
        ("ii->i", [(3, 3)]),
        ("ii", [(3, 3)]),
        ("iii->i", [(2, 2, 2)]),
        ("mnd,mdo->mno", [(1, 3, 4), (5, 4, 2)]),
        ("ij,jk", [(2, 3), (3, 4)]),
        ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),
        ("i...->...", [(2, 3, 4)]),
        ("ij,jk,kl,lm->im", [(2, 3), (3, 4), (4, 5), (5, 2)]),
        ("ij,jk,ki->", [(2, 3), (3, 4), (4, 2)]),
        ("a,b,c", [(2,), (3,), (1,)]),
        (",->", [(), ()]),
        ("ij,j->i", [(0, 3), (3,)]),
    ],
)
def test_named_patterns(equation, shapes):
    xs = _operands(shapes, 3)
    np.testing.assert_allclose(
        jg.einsum(equation, *xs).numpy(), np.einsum(equation, *xs), rtol=1e-12, atol=1e-12
    )
    check_grads(lambda *a: jg.einsum(equation, *a), xs, order=2)


def test_operands_of_mixed_dtypes_promote():
    a, b = np.ones((2, 3), np.float32), np.ones((3,), np.float64)
    assert jg.einsum("ij,j->i", a, b).dtype == np.float64


def test_chain_is_contracted_in_a_good_order():
    """(1000, 2) (2, 1000) (1000, 2): left to right would make a 1000 x 1000 intermediate; the
    greedy order contracts the last pair first (a 2 x 2)."""
    a, b, c = np.ones((1000, 2)), np.ones((2, 1000)), np.ones((1000, 2))
    graph = jg.jit(lambda a, b, c: jg.einsum("ij,jk,kl->il", a, b, c)).lower(a, b, c).traced
    biggest = max(int(np.prod(e.out.aval.shape)) for e in graph.eqns)
    assert biggest <= 2000
    np.testing.assert_allclose(jg.einsum("ij,jk,kl->il", a, b, c).numpy(), a @ b @ c)


@pytest.mark.parametrize(
    "equation, shapes, message",
    [
        ("ij,jk", [(2, 3), (4, 5)], "sizes 3 and 4"),
        ("ij,jk", [(2, 3)], "2 term"),
        ("ij", [(2, 3, 4)], "does not fit an operand of rank 3"),
        ("ii", [(2, 3)], "repeated label has sizes 2 and 3"),
        ("ij->ii", [(2, 2)], "output label 'i' appears more than once"),
        ("ij->k", [(2, 2)], "output label 'k' is in no operand"),
        ("i.j", [(2, 2)], "'...'"),
        ("i1", [(2, 2)], "labels are the letters"),
        ("i->j->k", [(2,)], "at most one '->'"),
        ("", [], "at least one operand"),
    ],
)
def test_errors_name_the_equation_and_shapes(equation, shapes, message):
    with pytest.raises(ValueError, match=message) as info:
        jg.einsum(equation, *[np.ones(s) for s in shapes])
    assert "einsum" in str(info.value) and repr(equation) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Compiled: one function for several patterns, and one for their gradients (compiles are slow:
# the default run compiles one pattern's value and gradients, three operands with a size-1
# axis broadcast; -m slow all of them)

COMPILED = [
    ("mnd,mdo,op->mnp", [(1, 3, 4), (2, 4, 2), (2, 3)]),
    ("mnd,mdo->mno", [(1, 3, 4), (2, 4, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("bxby->bxy", [(2, 3, 2, 3)]),
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ii", [(3, 3)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),
    ("iij,j->i", [(3, 3, 2), (2,)]),
    ("ab,cd->abcd", [(2, 1), (1, 3)]),
]


class Patterns:
    """`patterns` of COMPILED as one function of all their operands."""

    def __init__(self, patterns):
        self.patterns = patterns
        self.splits = np.cumsum([0] + [len(s) for _, s in patterns])
        self.values = jg.jit(self.einsums)
        self.value_and_grads = jg.jit_grad(self.weighted_sum, wrt=tuple(range(self.splits[-1])))

    def operands(self, seed):
        return _operands([s for _, shapes in self.patterns for s in shapes], seed)

    def einsums(self, *xs):
        return [
            jg.einsum(eq, *xs[self.splits[k] : self.splits[k + 1]])
            for k, (eq, _) in enumerate(self.patterns)
        ]

    def weighted_sum(self, *xs):
        return sum(jg.reduce_sum(y * (k + 1.0)) for k, y in enumerate(self.einsums(*xs)))

    def check_gradients(self, xs):
        value, grads = self.value_and_grads(*xs)
        with jg.GradientTape() as tape:
            ts = [jg.constant(x) for x in xs]
            tape.watch(ts)
            eager = self.weighted_sum(*ts)
        np.testing.assert_allclose(float(value), float(eager), rtol=1e-12)
        for g, e in zip(grads, tape.gradient(eager, ts)):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-12, atol=1e-12)

    def check_values(self, xs):
        for k, (got, (eq, _)) in enumerate(zip(self.values(*xs), self.patterns)):
            want = np.einsum(eq, *xs[self.splits[k] : self.splits[k + 1]])
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


FEW, ALL = Patterns(COMPILED[:1]), Patterns(COMPILED)


def test_compiled_gradients_match_the_tape():
    for seed in (0, 1):  # the second call reuses the kernel
        FEW.check_gradients(FEW.operands(seed))


@pytest.mark.slow
@settings(max_examples=3)
@given(st.integers(0, 2**31))
def test_compiled_matches_eager_for_every_pattern(seed):
    xs = ALL.operands(seed)
    ALL.check_values(xs)
    ALL.check_gradients(xs)
