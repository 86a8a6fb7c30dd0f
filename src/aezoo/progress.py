"""The progress bar of a slow metric: tqdm on stderr, off unless asked, gone once the metric is done."""

from __future__ import annotations

from tqdm import tqdm


def bar(iterable=None, *, progress: bool, desc: str, total: int | None = None, unit: str = "batch") -> tqdm:
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress, leave=False, dynamic_ncols=True)
