"""The variant registry: every model the pipeline trains on UGC and compares (the DebCM student, its ablations,
the papers' baselines and the simple ones) as named variants; `python -m pipeline.models.baselines` lists them.

A variant is: a name; a builder made from the student's config (DebCMConfig: every variant takes latent size,
margins, loss weights... from the `model` and `adjustment` params groups and kl_weight from `student`, so a
comparison changes one thing at a time) and
from BaselineParams (the `baselines` group: which variants the pipeline runs, and the few knobs only
baselines read); whether it needs the PGC teacher; its kind; its data setting; the paper table and row.

Kinds (how pipeline/experiment.py trains it):
- neural:      pipeline.training.loop.fit (Adam, early stopping on validation Recall); build(v, m, t) -> model.
- closed_form: fitted on the training rows at once, no epochs (baselines.closed_form.ClosedForm); build(v, m, t)
               -> model. The fitted maps are buffers, so load_model and evaluation need nothing special.
- teacher:     the trained PGC teacher of the run's seed, copied as the variant's model (no training; its
               validation Recall on the scheme's UGC validation set is recorded: the report's teacher guard).
- post_hoc:    derived from the variant `base` without training of its own (a re-ranking; the same model
               queried differently): the base is trained first exactly as that variant is (same seeds, same
               bytes), then build(trained base model, pool size) -> model and, if it has one,
               model.fit(data, pool); the saved file holds the whole model.

Data settings (the two column groups of DebCM Table 3):
- ugc:      the scheme's UGC training triples.
- pgc:      PGC pairs only (the teacher alone).
- ugc+pgc:  PGC data enters too. A variant registered with `union=True` trains on the union of the scheme's
            UGC training pairs and the teacher's PGC training pairs (non-debiased models); the others stay on
            UGC and are guided by the frozen PGC teacher (the student's KL, the debiased baselines' label
            distillation), so they need it.

Adding a variant: one file anywhere under pipeline/models/ (pipeline.models.registry.MODEL_PACKAGES) whose
builder carries `@register(...)` (and whose new model class, if any, carries
`@pipeline.models.registry.model_class`). Nothing else lists it: `pipeline.models.registry.discover` imports
every module there. Order of VARIANTS (the listing, `--names`, train_student's choices): by each module's
`ORDER` constant (DEFAULT_ORDER without one), then module name, then definition order in the file; the report
orders its rows itself (pipeline.report.pervideo.VARIANT_ORDER), not by this.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Callable

from torch import nn

from pipeline.errors import ParamsError
from pipeline.models.cmvae import CMVAEConfig
from pipeline.models.debcm import DebCMConfig
from pipeline.models.registry import discover

KINDS = ("neural", "closed_form", "post_hoc", "teacher")
SETTINGS = ("ugc", "ugc+pgc", "pgc")
# The `baselines.variants` default: every cell of the adjustment x teacher 2x2 with the student (cmvae_kl,
# no_teacher, cmvae), the teacher alone, the ridge map on UGC + PGC (docs/architecture.md section 10) and the cheap
# references; cheap
# enough for the default `make repro` at 5 seeds (the closed-form ones take seconds). decrs and the interaction
# variants left the default for that budget; `make repro-all` runs every registered variant.
DEFAULT_VARIANTS = ("cmvae_kl", "no_teacher", "cmvae", "teacher_alone", "random", "popularity", "linear", "linear_pgc",
                    "cca")


@dataclass
class BaselineParams:
    """The `baselines` params group: the variants of the `baselines` matrix stage and baseline-only knobs
    (kept out of `model`, `adjustment` and `student`, which the training stages read whole into DebCMConfig)."""

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    propensity_clip: float = 0.05  # IPS: a propensity below this counts as this (weights <= 1/clip)
    distill_weight: float = 1.0  # UGC+PGC debiased rows: weight of the label-distillation term (debias.py)
    distill_temperature: float = 1.0  # softmax temperature of the in-batch scores in that term
    calibration_weight: float = 0.5  # lambda of the post-hoc calibration (calibration.py); 0: the base model
    ridge_alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)  # selected on validation Recall
    cca_input_dim: int = 32  # PCA width of each side before CCA (capped by the data)
    cca_components: tuple[int, ...] = (2, 4, 8, 16, 32)  # selected on validation Recall (capped by the data)

    def __post_init__(self) -> None:
        self.variants = tuple(str(v) for v in self.variants)
        self.ridge_alphas = tuple(float(a) for a in self.ridge_alphas)
        self.cca_components = tuple(int(k) for k in self.cca_components)

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in registered() or v == "student"]
        if unknown:
            raise ParamsError(f"baselines.variants: {unknown} not a baseline; known: {list(baselines())} (the student "
                              "has its own stage, train_student)")
        if len(set(self.variants)) != len(self.variants):
            raise ParamsError(f"baselines.variants: {list(self.variants)} repeats a variant")
        if not 0 < self.propensity_clip <= 1:
            raise ParamsError(f"baselines.propensity_clip={self.propensity_clip}: expected in (0, 1]")
        if self.distill_weight < 0 or self.distill_temperature <= 0:
            raise ParamsError(f"baselines.distill_weight={self.distill_weight} must be >= 0 and "
                              f"baselines.distill_temperature={self.distill_temperature} > 0")
        if self.calibration_weight < 0:
            raise ParamsError(f"baselines.calibration_weight={self.calibration_weight}: expected >= 0")
        if not self.ridge_alphas or min(self.ridge_alphas) <= 0:
            raise ParamsError(f"baselines.ridge_alphas={list(self.ridge_alphas)}: expected positive values")
        if self.cca_input_dim < 1 or not self.cca_components or min(self.cca_components) < 1:
            raise ParamsError(f"baselines.cca_input_dim={self.cca_input_dim} and cca_components="
                              f"{list(self.cca_components)}: expected integers >= 1")


Builder = Callable[..., nn.Module]  # neural / closed_form: (visual_dim, music_dim, text_dim); post_hoc: (base, n_pool)
Make = Callable[[DebCMConfig, BaselineParams], Builder]


@dataclass(frozen=True)
class Spec:
    """A registered variant: everything but the configs it is built from."""

    name: str
    make: Make
    kind: str
    data: str
    union: bool  # trains on UGC + PGC training pairs
    teacher: Callable[[DebCMConfig, BaselineParams], bool]
    table: str  # the paper table (or docs/architecture.md section) whose row it fills
    row: str  # the row's label there
    base: str | None  # post_hoc: the variant it is derived from
    doc: str  # one line
    module: str = ""  # the module that registered it (orders VARIANTS)


@dataclass(frozen=True)
class Variant:
    """A variant bound to the run's configs: what pipeline/experiment.py needs to train it."""

    name: str
    uses_teacher: bool
    build: Builder
    kind: str = "neural"
    data: str = "ugc"
    union: bool = False
    base: str | None = None
    table: str = ""
    row: str = ""


