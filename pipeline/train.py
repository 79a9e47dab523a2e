"""One training loop for every model (teacher, student, baselines): the dataset as device tensors, batches
gathered by index, early stopping on validation Recall@K, resumable checkpoints, dvclive logging.

Training never reads the simulated world's truth (only pipeline.evaluate may).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.data.schema import GENRES, MUSIC_IDS_FILE, VIDEO_IDS_FILE, validate_matrix
from pipeline.errors import DataError, ParamsError
from pipeline.io import atomic_path, read_ids
from pipeline.metrics import recall_at_k, sampled_ranks
from pipeline.sampling.common import rng_for
from pipeline.sampling.dataset import Dataset
from pipeline.sampling.negatives import inverse_popularity_weights, sample_negatives

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """The training params group (teacher / student / baselines share it); paper defaults."""

    seed: int = 0
    epochs: int = 100
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-3  # Adam's L2 penalty, as in the papers' code
    patience: int = 10  # evaluations without improvement before stopping
    eval_every: int = 1  # epochs between validation evaluations
    device: str = "auto"  # auto: cuda when available, else cpu
    threads: int = 0  # torch CPU threads; 0: every core
    val_k: int = 25  # model selection on validation Recall@val_k (papers: 25)
    val_negatives: int = 100  # sampled negatives of a PGC validation set (UGC sets ship their own)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "patience", "eval_every", "val_k", "val_negatives"):
            if getattr(self, name) < 1:
                raise ParamsError(f"train.{name}={getattr(self, name)}: expected >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.threads < 0:
            raise ParamsError(f"train: lr={self.lr} must be > 0, weight_decay={self.weight_decay} and "
                              f"threads={self.threads} >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ParamsError(f"train.device={self.device!r}: expected auto, cpu or cuda[:n]")


# ---- features and tensors ------------------------------------------------------------------
@dataclass
class Features:
    """Feature matrices of every video and music (sorted-id rows), as CPU tensors."""

    video_ids: list[str]
    music_ids: list[str]
    visual: torch.Tensor
    music: torch.Tensor  # audio || smile
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None

    def video_rows(self, ids, where: str = "videos") -> torch.Tensor:
        return _rows(self.video_ids, ids, f"{where} (features/{VIDEO_IDS_FILE})")

    def music_rows(self, ids, where: str = "music") -> torch.Tensor:
        return _rows(self.music_ids, ids, f"{where} (features/{MUSIC_IDS_FILE})")

    def video_batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return _video_batch(self, rows)


def _video_batch(src, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The video part of a model batch (visual, and text with its mask when the data has text)."""
    out = {"visual": src.visual[rows]}
    if src.text is not None:
        out["text"], out["text_mask"] = src.text[rows], src.text_mask[rows]
    return out


def _rows(pool: list[str], ids, where: str) -> torch.Tensor:
    ids = list(ids)
    idx = pd.Index(pool).get_indexer(ids)
    if (idx < 0).any():
        raise DataError(f"{where}: id {ids[int(np.flatnonzero(idx < 0)[0])]!r} has no feature row")
    return torch.from_numpy(idx.astype(np.int64))


def _load_matrix(path: Path, n: int, required: bool) -> np.ndarray | None:
    if not path.exists():
        if required:
            raise DataError(f"{path}: missing; run the extract stages first")
        return None
    x = np.load(path)
    validate_matrix(x, n, path)
    return x


def _read_ids(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"{path}: missing; run the extract stages first")
    return read_ids(path)


