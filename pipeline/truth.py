"""The one gate to the simulated world's truth: where it lives, and a guard that keeps training off it.

Truth (true genres, compatibility of every video to every music clip) exists only for the simulated
world and only evaluation may read it. `forbid_truth_reads()` makes any later read of a path inside a
`truth/` directory fail in this process, however it is opened:
- Python-level opens (open, io, pathlib, numpy's load/memmap/fromfile, pandas' CSV/JSON readers, torch.load)
  and directory listings raise an audit event, which an audit hook refuses;
- Apache Arrow opens files in C++ without an audit event, so the Python entry points of pyarrow (and
  pandas' Arrow-backed readers, which call them) are wrapped to check their path arguments first.
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
