"""The collectives' watchdog (jitgrad/distributed/watchdog.py) in one process: when a wait
counts as one, the warnings, the message that ends the job, and the timeout's settings. The
2-rank jobs it ends are in test_distributed.py (a rank that skips a collective)."""

from __future__ import annotations

import math
import threading

import pytest

from jitgrad.distributed import watchdog
from jitgrad.distributed.watchdog import SAY_EVERY, Waits, Watchdog


def make_dog(timeout=100.0, said=None):
    waits = Waits()
    said = [] if said is None else said
    return waits, Watchdog(waits, timeout, rank=3, abort=None, say=said.append)


def test_a_wait_that_does_not_move_ends_the_job_after_the_timeout():
    said = []
    waits, dog = make_dog(timeout=3 * SAY_EVERY, said=said)
    assert dog.check(0.0) is None  # nothing open
    waits.enter("MPI's Barrier")
    assert dog.check(1.0) is None  # first seen here
    assert dog.check(SAY_EVERY) is None and said == []
    assert dog.check(SAY_EVERY + 1.0) is None  # a minute: said once
    assert dog.check(SAY_EVERY + 2.0) is None
    assert len(said) == 1 and "rank 3 has waited 60 s" in said[0]
    assert "MPI's Barrier" in said[0] and "same collective calls in the same order" in said[0]
    assert dog.check(2 * SAY_EVERY + 1.0) is None and len(said) == 2
    message = dog.check(3 * SAY_EVERY + 1.0)
    assert message is not None and "rank 3 has waited 180 s" in message
    assert "MPI's Barrier" in message and "init(timeout=seconds)" in message
    assert "test_watchdog.py:" in message  # the user's line in the waiting thread's stack


def test_waits_that_move_never_end_the_job():
    waits, dog = make_dog(timeout=10.0)
    waits.enter("jit_train_step(loss)")
    for now in range(0, 100, 5):  # a step returns and the next starts between samples
        assert dog.check(float(now)) is None
        waits.leave()
        waits.enter("jit_train_step(loss)")
    waits.leave()
    assert dog.check(1000.0) is None  # outside any collective: rank 0 evaluating, say


def test_a_collective_inside_another_counts_as_the_outer_one():
    waits, dog = make_dog(timeout=10.0)
    waits.enter("jit_train_step(loss)")
    waits.enter("MPI's allgather")
    waits.leave()
    assert waits.depth == 1 and waits.what == "jit_train_step(loss)"
    dog.check(0.0)
    assert "jit_train_step(loss)" in dog.check(10.0)


def test_a_wait_that_reports_itself_is_not_said_again_but_still_ends():
    said = []
    waits, dog = make_dog(timeout=2 * SAY_EVERY + 10, said=said)
    waits.enter("jit_train_step(loss)", reports_itself=True)  # a sharded step's points
    dog.check(0.0)
    assert dog.check(2 * SAY_EVERY) is None and said == []
    assert dog.check(2 * SAY_EVERY + 10) is not None


def test_the_thread_aborts_a_stuck_wait():
    waits = Waits()
    aborted, said = threading.Event(), []
    dog = Watchdog(waits, 0.2, rank=0, abort=aborted.set, say=said.append)
    waits.enter("MPI's Allreduce")
    threading.Thread(target=dog.run, daemon=True).start()
    assert aborted.wait(60)  # an upper bound only: it ends after ~0.2-0.4 s
    assert "rank 0 has waited" in said[-1]


def test_the_timeout_setting(monkeypatch):
    monkeypatch.delenv(watchdog.TIMEOUT_VARIABLE, raising=False)
    assert watchdog.resolve_timeout(None) == watchdog.DEFAULT_TIMEOUT
    assert watchdog.resolve_timeout(5) == 5.0
    assert watchdog.resolve_timeout(math.inf) == math.inf  # waits forever: no watchdog
    monkeypatch.setenv(watchdog.TIMEOUT_VARIABLE, "42.5")
    assert watchdog.resolve_timeout(None) == 42.5
    assert watchdog.resolve_timeout(7) == 7.0  # the argument wins
    monkeypatch.setenv(watchdog.TIMEOUT_VARIABLE, "ten minutes")
    with pytest.raises(ValueError, match="JITGRAD_DISTRIBUTED_TIMEOUT must be a number"):
        watchdog.resolve_timeout(None)
    for bad in (0, -1.0, math.nan):
        with pytest.raises(ValueError, match="must be a positive number of seconds"):
            watchdog.resolve_timeout(bad)
    for bad in (True, "60", None.__class__):
        with pytest.raises(TypeError, match="init: timeout must be a number of seconds"):
            watchdog.resolve_timeout(bad)
    dog = Watchdog(Waits(), 600.0, rank=0, abort=None)
    assert dog.poll == 1.0
    dog.set_timeout(2.0)
    assert (dog.timeout, dog.poll) == (2.0, 0.5)


def test_without_a_timeout_the_warnings_say_no_end():
    said = []
    waits, dog = make_dog(timeout=math.inf, said=said)
    waits.enter("MPI's Barrier")
    dog.check(0.0)
    assert dog.check(10 * SAY_EVERY) is None
    assert len(said) == 1 and "The job ends" not in said[0]
