"""The CMVAE paper's rows as variants: its comparison models (Table 2) and CMVAE's ablations (Tables 3-5).

The models themselves live in pipeline/models/paper/ (one file each, with their tests); this module only
registers them, each built with the student's hyper-parameters (paper.common.config_from). Table 3's "dual"
generation row is the dual_vae model (the same CMVAE with generation: dual), so it is not registered twice.
Table 5 (text missing at test) is post-hoc: the trained `cmvae` queried without captions.
"""
from __future__ import annotations

import dataclasses

from pipeline.models.baselines import cmvae_part, register
from pipeline.models.cmvae import CMVAE
from pipeline.models.paper.cevar import CEVAR
from pipeline.models.paper.cmvbr import CMVBR
from pipeline.models.paper.common import config_from
from pipeline.models.paper.cross_vae import CrossVAE
from pipeline.models.paper.da_vae import DAVAE
from pipeline.models.paper.dscmr import DSCMR
from pipeline.models.paper.dual_vae import DualVAE
from pipeline.models.paper.text_missing import text_missing_at_test
from pipeline.models.paper.uwml import UWML

TABLE2 = "CMVAE Table 2"


def _model(cls):
    def make(s, p):
        cfg = config_from(s, cls.config_class)
        return lambda v, m, t: cls(v, m, t, cfg)
    return make


for _name, _cls, _row in (("cevar", CEVAR, "CEVAR"), ("cmvbr", CMVBR, "CMVBR"), ("dscmr", DSCMR, "DSCMR"),
                          ("uwml", UWML, "UWML"), ("dual_vae", DualVAE, "Dual-VAE"), ("da_vae", DAVAE, "DA-VAE"),
                          ("cross_vae", CrossVAE, "Cross-VAE")):
    _make = _model(_cls)
    _make.__doc__ = f"{_row} (pipeline/models/paper/), the student's hyper-parameters."
    register(_name, table=TABLE2, row=_row)(_make)


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
