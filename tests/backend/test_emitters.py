"""The backend's op facets: an emitter for every structured op and an update for every
reduction combine, checked when emit.py loads; the reductions' identities agree with eager."""

from __future__ import annotations

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba.emit import EMITTERS, REDUCTION_UPDATES, check_emitters
from jitgrad.core.opdef import COMBINES, REGISTRY, OpDef, Reduction
from jitgrad.passes.fuse import is_structured


def _fake_op(name: str, kind: str, reduction=None) -> OpDef:
    def never(*args, **params):
        raise AssertionError("a fake op is never run")

    return OpDef(name, never, never, never, kind, reduction=reduction)


def test_emitters_are_exactly_the_structured_ops():
    structured = {name for name, op in REGISTRY.items() if is_structured(op)}
    assert structured and set(EMITTERS) == structured
    assert set(REDUCTION_UPDATES) == COMBINES


def test_check_emitters_names_the_ops_it_cannot_emit():
    registry = dict(REGISTRY)
    registry["frobnicate"] = _fake_op("frobnicate", "shape")
    registry["reduce_xor"] = _fake_op("reduce_xor", "reduce", Reduction("xor", lambda d: 0))
    with pytest.raises(ImportError, match=r"frobnicate, reduce_xor \(combine 'xor'\)"):
        check_emitters(registry)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint8", "int32", "int64"])
def test_reduction_identity_is_the_eager_empty_reduction(dtype):
    """A loop starts its accumulator at the identity: it is what the op's eager impl gives for
    an empty slice."""
    dtype = np.dtype(dtype)
    reductions = [op for op in REGISTRY.values() if op.reduction is not None]
    assert {op.name for op in reductions} == {"reduce_sum", "reduce_max", "reduce_prod"}
    for op in reductions:
        empty = op.impl(np.zeros((0, 2), dtype), axes=(0,))
        assert np.array_equal(empty, np.full(2, op.reduction.identity(dtype), dtype)), op.name


def test_a_loop_shared_by_two_sites_may_use_infinities():
    """Two equal loops become one function of the values they read (emit._Piece); `np.inf`
    in their code is an attribute, not a value to pass (it was once read as a name `inf`)."""

    def f(a, b):
        return jg.reduce_sum(jg.nn.softmax(a)) + jg.reduce_sum(jg.nn.softmax(b))

    a, b = np.array([0.3, -1.0, 2.0]), np.array([1.5, 0.25, -0.5])
    value, (ga, gb) = jg.jit_grad(f, wrt=(0, 1))(a, b)
    eager_value, (ea, eb) = jg.value_and_grad(f, argnums=(0, 1))(a, b)
    np.testing.assert_allclose(float(value), float(eager_value), rtol=1e-12)
    np.testing.assert_allclose(ga.numpy(), ea.numpy(), atol=1e-12)
    np.testing.assert_allclose(gb.numpy(), eb.numpy(), atol=1e-12)
