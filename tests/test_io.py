"""Atomic writes (pipeline/io.py): a result appears whole or not at all, with the mode open() would give."""
import os
import stat

import numpy as np
import pandas as pd
import pytest

from pipeline.io import atomic_dir, atomic_path, file_md5, write_npy, write_parquet


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_path_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_dir_failure_keeps_the_old_dir_and_success_replaces_it(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_written_files_and_dirs_follow_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "g").write_text("y")
        assert _mode(tmp_path / "f.txt") == 0o644
        assert _mode(tmp_path / "d") == 0o755
        os.umask(0o077)
        with atomic_path(tmp_path / "private.txt") as tmp:
            tmp.write_text("z")
        assert _mode(tmp_path / "private.txt") == 0o600
    finally:
        os.umask(old)


def test_equal_tables_and_arrays_give_equal_bytes(tmp_path):
    df = pd.DataFrame({"id": ["b", "a"], "x": [1.5, 2.5]}, index=[7, 3])
    write_parquet(df, tmp_path / "1.parquet")
    write_parquet(df.reset_index(drop=True), tmp_path / "2.parquet")  # the index never reaches the file
    assert file_md5(tmp_path / "1.parquet") == file_md5(tmp_path / "2.parquet")
    write_npy(np.arange(6, dtype=np.float32).reshape(2, 3), tmp_path / "1.npy")
    write_npy(np.arange(6, dtype=np.float32).reshape(2, 3), tmp_path / "2.npy")
    assert file_md5(tmp_path / "1.npy") == file_md5(tmp_path / "2.npy")
