"""`python -m pipeline <command>`: the user-facing commands; `python -m pipeline --help` lists them."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# name -> (module whose main(argv) runs it, one-line description). A module is imported only when its
# command runs, so the listing and each command's --help do not wait for torch or TensorFlow.
COMMANDS = {
    "recommend": ("pipeline.recommend_cli",
                  "rank the dataset's music for new video files with a trained model (default: the student)"),
    "science": ("pipeline.science",
                "queue the pre-registered science grid (configs/science.yaml) as DVC experiments, or collect it"),
    "export-tt150k": ("pipeline.export_cli",
                      "write a split scheme of data/dataset with data/features as a TT-150k release (the papers' format)"),
    "offline-plots": ("pipeline.offline_plots",
                      "build the offline page for `dvc plots show/diff` from web/node_modules (make setup runs it)"),
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline",
                                 description="Background music for micro-videos (CMVAE, DebCM): the commands "
                                             "beside the DVC pipeline.",
                                 epilog="`python -m pipeline COMMAND --help` gives a command's options; the "
                                        "pipeline itself runs with `dvc repro` (README).")
    commands = ap.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])
    parser().parse_args(argv)  # no command, an unknown one, or --help: usage or help, and argparse exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
