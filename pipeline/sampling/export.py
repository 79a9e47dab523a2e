"""Export a built dataset in the TT-150k release format (docs/architecture.md section 8, as
the public code reads it), so the public reference code and other implementations can run on our splits.

Video and music ints are indices into the sorted UGC video id list and the sorted music id list
(`Dataset.video_ids`, `Dataset.music_ids`); PGC videos are indexed in their own sorted id list.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.schema import GENRES, validate_matrix
from pipeline.errors import DataError
from pipeline.io import atomic_dir, atomic_path, write_npy
from pipeline.sampling.dataset import Dataset
from pipeline.sampling.uploaders import video_uploader_dist

log = logging.getLogger(__name__)


def _save_objects(array: np.ndarray, path: Path) -> None:
    """Object rows need pickle: the public code loads them with allow_pickle=True."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=True)


def _rows_of(matrix: np.ndarray, matrix_ids, wanted: list[str], what: str) -> np.ndarray:
    """The rows of `matrix` (in the order of `matrix_ids`) for `wanted`, float32."""
    validate_matrix(np.asarray(matrix), len(matrix_ids), what)
    pos = pd.Series(np.arange(len(matrix_ids)), index=list(matrix_ids))
    missing = [i for i in wanted if i not in pos.index]
    if missing:
        raise DataError(f"{what}: no feature row for id {missing[0]!r} ({len(missing)} missing)")
    return np.ascontiguousarray(np.asarray(matrix)[pos.loc[wanted].to_numpy()], dtype=np.float32)


def train_rows(ds: Dataset, scheme: str) -> np.ndarray:
    """train.npy: object rows [video int, music int, genre code as decimal str, 6 floats, propensity float].

    The uploader distribution is the scheme's u of the video's uploader (DebCM u_g). The propensity
    written is the music's training popularity share pop(m) / N_train: the exposure propensity an IPS
    baseline divides by.
    """
    split = ds.split(scheme)
    train_ids = split.loc[split["split"] == "train", "video_id"].sort_values().tolist()
    ugc = ds.ugc.set_index("video_id").loc[train_ids]
    video_index = pd.Series(np.arange(len(ds.video_ids)), index=ds.video_ids)
    music_index = pd.Series(np.arange(len(ds.music_ids)), index=ds.music_ids)
    music = music_index.loc[ugc["music_id"]].to_numpy()
    pop = np.bincount(music, minlength=len(ds.music_ids))
    propensity = pop[music] / len(music)
    dists = video_uploader_dist(ugc.reset_index()[["video_id", "uploader_id"]], train_ids,
                                ds.uploader_dists(scheme), ds.prior(scheme))
    rows = np.empty((len(train_ids), 5), dtype=object)
    for i, (vid, m, genre) in enumerate(zip(train_ids, music, ugc["genre"])):
        rows[i, 0], rows[i, 1], rows[i, 2] = int(video_index[vid]), int(m), str(GENRES.index(genre))
        rows[i, 3], rows[i, 4] = [float(x) for x in dists[i]], float(propensity[i])
    return rows


def negative_rows(ds: Dataset, key: str) -> np.ndarray:
    """100neg/*.npy: object rows [video int, positive music int, int64 array of negatives]."""
    es = ds.eval_sets[key]
    video_index = pd.Series(np.arange(len(ds.video_ids)), index=ds.video_ids)
    rows = np.empty((len(es.video_id), 3), dtype=object)
    for i, vid in enumerate(es.video_id):
        rows[i, 0], rows[i, 1] = int(video_index[vid]), int(es.positive[i])
        rows[i, 2] = es.negatives[i].astype(np.int64)
    return rows


def export_tt150k(ds: Dataset, out: str | Path, *, scheme: str, video_visual: np.ndarray, video_feature_ids,
                  music_audio: np.ndarray, music_smile: np.ndarray, music_feature_ids,
                  pgc_dir: str | Path | None = None) -> dict:
    """Write `scheme` of `ds` as a TT-150k release under `out`; PGC goes to `pgc_dir` (default out/pgc,
    where `pipeline.data.importers.import_tt150k` looks for it).

    video_visual: features of every video (UGC and PGC) in the order of `video_feature_ids`; the release
    has one row per UGC video (all of them, also those a scheme leaves out, so ints stay the sorted-id
    index). music_audio / music_smile: the music embedding and the openSMILE PCA features. PGC shares
    the music index space, so its vggish/opensmile files are the same matrices. The weights written are
    the dataset's lambda_v (already normalised per set). Returns a summary of counts.
    """
    out = Path(out)
    if f"{scheme}/test" not in ds.eval_sets:
        raise DataError(f"export: dataset has no scheme {scheme!r}; have {ds.schemes}")
    visual = _rows_of(video_visual, video_feature_ids, ds.video_ids, "video_visual")
    audio = _rows_of(music_audio, music_feature_ids, ds.music_ids, "music_audio")
    smile = _rows_of(music_smile, music_feature_ids, ds.music_ids, "music_smile")
    pgc = ds.pgc_pairs(scheme)  # pairs of music the scheme holds out would leak into its teacher
    pgc_visual = _rows_of(video_visual, video_feature_ids, pgc["video_id"].tolist(), "video_visual (PGC)") \
        if len(pgc) else None
    pgc_dir = Path(pgc_dir) if pgc_dir is not None else None
    summary = {"scheme": scheme, "videos": len(ds.video_ids), "music": len(ds.music_ids), "pgc": len(pgc)}
    with atomic_dir(out) as tmp:
        write_npy(visual, tmp / "visual_features_resnet_V.npy")
        write_npy(audio, tmp / "music_features.npy")
        write_npy(smile, tmp / "new_music_smile_features_norm.npy")
        train = train_rows(ds, scheme)
        _save_objects(train, tmp / "train.npy")
        summary["train"] = len(train)
        for set_name in ("val", "test"):
            key = f"{scheme}/{set_name}"
            _save_objects(negative_rows(ds, key), tmp / "100neg" / f"{set_name}.npy")
            write_npy(ds.eval_sets[key].weight.astype(np.float64), tmp / f"video_popularity_{set_name}.npy")
            summary[set_name] = len(ds.eval_sets[key].video_id)
        write_npy(ds.prior(scheme).astype(np.float64), tmp / "user_prior_mean.npy")
        if pgc_visual is not None and pgc_dir is None:
            _write_pgc(ds, pgc, pgc_visual, audio, smile, tmp / "pgc")
    if pgc_visual is not None and pgc_dir is not None:
        with atomic_dir(pgc_dir) as tmp:
            _write_pgc(ds, pgc, pgc_visual, audio, smile, tmp)
    log.info("exported scheme %s as a TT-150k release to %s: %s", scheme, out, summary)
    return summary


def _write_pgc(ds: Dataset, pgc: pd.DataFrame, visual: np.ndarray, audio: np.ndarray, smile: np.ndarray,
               folder: Path) -> None:
    """PGC folder: train.npy / val.npy int64 [video, music] pairs and the feature files the teacher reads."""
    music_index = pd.Series(np.arange(len(ds.music_ids)), index=ds.music_ids)
    pairs = np.stack([np.arange(len(pgc)), music_index.loc[pgc["music_id"]].to_numpy()], axis=1).astype(np.int64)
    for set_name in ("train", "val"):
        write_npy(pairs[(pgc["split"] == set_name).to_numpy()], folder / f"{set_name}.npy")
    write_npy(visual, folder / "mv_video_resnet_features.npy")
    write_npy(audio, folder / "vggish_features.npy")
    write_npy(smile, folder / "opensmile_features_norm.npy")
