"""Stage `report`: paired verdicts, the papers' tables, what was skipped and why, and the bias picture, from
evaluate's per-video table (pipeline/report/build.py says which file holds what).

Writes reports/{claim,tables,degradations,case_study}.md, reports/genre_share.{csv,png},
reports/intervention.csv, reports/sweeps.png, reports/index.html (the page that plays the case study's videos
and music, linked from data/raw) and metrics/headline.json (the DVC metric of this pipeline).
"""
from pathlib import Path

from pipeline.config import from_group
from pipeline.metrics import DEFAULT_KS
from pipeline.models.registry import trained_config
from pipeline.report.build import ReportParams, ReportPaths, write_report
from stages.common import group, run, setup

PATHS = ReportPaths(per_video=Path("data/eval/per_video.parquet"), dataset=Path("data/dataset"), raw=Path("data/raw"),
                    features=Path("data/features"), labels=Path("data/genre/labels.parquet"),
                    genre_metrics=Path("metrics/genre.json"), models=Path("models"),
                    kl_sweep=Path("reports/kl_sweep.csv"), out=Path("reports"), headline=Path("metrics/headline.json"))


def main() -> None:
    p = from_group(ReportParams, setup("report"), "report")
    ks = [int(k) for k in group("evaluate").get("ks") or DEFAULT_KS]
    # student.kl_weight as the trained student used it (its model files; no `student` params key to track)
    kl_weight = (trained_config(PATHS.models / "student") or {}).get("kl_weight")
    write_report(p, PATHS, ks, None if kl_weight is None else float(kl_weight))


if __name__ == "__main__":
    run(main)
