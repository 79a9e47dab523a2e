"""Saving and loading trained models: a model file holds its class name, input widths and config, so
`load_model` rebuilds any model of the pipeline (CMVAE, DebCM, the baselines) without knowing which."""
from __future__ import annotations

import dataclasses
import importlib
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


def load_model(path: str | Path):
    """Rebuild a model saved by the training loop and load its best weights (eval mode)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no model file; run the training stage first")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    spec = saved.get("model") or {}
    if spec.get("class") not in CLASSES:
        raise DataError(f"{path}: model class {spec.get('class')!r}, expected one of {sorted(CLASSES)}")
    model = build_model(spec)
    model.load_state_dict(saved["state_dict"])
    return model.eval()
