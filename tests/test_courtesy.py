"""compiler/courtesy.py: the compile thread's jobs give the GIL away every SLICE of work, and
stop asking when nobody takes it. Time is a fake clock here (no test depends on timing)."""

import sys
import threading

import pytest

from jitgrad.compiler import courtesy


class FakeTime:
    """A clock that advances `step` per reading; `sleep(0)` advances it by `taken` (how long
    another thread held the GIL meanwhile) and is recorded."""

    def __init__(self, step: float, taken: float):
        self.now, self.step, self.taken = 0.0, step, taken
        self.releases = 0

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds == 0
        self.releases += 1
        self.now += self.taken


def busy_job(calls: int) -> list:
    """Python calls (profile events), then whether a profile hook was still installed."""
    for _ in range(calls):
        abs(-1)
    return [sys.getprofile() is not None]


def run_in_thread(fn):
    """fn() on a fresh thread (its own profile state, as the compile thread has)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


@pytest.fixture
def fake_time(monkeypatch):
    def install(step, taken):
        fake = FakeTime(step, taken)
        monkeypatch.setattr(courtesy, "clock", fake.perf_counter)
        monkeypatch.setattr(courtesy, "release", fake.sleep)
        return fake

    return install


def test_a_busy_user_thread_gets_the_gil_every_slice_and_the_hook_stays(fake_time):
    fake = fake_time(step=courtesy.SLICE, taken=0.005)  # each release: 5 ms for the user
    still_hooked = run_in_thread(lambda: courtesy.run_courteously(busy_job, 10_000))
    assert still_hooked == [True]
    assert fake.releases >= 10_000 // courtesy.CHECK_EVERY // 2


def test_the_hook_removes_itself_when_nobody_takes_the_gil(fake_time):
    fake = fake_time(step=courtesy.QUIET / 2, taken=0.0)
    still_hooked = run_in_thread(lambda: courtesy.run_courteously(busy_job, 10_000))
    assert still_hooked == [False]
    assert fake.releases == courtesy.QUIET_YIELDS


def test_the_result_and_errors_pass_through_and_the_thread_is_unhooked_after():
    def failing():
        raise KeyError("from the job")

    def run():
        value = courtesy.run_courteously(lambda a, b: a + b, 2, 3)
        with pytest.raises(KeyError, match="from the job"):
            courtesy.run_courteously(failing)
        return value, sys.getprofile()

    assert run_in_thread(run) == (5, None)


def test_a_thread_someone_profiles_is_left_to_their_profiler():
    def theirs(frame, event, arg):
        return None

    def run():
        sys.setprofile(theirs)
        try:
            inside = courtesy.run_courteously(sys.getprofile)
            return inside, sys.getprofile()
        finally:
            sys.setprofile(None)

    assert run_in_thread(run) == (theirs, theirs)
