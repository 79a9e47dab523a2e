"""The genre classifier of TT-150k-genre: a 2-layer LSTM over per-frame audio features -> six genre logits.

The model standardises its own input with statistics fitted on the training clips (stored as buffers), so
a saved .pt file is everything needed to label new clips featurised with the same FrameConfig.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.genre.frames import N_FEATURES, Standardizer, check_frames
from pipeline.io import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "bgm-genre-lstm/1"


@dataclass(frozen=True)
class TrainConfig:
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.2  # between LSTM layers and before the linear head
    pooling: str = "mean"  # mean: average of the outputs over frames; last: the final hidden state
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 300
    patience: int = 30  # epochs without a better validation (accuracy, then loss); small sets plateau early
    min_delta: float = 0.01  # a validation loss this much lower counts as better (saturated accuracy otherwise
    # lets the loss creep down by 1e-4 an epoch for hundreds of epochs, so training never stopped)
    val_fraction: float = 0.2  # stratified held-out share used for early stopping
    seed: int = 0

    def validate(self) -> None:
        if self.hidden_size < 1 or self.num_layers < 1 or self.batch_size < 1:
            raise ParamsError("genre.train: hidden_size, num_layers and batch_size must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ParamsError(f"genre.train.dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in ("mean", "last"):
            raise ParamsError(f"genre.train.pooling must be 'mean' or 'last', got {self.pooling!r}")
        if not 0 < self.val_fraction < 1:
            raise ParamsError(f"genre.train.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_epochs < 1 or self.patience < 1 or self.lr <= 0:
            raise ParamsError("genre.train: max_epochs and patience must be >= 1 and lr > 0")
        if not self.min_delta >= 0:
            raise ParamsError(f"genre.train.min_delta must be >= 0, got {self.min_delta}")


class GenreLSTM(nn.Module):
    """Raw frames [B, T, F] -> standardise -> LSTM -> pool over frames -> dropout -> linear -> logits [B, L].

    Genres absent from the training corpus keep their output slot (the label list is always the full one)
    but their logits are forced to -inf, so their probability is exactly 0 and argmax never picks them.
    """

    def __init__(self, config: TrainConfig, labels: Sequence[str] = GENRES, n_features: int = N_FEATURES):
        super().__init__()
        self.config = config
        self.labels = tuple(labels)
        self.n_features = n_features
        self.lstm = nn.LSTM(
            n_features, config.hidden_size, num_layers=config.num_layers, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, len(self.labels))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("present", torch.ones(len(self.labels), dtype=torch.bool))
        self.meta: dict[str, Any] = {}

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames - self.feature_mean) / self.feature_std
        outputs, (hidden, _) = self.lstm(x)
        pooled = outputs.mean(dim=1) if self.config.pooling == "mean" else hidden[-1]
        logits = self.head(self.dropout(pooled))
        return logits.masked_fill(~self.present, float("-inf"))


def label_codes(y: Sequence, labels: Sequence[str] = GENRES, where: str = "genre labels") -> np.ndarray:
    """Genre names or integer codes -> int64 codes into `labels`; DataError naming the first bad row."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: expected a 1-d label vector, got shape {y.shape}")
    if y.dtype.kind in "iu":
        bad = (y < 0) | (y >= len(labels))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where} row {i}: code {y[i]} is not in [0, {len(labels)})")
        return y.astype(np.int64)
    index = {g: i for i, g in enumerate(labels)}
    codes = np.empty(len(y), dtype=np.int64)
    for i, g in enumerate(y):
        if g not in index:
            raise DataError(f"{where} row {i}: genre {str(g)!r} is not one of {tuple(labels)}")
        codes[i] = index[g]
    return codes


