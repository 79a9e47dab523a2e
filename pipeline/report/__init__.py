"""The report: everything `report` writes, computed from evaluate's per-video table (data/eval/per_video.parquet).

pervideo (metrics per video and seed; mean / std over seeds with pipeline.metrics.aggregate, as evaluate),
stats (paired tests), claim (the claim table and metrics/headline.json), tables (the papers' layouts),
degrade (what the run skipped and why), figures, cases (genre shares and the case study), build (the stage).
"""
