"""The one gate to the simulated world's truth: where it lives, and a guard that keeps training off it.

Truth (true genres, compatibility of every video to every music clip) exists only for the simulated
world and only evaluation may read it. `forbid_truth_reads()` installs an audit hook, so a training
process that opens any file under a `truth/` directory fails at once instead of silently leaking.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.errors import DataError

TRUTH_DIR = "truth"
_installed = False


def is_truth_path(path) -> bool:
    try:
        parts = Path(os.fsdecode(path)).parts
    except TypeError:  # file descriptors and other non-path arguments
        return False
    return TRUTH_DIR in parts


def _hook(event: str, args: tuple) -> None:
    if event == "open" and args and is_truth_path(args[0]):
        raise DataError(f"{args[0]}: training code must not read the world's truth (evaluation only)")
    if event in ("os.listdir", "os.scandir") and args and args[0] is not None and is_truth_path(args[0]):
        raise DataError(f"{args[0]}: training code must not list the world's truth (evaluation only)")


def forbid_truth_reads() -> None:
    """Make any later open() of a path inside a `truth/` directory raise DataError (process-wide)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
