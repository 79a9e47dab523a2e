"""Resumable training state: what a run's checkpoint holds, when it may be resumed, and byte-stable saving."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import pickle
import types
from pathlib import Path

import numpy as np
import torch

from pipeline.io import atomic_path
from pipeline.models.registry import model_spec, read_torch_file

log = logging.getLogger(__name__)


def data_fingerprint(data, *extra: str) -> str:
    """sha256 of every tensor of a TrainData (and `extra` strings): what a resumed checkpoint must match."""
    h = hashlib.sha256()
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        items = sorted(value.items()) if isinstance(value, dict) else [(f.name, value)]
        for key, v in items:
            if v is None:
                continue
            arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            h.update(f"{key}:{arr.dtype}:{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()


class _MemoFreePickler(pickle.Pickler):
    """A Pickler that writes every object out in full, keeping no memo of objects already written.

    Python's pickle refers back to an object it has seen *by identity*, so equal values pickle to different
    bytes depending on whether they happen to be one object (an interned "cpu" string shared by two config
    fields) or two (the same string after a trip through another process): a model trained in a worker
    process of pipeline.training.parallel would differ in its bytes, not its values, from one trained here.
    Without the memo the bytes depend on the values alone. Checkpoints are trees (no object contains
    itself), which is what this mode needs; tensors' storages are keyed by torch itself, not by the memo."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast = True


_CANONICAL_PICKLE = types.SimpleNamespace(__name__="pipeline_canonical_pickle", Pickler=_MemoFreePickler,
                                          Unpickler=pickle.Unpickler, dump=pickle.dump, load=pickle.load)


def save_torch(obj, path: str | Path) -> None:
    """torch.save through a buffer, pickled without a memo: the file bytes depend on the values alone (not
    on the temporary file's name, nor on which process made them)."""
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_module=_CANONICAL_PICKLE)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def cpu_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def new_state() -> dict:
    """The loop's bookkeeping before the first epoch."""
    return {"epoch": 0, "best_score": -1.0, "best_epoch": -1, "best_state": None, "bad_evals": 0,
            "history": [], "stopped": False}


def save_checkpoint(path: Path, config: dict, model, optimizer, device: torch.device, state: dict) -> None:
    save_torch({"config": config, "model_spec": model_spec(model), "model": cpu_state(model),
                "optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "state": state}, path)


def try_resume(path: Path, config: dict, model, optimizer, device: torch.device) -> dict | None:
    """Load `path` into model and optimizer when it was written under the same config and model; its
    loop state, or None (no checkpoint, or a stale one: a checkpoint of other data is never resumed)."""
    if not path.exists():
        return None
    ckpt = read_torch_file(path, "training checkpoint")  # weights_only: a planted last.pt runs nothing
    if ckpt.get("config") != config or ckpt.get("model_spec") != model_spec(model):
        log.warning("%s was written under another config or model; starting afresh", path)
        return None
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng_cpu"])
    if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
    log.info("resuming from %s after epoch %d", path, ckpt["state"]["epoch"])
    return ckpt["state"]
