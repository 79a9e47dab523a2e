"""Stage `probe`: linear probes of the extracted features against the simulated world's latents
(metrics/features.json). On a source without truth (a TT-150k release, your own media) it records why it
was skipped instead."""
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import MUSIC_IDS_FILE, VIDEO_IDS_FILE
from pipeline.features.linear_probe import ProbeConfig, probe_features
from pipeline.io import read_ids, write_json
from stages.common import run, setup

FEATURES, TRUTH, OUT = Path("data/features"), Path("data/raw/truth"), Path("metrics/features.json")
log = logging.getLogger("stages.probe")


def main() -> None:
    cfg = from_group(ProbeConfig, setup("probe"), "probe")
    if not (TRUTH / "music_latents.parquet").exists():
        write_json({"skipped": f"{TRUTH}: no world latents (not a simulated world)"}, OUT)
        log.info("probe skipped: no truth")
        return
    matrices = {}
    for folder, name, ids_file in (("video", "video_visual", VIDEO_IDS_FILE), ("video", "video_text", VIDEO_IDS_FILE),
                                   ("music", "music_audio", MUSIC_IDS_FILE), ("smile", "music_smile", MUSIC_IDS_FILE)):
        path = FEATURES / folder / f"{name}.npy"
        if name == "video_text" or not path.exists():  # captions are not generated from the latents
            continue
        matrices[name] = (np.load(path), read_ids(FEATURES / folder / ids_file))
    scores = probe_features(matrices, pd.read_parquet(TRUTH / "music_latents.parquet"),
                            pd.read_parquet(TRUTH / "video_latents.parquet"), cfg)
    write_json(scores, OUT)


if __name__ == "__main__":
    run(main)
