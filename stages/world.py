"""Stage `world`: simulate the causal world (docs/architecture.md section 5) into data/world/.

When `ingest.source` is not `world` nobody reads the world, so the stage writes only a summary saying why.
"""
import argparse
import logging
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.world import WorldParams
from pipeline.data.worldgen import build_world, write_not_built
from stages.common import group, run, setup

OUT = Path("data/world")
log = logging.getLogger("stages.world")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the world (default data/world)")
    args = parser.parse_args()
    params = from_group(WorldParams, setup("world"), "world")
    source = group("ingest").get("source", "world")
    if source != "world":
        info = write_not_built(args.out, f"ingest.source is {source!r}, not 'world'")
    else:
        info = build_world(params, args.out)
    log.info("world: %s", info)


if __name__ == "__main__":  # the renderer's worker pool spawns processes that re-import this module
    run(main)