DEFAULT_ORDER = 100  # the ORDER of a variant module that sets none: after today's files
REGISTRY: dict[str, Spec] = {}  # in registration order; complete after discover() (`registered()`)


def register(name: str, *, table: str, row: str, kind: str = "neural", data: str = "ugc", union: bool = False,
             teacher: bool | Callable[[DebCMConfig, BaselineParams], bool] = False, base: str | None = None):
    """Decorator of a builder `make(student, params) -> build` registering the variant `name`."""
    if kind not in KINDS or data not in SETTINGS:
        raise ParamsError(f"variant {name!r}: kind {kind!r} / data {data!r}, expected one of {KINDS} / {SETTINGS}")
    if (kind == "post_hoc") != (base is not None) or (union and data != "ugc+pgc"):
        raise ParamsError(f"variant {name!r}: a post_hoc variant names its base (only it), a union one is ugc+pgc")
    uses = teacher if callable(teacher) else (lambda student, params, fixed=bool(teacher): fixed)

    def decorate(make: Make) -> Make:
        if name in REGISTRY:
            raise ParamsError(f"variant {name!r}: registered twice ({make.__module__})")
        doc = (make.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Spec(name, make, kind, data, union, uses, table, row, base, doc[0] if doc else "",
                              make.__module__)
        return make
    return decorate


def variant(name: str, student: DebCMConfig, params: BaselineParams | None = None) -> Variant:
    """The named variant built from the student's config and the `baselines` params."""
    if name not in registered():
        raise ParamsError(f"baseline {name!r}: expected one of {list(names())}")
    spec, params = REGISTRY[name], params or BaselineParams()
    uses_teacher = spec.teacher(student, params)
    if spec.base is not None:  # a re-ranking needs the teacher exactly when its base does
        uses_teacher = variant(spec.base, student, params).uses_teacher
    return Variant(name, uses_teacher, spec.make(student, params), spec.kind, spec.data, spec.union, spec.base,
                   spec.table, spec.row)


def cmvae_part(cfg: DebCMConfig) -> CMVAEConfig:
    """The CMVAE fields of a student config (latent size, margins, weights...), nothing of the confounder."""
    return CMVAEConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(CMVAEConfig)})


def registered() -> dict[str, Spec]:
    """Every registered variant by name (after importing every model module)."""
    discover()
    return REGISTRY


def names() -> tuple[str, ...]:
    """Every variant name in listing order: module ORDER, module name, then definition order in the file."""
    specs = registered()
    position = {name: i for i, name in enumerate(specs)}

    def key(name: str):
        module = specs[name].module
        return getattr(sys.modules.get(module), "ORDER", DEFAULT_ORDER), module, position[name]
    return tuple(sorted(specs, key=key))


def baselines() -> tuple[str, ...]:
    """Every variant but the student (which has its own stage): what `baselines.variants` may name."""
    return tuple(v for v in names() if v != "student")


def __getattr__(name: str):
    """VARIANTS and BASELINES, derived from the registry when read (never a stale list)."""
    if name == "VARIANTS":
        return names()
    if name == "BASELINES":
        return baselines()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
