"""What every stage script shares: logging set-up, reading its params groups, thread count, and running
`main` so that an expected data or params error prints one line (with the key to change) and exits 1."""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable

from pipeline.config import load_params
from pipeline.errors import ParamsError, PipelineError

PARAMS_FILE = os.environ.get("BGM_PARAMS", "params.yaml")
log = logging.getLogger("stages")


def group(name: str) -> dict:
    """A params group of params.yaml; a missing (or misspelt) group is an error, not a silent default."""
    params = load_params(PARAMS_FILE)
    if name not in params:
        raise ParamsError(f"{PARAMS_FILE}: no params group {name!r} (groups: {sorted(params)}); add it")
    return params[name] or {}


def setup(name: str) -> dict:
    """Configure logging and return the stage's own params group."""
    logging.basicConfig(level=os.environ.get("BGM_LOG", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    return group(name)


def torch_threads(threads: int) -> None:
    """The torch CPU threads of a training or evaluation process (params train.loop.threads; 0: every core)."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main. A PipelineError (bad data, bad params, undecodable media) is expected: print its
    one-line message and exit 1; the traceback only with BGM_VERBOSE=1. Anything else is a bug: traceback."""
    try:
        main()
    except PipelineError as e:
        if os.environ.get("BGM_VERBOSE"):
            traceback.print_exc()
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
