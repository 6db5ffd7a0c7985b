"""numpy's array-building and index-making functions that compose from jitgrad's ops: flips and
rotations, stacking and blocks, inserting and deleting, index grids (indices, mgrid, ix_,
triu_indices, unravel_index, ...), and numpy's dtype helpers. Imported into `jitgrad.numpy`."""

from __future__ import annotations

__all__: list[str] = []
