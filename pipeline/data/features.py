"""The feature matrices every model reads (data/features/): visual, text (+ mask) and music rows by id.

The extract stages write one folder per kind (`video/`, `music/`, `smile/`), each with its sorted id list;
training, evaluation and `recommend` read them only through `load_features`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.data.schema import MUSIC_IDS_FILE, VIDEO_IDS_FILE, validate_matrix
from pipeline.errors import DataError
from pipeline.io import read_ids

log = logging.getLogger(__name__)


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
        return id_rows(self.video_ids, ids, f"{where} (features/{VIDEO_IDS_FILE})")

    def music_rows(self, ids, where: str = "music") -> torch.Tensor:
        return id_rows(self.music_ids, ids, f"{where} (features/{MUSIC_IDS_FILE})")

    def video_batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return video_batch(self, rows)


def video_batch(src, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The video part of a model batch (visual, and text with its mask when the data has text)."""
    out = {"visual": src.visual[rows]}
    if src.text is not None:
        out["text"], out["text_mask"] = src.text[rows], src.text_mask[rows]
    return out


def id_rows(pool: list[str], ids, where: str) -> torch.Tensor:
    """Row index of each id in `pool` (a sorted id list); an id without a row is an error naming it."""
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


def _with_smile(music_ids: list[str], audio: np.ndarray, sdir: Path) -> tuple[list[str], np.ndarray]:
    """audio || openSMILE for the clips both extractors have (a clip one extractor failed on leaves at split)."""
    smile_ids = _read_ids(sdir / MUSIC_IDS_FILE)
    smile = _load_matrix(sdir / "music_smile.npy", len(smile_ids), True)
    if smile_ids != music_ids:
        keep = sorted(set(music_ids) & set(smile_ids))
        audio = audio[pd.Index(music_ids).get_indexer(keep)]
        smile = smile[pd.Index(smile_ids).get_indexer(keep)]
        log.info("features: %d music clips have audio and openSMILE features (of %d / %d)", len(keep),
                 len(music_ids), len(smile_ids))
        music_ids = keep
    return music_ids, np.concatenate([audio, smile], axis=1)


def load_music_features(features_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """(music ids, audio || openSMILE rows) of load_features alone: what ranking a pool needs, without
    reading every video's matrices (`recommend`)."""
    d = Path(features_dir)
    mdir, sdir = (d / "music", d / "smile") if (d / "video").is_dir() else (d, d)
    music_ids = _read_ids(mdir / MUSIC_IDS_FILE)
    music = _load_matrix(mdir / "music_audio.npy", len(music_ids), True)
    if (sdir / "music_smile.npy").exists():
        music_ids, music = _with_smile(music_ids, music, sdir)
    return music_ids, music


def load_features(features_dir: str | Path) -> Features:
    """Read the feature matrices: the extract stages' layout (`video/`, `music/`, `smile/` under
    data/features, each with its own sorted id list) or one flat folder. Visual and audio are required,
    text and openSMILE optional. Music rows are the clips that have every music feature, audio || smile."""
    d = Path(features_dir)
    split_layout = (d / "video").is_dir()
    vdir = d / "video" if split_layout else d
    video_ids = _read_ids(vdir / VIDEO_IDS_FILE)
    visual = _load_matrix(vdir / "video_visual.npy", len(video_ids), True)
    music_ids, music = load_music_features(d)
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
