"""The pieces of the sharded update that run in one process: how values split into row
shares (core/row_shares.py), the exchange ops' eager forms and errors, which optimizers
update elementwise, and the shared memory's failure path (the update itself runs on two
ranks: tests/test_distributed.py)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.core.dispatch import bind
from jitgrad.core.row_shares import (
    control_column,
    exchange_columns,
    row_bounds,
    row_share,
    row_size,
    value_offsets,
)
from jitgrad.distributed import shared_memory
from jitgrad.ops.collective import allgather_rows_p, exchange_rows_p, publish_rows_p

shapes = st.lists(
    st.lists(st.integers(0, 6), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4
)


@given(rows=st.integers(0, 1000), size=st.integers(1, 9))
def test_row_shares_split_the_rows_contiguously_and_evenly(rows, size):
    bounds = row_bounds(rows, size)
    assert bounds[0] == 0 and bounds[-1] == rows
    counts = [b - a for a, b in zip(bounds, bounds[1:])]
    assert min(counts) >= 0 and max(counts) - min(counts) <= 1
    assert [row_share((rows, 3), q, size) for q in range(size)] == list(zip(bounds, bounds[1:]))


@given(shapes=shapes, size=st.integers(1, 5))
def test_the_shares_of_all_ranks_fill_each_value_once(shapes, size):
    offsets = value_offsets(shapes)
    assert offsets[-1] == sum(int(np.prod(s)) for s in shapes)
    covered = np.zeros(offsets[-1], int)
    for rank in range(size):
        for i, shape in enumerate(shapes):
            first, end = row_share(shape, rank, size)
            covered[offsets[i] + first * row_size(shape) : offsets[i] + end * row_size(shape)] += 1
    assert (covered == 1).all()


@given(st.integers(0, 10_000), st.sampled_from([4, 8]))
def test_each_exchange_row_ends_in_a_control_line_of_its_own(values, itemsize):
    columns = exchange_columns(values, itemsize)
    control = control_column(columns, itemsize)
    assert values <= control and (control - values) * itemsize < 64  # padding: under a line
    assert control * itemsize % 64 == 0 and (columns - control) * itemsize == 64
    assert columns * itemsize % 64 == 0  # so every row's line is a line of its own


def test_the_exchange_ops_in_one_process():
    """A job of one process: what a rank publishes it reads back, and the gathered value is
    its share."""
    a = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    b = np.array([7.0, 8.0], np.float32)
    exchange = np.zeros((2, exchange_columns(8, 4)), np.float32)
    assert exchange.shape[1] == 32  # 8 values, padded to a 64-byte line, then the control line
    published = bind(
        publish_rows_p, jg.constant(exchange), jg.constant(a), jg.constant(b), rank=0, size=1
    )
    np.testing.assert_array_equal(exchange[0, :8], [0, 1, 2, 3, 4, 5, 7, 8])
    rows = bind(exchange_rows_p, jg.constant(exchange), published, row=0, start=6, shape=(2,))
    np.testing.assert_array_equal(rows.numpy(), b)
    whole = bind(
        allgather_rows_p,
        jg.constant(exchange),
        jg.constant(a),
        rank=0,
        size=1,
        rows=3,
        offset=0,
        tag=1,
    )
    np.testing.assert_array_equal(whole.numpy(), a)


def test_the_exchange_ops_name_what_is_wrong():
    a = jg.constant(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"publish_rows: .*float32 or float64.*int32"):
        bind(publish_rows_p, a, jg.constant(np.ones(2, np.int32)), rank=0, size=1)
    small = jg.constant(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="keeps the parameter shapes of its first call"):
        bind(publish_rows_p, small, a, rank=0, size=1)
    with pytest.raises(ValueError, match=r"exchange_rows: \[1, 2:8\] is outside"):
        bind(exchange_rows_p, small, a, row=1, start=2, shape=(3, 2))
    no_control_line = jg.constant(np.zeros((2, 6), np.float32))  # room for the values alone
    with pytest.raises(ValueError, match="hold 0 values before their control line, these need 6"):
        bind(publish_rows_p, no_control_line, a, rank=0, size=1)
    with pytest.raises(ValueError, match=r"rank 0's share of \(4, 2\) has 4 rows, got \(3, 2\)"):
        bind(allgather_rows_p, small, a, rank=0, size=1, rows=4, offset=0, tag=1)


def test_which_optimizers_update_elementwise():
    assert all(
        opt.updates_elementwise()
        for opt in (
            jg.optim.SGD(0.1, momentum=0.9),
            jg.optim.Adam(),
            jg.optim.AdamW(),
            jg.optim.RMSprop(centered=True),
        )
    )

    class Tuned(jg.optim.Adam):  # the inherited rule: still elementwise
        pass

    class Normalized(jg.optim.SGD):  # a rule of its own, not declared elementwise
        def _update_leaf(self, p, g, slots, c):
            return p - g / jg.sqrt(jg.reduce_sum(g * g)), {}

    assert Tuned().updates_elementwise()
    assert not Normalized(0.1).updates_elementwise()


def test_a_full_dev_shm_is_an_error_and_leaves_no_file(tmp_path, monkeypatch):
    """posix_fallocate reserves the pages up front: a full /dev/shm fails here, not with a
    SIGBUS at a kernel's first write into the mapping."""

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shared_memory.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(shared_memory.os.path, "isdir", lambda path: False)
    monkeypatch.setattr(shared_memory.os, "posix_fallocate", full)
    path, error = shared_memory._create(1 << 20)
    assert path is None and "could not reserve 1048576 bytes" in error
    assert os.listdir(tmp_path) == []


