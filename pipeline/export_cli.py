"""`python -m pipeline export-tt150k OUT`: write one split scheme of the built dataset (data/dataset) with the
extracted features (data/features) as a TT-150k release (docs/architecture.md section 8), so the public
reference code, or this pipeline's own `ingest` (`ingest.source: tt150k`), can run on our splits."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.data.schema import MUSIC_IDS_FILE, VIDEO_IDS_FILE, validate_matrix
from pipeline.errors import DataError, PipelineError
from pipeline.io import read_ids


def _matrix(folder: Path, name: str, ids_file: str) -> tuple[np.ndarray, list[str]]:
    """A feature matrix of an extract stage's folder and the sorted ids of its rows."""
    path, ids_path = folder / name, folder / ids_file
    for p in (path, ids_path):
        if not p.is_file():
            raise DataError(f"{p}: missing; run the extract stages first (dvc repro extract_video extract_music "
                            "extract_smile) or pass --features")
    ids = read_ids(ids_path)
    matrix = np.load(path)
    validate_matrix(matrix, len(ids), path)
    return matrix, ids


def export(out: str | Path, scheme: str, dataset: str | Path, features: str | Path,
           pgc: str | Path | None = None) -> dict:
    """Export `scheme` of the dataset under `dataset` with the feature folders under `features` to `out`."""
    from pipeline.sampling.dataset import load_dataset
    from pipeline.sampling.export import export_tt150k

    ds, features = load_dataset(dataset), Path(features)
    visual, video_ids = _matrix(features / "video", "video_visual.npy", VIDEO_IDS_FILE)
    audio, music_ids = _matrix(features / "music", "music_audio.npy", MUSIC_IDS_FILE)
    smile, smile_ids = _matrix(features / "smile", "music_smile.npy", MUSIC_IDS_FILE)
    if smile_ids != music_ids:  # one id list for both music matrices: the dataset's music, in both
        missing = sorted(set(ds.music_ids) - (set(smile_ids) & set(music_ids)))[:5]
        if missing:
            raise DataError(f"{features}: music {missing} of the dataset lack audio or openSMILE features")
        audio_row, smile_row = {m: i for i, m in enumerate(music_ids)}, {m: i for i, m in enumerate(smile_ids)}
        smile = smile[[smile_row[m] for m in ds.music_ids]]
        audio, music_ids = audio[[audio_row[m] for m in ds.music_ids]], list(ds.music_ids)
    return export_tt150k(ds, out, scheme=scheme, video_visual=visual, video_feature_ids=video_ids,
                         music_audio=audio, music_smile=smile, music_feature_ids=music_ids, pgc_dir=pgc)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline export-tt150k", description=__doc__)
    ap.add_argument("out", help="folder to write the release to (replaced atomically)")
    ap.add_argument("--scheme", default="weak", help="split scheme of the dataset to export (default: weak)")
    ap.add_argument("--dataset", default="data/dataset", help="the split stage's output (default: data/dataset)")
    ap.add_argument("--features", default="data/features", help="the extract stages' folders (default: data/features)")
    ap.add_argument("--pgc", default=None, help="folder for the PGC part (default: OUT/pgc, where ingest looks)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = export(args.out, args.scheme, args.dataset, args.features, args.pgc)
    except PipelineError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
