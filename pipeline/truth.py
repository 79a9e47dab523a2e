"""The one gate to the simulated world's truth: where it lives, and a guard that keeps training off it.

Truth (true genres, compatibility of every video to every music clip) exists only for the simulated
world and only evaluation may read it. Two defences, the first of which is the one that holds:

1. Training cannot reach it. Truth lives in data/world/truth and data/raw/truth; no training stage
   (train_teacher, train_student, baselines, sweep) has data/world or data/raw among its DVC deps: they read
   data/features and data/dataset, which split and the extractors write without truth
   (tests/test_truth.py checks dvc.yaml for this).
2. A tripwire, not a sandbox. `forbid_truth_reads()` makes a later read of a path that names a `truth/`
   directory fail in this process when it goes through:
   - Python-level opens (open, io, pathlib, numpy's load/memmap/fromfile, pandas' CSV/JSON readers,
     torch.load) and directory listings of such a path: an audit hook refuses their audit events;
   - the pyarrow / pandas readers listed in _ARROW_READERS (Arrow opens files in C++ without an audit
     event), wrapped to check their path arguments first.
   It does NOT cover: readers reached by another name (e.g. `pq.read_pandas`, `pyarrow.parquet.core.
   read_table` imported before the guard, `pyarrow.fs.LocalFileSystem().open_input_file`), a path that does
   not name `truth/` (a symlink to it, a relative path after `os.chdir` into it, a read of a parent
   directory's files by glob), or native code. It catches a training change that reaches for truth by its
   name, nothing more; the deps rule above is what keeps training off it.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
from pathlib import Path

from pipeline.errors import DataError

TRUTH_DIR = "truth"
_installed = False

# (module, attribute) of every pyarrow / pandas reader that may open a file outside Python's io
_ARROW_READERS = (
    ("pyarrow", "memory_map"), ("pyarrow", "OSFile"), ("pyarrow", "input_stream"), ("pyarrow", "create_memory_map"),
    ("pyarrow.parquet", "read_table"), ("pyarrow.parquet", "ParquetFile"), ("pyarrow.parquet", "ParquetDataset"),
    ("pyarrow.parquet", "read_metadata"), ("pyarrow.parquet", "read_schema"),
    ("pyarrow.dataset", "dataset"), ("pyarrow.feather", "read_table"), ("pyarrow.feather", "read_feather"),
    ("pyarrow.csv", "read_csv"), ("pyarrow.csv", "open_csv"), ("pyarrow.json", "read_json"),
    ("pyarrow.ipc", "open_file"), ("pyarrow.ipc", "open_stream"), ("pyarrow.orc", "read_table"),
    ("pandas", "read_parquet"), ("pandas", "read_feather"), ("pandas", "read_orc"),
)


def is_truth_path(path) -> bool:
    try:
        parts = Path(os.fsdecode(path)).parts
    except TypeError:  # file descriptors, buffers and other non-path arguments
        return False
    return TRUTH_DIR in parts


def _refuse(path) -> None:
    raise DataError(f"{os.fsdecode(path)}: training code must not read the world's truth (evaluation only)")


def _hook(event: str, args: tuple) -> None:
    if event == "open" and args and is_truth_path(args[0]):
        _refuse(args[0])
    if event in ("os.listdir", "os.scandir") and args and args[0] is not None and is_truth_path(args[0]):
        raise DataError(f"{args[0]}: training code must not list the world's truth (evaluation only)")


def _paths_in(value):
    if isinstance(value, (str, bytes, os.PathLike)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _paths_in(v)


def _guarded(fn):
    @functools.wraps(fn)
    def reader(*args, **kwargs):
        for value in (*args, *kwargs.values()):
            for path in _paths_in(value):
                if is_truth_path(path):
                    _refuse(path)
        return fn(*args, **kwargs)
    reader.__truth_guarded__ = True
    return reader


def _guard_arrow_readers() -> None:
    for module_name, attr in _ARROW_READERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an optional pyarrow part that is not built here
            continue
        fn = getattr(module, attr, None)
        if fn is not None and not getattr(fn, "__truth_guarded__", False):
            setattr(module, attr, _guarded(fn))


def guarded() -> bool:
    """Whether this process forbids truth reads (a training stage's worker processes must do the same)."""
    return _installed


def forbid_truth_reads() -> None:
    """From now on, any read of a path inside a `truth/` directory raises DataError (process-wide)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _guard_arrow_readers()
        _installed = True
