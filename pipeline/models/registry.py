"""The model registry: which classes a saved model may name, discovery of every model module, and saving /
loading trained models. A model file holds its class NAME, input widths and config, so `load_model` rebuilds
any model of the pipeline (CMVAE, DebCM, the baselines, the papers' models) without knowing which.

One file per model or variant (docs/architecture.md section 6): a class that saved models may name carries
`@model_class`; a variant's builder carries `@pipeline.models.variants.register(...)`. Nothing lists them:
`discover` imports every module under the model packages (`MODEL_PACKAGES`, walked with pkgutil, modules
and sub-packages alike), and importing a module runs its decorators. A name read from a file is looked up
only among the registered classes (`class_named`): a file cannot make the loader import or call anything
else.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import torch

from pipeline.errors import DataError, ParamsError

# The packages whose every module (recursively) is imported by `discover`: a new model or variant file placed
# anywhere under them registers itself. Module names starting with "_" (`__main__`) are not imported.
MODEL_PACKAGES = ("pipeline.models",)
# class name -> class; each takes (visual_dim, music_dim, text_dim, config) and names its config dataclass in
# `config_class`. Filled by @model_class as modules are imported; complete after `discover()` (`classes()`).
CLASSES: dict[str, type] = {}
_state = {"done": False, "running": False}


def model_class(cls: type) -> type:
    """Class decorator: saved models may name `cls` (by its __name__, which must then never change: committed
    model files store it). Two different classes of one name are refused."""
    if not isinstance(getattr(cls, "config_class", None), type) or not dataclasses.is_dataclass(cls.config_class):
        raise ParamsError(f"model class {cls.__name__}: needs a dataclass `config_class` (load_model rebuilds "
                          "its config from the file)")
    known = CLASSES.get(cls.__name__)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ParamsError(f"model class {cls.__name__}: registered twice ({known.__module__} and {cls.__module__}); "
                          "saved models name classes by name, so names must be unique")
    CLASSES[cls.__name__] = cls
    return cls


def _walk(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):  # sorted by name: a fixed order
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        if info.ispkg:
            _walk(name)
        else:
            importlib.import_module(name)


def discover(refresh: bool = False) -> None:
    """Import every module under MODEL_PACKAGES once (again with `refresh`, for a module added since), so that
    every @model_class and @register has run. A call made while discovery is running (a model package's
    __init__ calling it) returns at once: the outer walk goes on and completes the registries."""
    if _state["running"] or (_state["done"] and not refresh):
        return
    _state["running"] = True
    try:
        for package in MODEL_PACKAGES:
            _walk(package)
        _state["done"] = True
    finally:
        _state["running"] = False


def classes() -> dict[str, type]:
    """Every registered model class by name."""
    discover()
    return CLASSES


def class_named(name: str) -> type:
    """The registered class called `name` (a name read from a model file): never anything else."""
    known = classes()
    if not isinstance(name, str) or name not in known:
        raise DataError(f"model class {name!r}: not one of {sorted(known)}")
    return known[name]


def model_spec(model) -> dict:
    """What `load_model` needs to rebuild a model: class, input widths and config."""
    cfg = getattr(model, "config", None)
    return {"class": type(model).__name__, "visual_dim": getattr(model, "visual_dim", None),
            "music_dim": getattr(model, "music_dim", None), "text_dim": getattr(model, "text_dim", None),
            "config": dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None}


def build_model(spec: dict):
    """A fresh (untrained) model from a spec."""
    cls = class_named(spec.get("class"))
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
        # torch's own message advises turning the safe mode off: report what the file holds, never that advice
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
    known = classes()
    if not isinstance(spec.get("class"), str) or spec["class"] not in known \
            or not isinstance(saved.get("state_dict"), dict):
        raise DataError(f"{path}: model class {spec.get('class')!r}, expected one of {sorted(known)} with its "
                        "state_dict")
    try:
        model = build_model(spec)
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise DataError(f"{path}: weights do not fit the saved {spec['class']} ({' '.join(str(e).split())[:160]})") \
            from None
    return model.eval()


def trained_config(folder: str | Path) -> dict | None:
    """The config a folder's models were trained with (its first .pt file by name; one training stage writes
    one config per folder), or None when it holds none. The report takes student.kl_weight from here: what
    the student was trained with, tracked through models/student, not a params key it would have to list."""
    files = sorted(Path(folder).glob("*.pt"))
    if not files:
        return None
    spec = read_torch_file(files[0]).get("model")
    return spec.get("config") if isinstance(spec, dict) and isinstance(spec.get("config"), dict) else None
