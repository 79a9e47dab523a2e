"""Stage `extract_video`: visual (frames -> ImageNet CNN -> temporal mean) and caption features of every video."""
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import VIDEO_FEATURES, VIDEO_IDS_FILE, VIDEO_MASKS, read_raw
from pipeline.errors import DataError
from pipeline.features.backend import BackendParams
from pipeline.features.mediacheck import MediaParams
from pipeline.features.text import extract_text_features
from pipeline.features.video import FAILURE_COLUMNS, VideoConfig, resolve_precision, video_features_sharded
from pipeline.io import atomic_dir, write_ids, write_json, write_npy, write_parquet
from stages.common import group, run, setup

RAW, OUT = Path("data/raw"), Path("data/features/video")
log = logging.getLogger("stages.extract_video")


@dataclass(frozen=True)
class ExtractVideoParams(VideoConfig, BackendParams):
    def validate(self) -> None:
        super().validate()
        self.backend_config().validate("features_video")


def main() -> None:
    p = from_group(ExtractVideoParams, setup("features_video"), "features_video")
    media = from_group(MediaParams, group("media"), "media")
    videos, _, _ = read_raw(RAW)
    shipped = RAW / "features"
    with atomic_dir(OUT) as tmp:
        failures = pd.DataFrame(columns=list(FAILURE_COLUMNS), dtype=str)
        if (shipped / "video_visual.npy").exists():  # a feature-level source: pass its matrices through
            for name in [f"{n}.npy" for n in (*VIDEO_FEATURES, *VIDEO_MASKS)] + [VIDEO_IDS_FILE]:
                if (shipped / name).exists():
                    shutil.copyfile(shipped / name, tmp / name)
        elif len(no_media := videos.loc[videos["path"].isna(), "video_id"]):
            raise DataError(f"{RAW}/videos.parquet: video {no_media.iloc[0]!r} (and {len(no_media) - 1} more) has "
                            f"no media path and {shipped}/video_visual.npy is absent; expected one or the other")
        else:
            paths = {v: str(RAW / f) for v, f in zip(videos["video_id"], videos["path"])}
            cfg = VideoConfig(**{k: getattr(p, k) for k in VideoConfig.__dataclass_fields__})
            cfg = replace(cfg, precision=resolve_precision(cfg.precision, cfg.device))  # once, for every shard
            write_json({"precision": cfg.precision, "requested": p.precision}, tmp / "extraction.json")
            ids, visual, failures = video_features_sharded(paths, cfg, media.on_error, p.backend_config())
            captions = dict(zip(videos["video_id"], videos["text"]))
            _, text, mask = extract_text_features({v: captions[v] for v in ids})  # the same sorted ids
            for name, matrix in (("video_visual", visual), ("video_text", text), ("video_text_mask", mask)):
                write_npy(matrix, tmp / f"{name}.npy")
            write_ids(ids, tmp / VIDEO_IDS_FILE)
        write_parquet(failures, tmp / "failures.parquet")
    log.info("extract_video: %d videos, %d failures -> %s", len(videos) - len(failures), len(failures), OUT)


if __name__ == "__main__":  # decoding threads and torch workers: keep imports side-effect free
    run(main)
