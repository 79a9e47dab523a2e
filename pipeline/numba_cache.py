"""Compile librosa's cached numba kernels in one process before any worker pool uses them.

librosa declares its gufuncs with `guvectorize(..., cache=True)` and explicit signatures, so importing
`librosa.beat`, `librosa.util`, `librosa.core.audio` or `librosa.core.pitch` compiles
them and writes two cache files per kernel with separate renames. Two processes doing that at once can
leave a pair from different processes, and every later load of that pair segfaults (numba/numba#10128,
librosa/librosa#1998; reproduced here: two concurrent cold imports, then a plain `onset_detect` crashes).
Importing them here, in the parent, leaves the workers only reading a complete cache.

`make setup` runs this module once after installing, so a fresh environment starts with the cache warm.
"""
from __future__ import annotations

import fcntl
import importlib
import os
import tempfile

# the librosa modules that define cached gufuncs (librosa 0.11): importing one compiles or loads them all
GUFUNC_MODULES = ("librosa.core.audio", "librosa.core.pitch", "librosa.util.utils", "librosa.beat")


def warm() -> None:
    """Import (and so compile, or load from cache) every librosa module that holds a cached gufunc."""
    for name in GUFUNC_MODULES:
        importlib.import_module(name)


def warm_locked() -> None:
    """`warm()` under an exclusive file lock: for worker processes that start together on a machine no
    parent has prepared (Ray tasks on another node), so that only one of them compiles the cache."""
    path = os.path.join(tempfile.gettempdir(), f"bgm-numba-warm-{os.getuid()}.lock")
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            warm()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


if __name__ == "__main__":
    warm()