@contextlib.contextmanager
def _deterministic():
    """Deterministic torch kernels for the block, restoring the caller's setting (CPU LSTM supports them)."""
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def _stratified_split(codes: np.ndarray, cfg: TrainConfig, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(len(codes))
    try:
        train, val = train_test_split(index, test_size=cfg.val_fraction, stratify=codes, random_state=cfg.seed)
    except ValueError as err:
        counts = {labels[c]: int(n) for c, n in zip(*np.unique(codes, return_counts=True))}
        raise DataError(
            f"genre training set: cannot hold out a stratified {cfg.val_fraction:.0%} validation split from "
            f"class counts {counts} ({err}); every class needs >= 2 clips and the split >= one clip per class"
        ) from err
    return np.sort(train), np.sort(val)


@dataclass
class Plateau:
    """Early stopping on validation (accuracy, loss): better = higher accuracy, or the same accuracy with a
    loss lower by more than `min_delta`; stop after `patience` epochs without a better one."""

    patience: int
    min_delta: float
    best: tuple[float, float] | None = None  # (accuracy, loss) of the best epoch
    best_epoch: int = 0
    stale: int = 0

    def improved(self, epoch: int, accuracy: float, loss: float) -> bool:
        better = self.best is None or accuracy > self.best[0] or (
            accuracy == self.best[0] and loss < self.best[1] - self.min_delta)
        if better:
            self.best, self.best_epoch, self.stale = (accuracy, loss), epoch, 0
        else:
            self.stale += 1
        return better

    @property
    def stop(self) -> bool:
        return self.stale >= self.patience


def _batched_logits(model: GenreLSTM, frames: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(frames[i:i + batch_size]) for i in range(0, len(frames), batch_size)])


