"""The training runs of the pipeline: which model, trained on which data under which seed, saved where.

Layout (the stages' outputs):
  models/teacher/s<seed>.pt                      CMVAE on the PGC pairs, one per seed
  models/student/<scheme>_s<seed>.pt             the DebCM student per split scheme and seed
  models/baselines/<variant>/<scheme>_s<seed>.pt every other variant (pipeline/models/baselines/)
  metrics/variants/<variant>.json                what `evaluate` measured of each

How a variant trains follows its kind (neural: training.loop.fit; closed_form: one fit on the training rows;
post_hoc: its base variant trained as that variant is, then wrapped; teacher: the PGC teacher copied) and its
data setting (a `union` variant
trains on the scheme's UGC plus the PGC training pairs).

Each scheme gets its own models: a model trained on the weak split has seen the strong split's test
videos, so it is evaluated only on the test sets of its own scheme. Every seed re-draws initialisation and
batch order (the dataset is fixed), so the spread over seeds is the training noise the claims are held to.
Interrupted runs resume from a checkpoint under `work_dir` when config and data are unchanged.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from pipeline.errors import DataError, ParamsError
from pipeline.inference import embed, eval_mode
from pipeline.io import file_md5
from pipeline.data.features import Features
from pipeline.metrics import recall_at_k, sampled_ranks
from pipeline.models.baselines import BaselineParams, Variant, variant
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.debcm import DebCMConfig
from pipeline.models.registry import load_model, model_spec
from pipeline.models.scaling import TEACHER_SCALINGS, restandardise_videos
from pipeline.raycluster import check_backend
from pipeline.sampling.dataset import Dataset
from pipeline.training.checkpoint import cpu_state, data_fingerprint, save_torch
from pipeline.training.config import CRITERIA, TrainConfig
from pipeline.training.data import TrainData, build_train_data, build_union_data, uploader_distributions
from pipeline.training.diagnostics import taste_diagnostics
from pipeline.training.loop import fit, validation_recall
from pipeline.training.parallel import map_runs

log = logging.getLogger(__name__)


@dataclass
class RunsConfig:
    """Which runs a training stage makes (params group `train`, shared by every training stage)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    schemes: tuple[str, ...] = ()  # empty: every scheme of the dataset
    loop: TrainConfig = field(default_factory=TrainConfig)  # the loop (epochs, lr, ...); its seed is set per run
    workers: int = 0  # runs trained at once, one process each (pipeline.training.parallel); 0: one per core
    # pgc: the teacher standardises UGC inputs as it did its PGC training rows; ugc: its video-side
    # standardisation is refitted on each UGC run's training videos (models.scaling.restandardise_videos)
    teacher_scaling: str = "pgc"
    # local: the runs in processes of this machine (workers); ray: the same runs as tasks on a Ray cluster, each
    # on the threads a local process would get, byte-identical outputs (pipeline.training.remote)
    backend: str = "local"
    ray_address: str | None = None  # ray: a running cluster's address for ray.init; empty: a local cluster

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        self.schemes = tuple(str(s) for s in self.schemes)

    def validate(self) -> None:
        if not self.seeds:
            raise ParamsError("train.seeds: empty; expected at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ParamsError(f"train.seeds: {list(self.seeds)} repeats a seed")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ParamsError(f"train.workers: {self.workers!r}, expected an integer >= 0 (0: one per core)")
        if self.teacher_scaling not in TEACHER_SCALINGS:
            raise ParamsError(f"train.teacher_scaling: {self.teacher_scaling!r}, expected one of {TEACHER_SCALINGS}")
        check_backend("train", self.backend)
        self.loop.validate()

    def dispatch(self) -> dict:
        """map_runs' keywords for where the runs go (train.backend, train.ray_address)."""
        return {"backend": self.backend, "address": self.ray_address}

    def schemes_of(self, dataset: Dataset) -> list[str]:
        have = dataset.schemes
        if not self.schemes:
            return list(have)
        unknown = [s for s in self.schemes if s not in have]
        if unknown:
            raise ParamsError(f"train.schemes: {unknown} not in the dataset; it has {have}")
        return list(self.schemes)


SUMMARY_KEYS = ("best_epoch", "best_score", "epochs_run", "stopped_early", "batch_size", "selection")


def run_name(scheme: str, seed: int) -> str:
    return f"{scheme}_s{seed}"


def teacher_path(root: str | Path, seed: int) -> Path:
    return Path(root) / f"s{seed}.pt"


def variant_dir(name: str, root: str | Path = "models") -> Path:
    """Where a variant's models live: models/student, models/baselines/<name> for the baselines."""
    return Path(root) / name if name == "student" else Path(root) / "baselines" / name


def evaluated_variants(params: BaselineParams) -> list[str]:
    """What `evaluate` scores and `report` reads: the student and the `baselines.variants` matrix."""
    return ["student", *params.variants]


def metrics_dir(root: str | Path = "metrics") -> Path:
    """The folder of per-variant metric files `evaluate` writes (one folder: the variant list is a param)."""
    return Path(root) / "variants"


def metrics_path(name: str, root: str | Path = "metrics") -> Path:
    return metrics_dir(root) / f"{name}.json"


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
             extra: str = "", criterion_paths: dict[str, Path] | None = None) -> dict:
    summary = fit(model, data, loop, work, live=live, teacher=teacher, model_path=out,
                  fingerprint=data_fingerprint(data, extra), criterion_paths=criterion_paths)
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
    shared = dict(features=features, dataset=dataset, cfg=cfg, runs=runs, out_dir=Path(out_dir),
                  work_dir=Path(work_dir), live_dir=live_dir)
    return dict(map_runs(teacher_run, [(seed,) for seed in runs.seeds], shared, runs.loop.threads, runs.workers,
                         desc="teachers", **runs.dispatch()))


