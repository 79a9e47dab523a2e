"""The CMVAE paper's ablations as variants (Tables 3-5): CMVAE options, not models of their own (`generation`,
`fusion` of pipeline.models.cmvae.CMVAEConfig), each built with the student's hyper-parameters. Table 3's
"dual" generation row is the dual_vae model (dual_vae.py, the same CMVAE with generation: dual), so it is not
registered twice. Table 5 (text missing at test) is post-hoc: the trained `cmvae` queried without captions
(text_missing.py). The comparison models of Table 2 register themselves, one file each in this package.
"""
from __future__ import annotations

import dataclasses

from pipeline.models.cmvae import CMVAE
from pipeline.models.variants import cmvae_part, register

from .text_missing import text_missing_at_test

ORDER = 77  # position of this file's variants in VARIANTS (pipeline/models/variants.py): after Table 2's models


def _ablation(**options):
    def make(s, p):
        cfg = dataclasses.replace(cmvae_part(s), **options)
        return lambda v, m, t: CMVAE(v, m, t, cfg)
    return make


@register("cmvae_no_generation", table="CMVAE Table 3 (generation)", row="CMVAE, no generation")
def cmvae_no_generation(s, p):
    """CMVAE without cross-generation (no decoders): ranking and KL terms only."""
    return _ablation(generation="none")(s, p)


@register("cmvae_concat_fusion", table="CMVAE Table 4 (fusion)", row="CMVAE, JMVAE concat fusion")
def cmvae_concat_fusion(s, p):
    """CMVAE whose video posterior is one encoder on [visual ; text ; has_text] (JMVAE) instead of PoE."""
    return _ablation(fusion="concat")(s, p)


@register("cmvae_moe_fusion", table="CMVAE Table 4 (fusion)", row="CMVAE, MMVAE mixture fusion")
def cmvae_moe_fusion(s, p):
    """CMVAE whose video posterior is the mixture of the visual and text experts (MMVAE) instead of PoE."""
    return _ablation(fusion="moe")(s, p)


@register("cmvae_text_missing", kind="post_hoc", base="cmvae", table="CMVAE Table 5 (text missing at test)",
          row="CMVAE, no caption at test")
def cmvae_text_missing(s, p):
    """The trained cmvae queried without captions (inference_text: false), the same weights."""
    return lambda base, n_pool: text_missing_at_test(base)
