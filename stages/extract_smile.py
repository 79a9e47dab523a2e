"""Stage `extract_smile`: openSMILE ComParE_2016 functionals -> z-norm -> PCA 128 (`music_smile`).

The z-norm and PCA must not see test music, but the split is built later (from these features). Fit set:
the music of the source's own UGC training pairs when it ships a split; otherwise the music used by UGC
pairs whose id falls in a deterministic `fit_fraction` subset by hash of (seed, id). The strong split is
drawn later and independently, so some of its test music may be in that subset: what leaks is only
unsupervised per-functional statistics, never a pairing; fit_ids.txt lists the fit set for audit.
"""
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import MUSIC_IDS_FILE, read_raw
from pipeline.errors import DataError, ParamsError
from pipeline.features.backend import BackendParams, smile_functionals_sharded
from pipeline.features.music import FAILURE_COLUMNS, ON_ERROR
from pipeline.features.smile import PCA_DIM, SmilePCA
from pipeline.io import atomic_dir, write_ids, write_npy, write_parquet
from stages.common import setup

RAW = Path("data/raw")
OUT = Path("data/features/smile")
log = logging.getLogger("stages.extract_smile")


@dataclass(frozen=True)
class ExtractSmileParams(BackendParams):
    n_components: int = PCA_DIM
    whiten: bool = False
    fit_fraction: float = 0.8  # share of music ids (by hash) whose functionals fit the z-norm + PCA
    seed: int = 0
    workers: int = 1
    on_error: str = "fail"  # fail | skip

    def validate(self) -> None:
        self.backend_config().validate("features_smile")
        if self.on_error not in ON_ERROR:
            raise ParamsError(f"features_smile.on_error: {self.on_error!r}, expected one of {ON_ERROR}")
        if not 0 < self.fit_fraction <= 1:
            raise ParamsError(f"features_smile.fit_fraction: {self.fit_fraction!r}, expected in (0, 1]")


def in_fit_subset(music_id: str, seed: int, fraction: float) -> bool:
    """A stable coin flip per id: the same ids are chosen on every machine and run."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{music_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def fit_music(pairs: pd.DataFrame, p: ExtractSmileParams) -> set[str]:
    ugc = pairs[pairs["kind"] == "ugc"]
    split_file = RAW / "split.parquet"
    if split_file.exists():  # the source's own training pairs
        split = pd.read_parquet(split_file)
        return set(ugc.loc[ugc["video_id"].isin(split.loc[split["split"] == "train", "video_id"]), "music_id"])
    return {m for m in ugc["music_id"].unique() if in_fit_subset(str(m), p.seed, p.fit_fraction)}


def main() -> None:
    p = from_group(ExtractSmileParams, setup("features_smile"), "features_smile")
    _, music, pairs = read_raw(RAW)
    shipped = RAW / "features"
    with atomic_dir(OUT) as tmp:
        if (shipped / "music_smile.npy").exists():  # a feature-level source: already normalised by the source
            shutil.copyfile(shipped / "music_smile.npy", tmp / "music_smile.npy")
            shutil.copyfile(shipped / MUSIC_IDS_FILE, tmp / MUSIC_IDS_FILE)
            failures = pd.DataFrame(columns=list(FAILURE_COLUMNS), dtype=str)
        else:
            if music["path"].isna().any():
                raise DataError(f"{RAW}/music.parquet: music {music.loc[music['path'].isna(), 'music_id'].iloc[0]!r}"
                                f" has no media path and {shipped}/music_smile.npy is absent")
            paths = {m: str(RAW / f) for m, f in zip(music["music_id"], music["path"])}
            ids, functionals, failures = smile_functionals_sharded(paths, p.on_error, p.workers, p.backend_config())
            fit = fit_music(pairs, p)
            rows = [i for i, m in enumerate(ids) if m in fit]
            if len(rows) < 2:
                raise DataError(f"{RAW}: {len(rows)} music clip(s) in the openSMILE fit set; expected >= 2 "
                                f"(raise features_smile.fit_fraction)")
            pca = SmilePCA(n_components=p.n_components, whiten=p.whiten).fit(functionals[rows])
            write_npy(pca.transform(functionals), tmp / "music_smile.npy")
            write_ids(ids, tmp / MUSIC_IDS_FILE)
            write_ids([ids[i] for i in rows], tmp / "fit_ids.txt")
            pca.save(tmp / "smile_pca.npz")
        write_parquet(failures, tmp / "failures.parquet")
    log.info("extract_smile: %d clips, %d failures -> %s", len(music) - len(failures), len(failures), OUT)


if __name__ == "__main__":  # smile_functionals may spawn worker processes that re-import this module
    main()
