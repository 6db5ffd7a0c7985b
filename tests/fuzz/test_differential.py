"""Differential fuzzing (issue 5): random well-typed programs over the op set, each checked for
eager value == compiled value, eager gradients == compiled gradients, gradients == finite
differences in float64 where the function is smooth, and (about one example in three)
compiled second derivatives == eager ones. The generator and the checks are in programs.py.

Cost model: every example compiles ONE Numba kernel (~0.2-3 s on a busy machine, a few take
10-40 s), so each example groups 1-3 independent sub-programs into one function, and picks
which kernel to build (measured over a CI run: grad ~40%, grad2 ~30%, value ~20%, tape ~10%):
  value  `jit` of the program;
  grad   `jit_grad` of its random-weighted loss, the outputs as aux (values and gradients);
  grad2  `jit_grad` of <u, grad loss>, outputs, loss and gradients as aux (values, first and
         second derivatives);
  tape   the eager tape's compiled backward (the second time it records a structure).
Each compiled function is called twice (at x and near x), so the hot path and output-buffer
reuse are checked too. Finite differences run eagerly, so every example checks first and
second derivatives against them at no compile cost.

One example in five is instead an exact program (exact.py): integer dtypes, or IEEE special
values (-0.0, +-inf, NaN, denormals, overflowing magnitudes) through exactly rounded ops, whose
`jit` results must equal the eager ones bit for bit (one small `value` kernel each).

The number of examples comes from the hypothesis profile (tests/conftest.py): "ci" (the
default) runs 40 in about 30 seconds; `pytest -m fuzz --hypothesis-profile=long` runs
thousands. A failing program is printed as Python source with its inputs (`note`; its repr in
the falsifying example rebuilds it), and each one found goes to test_regressions.py.
`--hypothesis-show-statistics` shows the kernels built and how many finite-difference checks
ran or were skipped at points that are not smooth.
"""

from __future__ import annotations

import collections
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import jitgrad as jg
from fuzz.exact import ExactProgram, assert_same_bits, check_exact, exact_programs
from fuzz.programs import (
    Program,
    assert_close,
    check_program,
    cycle,
    finite_difference_check,
    programs,
)
from jitgrad.backend.numba import kernels
from jitgrad.compiler import tape_backward

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