def load_features(features_dir: str | Path) -> Features:
    """Read the feature matrices: the extract stages' layout (`video/`, `music/`, `smile/` under
    data/features, each with its own sorted id list) or one flat folder. Visual and audio are required,
    text and openSMILE optional. Music rows are the clips that have every music feature, audio || smile."""
    d = Path(features_dir)
    split_layout = (d / "video").is_dir()
    vdir, mdir, sdir = (d / "video", d / "music", d / "smile") if split_layout else (d, d, d)
    video_ids = _read_ids(vdir / VIDEO_IDS_FILE)
    visual = _load_matrix(vdir / "video_visual.npy", len(video_ids), True)
    music_ids = _read_ids(mdir / MUSIC_IDS_FILE)
    audio = _load_matrix(mdir / "music_audio.npy", len(music_ids), True)
    music = audio
    if (sdir / "music_smile.npy").exists():
        smile_ids = _read_ids(sdir / MUSIC_IDS_FILE)
        smile = _load_matrix(sdir / "music_smile.npy", len(smile_ids), True)
        if smile_ids != music_ids:  # a clip one extractor failed on: keep the clips both have (split drops it)
            keep = sorted(set(music_ids) & set(smile_ids))
            audio = audio[pd.Index(music_ids).get_indexer(keep)]
            smile = smile[pd.Index(smile_ids).get_indexer(keep)]
            log.info("features: %d music clips have audio and openSMILE features (of %d / %d)", len(keep),
                     len(music_ids), len(smile_ids))
            music_ids = keep
        music = np.concatenate([audio, smile], axis=1)
    text, mask = _load_matrix(vdir / "video_text.npy", len(video_ids), False), None
    if text is not None:
        path = vdir / "video_text_mask.npy"
        if not path.exists():
            raise DataError(f"{path}: missing; video_text.npy needs its mask")
        mask = np.load(path).reshape(-1)
        if mask.shape != (len(video_ids),):
            raise DataError(f"{path}: shape {mask.shape}, expected ({len(video_ids)},)")
    return Features(video_ids, music_ids, torch.from_numpy(visual), torch.from_numpy(np.ascontiguousarray(music)),
                    None if text is None else torch.from_numpy(text),
                    None if mask is None else torch.from_numpy(mask.astype(bool)))


def music_genre_matrix(dataset: Dataset) -> np.ndarray:
    """g(m) [M, 6]: one-hot of each music's genre label; music no UGC video uses gets the uniform row."""
    out = np.full((len(dataset.music_ids), len(GENRES)), 1.0 / len(GENRES), dtype=np.float32)
    labels = dataset.ugc.drop_duplicates("music_id")
    index = {m: i for i, m in enumerate(dataset.music_ids)}
    for mid, genre in zip(labels["music_id"], labels["genre"]):
        out[index[mid]] = 0.0
        out[index[mid], GENRES.index(genre)] = 1.0
    return out


