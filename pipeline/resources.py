"""Where a computation runs: the cores this process may use and the torch device a params value names.

One place for both (the training loop, the video backbones, the feature and training backends and the worker
pools all ask the same questions)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipeline.errors import ParamsError

if TYPE_CHECKING:
    import torch


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_device(name: str, key: str = "train.loop.device") -> "torch.device":
    """A device params value: auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N; a CUDA device
    torch cannot see is a ParamsError naming `key`. On CUDA, deterministic training needs cuBLAS's fixed
    workspace, set here unless the environment sets it (it takes effect when the process first uses cuBLAS)."""
    import torch  # here, not at the top: an extractor that asks only available_cpus() stays torch-free

    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                          "cpu" if name == "auto" else name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamsError(f"{key}: {name!r} requested but no CUDA device is available (set {key}: auto or cpu)")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device
