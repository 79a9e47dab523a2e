"""The warm-up covers every librosa module that declares a cached gufunc (see pipeline.numba_cache)."""
from __future__ import annotations

import re
from pathlib import Path

import librosa

from pipeline import numba_cache


def test_warm_imports_every_librosa_module_with_a_cached_gufunc():
    root = Path(librosa.__file__).parent
    declaring = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"guvectorize\([^@]*cache\s*=\s*True", text, flags=re.S):
            declaring.add(".".join(("librosa", *path.relative_to(root).with_suffix("").parts)))
    assert declaring, "no cached gufunc found in librosa: the scan is broken"
    assert declaring <= set(numba_cache.GUFUNC_MODULES), f"not warmed: {sorted(declaring - set(numba_cache.GUFUNC_MODULES))}"
