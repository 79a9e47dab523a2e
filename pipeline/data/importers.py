"""Importers of the `ingest` stage: a simulated world, a TT-150k release, or a folder of real media + CSV.

Each writes the canonical raw layout (pipeline.data.schema) as a whole: it is built in a temporary sibling
and swapped in only after every check passed, so bad input leaves no partial output and no broken `out`.
"""
from __future__ import annotations

import inspect
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data.importcommon import (
    MUSIC_EXTS,
    VIDEO_EXTS,
    WORLD_DIRS,
    WORLD_OPTIONAL,
    WORLD_TABLES,
    _check_out,
    _link,
    _link_tree,
    _str,
    _write_tables,
    check_id,
    drop_failed,
    read_csv_table,
    require_training_rows,
)
from pipeline.data.schema import (
    KINDS,
    MUSIC_FEATURES,
    MUSIC_IDS_FILE,
    VIDEO_FEATURES,
    VIDEO_IDS_FILE,
    VIDEO_MASKS,
    validate_matrix,
    validate_tables,
)
from pipeline.data.tt150k import _write_gathered, import_tt150k  # noqa: F401
from pipeline.errors import DataError, ParamsError
from pipeline.features.mediacheck import check_on_error, media_paths, probe_media
from pipeline.io import atomic_dir, read_ids, write_json, write_parquet

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ world

def _check_media_paths(src: Path, df: pd.DataFrame, id_col: str, where: Path) -> int:
    n = 0
    for i, (ident, rel) in enumerate(zip(df[id_col], df["path"])):
        if rel is None or pd.isna(rel):
            continue
        parts = Path(rel).parts
        if Path(rel).is_absolute() or not parts or parts[0] != "media" or ".." in parts:
            raise DataError(f"{where} row {i} ({id_col} {ident!r}): path {rel!r} must be relative and under media/")
        if not (src / rel).is_file():
            raise DataError(f"{where} row {i} ({id_col} {ident!r}): media file {src / rel} does not exist")
        n += 1
    return n


def _check_id_list(path: Path, expected: list[str]) -> int:
    if not path.is_file():
        raise DataError(f"{path}: missing; a feature matrix needs its row-order id list")
    ids, expected = read_ids(path), sorted(expected)
    for i, (got, want) in enumerate(zip(ids, expected)):
        if got != want:
            raise DataError(f"{path} line {i}: id {got!r}, expected {want!r} (the sorted ids of the table)")
    if len(ids) != len(expected):
        raise DataError(f"{path}: {len(ids)} ids, expected {len(expected)} (one per row of the table)")
    return len(ids)


def _check_features(fdir: Path, video_ids: list[str], music_ids: list[str]) -> list[str]:
    """Every matrix: float32, one finite row per id of its sorted id list; masks: uint8 0/1 per video."""
    names = sorted(p.stem for p in fdir.glob("*.npy"))
    for group, ids_file, ids in ((VIDEO_FEATURES + VIDEO_MASKS, VIDEO_IDS_FILE, video_ids),
                                 (MUSIC_FEATURES, MUSIC_IDS_FILE, music_ids)):
        present = [n for n in names if n in group]
        if not present:
            continue
        n_rows = _check_id_list(fdir / ids_file, ids)
        for name in present:
            path = fdir / f"{name}.npy"
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if name in VIDEO_MASKS:
                if arr.shape != (n_rows,) or arr.dtype != np.uint8 or not np.isin(arr, (0, 1)).all():
                    raise DataError(f"{path}: shape {arr.shape} dtype {arr.dtype}; expected ({n_rows},) uint8 of 0/1")
            else:
                validate_matrix(arr, n_rows, path)
    unknown = [n for n in names if n not in VIDEO_FEATURES + VIDEO_MASKS + MUSIC_FEATURES]
    if unknown:
        log.warning("%s: passing through matrices with non-canonical names %s", fdir, unknown)
    return names


