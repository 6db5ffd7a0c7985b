"""numpy's elementwise functions and the array comparisons, searches and 1-d signal functions
that compose from jitgrad's ops (inverse hyperbolics, copysign, fmax, float_power, bitwise
ops, isin, searchsorted, digitize, interp, convolve, bincount, ...). Imported into
`jitgrad.numpy`."""

from __future__ import annotations

__all__: list[str] = []
