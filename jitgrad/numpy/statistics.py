"""numpy's statistics that ignore NaNs or weigh values: the nan-reductions (nansum, nanmean,
nanmax, ..., nanquantile), average, cov, corrcoef and ptp. Imported into `jitgrad.numpy`."""

from __future__ import annotations

__all__: list[str] = []
