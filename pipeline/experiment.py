"""The training runs of the pipeline: which model, trained on which data under which seed, saved where.

Layout (the stages' outputs):
  models/teacher/s<seed>.pt              CMVAE on the PGC pairs, one per seed
  models/<variant>/<scheme>_s<seed>.pt   a UGC model per split scheme and seed (student, baselines)

Each scheme gets its own models: a model trained on the weak split has seen the strong split's test
videos, so it is evaluated only on the test sets of its own scheme. Every seed re-draws initialisation and
batch order (the dataset is fixed), so the spread over seeds is the training noise the claims are held to.
Interrupted runs resume from a checkpoint under `work_dir` when config and data are unchanged.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from pipeline.errors import DataError, ParamsError
from pipeline.io import file_md5
from pipeline.data.features import Features
from pipeline.models.baselines import variant
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.debcm import DebCMConfig
from pipeline.models.registry import load_model
from pipeline.sampling.dataset import Dataset
from pipeline.training.checkpoint import data_fingerprint
from pipeline.training.config import TrainConfig
from pipeline.training.data import build_train_data
from pipeline.training.diagnostics import taste_diagnostics
from pipeline.training.loop import fit

log = logging.getLogger(__name__)


@dataclass
class RunsConfig:
    """Which runs a training stage makes (params group `train`, shared by every training stage)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    schemes: tuple[str, ...] = ()  # empty: every scheme of the dataset
    loop: TrainConfig = field(default_factory=TrainConfig)  # the loop (epochs, lr, ...); its seed is set per run

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        self.schemes = tuple(str(s) for s in self.schemes)

    def validate(self) -> None:
        if not self.seeds:
            raise ParamsError("train.seeds: empty; expected at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ParamsError(f"train.seeds: {list(self.seeds)} repeats a seed")
        self.loop.validate()

    def schemes_of(self, dataset: Dataset) -> list[str]:
        have = dataset.schemes
        if not self.schemes:
            return list(have)
        unknown = [s for s in self.schemes if s not in have]
        if unknown:
            raise ParamsError(f"train.schemes: {unknown} not in the dataset; it has {have}")
        return list(self.schemes)


SUMMARY_KEYS = ("best_epoch", "best_score", "epochs_run", "stopped_early", "batch_size")


def run_name(scheme: str, seed: int) -> str:
    return f"{scheme}_s{seed}"


def teacher_path(root: str | Path, seed: int) -> Path:
    return Path(root) / f"s{seed}.pt"


def variant_dir(name: str, root: str | Path = "models") -> Path:
    """Where a variant's models live: models/student, models/baselines/<name> for the baselines."""
    return Path(root) / name if name == "student" else Path(root) / "baselines" / name


def model_path(root: str | Path, scheme: str, seed: int) -> Path:
    return Path(root) / f"{run_name(scheme, seed)}.pt"


def teacher_unavailable(dataset: Dataset, scheme: str | None = None) -> str | None:
    """Why no PGC teacher can be trained for `scheme` (None: for every scheme) on this dataset (None: it can)."""
    pairs = dataset.pgc_pairs(scheme)
    n_train, n_val = int((pairs["split"] == "train").sum()), int((pairs["split"] == "val").sum())
    if len(dataset.pgc) == 0:
        return "the source has no PGC pairs (professional music-video segments), so there is no teacher"
    if n_train == 0 or n_val == 0 or "pgc/val" not in dataset.eval_sets:
        return (f"the PGC pairs leave {n_train} for training and {n_val} for validation after excluding the music "
                f"{'the scheme ' + scheme if scheme else 'the music-disjoint schemes'} hold(s) out; a teacher needs both")
    return None


def skipped(summary_path: str | Path) -> str | None:
    """The reason a training stage skipped its runs (its summary.json says {"skipped": reason}), or None."""
    path = Path(summary_path)
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("skipped")


def _loop(runs: RunsConfig, seed: int) -> TrainConfig:
    return replace(runs.loop, seed=seed)


def _fit_one(model, data, loop: TrainConfig, out: Path, work: Path, live: Path | None, teacher=None,
             extra: str = "") -> dict:
    summary = fit(model, data, loop, work, live=live, teacher=teacher, model_path=out,
                  fingerprint=data_fingerprint(data, extra))
    shutil.rmtree(work, ignore_errors=True)  # the run finished: its resume checkpoint is stale from now on
    return summary


def train_teachers(features: Features, dataset: Dataset, cfg: CMVAEConfig, runs: RunsConfig, out_dir: Path,
                   work_dir: Path, live_dir: Path | None = None) -> dict[str, dict]:
    """One CMVAE teacher per seed on the PGC pairs -> out_dir/s<seed>.pt; returns each run's summary, or
    {"skipped": reason} when the dataset cannot give a teacher (no PGC)."""
    reason = teacher_unavailable(dataset)
    if reason:
        log.warning("teacher skipped: %s", reason)
        return {"skipped": reason}
    summaries = {}
    for seed in runs.seeds:
        loop = _loop(runs, seed)
        data = build_train_data(features, dataset, "pgc", kind="pgc")
        torch.manual_seed(seed)  # the initial weights depend on the seed alone, not on earlier runs
        model = CMVAE(data.visual.shape[1], data.music.shape[1],
                      None if data.text is None else data.text.shape[1], cfg)
        name = f"s{seed}"
        log.info("teacher %s", name)
        s = _fit_one(model, data, loop, teacher_path(out_dir, seed), work_dir / name,
                     None if live_dir is None else live_dir / name)
        summaries[name] = {k: s[k] for k in SUMMARY_KEYS}
    return summaries


def train_variant(name: str, features: Features, dataset: Dataset, student: DebCMConfig, runs: RunsConfig,
                  out_dir: Path, work_dir: Path, teacher_dir: Path | None = None,
                  live_dir: Path | None = None) -> dict[str, dict]:
    """The named variant (student or a baseline) on every scheme x seed -> out_dir/<scheme>_s<seed>.pt."""
    v = variant(name, student)
    if v.uses_teacher and teacher_dir is not None and skipped(Path(teacher_dir) / "summary.json"):
        reason = f"{name} needs the PGC teacher: {skipped(Path(teacher_dir) / 'summary.json')}"
        log.warning("%s skipped: %s", name, reason)
        return {"skipped": reason}
    summaries = {}
    for scheme in runs.schemes_of(dataset):
        for seed in runs.seeds:
            loop = _loop(runs, seed)
            data = build_train_data(features, dataset, scheme, kind="ugc")
            torch.manual_seed(seed)  # the initial weights depend on the seed alone, not on earlier runs
            model = v.build(data.visual.shape[1], data.music.shape[1],
                            None if data.text is None else data.text.shape[1])
            teacher, extra = None, ""
            if v.uses_teacher:
                if teacher_dir is None:
                    raise ParamsError(f"{name}: needs the PGC teacher (kl_weight > 0) but no teacher folder given")
                path = teacher_path(teacher_dir, seed)
                if not path.exists():
                    raise DataError(f"{path}: no teacher for seed {seed}; run train_teacher with the same "
                                    "train.seeds")
                teacher, extra = load_model(path), file_md5(path)
            run = run_name(scheme, seed)
            log.info("%s %s", name, run)
            s = _fit_one(model, data, loop, model_path(out_dir, scheme, seed), work_dir / run,
                         None if live_dir is None else live_dir / run, teacher=teacher, extra=extra)
            summaries[run] = {k: s[k] for k in SUMMARY_KEYS}
            if getattr(getattr(model, "config", None), "confounder", None) == "interaction":
                summaries[run].update(taste_diagnostics(model.taste_matrix(), data))  # training pairs only
    return summaries


def load_runs(root: str | Path, schemes: Sequence[str], seeds: Sequence[int]) -> dict[tuple[str, int], object]:
    """Every trained model of one variant, keyed by (scheme, seed)."""
    return {(scheme, seed): load_model(model_path(root, scheme, seed)) for scheme in schemes for seed in seeds}