def train_classifier(
    frames: np.ndarray, y: Sequence, cfg: TrainConfig = TrainConfig(), labels: Sequence[str] = GENRES,
    progress: bool = True,
) -> tuple[GenreLSTM, dict[str, Any]]:
    """Train on [N, T, F] frames with genre labels; early-stop on a stratified held-out split.

    Deterministic given cfg.seed: the weights are initialised, batches shuffled and dropout drawn from
    seeded generators inside a forked RNG state (the caller's torch RNG is left untouched). The returned
    model holds the weights of the best validation epoch (highest accuracy; ties go to a loss lower by
    more than cfg.min_delta, since on small validation sets accuracy saturates early: see Plateau).
    history: per-epoch losses and accuracies.

    One loop with early stopping and best-state restore, read top to bottom like training.loop.fit.
    """
    cfg.validate()
    check_frames(frames, "genre training frames")
    codes = label_codes(y, labels, "genre training labels")
    if len(codes) != len(frames):
        raise DataError(f"genre training set: {len(frames)} clips of frames but {len(codes)} labels")
    present = np.unique(codes)
    if len(present) < 2:
        raise DataError(f"genre training set: only genre(s) {[labels[c] for c in present]}; need >= 2 classes")
    train_idx, val_idx = _stratified_split(codes, cfg, labels)
    scaler = Standardizer.fit(frames[train_idx])  # training clips only: validation stays unseen
    x_train = torch.from_numpy(np.ascontiguousarray(frames[train_idx], dtype=np.float32))
    x_val = torch.from_numpy(np.ascontiguousarray(frames[val_idx], dtype=np.float32))
    y_train = torch.from_numpy(codes[train_idx])
    y_val = torch.from_numpy(codes[val_idx])

    history: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=[]), _deterministic():
        torch.manual_seed(cfg.seed)
        model = GenreLSTM(cfg, labels, frames.shape[2])
        model.feature_mean.copy_(torch.from_numpy(scaler.mean))
        model.feature_std.copy_(torch.from_numpy(scaler.std))
        model.present.copy_(torch.from_numpy(np.isin(np.arange(len(labels)), present)))
        shuffle = torch.Generator().manual_seed(cfg.seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        plateau, best_state = Plateau(cfg.patience, cfg.min_delta), None
        epochs = tqdm(range(1, cfg.max_epochs + 1), desc="genre lstm", unit="epoch", disable=not progress)
        for epoch in epochs:
            model.train()
            total = 0.0
            for batch in torch.randperm(len(x_train), generator=shuffle).split(cfg.batch_size):
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item() * len(batch)
            model.eval()
            with torch.no_grad():
                val_logits = _batched_logits(model, x_val, 256)
                val_loss = float(F.cross_entropy(val_logits, y_val))
                val_acc = float((val_logits.argmax(dim=1) == y_val).float().mean())
            history.append({"epoch": epoch, "train_loss": total / len(x_train), "val_loss": val_loss,
                            "val_accuracy": val_acc})
            epochs.set_postfix(val_acc=f"{val_acc:.3f}", val_loss=f"{val_loss:.3f}")
            if plateau.improved(epoch, val_acc, val_loss):
                best_state = copy.deepcopy(model.state_dict())
            elif plateau.stop:
                break
        model.load_state_dict(best_state)
    model.eval()
    best_acc = plateau.best[0]
    summary = {"epochs": history, "best_epoch": plateau.best_epoch, "best_val_accuracy": best_acc,
               "stopped_early": len(history) < cfg.max_epochs, "n_train": len(train_idx), "n_val": len(val_idx)}
    log.info("genre lstm: best epoch %d of %d, validation accuracy %.3f", plateau.best_epoch, len(history), best_acc)
    return model, summary


def predict_proba(model: GenreLSTM, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """[N, len(labels)] float32 genre probabilities; exactly 0 for genres absent from the training corpus."""
    check_frames(frames, "genre frames to label", model.n_features)
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    with torch.no_grad():
        return torch.softmax(_batched_logits(model, x, batch_size), dim=1).numpy()


def predict_genres(model: GenreLSTM, frames: np.ndarray) -> list[str]:
    """The most probable genre name of each clip."""
    return [model.labels[i] for i in predict_proba(model, frames).argmax(axis=1)]


def save(model: GenreLSTM, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """One .pt file: weights (normalisation stats and present-class mask are buffers), config, labels, meta.

    `meta` (e.g. the FrameConfig as a dict) must hold plain values, so the file loads with weights_only.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": model.state_dict(),
        "config": dataclasses.asdict(model.config),
        "labels": list(model.labels),
        "n_features": model.n_features,
        "meta": dict(meta if meta is not None else model.meta),
    }
    # Through a buffer: torch names the zip's root folder after the file, and the temporary file name is
    # random, so saving to it directly would give different bytes (and DVC hashes) for the same model.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load(path: str | Path) -> GenreLSTM:
    """Rebuild a saved classifier in eval mode; DataError naming the file when it is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no genre model file; run the genre stage first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"{path}: not a readable torch checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a genre LSTM checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    model = GenreLSTM(TrainConfig(**payload["config"]), payload["labels"], payload["n_features"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise DataError(f"{path}: weights do not match the stored config ({err})") from err
    model.meta = payload["meta"]
    return model.eval()


def evaluate(y_true: Sequence, proba: np.ndarray, labels: Sequence[str] = GENRES) -> dict[str, Any]:
    """Accuracy, confusion matrix (rows: true genre, columns: predicted) and per-class counts of argmax(proba)."""
    labels = list(labels)
    codes = label_codes(y_true, labels, "genre evaluation labels")
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape != (len(codes), len(labels)):
        raise DataError(f"genre evaluation: probabilities of shape {proba.shape}, expected {(len(codes), len(labels))}")
    if len(codes) == 0:
        raise DataError("genre evaluation: no clips to evaluate")
    predicted = proba.argmax(axis=1)
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (codes, predicted), 1)
    per_class = {
        g: {
            "support": int(confusion[i].sum()),  # clips whose true genre is g
            "predicted": int(confusion[:, i].sum()),  # clips labelled g
            "correct": int(confusion[i, i]),
        }
        for i, g in enumerate(labels)
    }
    return {
        "accuracy": float(np.trace(confusion) / len(codes)),
        "n": int(len(codes)),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class,
        "labels": labels,
    }
