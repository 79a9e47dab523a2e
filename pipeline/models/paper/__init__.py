"""The CMVAE paper's comparison models (Table 2), one per file, on CMVAE's backbone and model surface.

Temporary package name: pipeline/models/baselines.py still exists on this branch, so this package waits
here until the integrator moves it to pipeline/models/baselines/ (its modules import each other relatively,
so only registry.CLASSES paths and the tests' imports change). Tables 3-5 are CMVAE options
(`generation`, `fusion`), not models of their own; Table 5's "text missing at test" is a trained CMVAE
queried without captions (text_missing.py). `common.config_from` builds any of their configs from the
student's, so every row shares the student's hyper-parameters.
"""
