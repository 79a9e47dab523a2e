"""Atomic, deterministic file writes: every output appears whole or not at all.

A stage writes to a temporary sibling and renames it into place, so an interrupted run never leaves a
half-written file that DVC or a later stage could mistake for a result.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish_mode(tmp: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give the result the mode a plain open() would have."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            _publish_mode(tmp, tmp.is_dir())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_dirs(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary directories of `path` that a killed writer left beside it (`.<name>.*.tmp`).

    A SIGKILL skips atomic_dir's clean-up, and DVC removes only declared outputs, so without this a killed
    ingest of a TT-150k release keeps a 1.2 GB half-copy forever. The name carries the writer's pid: a
    directory whose writer still runs is left alone; one without a pid comes from a killed older version.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:pid(\d+)-)?[^.]*\.tmp")
    removed = []
    if path.parent.is_dir():
        for entry in sorted(path.parent.iterdir()):
            found = pattern.fullmatch(entry.name)
            if found is None or not entry.is_dir() or entry.is_symlink():
                continue
            if found.group(1) is not None and _alive(int(found.group(1))):
                continue
            shutil.rmtree(entry)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; swap it in for `path` only on success. Temporary
    directories of `path` left by a killed run are removed first (remove_stale_dirs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_dirs(path):
        log.warning("%s: removed %s, left by a killed run", path, stale.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.pid{os.getpid()}-", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, True)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table without pandas' index and with no timestamps, so equal tables give equal bytes."""
    with atomic_path(path) as tmp:
        df.reset_index(drop=True).to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def write_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_ids(ids, path: str | os.PathLike) -> None:
    """The id order of a feature matrix: one id per line."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids))


def read_ids(path: str | os.PathLike) -> list[str]:
    return Path(path).read_text().splitlines()


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_md5(root: str | os.PathLike) -> dict[str, str]:
    """md5 of every file under `root`, keyed by relative path (used by determinism tests)."""
    root = Path(root)
    return {str(p.relative_to(root)): file_md5(p) for p in sorted(root.rglob("*")) if p.is_file()}
