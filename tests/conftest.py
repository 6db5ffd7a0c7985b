"""Compiles block (see below). Compiled kernels go to a fresh temporary cache directory, not
the user's ~/.cache/jitgrad (unless JITGRAD_CACHE_DIR is set: then runs can reuse it and skip
Numba compiles).

Hypothesis profiles (tests that set their own `max_examples` keep it):
* "ci", the default: bounded and derandomized, so a CI run checks the same examples every
  time (reproducible, and with JITGRAD_CACHE_DIR set, reruns load the fuzzer's kernels from
  disk instead of compiling them). The differential fuzzer (tests/fuzz) runs half a profile's
  count: 20 examples.
* "long": `pytest -m fuzz --hypothesis-profile=long` runs thousands of fresh random examples.
"""

import os

# Compiles block in tests (and in the example scripts they start), so that a test sees the
# kernel, not the numpy fallback, from the first call; tests of tiered execution
# (tests/test_background.py) switch to "background" themselves.
os.environ.setdefault("JITGRAD_COMPILE", "blocking")
# No warmer process compiling the helpers behind the tests' backs (tests/backend/test_warmer.py
# starts its own): a product's kernel takes BLAS or the tiles by what the test set up, not by
# when a warmer happened to finish, and no process outlives the run.
os.environ.setdefault("JITGRAD_WARM_HELPERS", "0")

import pytest  # noqa: E402 - after the environment the jitgrad import reads
from hypothesis import settings  # noqa: E402

import jitgrad as jg  # noqa: E402

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("long", max_examples=3000, deadline=None, print_blob=True)
settings.load_profile("ci")


@pytest.fixture(scope="session", autouse=True)
def _kernel_cache_dir(tmp_path_factory):
    if not os.environ.get("JITGRAD_CACHE_DIR"):
        jg.config.cache_dir = str(tmp_path_factory.mktemp("jitgrad-cache"))
    yield
