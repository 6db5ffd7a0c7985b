"""jitgrad.distributed: collectives, data-parallel training and failures on 2 MPI ranks.

Each multi-rank test writes a script to tmp_path and runs it with
`python -m jitgrad.distributed.run -n 2` (mpiexec on loopback, oversubscribed on a small
machine); the script asserts on every rank and the test checks the exit status and output.
The size-1 fallback runs in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.distributed as dist

pytest.importorskip("mpi4py", reason="needs the distributed extra")

# A job that does not end by itself within this bound has hung: the test fails.
JOB_TIMEOUT = 120


def run_ranks(tmp_path, source: str, n: int = 2, timeout: float = JOB_TIMEOUT, threads="1"):
    """Run `source` on `n` ranks, with `threads` threads each (None: the launcher's choice)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(source))
    names = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in names}
    if threads is not None:
        env.update(dict.fromkeys(names, threads))
    return subprocess.run(
        [sys.executable, "-m", "jitgrad.distributed.run", "-n", str(n), str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )


def check_ok(result, expected_lines: int):
    assert result.returncode == 0, result.stdout + result.stderr
    oks = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert len(oks) == expected_lines, result.stdout + result.stderr


COLLECTIVES = """
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist

    dist.init()
    r, n = dist.rank(), dist.size()
    assert n == 2 and dist.is_main() == (r == 0)
    assert (dist.local_rank(), dist.local_size()) == (r, 2)  # one machine
    for dtype in (np.float16, np.float32, np.float64):
        leaf = np.arange(6, dtype=dtype).reshape(2, 3) + r
        variable = jg.Variable(np.full(3, 2.0 * r, dtype))
        tree = {"a": leaf, "b": [jg.constant(np.full(4, r + 1.0, dtype))], "v": variable}
        out = dist.allreduce(tree, op="sum")
        expected = 2 * np.arange(6, dtype=dtype).reshape(2, 3) + 1
        assert out["a"] is leaf and leaf.dtype == dtype and np.array_equal(leaf, expected)
        tensor = out["b"][0]
        assert tensor.dtype == dtype and np.array_equal(tensor.numpy(), np.full(4, 3.0, dtype))
        assert out["v"] is variable and np.array_equal(variable.numpy(), np.full(3, 2.0, dtype))
        frozen = np.full(3, r + 1.0, dtype)
        frozen.flags.writeable = False
        mean = dist.allreduce({"f": frozen}, op="mean")["f"]
        assert mean is not frozen and np.array_equal(mean, np.full(3, 1.5, dtype)), mean
        assert np.array_equal(frozen, np.full(3, r + 1.0, dtype))       # read-only: untouched
        strided = np.full((3, 4), r + 1.0, dtype)[:, ::2]
        dist.allreduce([strided])
        assert np.array_equal(strided, np.full((3, 2), 3.0, dtype))
        b = {"w": np.full(5, r * 10.0, dtype), "t": jg.constant(np.full(2, r, dtype))}
        b["bias"] = np.array(r + 0.5, dtype)  # 0-d
        got = dist.broadcast(b, root=1)
        assert got["w"] is b["w"] and np.array_equal(b["w"], np.full(5, 10.0, dtype))
        assert got["bias"] is b["bias"] and b["bias"] == 1.5, b
        assert np.array_equal(got["t"].numpy(), np.full(2, 1, dtype))
        print("ok", r, np.dtype(dtype).name, flush=True)
    # Numbers: a loss to log averaged over ranks, settings and seeds broadcast from rank 0.
    logged = dist.allreduce({"loss": float(r + 1), "np": np.float32(2 * r)}, op="mean")
    assert logged == {"loss": 1.5, "np": np.float32(1.0)}, logged
    assert type(logged["loss"]) is float and type(logged["np"]) is np.float32, logged
    settings = dist.broadcast({"lr": 0.1 * (r + 1), "seed": 7 + r, "shuffle": r == 0})
    assert settings == {"lr": 0.1, "seed": 7, "shuffle": True}, settings
    assert type(settings["seed"]) is int and type(settings["shuffle"]) is bool, settings
    for bad, message in [(2**70, "needs more than 64 bits"), ("text", "got str")]:
        try:
            dist.broadcast([bad])
        except TypeError as error:
            assert message in str(error), error
        else:
            raise AssertionError(f"broadcast of {bad!r}")
    print("ok", r, "numbers", flush=True)

    # allreduce's other ops, on integers and booleans too (a count of correct predictions)
    a = np.array([r, 5 - r], np.int32)
    counted = dist.allreduce({"n": 3 + r, "a": a})
    assert counted["n"] == 7 and type(counted["n"]) is int and counted["a"] is a, counted
    assert a.dtype == np.int32 and a.tolist() == [1, 9], a
    top = dist.allreduce([np.array([r, -r], np.float16), np.array([r == 0, False])], op="max")
    assert top[0].dtype == np.float16 and top[0].tolist() == [1.0, 0.0], top
    assert top[1].dtype == bool and top[1].tolist() == [True, False], top
    assert dist.allreduce([np.array([r == 0, True])], op="min")[0].tolist() == [False, True]
    assert dist.allreduce(np.array([2.0 + r, -1.0]), op="product").tolist() == [6.0, 1.0]
    for bad, op, kind in [(np.arange(2), "mean", TypeError), (np.ones(2), "median", ValueError)]:
        try:
            dist.allreduce([bad], op=op)
        except kind as error:
            assert "op" in str(error), error
        else:
            raise AssertionError(op)
    # allgather: every rank's rows, which may differ in number; numbers; objects
    gathered = dist.allgather({
        "p": np.arange(3 * (r + 1), dtype=np.float64).reshape(r + 1, 3) + 10 * r,
        "t": jg.constant(np.full((2, 2), r, np.float32)),
        "n": float(r),
    })
    expected = np.array([[0, 1, 2], [10, 11, 12], [13, 14, 15]], np.float64)
    assert np.array_equal(gathered["p"], expected), gathered
    assert isinstance(gathered["t"], jg.Tensor) and gathered["t"].shape == (4, 2)
    assert gathered["t"].numpy()[:, 0].tolist() == [0, 0, 1, 1]
    assert gathered["n"].tolist() == [0.0, 1.0]
    try:
        dist.allgather([np.ones((2, 3 + r), np.float32)])
    except ValueError as error:
        assert "(2, 3) on rank 0 and float32 (2, 4) on rank 1" in str(error), error
        assert "only the first axis may differ" in str(error) and "job.py:" in str(error)
    else:
        raise AssertionError("allgather of mismatched shapes")
    assert dist.allgather_object({"rank": r}) == [{"rank": 0}, {"rank": 1}]
    assert dist.broadcast_object(["config", r], root=1) == ["config", 1]
    for traced in (lambda x: dist.allgather(x), lambda x: dist.allreduce(x, op="max")):
        try:
            jg.jit(traced)(np.ones(2, np.float32))
        except RuntimeError as error:
            assert "runs eagerly" in str(error), error
        else:
            raise AssertionError("a traced eager-only collective")
    print("ok", r, "other ops and gathers", flush=True)
    dist.barrier()
    x = np.arange(10)
    part = dist.shard(x)
    assert np.array_equal(part, x[:5] if r == 0 else x[5:])
    loader = jg.data.batches(x, batch_size=4, seed=None, shard=True)
    rows = [b[0] for b in loader]
    every = dist.world.world().comm.allgather(rows)
    for b in range(len(loader)):
        joined = np.concatenate([every[0][b], every[1][b]])
        assert len(every[0][b]) - len(every[1][b]) in (0, 1), every
        if b == 0:
            first = set(joined)
    assert len(first) == 4
    print("ok", r, "shard", flush=True)

    # Shares that differ by a row weigh the rows unequally in the averaged gradient: rank 0
    # warns, at the caller's line; even shares and a dropped last batch do not warn.
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist.shard(np.arange(5))
        jg.data.batches(np.arange(10), batch_size=3, shard=True)
        jg.data.batches(np.arange(10), batch_size=4, shard=True)
        jg.data.batches(np.arange(9), batch_size=4, shard=True, drop_last=True)
    texts = [str(w.message) for w in caught if w.category is RuntimeWarning]
    if r == 0:
        assert len(texts) == 3, texts
        assert texts[0].startswith("jitgrad.distributed.shard: a batch of 5 rows"), texts
        assert "shares of 2 and 3 rows" in texts[0] and "divisible by 2" in texts[0], texts
        assert texts[1].startswith("batches(shard=True): the global batch of 3 rows"), texts
        assert texts[2].startswith("batches(shard=True): the last global batch, 1 of 10"), texts
        assert all(w.filename.endswith("job.py") for w in caught), [w.filename for w in caught]
    else:
        assert texts == [], texts
    print("ok", r, "uneven shares warn", flush=True)

    # DistributedOptimizer inside a plain jit_train_step, with background compiles: the kernel
    # calls MPI, so it compiles before its first call (no fallback, no compile worker).
    jg.config.compile = "background"
    opt = dist.DistributedOptimizer(jg.optim.SGD(0.5))
    p = {"w": np.ones(3, np.float32)}
    state = opt.init(p)
    step = jg.jit_train_step(lambda p, x: jg.reduce_sum(p["w"] * x), opt)
    step(p, state, np.full(3, r + 1.0, np.float32))  # mean gradient over ranks: 1.5
    assert step.cache_info().states == ("compiled",)  # the first call ran the kernel
    assert np.array_equal(p["w"], np.full(3, 0.25, np.float32)), p
    assert "allreduce_sum_f32" in step.lower(p, state, np.ones(3, np.float32)).source
    print("ok", r, "DistributedOptimizer in jit_train_step", flush=True)
"""


def test_collectives_on_two_ranks(tmp_path):
    check_ok(run_ranks(tmp_path, COLLECTIVES), 2 * 8)


TRAINING = """
    import hashlib
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist
    from jitgrad.core import pytree

    dist.init()
    comm = dist.world.world().comm
    B, D, H, C, STEPS = 32, 12, 16, 4, 20
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B * STEPS, D)).astype(np.float32)
    y = rng.integers(0, C, B * STEPS)


    def init_params():
        r = np.random.default_rng(1 + 7 * dist.rank())   # different on each rank: broadcast
        p = {
            "w1": (r.standard_normal((D, H)) * 0.3).astype(np.float32),
            "b1": np.zeros(H, np.float32),
            "w2": (r.standard_normal((H, C)) * 0.3).astype(np.float32),
            "b2": np.zeros(C, np.float32),
            "scale": np.ones((1, C), np.float32),   # one row: one rank's share is empty
        }
        return p


    def loss_fn(p, xb, yb):
        h = jg.tanh(xb @ p["w1"] + p["b1"])
        logits = (h @ p["w2"] + p["b2"]) * p["scale"]
        return jg.reduce_mean(
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
        )


    def identical_on_every_rank(tree):
        leaves = [np.asarray(getattr(l, "numpy", lambda: l)()) for l in pytree.flatten(tree)[0]]
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(l).tobytes() for l in leaves))
        return len(set(comm.allgather(digest.hexdigest()))) == 1


    def close(a, b):
        for k in a:
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-5, atol=2e-6)


    # Each rank updates its share of the rows (compiler/sharded_step.py), or every rank all
    # of them after an MPI_Allreduce (jitgrad.config.sharded_update off): the same training.
    optimizers = {
        ("sgd", True): lambda: jg.optim.SGD(0.1),
        ("sgd", False): lambda: jg.optim.SGD(0.1),
        ("adam", True): lambda: jg.optim.Adam(0.01, global_clipnorm=1.0),
        ("adam", False): lambda: jg.optim.Adam(0.01, global_clipnorm=1.0),
        ("rmsprop", True): lambda: jg.optim.RMSprop(0.01, momentum=0.5, centered=True),
    }
    for (name, shard), make in optimizers.items():
        jg.config.sharded_update = shard
        par = dist.broadcast(init_params())
        ref = {k: v.copy() for k, v in par.items()}
        ref_opt, par_opt = make(), make()
        ref_state, par_state = ref_opt.init(ref), par_opt.init(par)
        ref_step = jg.jit_train_step(loss_fn, ref_opt)               # one process, batch B
        par_step = jg.jit_train_step(loss_fn, par_opt, distributed=True)
        full = jg.data.batches(x, y, batch_size=B, seed=3)
        sharded = jg.data.batches(x, y, batch_size=B, seed=3, shard=True)
        for (xb, yb), (xs, ys) in zip(full, sharded):
            assert len(xs) == B // 2
            ref_step(ref, ref_state, xb, yb)
            par_step(par, par_state, xs, ys)
            assert identical_on_every_rank((par, par_state)), name
        close(par, ref)
        for slot in ref_opt.slots:   # the whole state, on every rank
            close(par_state[slot], ref_state[slot])
        source = par_step.lower(par, par_state, xs, ys).source
        assert bool(par_step._sharded) == shard
        assert ("exchange_point(" in source) == shard
        # w1's new rows (rows of 16 float32, a vector loop) stored into the parameter by
        # their loop too, and not copied from the exchange array after the point
        assert ("vstore(mirror" in source) == shard, source
        assert ("allreduce_sum_f32" in source) == (not shard or name == "adam")  # Adam clips
        print("ok", dist.rank(), "jit_train_step", name, shard, flush=True)
    jg.config.sharded_update = True

    # The eager tape with DistributedOptimizer (Horovod's pattern) against one process.
    start = dist.broadcast(init_params())
    ref_vars = {k: jg.Variable(v) for k, v in start.items()}
    par_vars = {k: jg.Variable(v) for k, v in start.items()}
    ref_opt = jg.optim.Adam(0.01)
    par_opt = dist.DistributedOptimizer(jg.optim.Adam(0.01))
    full = jg.data.batches(x, y, batch_size=B, seed=5)
    sharded = jg.data.batches(x, y, batch_size=B, seed=5, shard=True)
    names = sorted(start)
    for (xb, yb), (xs, ys) in zip(full, sharded):
        for variables, opt, xa, ya in ((ref_vars, ref_opt, xb, yb), (par_vars, par_opt, xs, ys)):
            with jg.GradientTape() as tape:
                loss = loss_fn(variables, xa, ya)
            grads = tape.gradient(loss, [variables[k] for k in names])
            opt.apply_gradients(zip(grads, [variables[k] for k in names]))
        assert identical_on_every_rank(par_vars)
    close({k: v.numpy() for k, v in par_vars.items()}, {k: v.numpy() for k, v in ref_vars.items()})
    print("ok", dist.rank(), "tape", flush=True)
"""


def test_data_parallel_training_equals_one_process(tmp_path):
    check_ok(run_ranks(tmp_path, TRAINING), 2 * 6)


SHARDED = """
    import copy
    import glob
    import hashlib
    import os
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist
    from jitgrad.core import pytree

    dist.init()
    comm = dist.world.world().comm
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8 * 12, 5))
    y = rng.integers(0, 3, 8 * 12)


    def loss_fn(p, xb, yb):
        h = jg.tanh(xb @ p["w1"] + p["b1"])
        logits = h @ p["w2"]
        return jg.reduce_mean(
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
        )


    def params(dtype):
        r = np.random.default_rng(4)
        return {
            "w1": r.standard_normal((5, 7)).astype(dtype),   # 5 rows: shares of 2 and 3
            "b1": np.zeros(7, dtype),
            "w2": r.standard_normal((7, 3)).astype(dtype),
        }


    def same_everywhere(tree):
        data = b"".join(np.ascontiguousarray(l).tobytes() for l in pytree.flatten(tree)[0])
        return len(set(comm.allgather(hashlib.sha256(data).hexdigest()))) == 1


    def train(make_opt, dtype, steps, replace_state_at=None, **step_options):
        # Train on 2 ranks and in one process alike; check each step, return the step.
        ref, par = params(dtype), params(dtype)
        ref_opt, par_opt = make_opt(), make_opt()
        ref_state, par_state = ref_opt.init(ref), par_opt.init(par)
        ref_step = jg.jit_train_step(loss_fn, ref_opt)
        par_step = jg.jit_train_step(loss_fn, par_opt, distributed=True, **step_options)
        full = jg.data.batches(x.astype(dtype), y, batch_size=8, seed=1)
        mine = jg.data.batches(x.astype(dtype), y, batch_size=8, seed=1, shard=True)
        for i, ((xb, yb), (xs, ys)) in enumerate(zip(full, mine)):
            if i == steps:
                break
            how = (replace_state_at or {}).get(i)   # a checkpoint loaded (all ranks, or rank 0)
            if how == "all" or (how == "rank 0" and dist.rank() == 0):
                par_state = copy.deepcopy(par_state)
            elif how == "one array":   # one slot array replaced inside the state, in place
                par_state["m"]["w1"] = par_state["m"]["w1"].copy()
            ref_step(ref, ref_state, xb, yb)
            par_step(par, par_state, xs, ys)
            assert same_everywhere((par, par_state)), i
        tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=0)
        for k in ref:
            np.testing.assert_allclose(par[k], ref[k], **tol)
        for slot in ref_opt.slots:
            for k in ref:
                np.testing.assert_allclose(par_state[slot][k], ref_state[slot][k], **tol)
        return par_step


    # float64, and a state replaced on every rank, then on rank 0 only (the others' state
    # arrays are the shared ones, written in place by a broadcast, say): the same training.
    replaced = {3: "all", 5: "rank 0", 6: "one array"}
    step = train(lambda: jg.optim.Adam(0.05), np.float64, 8, replaced)
    assert step._sharded
    print("ok", dist.rank(), "float64, states replaced", flush=True)

    step = train(lambda: jg.optim.AdamW(0.05, weight_decay=0.1), np.float32, 4)
    assert step._sharded
    print("ok", dist.rank(), "adamw", flush=True)


    class Normalized(jg.optim.SGD):
        # Each parameter's step scaled by its gradient's norm: not elementwise.

        def _update_leaf(self, p, g, slots, c):
            return p - g * (0.1 / (jg.sqrt(jg.reduce_sum(g * g)) + 1.0)), {}


    step = train(Normalized, np.float32, 4)
    assert not step._sharded   # every rank updates everything, after MPI_Allreduce
    print("ok", dist.rank(), "non-elementwise falls back", flush=True)

    # Two biases with the same gradient and the same update: one value each after CSE, which
    # the kernel publishes in two places of the exchange array.
    def twins_loss(p, xb, yb):
        logits = xb @ p["w"] + p["b"] + p["c"]
        return jg.reduce_mean(
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
        )

    twins = {"w": np.full((5, 3), 0.1, np.float32), "b": np.zeros(3, np.float32),
             "c": np.zeros(3, np.float32)}
    ref = {k: v.copy() for k, v in twins.items()}
    opts = jg.optim.Adam(0.05), jg.optim.Adam(0.05)
    states = opts[0].init(twins), opts[1].init(ref)
    par_step = jg.jit_train_step(twins_loss, opts[0], distributed=True)
    ref_step = jg.jit_train_step(twins_loss, opts[1])
    xf, yf = x[:8].astype(np.float32), y[:8]
    xs, ys = dist.shard(xf, yf)
    for _ in range(3):
        par_step(twins, states[0], xs, ys)
        ref_step(ref, states[1], xf, yf)
    assert par_step._sharded and same_everywhere(twins)
    for k in ref:
        np.testing.assert_allclose(twins[k], ref[k], rtol=2e-5, atol=1e-6)
    print("ok", dist.rank(), "merged values published twice", flush=True)

    # has_aux: the loss and the auxiliary value are this rank's, as with MPI_Allreduce.
    def with_aux(p, xb, yb):
        loss = twins_loss(p, xb, yb)
        return loss, {"twice": loss * 2.0}

    aux_step = jg.jit_train_step(with_aux, jg.optim.SGD(0.1), has_aux=True, distributed=True)
    loss, aux = aux_step(twins, {"step": np.zeros((), np.int64)}, xs, ys)
    assert aux_step._sharded
    np.testing.assert_allclose(float(aux["twice"]), 2.0 * float(loss), rtol=1e-6)
    print("ok", dist.rank(), "has_aux", flush=True)

    # No room in /dev/shm (on rank 0 here): every rank falls back to MPI_Allreduce, warned.
    import warnings
    from jitgrad.distributed import shared_memory

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    real = shared_memory.os.posix_fallocate
    if dist.rank() == 0:
        shared_memory.os.posix_fallocate = full
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = train(lambda: jg.optim.Adam(0.05), np.float32, 3)
    shared_memory.os.posix_fallocate = real
    assert not step._sharded
    assert any("instead of sharding its update" in str(w.message) for w in caught), caught
    print("ok", dist.rank(), "full /dev/shm falls back", flush=True)

    # The parameters keep their shapes: another model needs another step.
    p = params(np.float32)
    opt = jg.optim.SGD(0.1)
    state = opt.init(p)
    step = jg.jit_train_step(loss_fn, opt, distributed=True)
    xs, ys = dist.shard(x[:8].astype(np.float32), y[:8])
    step(p, state, xs, ys)
    bigger = {**p, "w2": np.ones((9, 3), np.float32), "w1": np.ones((5, 9), np.float32),
              "b1": np.zeros(9, np.float32)}
    try:
        step(bigger, opt.init(bigger), xs, ys)
    except Exception as error:
        assert "keeps the parameter shapes of its first call" in str(error), error
        print("ok", dist.rank(), "new shapes refused", flush=True)
    comm.Barrier()
    first = comm.bcast(os.getpid())   # rank 0 names the files: jitgrad-<its pid>-<random>
    assert glob.glob(f"/dev/shm/jitgrad-{first}-*") == []
    print("ok", dist.rank(), "no shared memory files left", flush=True)
"""


def test_sharded_update(tmp_path):
    """The sharded update (compiler/sharded_step.py): float64, AdamW, the optimizer state
    replaced on every rank and on one, the fallbacks for a non-elementwise update and for a
    full /dev/shm, values published twice, the parameters' shapes kept, and no file left in
    /dev/shm."""
    check_ok(run_ranks(tmp_path, SHARDED), 2 * 8)


# The body shared by the scripts below: train `start` with OPTIMIZER on 2 ranks (the global
# batch BATCH sharded) and in one process, check after every step that the ranks' parameters
# are bitwise identical, and at the end that they equal one process's within RTOL / ATOL.
TRAIN_ON_RANKS_AND_IN_ONE_PROCESS = """
    par, ref = dist.broadcast(start), {k: v.copy() for k, v in start.items()}
    par_opt, ref_opt = OPTIMIZER, OPTIMIZER
    par_state, ref_state = par_opt.init(par), ref_opt.init(ref)
    par_step = jg.jit_train_step(loss_fn, par_opt, distributed=True)
    ref_step = jg.jit_train_step(loss_fn, ref_opt)
    full = jg.data.batches(x, y, batch_size=BATCH, seed=1)
    sharded = jg.data.batches(x, y, batch_size=BATCH, seed=1, shard=True)
    for (xb, yb), (xs, ys) in zip(full, sharded):
        ref_step(ref, ref_state, xb, yb)
        par_step(par, par_state, xs, ys)
        digest = hashlib.sha256(b"".join(par[k].tobytes() for k in sorted(par))).hexdigest()
        assert len(set(comm.allgather(digest))) == 1
    for k in ref:
        np.testing.assert_allclose(par[k], ref[k], rtol=RTOL, atol=ATOL)
"""


def train_on_ranks_and_in_one_process(optimizer: str, batch: int, rtol: str, atol: str) -> str:
    """TRAIN_ON_RANKS_AND_IN_ONE_PROCESS with its placeholders filled in."""
    replacements = {"OPTIMIZER": optimizer, "BATCH": str(batch), "RTOL": rtol, "ATOL": atol}
    source = TRAIN_ON_RANKS_AND_IN_ONE_PROCESS
    for name, value in replacements.items():
        source = source.replace(name, value)
    return source


FLOAT64_ROWS_OF_VECTORS = """
    import hashlib
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist

    dist.init()
    comm = dist.world.world().comm
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 16)), rng.integers(0, 8, 64)


    def loss_fn(p, xb, yb):
        logits = jg.tanh(xb @ p["w1"]) @ p["w2"]
        return jg.reduce_mean(
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
        )


    r = np.random.default_rng(4)
    start = {"w1": r.standard_normal((16, 8)), "w2": r.standard_normal((8, 8))}  # rows: 64 bytes
"""
FLOAT64_ROWS_OF_VECTORS += train_on_ranks_and_in_one_process(
    "jg.optim.Adam(0.01)", 16, "1e-10", "1e-12"
)
FLOAT64_ROWS_OF_VECTORS += """
    # both parameters' new rows stored into them by their update loops (float64 vectors)
    assert par_step.lower(par, par_state, xs, ys).source.count("vstore(mirror") == 2
    print("ok", dist.rank(), flush=True)
"""


def test_sharded_update_float64_rows_of_vectors(tmp_path):
    """float64 parameters whose rows fill 64-byte vectors: the update's loop writes this
    rank's new rows into them (Emitter.mirrors) and the step still equals one process."""
    check_ok(run_ranks(tmp_path, FLOAT64_ROWS_OF_VECTORS), 2)


BATCH_SIZES = """
    import hashlib
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist

    dist.init()
    comm = dist.world.world().comm
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 64)).astype(np.float32), rng.integers(0, 4, 30)


    def loss_fn(p, xb, yb):
        logits = jg.tanh(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return jg.reduce_mean(
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
        )


    r = np.random.default_rng(4)
    start = {
        "w1": (r.standard_normal((64, 32)) * 0.2).astype(np.float32),
        "b1": np.zeros(32, np.float32),
        "w2": (r.standard_normal((32, 4)) * 0.2).astype(np.float32),
        "b2": np.zeros(4, np.float32),
    }
"""
BATCH_SIZES += train_on_ranks_and_in_one_process("jg.optim.SGD(0.1)", 16, "1e-5", "1e-6")
BATCH_SIZES += """
    # The last batch (14 rows) ran a second version: a kernel for every batch size, which
    # computes the new shares outside the exchange array and copies them there. All four must
    # be there before the exchange point after which the other rank reads them.
    source = par_step.lower(par, par_state, xs, ys).source
    assert "sizes read from the arrays" in source, source
    lines = source.splitlines()
    point = [i for i, line in enumerate(lines) if "exchange_point(" in line and ", 1)" in line]
    shares = [i for i, line in enumerate(lines) if "computed elsewhere" in line and "[2][" in line]
    assert len(point) == 1 and len(shares) == 4 and max(shares) < point[0], (shares, point)
    print("ok", dist.rank(), flush=True)
"""


def test_sharded_update_with_a_second_batch_size(tmp_path):
    """A batch of another size (an epoch's last) compiles a version for every batch size,
    whose new shares are copied into the exchange array: all before the exchange point.
    (Before session 25 the later parameters' shares were copied after it, and the other rank
    could read the last step's rows: parameters 1e-2 off, different on the two ranks.)"""
    check_ok(run_ranks(tmp_path, BATCH_SIZES), 2)


AMX_PRODUCTS = """
    import hashlib
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist
    from jitgrad.backend.numba import amx, symbols

    dist.init()
    if amx.available():  # else a new installation's first kernels multiply by BLAS
        symbols.compile_all(amx.KERNEL_HELPERS, ("float32",))
    comm = dist.world.world().comm
    rng = np.random.default_rng(0)
    x = rng.standard_normal((384, 256)).astype(np.float32)
    y = rng.integers(0, 8, 384).astype(np.int32)


    def loss_fn(p, xb, yb):
        logits = jg.nn.relu(xb @ p["w1"]) @ p["w2"]
        return jg.reduce_mean(
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
        )


    r = np.random.default_rng(5)
    start = {
        "w1": (r.standard_normal((256, 256)) / 16).astype(np.float32),
        "w2": (r.standard_normal((256, 8)) / 16).astype(np.float32),
    }
"""
AMX_PRODUCTS += train_on_ranks_and_in_one_process("jg.optim.SGD(0.1)", 128, "1e-5", "1e-6")
AMX_PRODUCTS += """
    # each rank's 64 x 256 x 256 products (2^22 multiply-adds) on the tiles, one thread
    source = par_step.lower(par, par_state, xs, ys).source
    assert source.count("amx_matmul_into(") == (2 if amx.available() else 0), source
    print("ok", dist.rank(), flush=True)
"""


def test_sharded_update_with_products_on_amx_tiles(tmp_path):
    """Each rank's kernel of one thread multiplies on AMX tiles where the CPU has them (2^22
    multiply-adds and up): the parameters stay bitwise identical on every rank, and equal to
    one process's training (its products on the tiles too) to float32 rounding."""
    check_ok(run_ranks(tmp_path, AMX_PRODUCTS), 2)


EXCHANGE_POINTS = """
    import time
    import numba
    import numpy as np
    import jitgrad.distributed as dist
    from jitgrad.backend.numba.exchange_points import exchange_point
    from jitgrad.core.row_shares import exchange_columns
    from jitgrad.distributed.shared_memory import shared_zeros
    from jitgrad.distributed.world import world

    dist.init()
    r, n = dist.rank(), dist.size()
    exchange = shared_zeros(world().comm, (n + 1, exchange_columns(100, 8)), np.float64)

    @numba.njit
    def rounds_of_writes_and_reads(exchange, rank, rounds):
        # Each round: write this rank's row, wait, read every other row (which must hold this
        # round's values: the point ordered their writes before), wait (no rank writes the
        # next round's until every rank has read this one's).
        size = exchange.shape[0] - 1
        wrong = 0
        for i in range(rounds):
            for j in range(100):
                exchange[rank, j] = i * 1000.0 + rank * 100.0 + j
            exchange_point(exchange, rank, 0)
            for other in range(size):
                for j in range(100):
                    wrong += exchange[other, j] != i * 1000.0 + other * 100.0 + j
            exchange_point(exchange, rank, 1)
        return wrong

    assert rounds_of_writes_and_reads(exchange, r, 3000) == 0
    print("ok", r, "ordered", flush=True)

    @numba.njit
    def one_point(exchange, rank, say_after):
        exchange_point(exchange, rank, 0, say_after)

    # A long wait: rank 0 comes 3 s late. The others sleep between their polls meanwhile,
    # and say that they are still waiting once a second has passed. (The first call compiles
    # one_point on every rank, and all arrive together: the late call's wait is the sleep.)
    one_point(exchange, r, 60)
    if r == 0:
        time.sleep(3.0)
    one_point(exchange, r, 1)
    print("ok", r, "waited", flush=True)

    @numba.njit
    def another_point_on_each_rank(exchange, rank):
        exchange_point(exchange, rank, 7 + rank)

    try:
        another_point_on_each_rank(exchange, r)
    except RuntimeError as error:
        assert "reached different exchange points" in str(error), error
        print("ok", r, "raised", flush=True)
"""


@pytest.mark.parametrize("ranks", [2, 3])
def test_exchange_points_order_the_ranks_writes(tmp_path, ranks):
    """The sharded update's barrier (backend/numba/exchange_points.py): what a rank wrote
    before a point, every rank reads after it, a long wait ends when the late rank comes (and
    is said), and ranks at different points raise. Three ranks on this machine's two cores
    wait for a rank that has no core (the yielding wait)."""
    result = run_ranks(tmp_path, EXCHANGE_POINTS, n=ranks)
    check_ok(result, 3 * ranks)
    waiting = "is still waiting for rank 0 at exchange point 0 of a sharded step"
    assert all(f"rank {q} {waiting}" in result.stdout for q in range(1, ranks)), result.stdout


RAISING = """
    import jitgrad.distributed as dist

    dist.init()
    if dist.rank() == 1:
        raise RuntimeError("rank 1 fails on purpose")
    dist.barrier()   # rank 0 would wait here forever without the abort
    print("rank 0 passed the barrier", flush=True)
"""


def test_a_raising_rank_ends_the_job(tmp_path):
    result = run_ranks(tmp_path, RAISING, timeout=30)
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stderr
    assert "passed the barrier" not in result.stdout


RAISING_DURING_A_SHARDED_STEP = """
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist

    dist.init()
    params = {"w": np.ones((4, 3), np.float32)}
    opt = jg.optim.SGD(0.1)
    state = opt.init(params)
    step = jg.jit_train_step(lambda p, x: jg.reduce_sum(x @ p["w"]), opt, distributed=True)
    x = np.ones((2, 4), np.float32)
    step(params, state, x)
    assert step._sharded is not None
    print("ok", dist.rank(), "sharded", flush=True)
    if dist.rank() == 1:
        raise RuntimeError("rank 1 fails on purpose")
    step(params, state, x)   # rank 0 waits at the step's first exchange point until killed
    print("rank 0 passed the exchange point", flush=True)
"""


def test_a_rank_raising_while_another_waits_at_an_exchange_point_ends_the_job(tmp_path):
    """The sharded step's exchange points spin on shared memory, not in MPI: the abort that
    a raising rank's exception makes still ends the waiting rank."""
    result = run_ranks(tmp_path, RAISING_DURING_A_SHARDED_STEP, timeout=60)
    assert result.returncode != 0
    assert result.stdout.count("sharded") == 2, result.stdout + result.stderr
    assert "rank 1 fails on purpose" in result.stderr
    assert "passed the exchange point" not in result.stdout


KILLED_DURING_A_SHARDED_STEP = RAISING_DURING_A_SHARDED_STEP.replace(
    'raise RuntimeError("rank 1 fails on purpose")',
    "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
)


def test_a_rank_killed_while_another_waits_at_an_exchange_point_ends_the_job(tmp_path):
    """A rank that dies without a word (SIGKILL: the kernel's OOM killer, a crash) runs no
    abort hook; the launcher sees it die and ends the rank that waits on shared memory."""
    assert "SIGKILL" in KILLED_DURING_A_SHARDED_STEP  # not the raising script by mistake
    result = run_ranks(tmp_path, KILLED_DURING_A_SHARDED_STEP, timeout=60)
    assert result.returncode != 0
    assert "fails on purpose" not in result.stderr
    assert result.stdout.count("sharded") == 2, result.stdout + result.stderr
    assert "passed the exchange point" not in result.stdout


A_RANK_SKIPS_A_COLLECTIVE = """
    import sys
    import time
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist

    path = sys.argv[1]
    dist.init()
    dist.init(timeout=2)   # a later call sets the timeout
    if path == "allreduce":
        jg.config.sharded_update = False
    params = {"w": np.ones((4, 3), np.float32)}
    opt = jg.optim.SGD(0.1)
    state = opt.init(params)
    step = jg.jit_train_step(lambda p, x: jg.reduce_sum(x @ p["w"]), opt, distributed=True)
    x = np.ones((2, 4), np.float32)

    def collective():
        if path == "eager":
            dist.allreduce_gradients([jg.constant(np.ones(3, np.float32))])
        else:
            step(params, state, x)

    collective()   # compiled on both ranks, and in step
    assert bool(step._sharded) == (path == "sharded")
    print("ok", dist.rank(), "in step", flush=True)
    if dist.rank() == 1:
        try:
            raise ValueError("a bad batch on rank 1")
        except ValueError:
            pass   # and rank 1 goes on without the collective
    else:
        collective()   # waits for rank 1
        print("rank 0 passed", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("path", ["sharded", "allreduce", "eager"])
def test_a_rank_that_skips_a_collective_ends_the_job_after_the_timeout(tmp_path, path):
    """A rank that catches an exception and goes on leaves the others in a collective: at a
    sharded step's exchange point, in the kernel's MPI_Allreduce, in an eager allreduce.
    Their watchdog ends the job after init's timeout, saying where rank 0 waited."""
    result = run_ranks(tmp_path, A_RANK_SKIPS_A_COLLECTIVE.replace("sys.argv[1]", repr(path)))
    assert result.returncode != 0
    assert result.stdout.count("in step") == 2, result.stdout + result.stderr
    assert "rank 0 passed" not in result.stdout
    waited = "jitgrad.distributed: rank 0 has waited 2 s for the other ranks in "
    assert waited in result.stderr, result.stderr
    where = "jitgrad.distributed.collectives.allreduce" if path == "eager" else "jit_train_step"
    assert where in result.stderr and "(job.py:" in result.stderr, result.stderr
    assert "init(timeout=seconds)" in result.stderr


MISMATCH = """
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist

    dist.init()
    hidden = 8 if dist.rank() == 0 else 6
    params = {"w": np.ones((3, hidden), np.float32)}
    opt = jg.optim.SGD(0.1)
    state = opt.init(params)
    step = jg.jit_train_step(lambda p, x: jg.reduce_sum(x @ p["w"]), opt, distributed=True)
    try:
        step(params, state, np.ones((2, 3), np.float32))
    except ValueError as error:
        print("ok", dist.rank(), error, flush=True)
"""


def test_mismatched_shapes_give_a_clear_error(tmp_path):
    result = run_ranks(tmp_path, MISMATCH)
    check_ok(result, 2)
    assert "differs between ranks" in result.stdout
    assert (
        "jit_train_step(<lambda>): params differs between ranks: rank 0 has params['w'] float32 "
        "(3, 8), rank 1 has params['w'] float32 (3, 6)"
    ) in result.stdout


APART = """
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist

    dist.init()
    r = dist.rank()

    def loss(p, x):
        return jg.reduce_sum(x @ p["w"])

    def fresh(seed):  # the common mistake: every rank seeded with its own rank
        return {"w": np.random.default_rng(seed).standard_normal((3, 4)).astype(np.float32)}

    for label, sharded, optimizer, distributed in [
        ("sharded", True, jg.optim.Adam(0.1), True),
        ("allreduce", False, jg.optim.SGD(0.1), True),
        ("DistributedOptimizer", True, dist.DistributedOptimizer(jg.optim.SGD(0.1)), False),
    ]:
        jg.config.sharded_update = sharded
        params = fresh(r)
        state = optimizer.init(params)
        step = jg.jit_train_step(loss, optimizer, distributed=distributed)
        x = np.ones((2, 3), np.float32)
        try:
            step(params, state, x)
        except ValueError as error:
            assert "params['w'] holds other values on rank(s) 1 than on rank 0" in str(error)
            assert "params = jitgrad.distributed.broadcast(params)" in str(error), error
            assert str(error).endswith("(job.py:26)"), error
            print("ok", r, label, "refused", flush=True)
        else:
            raise AssertionError(f"{label}: ranks apart were not refused")
        params = dist.broadcast(params)
        step(params, state, x)  # once broadcast, the same step trains
        every = dist.world.world().comm.allgather(params["w"])
        assert np.array_equal(every[0], every[1])
        print("ok", r, label, "trains after a broadcast", flush=True)

    # The tape's pattern: the second apply_gradients checks the variables (Horovod's
    # examples broadcast after the first step, which must run).
    def tape_step(opt, v):
        with jg.GradientTape() as tape:
            y = jg.reduce_sum(v * v)
        opt.apply_gradients(zip(tape.gradient(y, [v]), [v]))

    opt = dist.DistributedOptimizer(jg.optim.SGD(0.1))
    v = jg.Variable(np.full(2, float(r), np.float32))
    tape_step(opt, v)
    try:
        tape_step(opt, v)
    except ValueError as error:
        assert "variables[0] holds other values on rank(s) 1" in str(error), error
        assert "(its second call)" in str(error), error
        print("ok", r, "apply_gradients refused", flush=True)
    opt = dist.DistributedOptimizer(jg.optim.SGD(0.1))
    v = jg.Variable(np.full(2, float(r), np.float32))
    tape_step(opt, v)  # mean gradient 1: 0.9 on rank 1, -0.1 on rank 0
    dist.broadcast([v])  # Horovod's first-batch broadcast
    tape_step(opt, v)
    assert np.array_equal(v.numpy(), np.full(2, -0.08, np.float32)), v.numpy()
    print("ok", r, "apply_gradients after a broadcast", flush=True)
"""


def test_ranks_that_start_apart_are_refused_at_the_first_step(tmp_path):
    """Ranks whose parameters differ at the first step would never meet again (allreduce)
    or be silently mixed (sharded update): the first step raises on every rank."""
    check_ok(run_ranks(tmp_path, APART), 16)


IN_A_FUNCTION = """
    import numpy as np
    import jitgrad as jg
    import jitgrad.distributed as dist

    dist.init()
    r = dist.rank()
    x = np.full((2, 3), r + 1.0, np.float32)  # d(loss)/dw = 2 (r + 1): a mean of 3 over ranks

    def make(reduce):
        w = jg.Variable(np.full((3, 2), 0.5, np.float32))
        opt = jg.optim.SGD(0.1)
        if reduce == "optimizer":
            opt = dist.DistributedOptimizer(opt)

        def train_step(x):
            with jg.GradientTape() as tape:
                loss = jg.reduce_sum(x @ w)
            if reduce == "tape":
                tape = dist.DistributedGradientTape(tape)
            grads = tape.gradient(loss, [w])
            if reduce == "gradients":
                grads = dist.allreduce_gradients(grads)
            opt.apply_gradients(zip(grads, [w]))
            return loss

        return w, train_step

    for reduce in ("optimizer", "gradients", "tape"):
        w_eager, eager_step = make(reduce)
        w, step = make(reduce)
        step = jg.function(step)
        for _ in range(3):
            eager_step(x)
            step(x)
        assert step.cache_info().states == ("compiled",), step.cache_info()
        assert "allreduce_sum_f32" in step.lower(x).source
        assert np.array_equal(w.numpy(), w_eager.numpy()), (w.numpy(), w_eager.numpy())
        assert np.allclose(w.numpy(), 0.5 - 3 * 0.1 * 3.0), w.numpy()
        print("ok", r, reduce, flush=True)

    @jg.function
    def broadcasting(x):
        return dist.broadcast([x])[0]

    try:
        broadcasting(x)
    except RuntimeError as error:
        assert "runs eagerly, not inside a compiled function" in str(error), error
        print("ok", r, "broadcast refused in a compiled function", flush=True)

    # The tape wrapped before recording; a single source and a dict of sources.
    v = jg.Variable(np.full(2, 1.0, np.float32))
    with dist.DistributedGradientTape(jg.GradientTape(persistent=True)) as tape:
        y = jg.reduce_sum(v * v) * (r + 1.0)
    assert np.array_equal(tape.gradient(y, v).numpy(), np.full(2, 3.0, np.float32))
    got = tape.gradient(y, {"v": v, "unused": jg.Variable(1.0)})
    assert got["unused"] is None and np.array_equal(got["v"].numpy(), np.full(2, 3.0))
    assert tape.watched_variables() == (v,)  # the wrapped tape's, unreduced
    print("ok", r, "DistributedGradientTape", flush=True)
"""


def test_horovods_pattern_inside_a_compiled_function(tmp_path):
    """A tf.function-style step with DistributedOptimizer, allreduce_gradients or
    DistributedGradientTape compiles the allreduce into its kernel and trains as the eager
    loop does."""
    check_ok(run_ranks(tmp_path, IN_A_FUNCTION), 10)


def test_the_wrappers_pass_attributes_through_and_pickle():
    import pickle

    opt = dist.DistributedOptimizer(jg.optim.Adam(0.1))
    opt.learning_rate = 0.5  # set on the wrapped optimizer
    assert opt.optimizer.learning_rate == 0.5 and opt.slots == opt.optimizer.slots
    again = pickle.loads(pickle.dumps(opt))
    assert isinstance(again, dist.DistributedOptimizer) and again.learning_rate == 0.5
    tape = dist.DistributedGradientTape(jg.GradientTape())
    assert not hasattr(tape, "no_such_attribute")
    v = jg.Variable(2.0)
    with tape:
        y = v * v
    assert tape.gradient(y, v).numpy() == 4.0  # a job of one: the mean is the gradient


def test_single_process_fallback():
    """Without mpiexec: a job of one process, every collective the identity."""
    dist.init()
    dist.init()  # idempotent
    assert (dist.rank(), dist.size(), dist.is_main()) == (0, 1, True)
    assert (dist.local_rank(), dist.local_size()) == (0, 1)
    dist.barrier()
    tree = {"w": np.arange(3.0, dtype=np.float32), "t": jg.constant([1.0, 2.0])}
    assert dist.allreduce(tree, op="mean") is tree
    assert dist.broadcast(tree) is tree
    x, y = np.arange(6), np.arange(6) * 2
    sx, sy = dist.shard(x, y)
    assert np.array_equal(sx, x) and np.array_equal(sy, y)
    with pytest.raises(ValueError, match="op must be one of 'sum', 'mean', 'max'"):
        dist.allreduce(tree, op="median")
    counts = {"i": np.arange(3), "n": 5}
    assert dist.allreduce(counts) is counts and dist.allreduce(counts, op="max") is counts
    with pytest.raises(TypeError, match=r"tree\['i'\] is int64 \(3,\); op='mean' reduces float"):
        dist.allreduce({"i": np.arange(3)}, op="mean")
    with pytest.raises(TypeError, match=r"op='sum' reduces float and integer values"):
        dist.allreduce([np.ones(2, bool)])
    with pytest.raises(ValueError, match="root must be a rank"):
        dist.broadcast(tree, root=1)
    gathered = dist.allgather({"w": tree["w"], "n": 2, "t": tree["t"]})
    assert gathered["w"] is not tree["w"] and np.array_equal(gathered["w"], tree["w"])
    assert gathered["n"].tolist() == [2] and isinstance(gathered["t"], jg.Tensor)
    assert dist.allgather_object("a") == ["a"] and dist.broadcast_object({"k": 1}) == {"k": 1}
    with pytest.raises(ValueError, match=r"broadcast_object: root must be a rank in \[0, 1\)"):
        dist.broadcast_object(1, root=2)
    with pytest.raises(TypeError, match=r"allgather: tree\[0\] is a str"):
        dist.allgather(["text"])

    def loss_fn(p, xb):
        return jg.reduce_sum(jg.tanh(xb @ p["w"]))

    params = {"w": np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)}
    plain = {"w": params["w"].copy()}
    opt, plain_opt = jg.optim.Adam(0.1), jg.optim.Adam(0.1)
    state, plain_state = opt.init(params), plain_opt.init(plain)
    step = jg.jit_train_step(loss_fn, opt, distributed=True)
    plain_step = jg.jit_train_step(loss_fn, plain_opt)
    xb = np.ones((4, 3), np.float32)
    for _ in range(3):
        step(params, state, xb)
        plain_step(plain, plain_state, xb)
    jg.wait_for_compiles()
    assert np.array_equal(params["w"], plain["w"])
    assert "allreduce" not in step.lower(params, state, xb).source  # nothing to reduce

    variable = jg.Variable(np.ones(3, np.float32))
    distributed_opt = dist.DistributedOptimizer(jg.optim.SGD(0.5))
    distributed_opt.apply_gradients([(jg.constant(np.ones(3, np.float32)), variable)])
    assert np.array_equal(variable.numpy(), np.full(3, 0.5, np.float32))
    assert int(distributed_opt.iterations.numpy()) == 1


