"""The models the pipeline trains on UGC and compares: the DebCM student and its ablations/baselines.

Every variant takes its hyper-parameters from the `student` params group, so that a comparison changes one
thing at a time:
- student:    DebCM, batch-level backdoor adjustment + KL transfer from the PGC teacher (the paper's model).
- no_teacher: the same student with kl_weight 0 (what the teacher's guidance adds).
- cmvae:      plain CMVAE on UGC, no confounder term and no teacher (the biased baseline).
- decrs:      DebCM with the DecRS-style global-average confounder (the training mean of the uploader
              distributions in place of each batch's mean), no teacher.
- interaction, interaction_content: the other confounder of docs/architecture.md section 6, no teacher (so
              `no_teacher` is the model they differ from in one thing). Training adds u^T W g(m) to each
              pair's score, u the video's own uploader's genre distribution and g(m) the music's genre
              probabilities, so that taste can explain the uploader-driven part of a choice. At inference
              `interaction` marginalises u with the training mean (prior^T W g(m), the backdoor form) and
              `interaction_content` drops the term (content only). The concat confounder adds the same vector
              to every music embedding at inference, so it cannot reorder a video's list; these two can.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from torch import nn

from pipeline.errors import ParamsError
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.debcm import DebCM, DebCMConfig


@dataclass(frozen=True)
class Variant:
    name: str
    uses_teacher: bool
    build: Callable[[int, int, int | None], nn.Module]  # (visual_dim, music_dim, text_dim) -> model


def cmvae_part(cfg: DebCMConfig) -> CMVAEConfig:
    """The CMVAE fields of a student config (latent size, margins, weights...), nothing of the confounder."""
    return CMVAEConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(CMVAEConfig)})


def _debcm(cfg: DebCMConfig) -> Callable[[int, int, int | None], nn.Module]:
    return lambda v, m, t: DebCM(v, m, t, cfg)


def variant(name: str, student: DebCMConfig) -> Variant:
    """The named variant built from the student's config."""
    if name == "student":
        return Variant(name, student.kl_weight > 0, _debcm(student))
    if name == "no_teacher":
        return Variant(name, False, _debcm(dataclasses.replace(student, kl_weight=0.0)))
    if name == "decrs":
        return Variant(name, False, _debcm(dataclasses.replace(student, kl_weight=0.0, confounder_mode="global")))
    if name in ("interaction", "interaction_content"):
        inference = "backdoor" if name == "interaction" else "content"
        return Variant(name, False, _debcm(dataclasses.replace(student, kl_weight=0.0, confounder="interaction",
                                                               inference=inference)))
    if name == "cmvae":
        cfg = cmvae_part(student)
        return Variant(name, False, lambda v, m, t: CMVAE(v, m, t, cfg))
    raise ParamsError(f"baseline {name!r}: expected one of {list(VARIANTS)}")


VARIANTS = ("student", "no_teacher", "cmvae", "decrs", "interaction", "interaction_content")
BASELINES = VARIANTS[1:]