@pytest.mark.fuzz
# Half the profile's count: 20 programs in the default run ("ci", 0.35 s each, the slowest
# test of the run at 40), 1,500 with --hypothesis-profile=long.
@settings(
    deadline=None,
    suppress_health_check=SLOW_OK,
    max_examples=max(1, settings.default.max_examples // 2),
)
@given(
    program=cycle([False] * 4 + [True]).flatmap(
        lambda exact: exact_programs() if exact else programs()
    ),
    mode=cycle(["grad", "value", "grad2", "tape", "grad2"]),
    seed=st.integers(0, 2**16),
)
def test_eager_equals_compiled_equals_finite_differences(program, mode, seed):
    if isinstance(program, ExactProgram):
        note(f"check_exact(program) with program =\n{program}")
        event(f"kernel: exact, {program.dtype.name}")
        check_exact(program)
        return
    note(f"check_program(program, mode={mode!r}, seed={seed}) with program =\n{program}")
    event(f"kernel: {mode}, {program.dtype.name}")
    report = check_program(program, mode=mode, seed=seed)
    for what, result in report.items():
        event(f"{what}: {result}")
    if not program.differentiable:
        event("finite differences: not run (stop_gradient)")


class _NeverFirst(collections.OrderedDict):
    """kernels._first_specialised that takes every signature for a structure's second: each
    kernel is then the one that reads its sizes from its arrays (backend/numba/kernels.py)."""

    def setdefault(self, key, default=None):
        self.asked = True
        return super().setdefault(key, _NOT_A_SIGNATURE)


_NOT_A_SIGNATURE = object()


@pytest.mark.slow
@pytest.mark.fuzz
@settings(deadline=None, suppress_health_check=SLOW_OK, max_examples=40)
@given(
    program=programs(),
    mode=cycle(["grad", "value", "grad2", "tape"]),
    seed=st.integers(0, 2**16),
)
def test_kernels_for_every_shape_equal_eager(program, mode, seed):
    """The same checks with every kernel the shape-polymorphic one, which a structure gets
    from its second signature on: in the default run's programs each structure is seen once,
    so its specialised kernel is all they check. (Session 25 ran 1,500 examples this way:
    no difference; a sharded train step's polymorphic kernel had a race, test_distributed.)"""
    note(f"check_program(program, mode={mode!r}, seed={seed}) with program =\n{program}")
    event(f"kernel: {mode}, {program.dtype.name}")
    never_first = _NeverFirst()
    with (
        mock.patch.object(kernels, "_first_specialised", never_first),
        mock.patch.object(jg.config, "compile", "blocking"),  # generated in this process
        # the tape's compiled backward passes are cached by structure for the process:
        # an empty cache, so that this example's is generated here
        mock.patch.object(tape_backward, "_cache", collections.OrderedDict()),
        mock.patch.object(tape_backward, "_last_served", (None, None)),
    ):
        report = check_program(program, mode=mode, seed=seed)
    # (a tape whose recording cannot be compiled runs its backward op by op: no kernel)
    if report.get("tape backward", "compiled") == "compiled":
        assert getattr(never_first, "asked", False), "no kernel was generated"


# ---------------------------------------------------------------------------------------------
# The checks themselves catch what they are meant to catch.


def test_a_wrong_gradient_fails_the_finite_difference_check():
    """x * stop_gradient(x) has autodiff derivative x but true derivative 2x: to the checker
    it looks exactly like a wrong VJP rule, and must be reported."""
    source = """def program(x0):
    v0 = x0 * jg.stop_gradient(x0)
    return (v0,)
"""
    wrong = Program(source, [np.array([0.5, -1.25, 2.0])], differentiable=True)
    with pytest.raises(AssertionError, match="finite differences"):
        check_program(wrong, mode="value")


def test_finite_differences_skip_a_kink_and_check_a_smooth_point():
    def abs_sum(xs):
        return float(np.sum(np.abs(xs[0])))

    v = [np.array([1.0, 1.0])]
    smooth = [np.array([0.5, -1.0])]
    assert finite_difference_check(abs_sum, 0.0, smooth, v, 1.0, "abs") == "checked"
    with pytest.raises(AssertionError, match="autodiff 0.5 vs finite differences"):
        finite_difference_check(abs_sum, 0.5, smooth, v, 1.0, "abs")
    # |x| 2e-4 from its kink: the steps 1e-4 and 1e-3 straddle it and disagree
    near_kink = [np.array([2e-4, -1.0])]
    assert finite_difference_check(abs_sum, 0.0, near_kink, v, 1.0, "abs") == "kink"


def test_compiled_and_eager_must_agree_to_rtol():
    eager = np.array([1.0, -2.0, 3.0])
    assert_close(eager * (1 + 1e-12), eager, 1e-9, 0.0, "close")
    with pytest.raises(AssertionError, match="compiled != eager at 1 of 3"):
        assert_close(eager + np.array([0.0, 0.0, 1e-7]), eager, 1e-9, 0.0, "off")
    with pytest.raises(AssertionError, match="float32"):
        assert_close(eager.astype(np.float32), eager, 1e-5, 0.0, "dtype")


def test_exact_check_tells_zeros_apart_and_matches_any_nan():
    assert_same_bits(np.array([np.nan, 1.0]), np.array([-np.nan, 1.0]), "nan")
    with pytest.raises(AssertionError, match="bit for bit at 1 of 2"):
        assert_same_bits(np.array([-0.0, 1.0]), np.array([0.0, 1.0]), "zero")
    with pytest.raises(AssertionError, match="int32"):
        assert_same_bits(np.int64(1), np.int32(1), "dtype")
