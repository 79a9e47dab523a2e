"""Stage `extract_video`: visual (frames -> ImageNet CNN -> temporal mean) and caption features of every video."""
import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import VIDEO_FEATURES, VIDEO_IDS_FILE, VIDEO_MASKS, read_raw
from pipeline.errors import DataError, ParamsError
from pipeline.features.text import extract_text_features
from pipeline.features.backend import BackendParams, video_features_sharded
from pipeline.features.video import FAILURE_COLUMNS, ON_ERROR, VideoConfig
from pipeline.io import atomic_dir, write_ids, write_npy, write_parquet
from stages.common import setup

RAW = Path("data/raw")
OUT = Path("data/features/video")
log = logging.getLogger("stages.extract_video")


@dataclass(frozen=True)
class ExtractVideoParams(VideoConfig, BackendParams):
    on_error: str = "fail"  # fail: name every bad file and stop; skip: leave bad videos out (failures.parquet)

    def validate(self) -> None:
        super().validate()
        self.backend_config().validate("features_video")
        if self.on_error not in ON_ERROR:
            raise ParamsError(f"features_video.on_error: {self.on_error!r}, expected one of {ON_ERROR}")


def main() -> None:
    p = from_group(ExtractVideoParams, setup("features_video"), "features_video")
    videos, _, _ = read_raw(RAW)
    shipped = RAW / "features"
    with atomic_dir(OUT) as tmp:
        if (shipped / "video_visual.npy").exists():  # a feature-level source: pass its matrices through
            for name in (*VIDEO_FEATURES, *VIDEO_MASKS):
                if (shipped / f"{name}.npy").exists():
                    shutil.copyfile(shipped / f"{name}.npy", tmp / f"{name}.npy")
            shutil.copyfile(shipped / VIDEO_IDS_FILE, tmp / VIDEO_IDS_FILE)
            failures = pd.DataFrame(columns=list(FAILURE_COLUMNS), dtype=str)
        else:
            no_media = videos.loc[videos["path"].isna(), "video_id"]
            if len(no_media):
                raise DataError(f"{RAW}/videos.parquet: video {no_media.iloc[0]!r} (and {len(no_media) - 1} more) has "
                                f"no media path and {shipped}/video_visual.npy is absent; expected one or the other")
            paths = {v: str(RAW / f) for v, f in zip(videos["video_id"], videos["path"])}
            cfg = VideoConfig(**{f.name: getattr(p, f.name) for f in dataclasses.fields(VideoConfig)})
            ids, visual, failures = video_features_sharded(paths, cfg, p.on_error, p.backend_config())
            captions = dict(zip(videos["video_id"], videos["text"]))
            text_ids, text, mask = extract_text_features({v: captions[v] for v in ids})
            assert text_ids == ids  # both are the sorted ids of the videos that decoded
            write_npy(visual, tmp / "video_visual.npy")
            write_npy(text, tmp / "video_text.npy")
            write_npy(mask, tmp / "video_text_mask.npy")
            write_ids(ids, tmp / VIDEO_IDS_FILE)
        write_parquet(failures, tmp / "failures.parquet")
    log.info("extract_video: %d videos, %d failures -> %s", len(videos) - len(failures), len(failures), OUT)


if __name__ == "__main__":  # decoding threads and torch workers: keep imports side-effect free
    main()
