"""The DebCM paper's Table 3 rows (core: the student, its ablations and the 2x2 cells; debias: IPS, dual IPS,
DecRS with label distillation; calibration) and the simple references of every table (random_scores,
popularity, ridge, cca on closed_form). Each file registers its own variants (`@register`) and model classes
(`@model_class`); the CMVAE paper's rows live in pipeline/models/cmvae_paper/.

This package is also the variant API's import point (`python -m pipeline.models.baselines` lists every
variant; pipeline/experiment.py, the stages and the report import from here): the registry itself is
pipeline/models/variants.py, re-exported below, and importing this package discovers every model module
(pipeline.models.registry.discover), so REGISTRY, VARIANTS and BASELINES are complete once it is imported.
"""
from pipeline.models import variants as _variants
from pipeline.models.registry import discover
from pipeline.models.variants import (DEFAULT_VARIANTS, KINDS, REGISTRY, SETTINGS, BaselineParams, Builder, Make,
                                      Spec, Variant, baselines, cmvae_part, names, register, registered, variant)

__all__ = ["BASELINES", "DEFAULT_VARIANTS", "KINDS", "REGISTRY", "SETTINGS", "VARIANTS", "BaselineParams", "Builder",
           "Make", "Spec", "Variant", "baselines", "cmvae_part", "names", "register", "registered", "variant"]

discover()


def __getattr__(name: str):
    """VARIANTS and BASELINES: derived from the registry when read (pipeline.models.variants)."""
    if name in ("VARIANTS", "BASELINES"):
        return getattr(_variants, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