def teacher_run(shared: dict, seed: int) -> tuple[str, dict]:
    """One teacher of train_teachers: (s<seed>, its summary). Module-level so that a worker process can run it."""
    runs, live_dir = shared["runs"], shared["live_dir"]
    loop = _loop(runs, seed)
    data = build_train_data(shared["features"], shared["dataset"], "pgc", kind="pgc")
    torch.manual_seed(seed)  # the initial weights depend on the seed alone, not on earlier runs
    model = CMVAE(data.visual.shape[1], data.music.shape[1], None if data.text is None else data.text.shape[1],
                  shared["cfg"])
    name = f"s{seed}"
    log.info("teacher %s", name)
    s = _fit_one(model, data, loop, teacher_path(shared["out_dir"], seed), shared["work_dir"] / name,
                 None if live_dir is None else live_dir / name)
    return name, {k: s[k] for k in SUMMARY_KEYS if k != "selection"}


def _unavailable(v: Variant, dataset: Dataset, schemes: Sequence[str], teacher_dir: Path | None) -> str | None:
    """Why this variant cannot be trained on this dataset (None: it can)."""
    if v.uses_teacher and teacher_dir is not None and skipped(Path(teacher_dir) / "summary.json"):
        return f"{v.name} needs the PGC teacher: {skipped(Path(teacher_dir) / 'summary.json')}"
    if v.union:
        for scheme in schemes:
            if not (dataset.pgc_pairs(scheme)["split"] == "train").any():
                return f"{v.name} trains on UGC + PGC pairs: the dataset has no PGC training pairs for {scheme}"
    return None


def _train_data(v: Variant, features: Features, dataset: Dataset, scheme: str) -> TrainData:
    return build_union_data(features, dataset, scheme) if v.union else build_train_data(features, dataset, scheme)


def _dims(data: TrainData) -> tuple[int, int, int | None]:
    return data.visual.shape[1], data.music.shape[1], None if data.text is None else data.text.shape[1]


def _save(model, score: float, loop: TrainConfig, data: TrainData, path: Path) -> None:
    """A fitted (not gradient-trained) model in the file format of training.loop.fit."""
    config = {**asdict(loop), "data": data_fingerprint(data)}
    save_torch({"model": model_spec(model), "state_dict": cpu_state(model), "best_epoch": None,
                f"val_recall@{loop.val_k}": score, "config": config}, path)


