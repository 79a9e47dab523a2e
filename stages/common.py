"""What every stage script shares: logging set-up and reading its own params group."""
from __future__ import annotations

import logging
import os

from pipeline.config import load_params

PARAMS_FILE = os.environ.get("BGM_PARAMS", "params.yaml")


def setup(group: str) -> dict:
    """Configure logging and return the stage's params group from params.yaml."""
    logging.basicConfig(level=os.environ.get("BGM_LOG", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    return load_params(PARAMS_FILE).get(group) or {}


def group(name: str) -> dict:
    """Another params group a stage also reads (e.g. the shared `train` group)."""
    return load_params(PARAMS_FILE).get(name) or {}