AFFINITY = """
    import os
    import jitgrad.distributed as dist
    from jitgrad.distributed.run import physical_cores

    dist.init()
    print("ok", dist.rank(), physical_cores(os.sched_getaffinity(0)), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux's affinity")
@pytest.mark.parametrize("ranks", [1, 2])
def test_the_launcher_gives_each_rank_its_share_of_the_cores(tmp_path, ranks):
    from jitgrad.distributed.run import physical_cores

    cores = physical_cores()
    if ranks > cores:
        pytest.skip(f"{cores} core(s) here")
    result = run_ranks(tmp_path, AFFINITY, n=ranks, threads=None)
    check_ok(result, ranks)
    shares = [int(line.split()[2]) for line in result.stdout.splitlines() if line.startswith("ok")]
    assert shares == [cores // ranks] * ranks, result.stdout


def test_launcher_command(monkeypatch):
    from jitgrad.distributed import run

    monkeypatch.setattr(run, "physical_cores", lambda: 8)
    for name in run.ONE_THREAD:
        monkeypatch.delenv(name, raising=False)
    argv, env = run.command(64, ["train.py", "--lr", "0.1"])
    assert argv[1:3] == ["-n", "64"] and argv[-3:] == ["train.py", "--lr", "0.1"]
    assert argv[-4] == sys.executable and os.path.basename(argv[0]) == "mpiexec"
    # More ranks than cores: no binding, one thread each.
    assert argv[3:6] == ["--oversubscribe", "--bind-to", "none"]
    assert all(env[name] == "1" for name in run.ONE_THREAD)
    assert env["OMPI_MCA_mpi_yield_when_idle"] == "1"
    assert env["OMPI_MCA_coll_tuned_allreduce_algorithm"] == "4"  # the ring
    # Fewer: each rank its share of the cores, and as many threads (no thread variable set).
    for ranks, share in ((1, 8), (2, 4), (3, 2), (8, 1)):
        argv, env = run.command(ranks, ["train.py"])
        assert argv[3:7] == ["--map-by", f"slot:PE={share}", "--bind-to", "core"]
        assert not any(name in env for name in run.ONE_THREAD)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")  # the user's choice wins
    assert run.command(64, ["train.py"])[1]["NUMBA_NUM_THREADS"] == "2"
    # ... and a rank gets as many cores as its threads, within its share.
    assert run.command(1, ["train.py"])[0][3:5] == ["--map-by", "slot:PE=2"]
    assert run.command(8, ["train.py"])[0][3:5] == ["--map-by", "slot:PE=1"]
    hosts, _ = run.command(4, ["train.py"], hosts="a:2,b:2")
    assert hosts[3:5] == ["-H", "a:2,b:2"] and "--oversubscribe" not in hosts
    assert hosts[-4:-2] == ["--bind-to", "none"]  # each rank takes its share (init)


class _FakeMachine:
    """A shared-memory communicator whose ranks may run on `cpu_sets`."""

    def __init__(self, cpu_sets):
        self.cpu_sets = cpu_sets

    def allgather(self, mine):
        return self.cpu_sets


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux's affinity")
def test_ranks_sharing_cpus_take_a_share_each(monkeypatch):
    from jitgrad.distributed import world

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(jg.config, "num_threads", None)
    machine = _FakeMachine([list(range(8))] * 3 + [[8, 9]])  # 3 ranks on CPUs 0-7, 1 apart
    world._share_the_cpus(machine)
    assert jg.config.num_threads == 2  # 8 CPUs over 3 ranks
    jg.config.num_threads = None
    world._share_the_cpus(_FakeMachine([list(range(8)), [8, 9]]))  # bound apart
    assert jg.config.num_threads is None
    jg.config.num_threads = 3  # the user's (NUMBA_NUM_THREADS) wins
    world._share_the_cpus(_FakeMachine([list(range(8))] * 8))
    assert jg.config.num_threads == 3


def test_physical_cores_count_cores_not_hardware_threads(tmp_path):
    from jitgrad.distributed import run

    # Two sockets of two cores with two hardware threads each (CPUs 0-7); CPU 8 has no
    # topology (it counts as a core of its own).
    for cpu in range(8):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{cpu // 4}\n")
        (topology / "core_id").write_text(f"{cpu % 4 // 2}\n")
    assert run.physical_cores(range(8), str(tmp_path)) == 4
    assert run.physical_cores([0, 1], str(tmp_path)) == 1  # one core's two threads
    assert run.physical_cores([0, 4], str(tmp_path)) == 2  # core 0 of each socket
    assert run.physical_cores([0, 1, 8], str(tmp_path)) == 2
    assert 1 <= run.physical_cores() <= os.cpu_count()


def _graph_with_allreduce(in_loop: bool):
    """A traced graph with the allreduce primitive (bound directly: in one process the
    `allreduce` function returns its input), at the top level or inside a scan's body."""
    from jitgrad.core.aval import AVal
    from jitgrad.core.dispatch import bind
    from jitgrad.ir.trace import Trace, tracing
    from jitgrad.ops.collective import allreduce_p

    def f(x):
        if not in_loop:
            return bind(allreduce_p, x) * 2.0
        return jg.lax.scan(lambda c, t: (c + bind(allreduce_p, t), c), x[0], x)[0]

    trace = Trace("f")
    with tracing(trace):
        return trace.to_graph([f(trace.new_input(AVal((3,), np.dtype(np.float32))))])


@pytest.mark.parametrize("in_loop", [False, True], ids=["top level", "loop body"])
def test_a_function_calling_a_collective_compiles_before_its_first_call(in_loop):
    from jitgrad.compiler.function import _calls_collectives

    assert _calls_collectives(_graph_with_allreduce(in_loop))


def test_constant_folding_never_evaluates_a_collective():
    from jitgrad.core.aval import AVal
    from jitgrad.core.dispatch import bind
    from jitgrad.ir.trace import Trace, tracing
    from jitgrad.ops.collective import allreduce_p
    from jitgrad.passes import fold_constants

    def f(x):
        return x + bind(allreduce_p, jg.constant(np.ones(3, np.float32)))

    trace = Trace("f")
    with tracing(trace):
        graph = trace.to_graph([f(trace.new_input(AVal((3,), np.dtype(np.float32))))])
    assert "allreduce" in [e.op.name for e in fold_constants(graph).eqns]
