"""The CMVAE paper's tables as one folder: its comparison models (Table 2), one file each on CMVAE's backbone
and model surface, each registering its class (`@model_class`) and its variant (`@register`); its ablations
(Tables 3-5, ablations.py), which are CMVAE options (`generation`, `fusion`), not models of their own; and
Table 5's "text missing at test", a trained CMVAE queried without captions (text_missing.py).
`common.config_from` builds any of their configs from the student's, so every row shares the student's
hyper-parameters. The DebCM paper's Table 3 rows and the simple references are in pipeline/models/baselines/.
"""
