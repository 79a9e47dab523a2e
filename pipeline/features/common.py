"""Small helpers the extractors share, kept apart from any one extractor so that a stage depends only on
its own extractor's code (dvc.yaml lists this file for each of them): the usable CPU count, the music
failure table and ordered look-ahead over a pool.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Iterator

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.features import mediacheck

log = logging.getLogger(__name__)

MUSIC_FAILURE_COLUMNS = ("music_id", "path", "reason")


def failure_table(failures: list[tuple[str, str, str]]) -> pd.DataFrame:
    """The failures table of the music extractors: (music_id, path, reason), sorted, as text."""
    return pd.DataFrame(sorted(failures), columns=list(MUSIC_FAILURE_COLUMNS)).astype(str)


def raise_failures(failures: list[tuple[str, str, str]], total: int, what: str) -> None:
    """One one-line MediaError naming every bad music file, so a user fixes them all in one go."""
    mediacheck.raise_failures(what, failures, total, "music file(s)")


def failures_raiser(what: str):
    """`raise_failures` for a gathered failures table (the `raise_failures` argument of run_sharded)."""
    return lambda failures, total: raise_failures(list(failures.itertuples(index=False, name=None)), total, what)


def check_finite_rows(ids: list[str], matrix: np.ndarray, what: str) -> None:
    """The invariant every extractor promises: no output row holds NaN or inf."""
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise DataError(f"{what}: row {int(np.flatnonzero(bad)[0])} (music_id {ids[int(np.flatnonzero(bad)[0])]!r}) "
                        "holds NaN or inf; expected finite features")


def in_order(pool, fn, items, window: int, extra=tuple) -> Iterator:
    """fn(item, *extra()) for each item, yielded in item order with at most `window` in flight.

    Bounded look-ahead keeps memory flat; results come in input order, so the output never depends on
    timing; `extra` is evaluated at each submit, so a caller can switch mode mid-way.
    """
    todo, futures = iter(items), deque()
    for item in todo:
        futures.append(pool.submit(fn, item, *extra()))
        if len(futures) >= window:
            break
    while futures:
        result = futures.popleft().result()
        nxt = next(todo, None)
        if nxt is not None:
            futures.append(pool.submit(fn, nxt, *extra()))
        yield result