def _fitted_summary(score: float, info: dict) -> dict:
    return {"best_epoch": None, "best_score": score, "epochs_run": 0, "stopped_early": False, "batch_size": None,
            "fit": info}


@torch.no_grad()
def _recall_with_uploaders(model, data: TrainData, dataset: Dataset, scheme: str, k: int) -> float:
    """Validation Recall@k (training.loop.validation_recall) of a model whose video side reads the uploader."""
    uploader = uploader_distributions(dataset, scheme, dataset.eval_sets[f"{scheme}/val"].video_id)
    with eval_mode(model):
        videos = {**data.video_batch(data.val_video), "uploader_dist": torch.from_numpy(uploader)}
        ranks = sampled_ranks((embed(model.video_embedding, videos), embed(model.music_embedding, data.music_batch())),
                              data.val_candidates.cpu().numpy())
    return recall_at_k(ranks, k, data.val_weight)


def _post_hoc(v: Variant, features: Features, dataset: Dataset, student: DebCMConfig, runs: RunsConfig,
              out_dir: Path, work_dir: Path, teacher_dir: Path | None, live_dir: Path | None,
              params: BaselineParams) -> dict[str, dict]:
    """Train the base variant as it trains itself (same seeds: the same models), then derive this one from it."""
    base_dir = work_dir / "base"
    base = train_variant(v.base, features, dataset, student, runs, base_dir, work_dir / "base_runs", teacher_dir,
                         live_dir, params)
    if "skipped" in base:
        return {"skipped": f"{v.name} is derived from {v.base}: {base['skipped']}"}
    base_spec, pool = variant(v.base, student, params), torch.tensor(dataset.pool_mask(), dtype=torch.bool)
    summaries = {}
    for scheme in runs.schemes_of(dataset):
        for seed in runs.seeds:
            run = run_name(scheme, seed)
            data = _train_data(base_spec, features, dataset, scheme)
            model = v.build(load_model(model_path(base_dir, scheme, seed)), int(pool.sum()))
            fitted = model.fit(data, pool) if hasattr(model, "fit") else {}
            info = {"base": {k: base[run][k] for k in SUMMARY_KEYS}, **fitted}
            score = _recall_with_uploaders(model, data, dataset, scheme, runs.loop.val_k)
            _save(model, score, _loop(runs, seed), data, model_path(out_dir, scheme, seed))
            summaries[run] = _fitted_summary(score, info)
            log.info("%s %s: validation recall@%d %.4f (base %.4f)", v.name, run, runs.loop.val_k, score,
                     base[run]["best_score"])
    shutil.rmtree(work_dir, ignore_errors=True)
    return summaries


def _copy_teachers(v: Variant, features: Features, dataset: Dataset, runs: RunsConfig, out_dir: Path,
                   teacher_dir: Path | None) -> dict[str, dict]:
    """The `teacher` variant: each seed's PGC teacher saved unchanged as that seed's model of every scheme, with
    its Recall on the scheme's UGC validation set (truth-free: what the report's teacher guard compares)."""
    summaries = {}
    for scheme in runs.schemes_of(dataset):
        data = build_train_data(features, dataset, scheme)
        for seed in runs.seeds:
            model, _ = _teacher(v, teacher_dir, seed, runs.teacher_scaling, data)
            score = validation_recall(model, data, runs.loop.val_k)
            _save(model, score, _loop(runs, seed), data, model_path(out_dir, scheme, seed))
            summaries[run_name(scheme, seed)] = _fitted_summary(score, {"teacher": f"s{seed}.pt"})
            log.info("%s %s: UGC validation recall@%d %.4f", v.name, run_name(scheme, seed), runs.loop.val_k, score)
    return summaries


