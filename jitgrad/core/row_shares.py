"""How a sharded update splits values among the ranks of a job: by contiguous shares of their
leading axis (rows), and where values and shares lie in the exchange array that the ranks of
one machine share (ops/collective.py: publish_rows, exchange_rows, allgather_rows; the Numba backend
emits them from the same layout)."""

from __future__ import annotations


def row_bounds(rows: int, size: int) -> tuple[int, ...]:
    """Where the leading axis of `rows` rows splits into `size` contiguous shares, as even as
    possible: share q is rows [b[q], b[q+1])."""
    return tuple(rows * q // size for q in range(size + 1))


def row_share(shape: tuple, rank: int, size: int) -> tuple[int, int]:
    """(first row, end row) of `rank`'s share of an array of `shape` (ndim >= 1)."""
    bounds = row_bounds(shape[0], size)
    return bounds[rank], bounds[rank + 1]


def value_offsets(shapes: list[tuple]) -> list[int]:
    """Where each value begins in a row of the exchange array (one after the other, whole),
    and, last, where they end: a rank publishes its gradient of value i at [o[i], o[i+1]) of
    its row, and the new parameters are assembled in the same places of the last row."""
    offsets = [0]
    for shape in shapes:
        offsets.append(offsets[-1] + _size(shape))
    return offsets


def row_size(shape: tuple) -> int:
    """The number of elements in one row (leading index) of an array of `shape`."""
    n = 1
    for d in shape[1:]:
        n *= d
    return n


def _size(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# The last 64 bytes (a cache line) of each rank's row of the exchange array hold its
# exchange-point word (backend/numba/exchange_points.py): how far the rank has got in its steps.
CONTROL_BYTES = 64


def exchange_columns(values: int, itemsize: int) -> int:
    """The width of the exchange array's rows for `values` values of `itemsize` bytes: the
    values, padded to whole 64-byte lines, then the control line (rows start on a line when
    the array does)."""
    per_line = CONTROL_BYTES // itemsize
    return -(-values // per_line) * per_line + per_line


def control_column(columns: int, itemsize: int) -> int:
    """Where a row of `columns` values of `itemsize` bytes keeps its control line; the values
    end there at the latest."""
    return columns - CONTROL_BYTES // itemsize
