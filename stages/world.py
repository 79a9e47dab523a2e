"""Stage `world`: simulate the causal world (docs/architecture.md section 5) into data/world/."""
import argparse
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.world import WorldParams
from pipeline.data.worldgen import build_world
from stages.common import setup

OUT = Path("data/world")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the world (default data/world)")
    args = parser.parse_args()
    params = from_group(WorldParams, setup("world"), "world")
    info = build_world(params, args.out)
    print(f"world: {info}")


if __name__ == "__main__":  # the renderer's worker pool spawns processes that re-import this module
    main()