def _mutations():
    """Every way to change a dict or a list in place, as (name, container kind, change)."""
    array = np.zeros(2)
    return [
        ("d[k] = v", "dict", lambda d: d.__setitem__("w", array)),
        ("del d[k]", "dict", lambda d: d.__delitem__("w")),
        ("d |= e", "dict", lambda d: d.__ior__({"w": array})),
        ("clear", "dict", lambda d: d.clear()),
        ("pop", "dict", lambda d: d.pop("w")),
        ("popitem", "dict", lambda d: d.popitem()),
        ("setdefault", "dict", lambda d: d.setdefault("z", array)),
        ("update", "dict", lambda d: d.update(w=array)),
        ("l[i] = v", "list", lambda xs: xs.__setitem__(0, array)),
        ("del l[i]", "list", lambda xs: xs.__delitem__(0)),
        ("l += m", "list", lambda xs: xs.__iadd__([array])),
        ("l *= 2", "list", lambda xs: xs.__imul__(2)),
        ("append", "list", lambda xs: xs.append(array)),
        ("extend", "list", lambda xs: xs.extend([array])),
        ("insert", "list", lambda xs: xs.insert(0, array)),
        ("pop", "list", lambda xs: xs.pop()),
        ("remove", "list", lambda xs: xs.remove(xs[0])),
        ("clear", "list", lambda xs: xs.clear()),
        ("sort", "list", lambda xs: xs.sort(key=id)),
        ("reverse", "list", lambda xs: xs.reverse()),
    ]


@pytest.mark.parametrize(
    "name, kind, change", _mutations(), ids=[f"{kind}: {name}" for name, kind, _ in _mutations()]
)
def test_a_sharded_steps_state_containers_notice_every_change(name, kind, change):
    """A sharded step's opt_state holds watched dicts and lists (sharded_step.watched_tree): a
    slot array replaced inside them must make the next step adopt it, without walking the
    state at every step."""
    from jitgrad.compiler.sharded_step import watched_tree
    from jitgrad.core import pytree

    tree = {"w": np.ones(2), "layers": [np.ones(3), np.ones(4)], "pair": ({"v": np.ones(1)},)}
    leaves, treedef = pytree.flatten(tree)
    changes = [False]
    watched = watched_tree(treedef, iter(leaves), changes)
    assert pytree.flatten(watched)[1] == treedef
    assert all(a is b for a, b in zip(pytree.flatten(watched)[0], leaves))
    container = watched if kind == "dict" else watched["layers"]
    change(container)
    assert changes == [True], name
    nested = watched_tree(treedef, iter(leaves), [False])
    nested["pair"][0]["v"] = np.zeros(1)  # inside a tuple: still watched
    assert nested["pair"][0].changes == [True]


def test_a_watched_state_pickles_and_copies_as_plain_containers():
    import copy
    import pickle

    from jitgrad.compiler.sharded_step import watched_tree
    from jitgrad.core import pytree

    leaves, treedef = pytree.flatten({"w": np.arange(3.0), "b": [np.ones(2)]})
    watched = watched_tree(treedef, iter(leaves), [False])
    for other in (pickle.loads(pickle.dumps(watched)), copy.deepcopy(watched)):
        assert type(other) is dict and type(other["b"]) is list
        np.testing.assert_array_equal(other["w"], np.arange(3.0))