def import_world(src: Path, out: Path, on_error: str = "fail") -> dict:
    """Import a world directory: copy its (already canonical) tables, hard-link media, features and truth.
    `on_error` (media.on_error): what a media file failing the header probe does, stop or leave its rows out."""
    src, out = Path(src), Path(out)
    _check_out(src, out)
    tables = {}
    for name in WORLD_TABLES:
        path = src / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: missing; expected the world stage's {name} table")
        tables[name] = pd.read_parquet(path)
    validate_tables(tables["videos"], tables["music"], tables["pairs"], str(src))
    n_media = _check_media_paths(src, tables["videos"], "video_id", src / "videos.parquet")
    n_media += _check_media_paths(src, tables["music"], "music_id", src / "music.parquet")
    failed = probe_media(media_paths(tables["videos"], "video_id", src), media_paths(tables["music"], "music_id", src),
                         str(src), on_error)
    if failed:
        tables = drop_failed(tables, failed, str(src))
    require_training_rows(tables["pairs"], src / "pairs.parquet")
    features = []
    if (src / "features").is_dir():
        features = _check_features(src / "features", list(tables["videos"]["video_id"]),
                                   list(tables["music"]["music_id"]))
    with atomic_dir(out) as tmp:
        copied = [n for n in WORLD_TABLES + WORLD_OPTIONAL if (src / f"{n}.parquet").is_file()]
        for name in copied:
            if failed and name in tables:  # rows of skipped media left out; otherwise the bytes as written
                write_parquet(tables[name], tmp / f"{name}.parquet")
            else:
                shutil.copyfile(src / f"{name}.parquet", tmp / f"{name}.parquet")
        linked = {d: _link_tree(src / d, tmp / d) for d in WORLD_DIRS if (src / d).is_dir()}
        kind = tables["videos"]["kind"]
        summary = {"source": "world", "src": str(src), "tables": copied, "features": features,
                   "counts": {"videos": len(kind), "ugc": int((kind == "ugc").sum()), "pgc": int((kind == "pgc").sum()),
                              "music": len(tables["music"]), "pairs": len(tables["pairs"]), "media_files": n_media,
                              **{f"{d}_files": n for d, n in linked.items()}}}
        if failed:
            summary["media_skipped"] = [{"kind": k, "id": i, "reason": r} for k, i, r in failed]
        write_json(summary, tmp / "source.json")
    log.info("imported world %s -> %s: %s", src, out, summary["counts"])
    return summary


# ----------------------------------------------------------------------------------------------- folder