@dataclass
class TrainData:
    """Everything one training run reads, as tensors (rows: the run's videos and the dataset's music)."""

    visual: torch.Tensor  # [V, Fv]
    music: torch.Tensor  # [M, Fm]
    video_idx: torch.Tensor  # [N] long: training triples (video row, music row, uploader row)
    music_idx: torch.Tensor
    uploader_idx: torch.Tensor
    uploader_dist: torch.Tensor  # [U, 6] u_g of each uploader (training choices only)
    music_genre: torch.Tensor  # [M, 6] g(m)
    val_video: torch.Tensor  # [Nv] video rows of the validation set
    val_candidates: torch.Tensor  # [Nv, 1 + negatives] music rows, the positive first
    val_weight: np.ndarray  # [Nv] lambda_v
    prior: np.ndarray  # [6] mean training uploader distribution (DebCM's inference prior)
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    teacher: dict[str, torch.Tensor] = field(default_factory=dict)  # teacher_{video,music}_{mu,logvar}

    def to(self, device) -> "TrainData":
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device)
        moved["teacher"] = {k: v.to(device) for k, v in self.teacher.items()}
        return TrainData(**moved)

    def video_batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return _video_batch(self, rows)

    def music_batch(self, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if rows is None:
            return {"music": self.music, "music_genre": self.music_genre}
        return {"music": self.music[rows], "music_genre": self.music_genre[rows]}

    def batch(self, sel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather one training batch by index tensors (no per-sample Python)."""
        v, m, u = self.video_idx[sel], self.music_idx[sel], self.uploader_idx[sel]
        out = {**self.video_batch(v), **self.music_batch(m), "music_idx": m, "uploader_dist": self.uploader_dist[u]}
        for key, table in self.teacher.items():
            out[key] = table[v] if key.startswith("teacher_video") else table[m]
        return out


def build_train_data(features_dir: str | Path | Features, dataset: Dataset, scheme: str, kind: str = "ugc",
                     cfg: TrainConfig | None = None) -> TrainData:
    """TrainData of one split scheme (UGC: the student and baselines) or of the PGC pairs (the teacher)."""
    cfg = cfg or TrainConfig()
    feats = features_dir if isinstance(features_dir, Features) else load_features(features_dir)
    music_rows = feats.music_rows(dataset.music_ids, "dataset music")
    m_index = {m: i for i, m in enumerate(dataset.music_ids)}
    genre = torch.from_numpy(music_genre_matrix(dataset))
    if kind == "ugc":
        ids = dataset.video_ids
        split = dataset.split(scheme)
        train_ids = split.loc[split["split"] == "train", "video_id"].tolist()
        ugc = dataset.ugc.set_index("video_id")
        dists = dataset.uploader_dists(scheme)
        u_index = {u: i for i, u in enumerate(dists["uploader_id"])}
        uploader = [u_index.get(u, -1) for u in ugc.loc[train_ids, "uploader_id"]]
        if -1 in uploader:
            raise DataError(f"dataset {scheme}: training video {train_ids[uploader.index(-1)]!r} has an uploader "
                            "with no genre distribution")
        uploader_dist = torch.tensor(dists[list(GENRES)].to_numpy(np.float32))
        key = f"{scheme}/val"
        if key not in dataset.eval_sets:
            raise DataError(f"dataset: no validation set {key!r}; have {sorted(dataset.eval_sets)}")
        es = dataset.eval_sets[key]
        val_ids, candidates = list(es.video_id), np.concatenate([es.positive[:, None], es.negatives], axis=1)
        val_weight, prior = es.weight, dataset.prior(scheme)
        music_of = ugc.loc[train_ids, "music_id"]
    elif kind == "pgc":
        pgc = dataset.pgc.sort_values("video_id")
        ids = pgc["video_id"].tolist()
        train = pgc[pgc["split"] == "train"]
        val = pgc[pgc["split"] == "val"]
        if train.empty or val.empty:
            raise DataError(f"dataset: PGC needs train and val pairs, has {len(train)} train / {len(val)} val")
        train_ids, music_of = train["video_id"].tolist(), train.set_index("video_id")["music_id"]
        uploader, uploader_dist = [0] * len(train_ids), torch.full((1, len(GENRES)), 1.0 / len(GENRES))
        positive = np.array([m_index[m] for m in val["music_id"]], dtype=np.int64)
        negs = sample_negatives(positive, len(dataset.music_ids), cfg.val_negatives,
                                rng_for(cfg.seed, "pgc", "val"), where="PGC val")
        val_ids, candidates = val["video_id"].tolist(), np.concatenate([positive[:, None], negs], axis=1)
        train_music = np.array([m_index[m] for m in music_of], dtype=np.int64)
        val_weight = inverse_popularity_weights(positive, train_music, len(dataset.music_ids))
        prior = np.full(len(GENRES), 1.0 / len(GENRES))
    else:
        raise ParamsError(f"build_train_data: kind={kind!r}, expected 'ugc' or 'pgc'")
    v_index = {v: i for i, v in enumerate(ids)}
    video_rows = feats.video_rows(ids, f"dataset {kind} videos")
    vb = feats.video_batch(video_rows)
    data = TrainData(
        visual=vb["visual"], music=feats.music[music_rows],
        video_idx=torch.tensor([v_index[v] for v in train_ids], dtype=torch.long),
        music_idx=torch.tensor([m_index[m] for m in music_of.loc[train_ids]], dtype=torch.long),
        uploader_idx=torch.tensor(uploader, dtype=torch.long), uploader_dist=uploader_dist, music_genre=genre,
        val_video=torch.tensor([v_index[v] for v in val_ids], dtype=torch.long),
        val_candidates=torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.int64)),
        val_weight=np.asarray(val_weight, dtype=np.float64), prior=np.asarray(prior, dtype=np.float64),
        text=vb.get("text"), text_mask=vb.get("text_mask"))
    log.info("%s/%s: %d training pairs, %d videos, %d music, %d validation rows", kind, scheme,
             len(train_ids), len(ids), len(dataset.music_ids), len(val_ids))
    return data


# ---- embeddings and validation -------------------------------------------------------------
@torch.no_grad()
def embed(fn: Callable, batch: Mapping[str, torch.Tensor], chunk: int = 8192) -> torch.Tensor:
    """Inference embeddings (model.video_embedding / music_embedding) of every row, in chunks."""
    n = next(iter(batch.values())).shape[0]
    return torch.cat([fn({k: v[s:s + chunk] for k, v in batch.items()}) for s in range(0, n, chunk)])


@torch.no_grad()
def validation_recall(model, data: TrainData, k: int) -> float:
    """Weighted Recall@k of the validation set under the sampled-candidate protocol."""
    was = model.training
    model.eval()
    try:
        video_z = embed(model.video_embedding, data.video_batch(data.val_video))
        music_z = embed(model.music_embedding, data.music_batch())
        ranks = sampled_ranks((video_z, music_z), data.val_candidates.cpu().numpy())
    finally:
        model.train(was)
    return recall_at_k(ranks, k, data.val_weight)


# ---- the loop ------------------------------------------------------------------------------
def data_fingerprint(data: TrainData, *extra: str) -> str:
    """sha256 of every tensor of a TrainData (and `extra` strings): what a resumed checkpoint must match."""
    h = hashlib.sha256()
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        items = sorted(value.items()) if isinstance(value, dict) else [(f.name, value)]
        for key, v in items:
            if v is None:
                continue
            arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            h.update(f"{key}:{arr.dtype}:{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _save_torch(obj, path: Path) -> None:
    """torch.save through a buffer: the file bytes do not depend on the temporary file's name."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _cpu_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def model_spec(model) -> dict:
    """What `load_model` needs to rebuild a CMVAE/DebCM: class, dims and config."""
    cfg = getattr(model, "config", None)
    return {"class": type(model).__name__, "visual_dim": getattr(model, "visual_dim", None),
            "music_dim": getattr(model, "music_dim", None), "text_dim": getattr(model, "text_dim", None),
            "config": dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None}


def load_model(path: str | Path):
    """Rebuild a CMVAE or DebCM saved by `fit` and load its best weights (eval mode)."""
    from pipeline.models.cmvae import CMVAE, CMVAEConfig
    from pipeline.models.debcm import DebCM, DebCMConfig
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no model file; run the training stage first")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    spec = saved.get("model") or {}
    classes = {"CMVAE": (CMVAE, CMVAEConfig), "DebCM": (DebCM, DebCMConfig)}
    if spec.get("class") not in classes:
        raise DataError(f"{path}: model class {spec.get('class')!r}, expected one of {sorted(classes)}")
    cls, cfg_cls = classes[spec["class"]]
    model = cls(spec["visual_dim"], spec["music_dim"], spec["text_dim"], cfg_cls(**spec["config"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def _open_live(live, resume: bool):
    """A dvclive Live for a directory (dvc.yaml is written by hand: dvcyaml=None), the given Live, or None."""
    if live is None or not isinstance(live, (str, os.PathLike)):
        return live, False
    from dvclive import Live
    return Live(str(live), resume=resume, dvcyaml=None, save_dvc_exp=False), True


def _precompute_teacher(teacher, data: TrainData) -> None:
    """The teacher is frozen: its posteriors for every video and music row are computed once."""
    from pipeline.models.debcm import teacher_posteriors
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    vb = data.video_batch(torch.arange(data.visual.shape[0], device=data.visual.device))
    for side, batch in (("video", vb), ("music", {"music": data.music})):
        mu, logvar = teacher_posteriors(teacher, side, batch)
        data.teacher[f"teacher_{side}_mu"] = mu.to(data.visual.device)
        data.teacher[f"teacher_{side}_logvar"] = logvar.to(data.visual.device)


def fit(model, data: TrainData, cfg: TrainConfig, out_dir: str | Path, live=None, teacher=None, *,
        model_path: str | Path | None = None, on_epoch_end: Callable[[int, dict], None] | None = None,
        fingerprint: str | None = None) -> dict:
    """Train `model` on `data`, keep the best validation state, write it to `model_path`.

    Resumes from `out_dir/last.pt` when it was written under the same config and `fingerprint` (a digest
    of the data and teacher, see data_fingerprint: a checkpoint of other data is never resumed). `live`: None (no logging),
    a directory for dvclive, or a dvclive Live. `on_epoch_end(epoch, record)` runs after the checkpoint.
    Returns a summary: best_epoch, best_score (validation Recall@val_k), epochs_run, stopped_early, history.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    model_path = Path(model_path) if model_path is not None else out_dir / "best.pt"
    ckpt_path = out_dir / "last.pt"
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    data = data.to(device)
    if teacher is not None:
        teacher.to(device)
        _precompute_teacher(teacher, data)
    if hasattr(model, "set_prior"):  # DebCM: the training-mean uploader distribution used at inference
        model.set_prior(np.array(data.prior, dtype=np.float64))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    config = {**dataclasses.asdict(cfg), "data": fingerprint}
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": -1, "best_state": None, "bad_evals": 0,
             "history": [], "stopped": False}
    resume = False
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("config") == config and ckpt.get("model_spec") == model_spec(model):
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["rng_cpu"])
            if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
            state = ckpt["state"]
            resume = True
            log.info("resuming from %s after epoch %d", ckpt_path, state["epoch"])
        else:
            log.warning("%s was written under another config or model; starting afresh", ckpt_path)
    live, owned = _open_live(live, resume)
    n = data.video_idx.shape[0]
    if n == 0:
        raise DataError("fit: no training pairs")
    bar = tqdm(range(state["epoch"], cfg.epochs), desc="epochs", leave=False, initial=state["epoch"],
               total=cfg.epochs)
    try:
        for epoch in bar:
            if state["stopped"]:
                break
            model.train()
            # A generator per epoch seeded from (seed, epoch): the order does not depend on earlier epochs.
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen).to(device)
            sums: dict[str, torch.Tensor] = {}
            n_batches = 0
            for start in range(0, n, cfg.batch_size):
                terms = model.loss(data.batch(order[start:start + cfg.batch_size]))
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                for k, v in terms.items():  # summed on the device: no host sync per batch
                    sums[k] = sums[k] + v.detach() if k in sums else v.detach().clone()
                n_batches += 1
            record = {f"train/{k}": float(v) / n_batches for k, v in sums.items()}
            if not np.isfinite(record["train/total"]):
                raise DataError(f"fit: epoch {epoch}: mean loss is {record['train/total']}; lower train.lr or "
                                "check the features for extreme values")
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                score = validation_recall(model, data, cfg.val_k)
                record[f"val/recall@{cfg.val_k}"] = score
                if score > state["best_score"]:
                    state.update(best_score=score, best_epoch=epoch, best_state=_cpu_state(model), bad_evals=0)
                else:
                    state["bad_evals"] += 1
                    state["stopped"] = state["bad_evals"] >= cfg.patience
            state["epoch"] = epoch + 1
            state["history"].append({"epoch": epoch, **record})
            bar.set_postfix(loss=f"{record['train/total']:.4f}", best=f"{state['best_score']:.4f}")
            if live is not None:
                for k, v in record.items():
                    live.log_metric(k, v)
                live.next_step()
            _save_torch({"config": config, "model_spec": model_spec(model), "model": _cpu_state(model),
                         "optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state(),
                         "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                         "state": state}, ckpt_path)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
            if state["stopped"]:
                log.info("early stop after epoch %d: no improvement in %d evaluations", epoch, cfg.patience)
                break
    finally:
        bar.close()
        if owned:
            live.end()
    if state["best_state"] is None:
        raise DataError("fit: no validation evaluation ran; nothing to select")
    model.load_state_dict(state["best_state"])
    _save_torch({"model": model_spec(model), "state_dict": state["best_state"], "best_epoch": state["best_epoch"],
                 f"val_recall@{cfg.val_k}": state["best_score"], "config": config}, model_path)
    log.info("best validation recall@%d %.4f at epoch %d -> %s", cfg.val_k, state["best_score"],
             state["best_epoch"], model_path)
    return {"best_epoch": state["best_epoch"], "best_score": state["best_score"], "epochs_run": state["epoch"],
            "stopped_early": state["stopped"], "history": state["history"]}
