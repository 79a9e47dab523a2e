"""The report: everything `report` writes, computed from evaluate's per-video table (data/eval/per_video.parquet).

seeds (mean / std over training seeds, also used by `evaluate`), pervideo (metrics per video and seed),
stats (paired tests), claim (the claim table and metrics/headline.json), tables (the papers' layouts),
degrade (what the run skipped and why), figures, cases (genre shares and the case study), build (the stage).
"""
from pipeline.report.seeds import aggregate

__all__ = ["aggregate"]
