"""Stage `extract_music`: a pretrained TensorFlow music embedding (musicnn MSD_vgg pool5, or local VGGish) per clip.

TensorFlow loads here; openSMILE runs in its own stage (extract_smile) because it crashes beside TensorFlow.
"""
import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import MUSIC_IDS_FILE, read_raw
from pipeline.errors import DataError
from pipeline.features.backend import BackendParams
from pipeline.features.mediacheck import MediaParams
from pipeline.features.music import FAILURE_COLUMNS, MusicEmbeddingConfig, music_embedding_sharded
from pipeline.io import atomic_dir, write_ids, write_npy, write_parquet
from stages.common import group, run, setup

RAW = Path("data/raw")
OUT = Path("data/features/music")
log = logging.getLogger("stages.extract_music")


@dataclass(frozen=True)
class ExtractMusicParams(MusicEmbeddingConfig, BackendParams):
    def validate(self) -> None:
        super().validate()
        self.backend_config().validate("features_music")


def main() -> None:
    p = from_group(ExtractMusicParams, setup("features_music"), "features_music")
    media = from_group(MediaParams, group("media"), "media")
    _, music, _ = read_raw(RAW)
    shipped = RAW / "features"
    with atomic_dir(OUT) as tmp:
        if (shipped / "music_audio.npy").exists():  # a feature-level source: pass its matrix through
            shutil.copyfile(shipped / "music_audio.npy", tmp / "music_audio.npy")
            shutil.copyfile(shipped / MUSIC_IDS_FILE, tmp / MUSIC_IDS_FILE)
            failures = pd.DataFrame(columns=list(FAILURE_COLUMNS), dtype=str)
        else:
            no_media = music.loc[music["path"].isna(), "music_id"]
            if len(no_media):
                raise DataError(f"{RAW}/music.parquet: music {no_media.iloc[0]!r} (and {len(no_media) - 1} more) has "
                                f"no media path and {shipped}/music_audio.npy is absent; expected one or the other")
            cfg = MusicEmbeddingConfig(**{f.name: getattr(p, f.name) for f in dataclasses.fields(MusicEmbeddingConfig)})
            paths = {m: str(RAW / f) for m, f in zip(music["music_id"], music["path"])}
            ids, audio, failures = music_embedding_sharded(paths, cfg, media.on_error, p.backend_config())
            write_npy(audio, tmp / "music_audio.npy")
            write_ids(ids, tmp / MUSIC_IDS_FILE)
        write_parquet(failures, tmp / "failures.parquet")
    log.info("extract_music: %d clips, %d failures -> %s", len(music) - len(failures), len(failures), OUT)


if __name__ == "__main__":
    run(main)
