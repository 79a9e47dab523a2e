"""Size limits that keep the code readable: a stage script is glue (read params, call `pipeline`, write
outputs) and fits on one screen; a library module stays small enough to hold in one's head."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"stages": 60, "pipeline": 400}


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


@pytest.mark.parametrize("folder", sorted(LIMITS))
def test_modules_stay_under_their_line_limit(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    over = {f.relative_to(ROOT).as_posix(): _lines(f) for f in files if _lines(f) > LIMITS[folder]}
    assert over == {}, f"over {LIMITS[folder]} lines: split them along a natural seam"
