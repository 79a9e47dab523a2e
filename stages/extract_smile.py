"""Stage `extract_smile`: openSMILE ComParE_2016 functionals -> z-norm -> PCA 128 (`music_smile`), fitted on
training-side music only (pipeline.features.smile.fit_music says which)."""
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import MUSIC_IDS_FILE, read_raw
from pipeline.errors import DataError
from pipeline.features.backend import BackendParams
from pipeline.features.common import failure_table
from pipeline.features.mediacheck import MediaParams
from pipeline.features.smile import (SmileConfig, fit_music, in_fit_subset, project_on_fit_set,  # noqa: F401
                                     smile_functionals_sharded)
from pipeline.io import atomic_dir, write_ids, write_npy, write_parquet
from stages.common import group, run, setup

RAW = Path("data/raw")
OUT = Path("data/features/smile")
log = logging.getLogger("stages.extract_smile")


@dataclass(frozen=True)
class ExtractSmileParams(SmileConfig, BackendParams):
    def validate(self) -> None:
        super().validate()
        self.backend_config().validate("features_smile")


def main() -> None:
    p = from_group(ExtractSmileParams, setup("features_smile"), "features_smile")
    media = from_group(MediaParams, group("media"), "media")
    _, music, pairs = read_raw(RAW)
    shipped, split = RAW / "features", RAW / "split.parquet"
    with atomic_dir(OUT) as tmp:
        failures = failure_table([])
        if (shipped / "music_smile.npy").exists():  # a feature-level source: already normalised by the source
            for name in ("music_smile.npy", MUSIC_IDS_FILE):
                shutil.copyfile(shipped / name, tmp / name)
        elif music["path"].isna().any():
            raise DataError(f"{RAW}/music.parquet: music {music.loc[music['path'].isna(), 'music_id'].iloc[0]!r}"
                            f" has no media path and {shipped}/music_smile.npy is absent")
        else:
            paths = {m: str(RAW / f) for m, f in zip(music["music_id"], music["path"])}
            ids, functionals, failures = smile_functionals_sharded(paths, media.on_error, p.workers, p.backend_config())
            fit = fit_music(pairs, pd.read_parquet(split) if split.exists() else None, p.seed, p.fit_fraction)
            matrix, fit_ids, pca = project_on_fit_set(ids, functionals, fit, p.n_components, p.whiten)
            write_npy(matrix, tmp / "music_smile.npy")
            write_ids(ids, tmp / MUSIC_IDS_FILE)
            write_ids(fit_ids, tmp / "fit_ids.txt")
            pca.save(tmp / "smile_pca.npz")
        write_parquet(failures, tmp / "failures.parquet")
    log.info("extract_smile: %d clips, %d failures -> %s", len(music) - len(failures), len(failures), OUT)


if __name__ == "__main__":  # smile_functionals may spawn worker processes that re-import this module
    run(main)