def train_variant(name: str, features: Features, dataset: Dataset, student: DebCMConfig, runs: RunsConfig,
                  out_dir: Path, work_dir: Path, teacher_dir: Path | None = None,
                  live_dir: Path | None = None, params: BaselineParams | None = None) -> dict[str, dict]:
    """The named variant (student or a baseline) on every scheme x seed -> out_dir/<scheme>_s<seed>.pt; returns
    each run's summary, or {"skipped": reason} when the dataset cannot give it (no PGC for a PGC variant)."""
    params = params or BaselineParams()
    v = variant(name, student, params)
    reason = _unavailable(v, dataset, runs.schemes_of(dataset), teacher_dir)
    if reason:
        log.warning("%s skipped: %s", name, reason)
        return {"skipped": reason}
    if v.kind == "teacher":
        return _copy_teachers(v, features, dataset, runs, Path(out_dir), teacher_dir)
    if v.kind == "post_hoc":
        return _post_hoc(v, features, dataset, student, runs, Path(out_dir), Path(work_dir), teacher_dir, live_dir,
                         params)
    tasks = [(scheme, seed) for scheme in runs.schemes_of(dataset) for seed in runs.seeds]
    shared = dict(name=name, features=features, dataset=dataset, student=student, runs=runs, out_dir=Path(out_dir),
                  work_dir=Path(work_dir), teacher_dir=teacher_dir, live_dir=live_dir, params=params)
    if v.kind == "closed_form":  # seconds each: not worth a process
        return dict(train_run(shared, *task) for task in tasks)
    return dict(map_runs(train_run, tasks, shared, runs.loop.threads, runs.workers, desc=name, **runs.dispatch()))


def train_run(shared: dict, scheme: str, seed: int) -> tuple[str, dict]:
    """One run of train_variant: (run name, its summary). Module-level so that a worker process can run it."""
    name, features, dataset, runs = shared["name"], shared["features"], shared["dataset"], shared["runs"]
    v = variant(name, shared["student"], shared["params"])
    loop = _loop(runs, seed)
    data = _train_data(v, features, dataset, scheme)
    torch.manual_seed(seed)  # the initial weights depend on the seed alone, not on earlier runs
    model = v.build(*_dims(data))
    run, path = run_name(scheme, seed), model_path(shared["out_dir"], scheme, seed)
    log.info("%s %s", name, run)
    if v.kind == "closed_form":
        info = model.fit(data, lambda m: validation_recall(m, data, loop.val_k), seed)
        score = validation_recall(model, data, loop.val_k)
        _save(model, score, loop, data, path)
        return run, _fitted_summary(score, info)
    teacher, extra = _teacher(v, shared["teacher_dir"], seed, runs.teacher_scaling, data)
    live_dir, criteria_dir = shared["live_dir"], shared.get("criteria_dir")  # the sweep keeps each criterion's
    paths = None if criteria_dir is None else {c: Path(criteria_dir) / c / f"{run}.pt" for c in CRITERIA}
    s = _fit_one(model, data, loop, path, shared["work_dir"] / run, None if live_dir is None else live_dir / run,
                 teacher=teacher, extra=extra, criterion_paths=paths)
    summary = {k: s[k] for k in SUMMARY_KEYS}
    if getattr(getattr(model, "config", None), "confounder", None) == "interaction":
        summary.update(taste_diagnostics(model.taste_matrix(), data))  # training pairs only
    return run, summary


def _teacher(v: Variant, teacher_dir: Path | None, seed: int, scaling: str = "pgc", data: TrainData | None = None):
    """(the frozen teacher of this seed, its file's md5 for the resume fingerprint), or (None, ""); with
    scaling "ugc" its video inputs are restandardised on `data`'s training videos (train.teacher_scaling)."""
    if not v.uses_teacher:
        return None, ""
    if teacher_dir is None:
        raise ParamsError(f"{v.name}: needs the PGC teacher but no teacher folder was given")
    path = teacher_path(teacher_dir, seed)
    if not path.exists():
        raise DataError(f"{path}: no teacher for seed {seed}; run train_teacher with the same train.seeds")
    teacher = load_model(path)
    if scaling == "ugc":
        restandardise_videos(teacher, data.scaling_rows())
        return teacher, file_md5(path) + ":ugc"
    return teacher, file_md5(path)


def load_runs(root: str | Path, schemes: Sequence[str], seeds: Sequence[int]) -> dict[tuple[str, int], object]:
    """Every trained model of one variant, keyed by (scheme, seed)."""
    return {(scheme, seed): load_model(model_path(root, scheme, seed)) for scheme in schemes for seed in seeds}
