"""Saving and loading trained models: a model file holds its class name, input widths and config, so
`load_model` rebuilds any model of the pipeline (CMVAE, DebCM, the baselines) without knowing which."""
from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import torch

from pipeline.errors import DataError

# class name -> "module:attribute"; each class takes (visual_dim, music_dim, text_dim, config) and names its
# config dataclass in `config_class`. A new model registers here (imported lazily: no import cycles).
CLASSES = {
    "CMVAE": "pipeline.models.cmvae:CMVAE",
    "DebCM": "pipeline.models.debcm:DebCM",
    # pipeline/models/baselines/ (the debiasing, closed-form and post-hoc baselines)
    "DebiasedCMVAE": "pipeline.models.baselines.debias:DebiasedCMVAE",
    "DebiasedDebCM": "pipeline.models.baselines.debias:DebiasedDebCM",
    "Calibrated": "pipeline.models.baselines.calibration:Calibrated",
    "RandomScores": "pipeline.models.baselines.random_scores:RandomScores",
    "Popularity": "pipeline.models.baselines.popularity:Popularity",
    "RidgeMap": "pipeline.models.baselines.ridge:RidgeMap",
    "CCAMap": "pipeline.models.baselines.cca:CCAMap",
    # The CMVAE paper's comparison models (temporary package name, see pipeline/models/paper/__init__.py).
    "CEVAR": "pipeline.models.paper.cevar:CEVAR",
    "CMVBR": "pipeline.models.paper.cmvbr:CMVBR",
    "DSCMR": "pipeline.models.paper.dscmr:DSCMR",
    "UWML": "pipeline.models.paper.uwml:UWML",
    "DualVAE": "pipeline.models.paper.dual_vae:DualVAE",
    "DAVAE": "pipeline.models.paper.da_vae:DAVAE",
    "CrossVAE": "pipeline.models.paper.cross_vae:CrossVAE",
}


def model_class(name: str):
    if name not in CLASSES:
        raise DataError(f"model class {name!r}: not one of {sorted(CLASSES)}")
    module, attr = CLASSES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def model_spec(model) -> dict:
    """What `load_model` needs to rebuild a model: class, input widths and config."""
    cfg = getattr(model, "config", None)
    return {"class": type(model).__name__, "visual_dim": getattr(model, "visual_dim", None),
            "music_dim": getattr(model, "music_dim", None), "text_dim": getattr(model, "text_dim", None),
            "config": dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None}


def build_model(spec: dict):
    """A fresh (untrained) model from a spec."""
    cls = model_class(spec.get("class"))
    config = cls.config_class(**spec["config"]) if spec.get("config") is not None else None
    return cls(spec["visual_dim"], spec["music_dim"], spec["text_dim"], config)


def read_torch_file(path: str | Path, what: str = "model") -> dict:
    """A .pt file the pipeline wrote, read with `weights_only=True`: tensors and plain values only, so a crafted
    file cannot run code (a full unpickle would call whatever its pickle names). Anything else -> one DataError
    naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no {what} file; run the training stage first")
    if not path.is_file():
        raise DataError(f"{path}: not a file; expected a {what} file (.pt) written by the pipeline")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file it refuses or cannot read
        # torch's own message advises weights_only=False: keep only what the file holds, never that advice
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        why = f"it names {refused.group(1)}, which only a full unpickle would call" if refused else \
            "it holds objects other than tensors and plain values" if "Weights only" in str(e) else \
            " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise DataError(f"{path}: refused: not a {what} file the pipeline wrote ({why}); model files are read "
                        "with torch.load(weights_only=True), never executed") from None
    if not isinstance(saved, dict):
        raise DataError(f"{path}: holds a {type(saved).__name__}, not the dict of a {what} file")
    return saved


def load_model(path: str | Path):
    """Rebuild a model saved by the training loop and load its best weights (eval mode)."""
    saved = read_torch_file(path)
    spec = saved.get("model") if isinstance(saved.get("model"), dict) else {}
    if spec.get("class") not in CLASSES or not isinstance(saved.get("state_dict"), dict):
        raise DataError(f"{path}: model class {spec.get('class')!r}, expected one of {sorted(CLASSES)} with its "
                        "state_dict")
    try:
        model = build_model(spec)
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise DataError(f"{path}: weights do not fit the saved {spec['class']} ({' '.join(str(e).split())[:160]})") \
            from None
    return model.eval()
