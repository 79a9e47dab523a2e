"""The one training loop of every model: Adam on shuffled batches gathered by index, validation Recall@K
after each epoch, early stopping, the best state kept, resumable checkpoints, dvclive logging."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from pipeline.errors import DataError
from pipeline.inference import embed, eval_mode
from pipeline.metrics import recall_at_k, sampled_ranks
from pipeline.models.registry import model_spec
from pipeline.resources import resolve_device
from pipeline.training.checkpoint import cpu_state, new_state, save_checkpoint, save_torch, try_resume
from pipeline.training.config import TrainConfig
from pipeline.training.data import TrainData

log = logging.getLogger(__name__)


EPOCH_BARS = True  # a progress bar over each run's epochs (pipeline.training.parallel's workers turn it off)


@contextlib.contextmanager
def deterministic():
    """torch's deterministic algorithms for the block (every device), the previous setting restored after."""
    before, before_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def _float32_output(module, inputs, output):
    return output.float()


@contextlib.contextmanager
def step_precision(model, precision: str, device: torch.device):
    """The arithmetic of a training step's forward pass (train.loop.precision). fp32: unchanged. bf16: under
    torch.autocast every matrix product (the MLP layers and the in-batch score matrices) takes bfloat16
    inputs with float32 accumulation, and each nn.Linear output is cast back to float32, so the Gaussians,
    KL terms, losses, gradients' accumulation and Adam stay float32. On the TT-150k-sized world it moved
    validation Recall@25 by at most 0.002 over 6 epochs, against 0.006-0.015 between two fp32 seeds (README
    "Speed at TT-150k size"); CPUs without native bfloat16 (AVX512-BF16, AMX) may get slower, not faster."""
    if precision == "fp32":
        yield
        return
    hooks = [m.register_forward_hook(_float32_output) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def validation_ranks(model, data: TrainData) -> np.ndarray:
    """Rank of each validation positive among its sampled candidates."""
    with eval_mode(model):
        video_z = embed(model.video_embedding, data.video_batch(data.val_video))
        music_z = embed(model.music_embedding, data.music_batch())
        return sampled_ranks((video_z, music_z), data.val_candidates.cpu().numpy())


def validation_recall(model, data: TrainData, k: int) -> float:
    """Weighted Recall@k of the validation set under the sampled-candidate protocol."""
    return recall_at_k(validation_ranks(model, data), k, data.val_weight)


def criteria_scores(model, data: TrainData, k: int) -> dict[str, float]:
    """Recall@k under every truth-free criterion the data has (training.config.CRITERIA): one ranking, several
    weightings of the same validation videos."""
    ranks = validation_ranks(model, data)
    return {"val": recall_at_k(ranks, k, data.val_weight),
            **{name: recall_at_k(ranks, k, w) for name, w in sorted(data.val_criteria.items())}}


def criterion_key(name: str, k: int) -> str:
    """The history/dvclive key of a criterion's score: val/recall@k, val_ips/recall@k, ..."""
    return f"val/recall@{k}" if name == "val" else f"val_{name}/recall@{k}"


def best_by_criterion(history: list[dict], k: int) -> dict[str, dict]:
    """{criterion: {best_epoch, best_score}} over a run's evaluated epochs (the first epoch of a tie)."""
    out = {}
    for name in ("val", *sorted({key.split("/")[0][4:] for r in history for key in r if key.startswith("val_")})):
        scored = [(r[criterion_key(name, k)], -r["epoch"]) for r in history if criterion_key(name, k) in r]
        if scored:
            score, neg_epoch = max(scored)
            out[name] = {"best_epoch": -neg_epoch, "best_score": score}
    return out


def prepare(model, data: TrainData, cfg: TrainConfig, device: torch.device, teacher=None) -> TrainData:
    """Move model and data to the device; fit the input standardisation on the training rows; the frozen
    teacher's posteriors for every row, computed once; DebCM's inference prior."""
    model.to(device)
    data = data.to(device)
    if cfg.standardize and hasattr(model, "fit_scaling"):
        rows = data.scaling_rows()
        model.fit_scaling(rows["visual"], rows["music"], rows.get("text"))
    if teacher is not None:
        teacher.to(device)
        _precompute_teacher(teacher, data)
    if hasattr(model, "set_prior"):  # DebCM: the training-mean uploader distribution used at inference
        model.set_prior(np.array(data.prior, dtype=np.float64))
    return data


def _precompute_teacher(teacher, data: TrainData) -> None:
    from pipeline.models.debcm import teacher_posteriors
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    vb = data.video_batch(torch.arange(data.visual.shape[0], device=data.visual.device))
    for side, batch in (("video", vb), ("music", {"music": data.music})):
        mu, logvar = teacher_posteriors(teacher, side, batch)
        data.teacher[f"teacher_{side}_mu"] = mu.to(data.visual.device)
        data.teacher[f"teacher_{side}_logvar"] = logvar.to(data.visual.device)


def train_epoch(model, data: TrainData, optimizer, batch_size: int, seed: int, epoch: int,
                precision: str = "fp32") -> dict[str, float]:
    """One pass over the training pairs in a seeded order; the mean of each loss term."""
    model.train()
    device = data.video_idx.device
    n = data.video_idx.shape[0]
    # A generator per epoch seeded from (seed, epoch): the order does not depend on earlier epochs.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen).to(data.video_idx.device)
    names, sums, n_batches = None, None, 0
    for start in range(0, n, batch_size):
        with step_precision(model, precision, device):
            terms = model.loss(data.batch(order[start:start + batch_size]))
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        # every term in one vector, summed on the device: one kernel and no host sync per batch
        step = torch.stack([v.detach().float() for v in terms.values()])
        names, sums = (list(terms), step) if sums is None else (names, sums + step)
        n_batches += 1
    record = {f"train/{k}": float(v) / n_batches for k, v in zip(names, sums.tolist())}
    if not np.isfinite(record["train/total"]):
        raise DataError(f"training epoch {epoch}: mean loss is {record['train/total']}; lower train.loop.lr or "
                        "check the features for extreme values")
    return record


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the model's parameters with the multi-tensor (foreach) update: a few kernels per step for
    all of them instead of about ten per parameter tensor, with the same arithmetic in the same order (the
    trained weights are byte-identical to the per-tensor loop's, tests/test_train_speed.py)."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def _keep_per_criterion(model, state: dict, scores: dict[str, float], wanted) -> None:
    """The best state of each criterion in `wanted` (the sweep's selection table compares them)."""
    kept = state.setdefault("criteria_best", {})
    for name in wanted:
        if name in scores and scores[name] > kept.get(name, (-1.0, None))[0]:
            kept[name] = (scores[name], state["epoch"], cpu_state(model))


def _select(model, state: dict, score: float, patience: int) -> None:
    """Keep the best validation state; count evaluations without improvement towards early stopping."""
    if score > state["best_score"]:
        state.update(best_score=score, best_epoch=state["epoch"], best_state=cpu_state(model), bad_evals=0)
    else:
        state["bad_evals"] += 1
        state["stopped"] = state["bad_evals"] >= patience


def _live_class():
    """dvclive's Live, tolerant of a git repository without a commit.

    dvclive 3.49 reads HEAD before it checks for commits (treeverse/dvclive#522), so in a fresh `git init`
    where nothing is committed yet the first training stage would die with "Empty git repo". Here the logs
    are still written; only dvclive's DVC integration (which we do not use: dvc.yaml is written by hand and
    no experiment is saved) is left out."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    class TolerantLive(Live):
        def _init_dvc(self):
            try:
                super()._init_dvc()
            except SCMError as e:
                log.warning("dvclive: %s (no commit yet?); logging to %s without dvclive's DVC integration",
                            e, self.dir)
                self._dvc_repo = None
                self._dvc_file = self._init_dvc_file()

    return TolerantLive


def _open_live(live, resume: bool):
    """A dvclive Live for a directory (dvc.yaml is written by hand: dvcyaml=None), the given Live, or None."""
    if live is None or not isinstance(live, (str, os.PathLike)):
        return live, False
    return _live_class()(str(live), resume=resume, dvcyaml=None, save_dvc_exp=False), True


def fit(model, data: TrainData, cfg: TrainConfig, out_dir: str | Path, live=None, teacher=None, *,
        model_path: str | Path | None = None, on_epoch_end: Callable[[int, dict], None] | None = None,
        fingerprint: str | None = None, criterion_paths: dict[str, Path] | None = None) -> dict:
    """Train `model` on `data`, keep the best validation state, write it to `model_path` (default
    out_dir/best.pt). Resumes from out_dir/last.pt when it was written under the same config and
    `fingerprint` (checkpoint.data_fingerprint of data and teacher). `live`: None, a dvclive directory or a
    Live. `on_epoch_end(epoch, record)` runs after each checkpoint. Early stopping watches cfg.select's
    criterion (val when the data has no other: PGC runs); every criterion is logged, and `criterion_paths`
    {criterion: path} also writes the best state of each of those criteria (the sweep's selection table).
    Returns best_epoch, best_score (Recall@val_k under the selected criterion), epochs_run, stopped_early,
    batch_size, selection ({criterion: best_epoch, best_score}), history."""
    cfg.validate()
    out_dir = Path(out_dir)
    model_path = Path(model_path) if model_path is not None else out_dir / "best.pt"
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = prepare(model, data, cfg, device, teacher)
    n = data.video_idx.shape[0]
    if n == 0:
        raise DataError("fit: no training pairs")
    batch_size = cfg.effective_batch_size(n)
    select = cfg.select if cfg.select == "val" or cfg.select in data.val_criteria else "val"
    if select != cfg.select:
        log.info("train.loop.select=%s needs uploaders; this run (PGC) selects on val", cfg.select)
    optimizer = make_optimizer(model, cfg)
    config = {**dataclasses.asdict(cfg), "data": fingerprint}
    state = try_resume(out_dir / "last.pt", config, model, optimizer, device) or new_state()
    live, owned = _open_live(live, state["epoch"] > 0)
    bar = tqdm(range(state["epoch"], cfg.epochs), desc="epochs", leave=False, initial=state["epoch"],
               total=cfg.epochs, disable=not EPOCH_BARS)
    try:
        with deterministic():
            for epoch in bar:
                if state["stopped"]:
                    break
                record = train_epoch(model, data, optimizer, batch_size, cfg.seed, epoch, cfg.precision)
                state["epoch"] = epoch
                if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                    scores = criteria_scores(model, data, cfg.val_k)
                    record.update({criterion_key(c, cfg.val_k): v for c, v in scores.items()})
                    if criterion_paths:
                        _keep_per_criterion(model, state, scores, criterion_paths)
                    _select(model, state, scores[select], cfg.patience)
                state["epoch"] = epoch + 1
                state["history"].append({"epoch": epoch, **record})
                bar.set_postfix(loss=f"{record['train/total']:.4f}", best=f"{state['best_score']:.4f}")
                if live is not None:
                    for k, v in record.items():
                        live.log_metric(k, v)
                    live.next_step()
                save_checkpoint(out_dir / "last.pt", config, model, optimizer, device, state)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
                if state["stopped"]:
                    log.info("early stop after epoch %d: no improvement in %d evaluations", epoch, cfg.patience)
    finally:
        bar.close()
        if owned:
            live.end()
    if state["best_state"] is None:
        raise DataError("fit: no validation evaluation ran; nothing to select")
    model.load_state_dict(state["best_state"])
    save_torch({"model": model_spec(model), "state_dict": state["best_state"], "best_epoch": state["best_epoch"],
                f"val_recall@{cfg.val_k}": state["best_score"], "config": config}, model_path)
    for name, path in (criterion_paths or {}).items():
        if name in state.get("criteria_best", {}):
            score, epoch, best = state["criteria_best"][name]
            save_torch({"model": model_spec(model), "state_dict": best, "best_epoch": epoch,
                        f"{criterion_key(name, cfg.val_k)}": score, "config": config}, path)
    log.info("best validation recall@%d %.4f (%s) at epoch %d (batch %d, %d steps per epoch) -> %s", cfg.val_k,
             state["best_score"], select, state["best_epoch"], batch_size, -(-n // batch_size), model_path)
    return {"best_epoch": state["best_epoch"], "best_score": state["best_score"], "epochs_run": state["epoch"],
            "stopped_early": state["stopped"], "batch_size": batch_size,
            "selection": best_by_criterion(state["history"], cfg.val_k), "history": state["history"]}