def _media_index(folder: Path, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    """Media files of a folder by id (file name without extension, stripped of surrounding spaces as the CSV's
    ids are); hidden files are skipped."""
    index: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts:
                index.setdefault(p.stem.strip(), []).append(p)
    return index


def _one_file(index: dict[str, list[Path]], ident: str, folder: Path, exts, where: str) -> Path:
    files = index.get(ident, [])
    if not files:
        raise DataError(f"{where}: no media file {folder}/{ident}.<ext>; expected one of extensions {list(exts)}")
    if len(files) > 1:
        raise DataError(f"{where}: id {ident!r} is ambiguous, several files {[str(f) for f in files]}; expected one")
    return files[0]


def import_folder(src: Path, out: Path, csv: str = "pairs.csv", on_error: str = "fail") -> dict:
    """Import real media: `<csv>` pairs each video with its uploader and music; files are found by id.
    `on_error` (media.on_error): a file failing the header probe stops the import, or its rows are left out.

    One function on purpose: every check must pass before anything is written (the temporary folder replaces
    data/raw only at its end).
    """
    src, out = Path(src), Path(out)
    _check_out(src, out)
    table = src / csv
    if not table.is_file():
        raise DataError(f"{table}: missing; expected a CSV with columns video_id, uploader_id, music_id[, text, kind]")
    df = read_csv_table(table)
    missing = [c for c in ("video_id", "uploader_id", "music_id") if c not in df.columns]
    if missing:
        raise DataError(f"{table}: missing column(s) {missing}; expected video_id, uploader_id, music_id[, text, kind]")
    df = df.apply(lambda col: col.str.strip())
    df["kind"] = df["kind"].replace("", "ugc") if "kind" in df.columns else "ugc"
    require_training_rows(df, table)
    text = df["text"] if "text" in df.columns else pd.Series([""] * len(df))
    first_row: dict[str, int] = {}
    vdir, mdir = src / "videos", src / "music"
    v_index, m_index = _media_index(vdir, VIDEO_EXTS), _media_index(mdir, MUSIC_EXTS)
    video_file, music_file = {}, {}
    for i, r in enumerate(df.itertuples(index=False)):
        where = f"{table} row {i} (video_id {r.video_id!r})"
        if r.kind not in KINDS:
            raise DataError(f"{where}: kind {r.kind!r} not in {KINDS}")
        for col in ("video_id", "music_id") + (("uploader_id",) if r.kind == "ugc" else ()):
            if not getattr(r, col):
                raise DataError(f"{where}: empty {col}; every {r.kind} row needs one")
        for col in ("video_id", "music_id", "uploader_id"):
            check_id(getattr(r, col), f"{where}: {col}")
        if r.video_id in first_row:
            raise DataError(f"{where}: duplicate video_id, also in row {first_row[r.video_id]}; "
                            "expected one row per video")
        first_row[r.video_id] = i
        video_file[r.video_id] = _one_file(v_index, r.video_id, vdir, VIDEO_EXTS, where)
        music_file[r.music_id] = _one_file(m_index, r.music_id, mdir, MUSIC_EXTS,
                                           f"{where}, music_id {r.music_id!r}")
    for ident in m_index:  # music never used is still part of the pool
        if ident not in music_file:
            music_file[ident] = _one_file(m_index, ident, mdir, MUSIC_EXTS, f"{mdir} (music never used in {csv})")
            check_id(ident, f"{music_file[ident]} (music never used in {csv}): music_id")
    failed = probe_media(video_file, music_file, str(src), on_error)
    if failed:
        df = drop_failed({"pairs": df}, failed, str(src))["pairs"]
        for kind, ident, _ in failed:
            (video_file if kind == "video" else music_file).pop(ident, None)
        video_file = {v: f for v, f in video_file.items() if v in set(df["video_id"])}
        require_training_rows(df, table)
        text = text[df.index]
    unused_videos = sorted(set(v_index) - set(video_file))
    if unused_videos:
        log.warning("%s: %d video file(s) not in %s are skipped, e.g. %s", vdir, len(unused_videos), csv,
                    unused_videos[:3])

    v_path = {v: f"media/video/{v}{f.suffix}" for v, f in video_file.items()}
    m_path = {m: f"media/music/{m}{f.suffix}" for m, f in music_file.items()}
    ugc = df["kind"] == "ugc"
    counts = df.loc[ugc, "music_id"].value_counts()
    m_ids = sorted(music_file)
    videos_df = pd.DataFrame({"video_id": _str(df["video_id"]),
                              "uploader_id": _str(u if u else None for u in df["uploader_id"]),
                              "kind": _str(df["kind"]), "path": _str(v_path[v] for v in df["video_id"]),
                              "text": _str(t if t else None for t in text), "popularity": np.full(len(df), np.nan)})
    music_df = pd.DataFrame({"music_id": _str(m_ids), "path": _str(m_path[m] for m in m_ids),
                             "popularity": np.array([int(counts.get(m, 0)) for m in m_ids], dtype=np.int64),
                             "genre": _str([None] * len(m_ids))})
    pairs_df = pd.DataFrame({"video_id": _str(df["video_id"]), "music_id": _str(df["music_id"]),
                             "kind": _str(df["kind"])})
    summary = {"source": "folder", "src": str(src), "csv": csv,
               "counts": {"videos": len(df), "ugc": int(ugc.sum()), "pgc": int((~ugc).sum()), "music": len(m_ids),
                          "music_unused": len(set(m_ids) - set(df["music_id"])),
                          "uploaders": int(df.loc[df["uploader_id"] != "", "uploader_id"].nunique()),
                          "skipped_video_files": len(unused_videos)}}
    if failed:
        summary["media_skipped"] = [{"kind": k, "id": i, "reason": r} for k, i, r in failed]
    with atomic_dir(out) as tmp:
        _write_tables(tmp, videos_df, music_df, pairs_df, str(src))
        files = sorted(video_file.items())
        for ident, f in tqdm(files, desc="link videos", disable=len(files) < 2000, leave=False):
            _link(f, tmp / v_path[ident])
        for ident, f in sorted(music_file.items()):
            _link(f, tmp / m_path[ident])
        write_json(summary, tmp / "source.json")
    log.info("imported folder %s -> %s: %s", src, out, summary["counts"])
    return summary


IMPORTERS = {"world": import_world, "tt150k": import_tt150k, "folder": import_folder}


def ingest(source: str, src: Path, out: Path, on_error: str = "fail", **kw) -> dict:
    """Dispatch on the `ingest.source` param; extra keywords are the chosen importer's options. `on_error`
    (media.on_error) reaches the importers of sources with media; a TT-150k release has none."""
    if source not in IMPORTERS:
        raise ParamsError(f"ingest.source {source!r}: expected one of {sorted(IMPORTERS)}")
    fn = IMPORTERS[source]
    check_on_error(on_error)
    if "on_error" in inspect.signature(fn).parameters:
        kw["on_error"] = on_error
    allowed = set(inspect.signature(fn).parameters) - {"src", "out"}
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ParamsError(f"ingest: option(s) {unknown} do not apply to source {source!r}; known: {sorted(allowed)}")
    return fn(Path(src), Path(out), **kw)
