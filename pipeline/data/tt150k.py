"""Importer of a TT-150k release (docs/architecture.md section 8: its release format and the forms the public
code reads).

Every file is read through pipeline.data.safenpy (object arrays are unpickled without running anything);
feature widths come from the data; the release's genre codes are named by `ingest.genre_names`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data.importcommon import (
    PGC_FILES,
    TT_FILES,
    TT_UPLOADER_FILE,
    _check_out,
    _id_maker,
    _str,
    _write_tables,
    genre_code_map,
    genre_counts_check,
    to_genre_order,
)
from pipeline.data.safenpy import load_array
from pipeline.data.ttrows import (
    file_uploaders,
    load_distribution,
    parse_neg,
    parse_pgc_pairs,
    parse_train,
)
from pipeline.data.schema import (
    GENRES,
    MUSIC_IDS_FILE,
    PAIR_COLUMNS,
    VIDEO_IDS_FILE,
    validate_matrix,
)
from pipeline.errors import DataError
from pipeline.io import atomic_dir, write_ids, write_json

log = logging.getLogger(__name__)

ROW_KEYS = ("videos", "music", "pairs", "split", "negatives", "uploaders")  # rows each part contributes
MATRICES = ("video_visual", "music_audio", "music_smile")  # canonical names of TT_FILES[:3] / PGC_FILES[2:]

# ---------------------------------------------------------------------------------------------- reading

def _require_files(root: Path, names, what: str = "a TT-150k release") -> None:
    for name in names:
        if not (root / name).is_file():
            raise DataError(f"{root / name}: missing; {what} holds {list(names)}")


def _load_matrix(path: Path) -> np.ndarray:
    arr = load_array(path, mmap=True)
    validate_matrix(arr, len(arr) if arr.ndim else 0, path)
    return arr


def _same_width(a_path: Path, a: np.ndarray, b_path: Path, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise DataError(f"{b_path}: {b.shape[1]} columns but {a_path} has {a.shape[1]}; UGC and PGC features "
                        "of one kind must come from the same extractor")


def _uploaders(train: list[tuple], used: list[int], from_file: np.ndarray | None, codes, path: Path):
    """(uploader id of each video that has one, [(uploader id, genre distribution in GENRES order)], info).

    Without TT_UPLOADER_FILE an uploader is a distinct genre-distribution vector of the train rows (the
    public release has no uploader ids), so val/test videos have none. An uploader's distribution is the
    mean over its train rows as released, mapped to GENRES order; uploaders with no train row get none.
    """
    if from_file is None:
        vectors = sorted({r[3] for r in train})
        uid = _id_maker("u", len(vectors))
        id_of = {d: uid(k) for k, d in enumerate(vectors)}
        uploader = {r[0]: id_of[r[3]] for r in train}
        info = {"from": f"distinct uploader genre distributions of {path.name} rows (no {TT_UPLOADER_FILE})",
                "uploaders": len(vectors), "pseudo_uploaders": True, "val_test_videos_with_uploader": 0}
    else:
        uid = _id_maker("u", int(from_file.max(initial=0)) + 1)
        uploader = {v: uid(from_file[v]) for v in used if from_file[v] >= 0}
        n_train = sum(r[0] in uploader for r in train)
        info = {"from": TT_UPLOADER_FILE, "uploaders": len(set(uploader.values())), "pseudo_uploaders": False,
                "val_test_videos_with_uploader": len(uploader) - n_train,
                "videos_without_uploader": len(used) - len(uploader)}
    vectors_of: dict[str, set] = {}
    for r in train:
        if r[0] in uploader:
            vectors_of.setdefault(uploader[r[0]], set()).add(r[3])
    mixed = sorted(u for u, vs in vectors_of.items() if len(vs) > 1)
    if mixed:
        info["uploaders_with_differing_train_distributions"] = len(mixed)
        log.warning("%s: %d uploader(s) of %s carry different genre distributions on their train rows (e.g. %s); "
                    "using their mean", path, len(mixed), TT_UPLOADER_FILE, mixed[0])
    dists = []
    for u, vs in sorted(vectors_of.items()):
        mapped = to_genre_order(np.mean(sorted(vs), axis=0), codes, f"{path} (uploader {u})")
        if mapped is not None:
            dists.append((u, mapped.tolist()))
    return uploader, dists, info


def _write_gathered(blocks: list[tuple[list[str], np.ndarray, np.ndarray]], path: Path,
                    chunk: int = 16384) -> list[str]:
    """Write rows of several matrices (ids, matrix, row indices) as one float32 .npy in sorted-id order.

    Streams through a memory map chunk by chunk: a TT-150k visual matrix is 1.2 GB.
    """
    ids = [i for b in blocks for i in b[0]]
    order = np.argsort(np.array(ids), kind="stable")
    where = np.empty(len(ids), dtype=np.int64)
    where[order] = np.arange(len(ids))
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(ids), blocks[0][1].shape[1]))
    start = 0
    for _, mat, rows in blocks:
        for s in tqdm(range(0, len(rows), chunk), desc=path.name, disable=len(rows) < 8 * chunk, leave=False):
            stop = min(s + chunk, len(rows))
            out[where[start + s : start + stop]] = mat[rows[s:stop]]
        start += len(rows)
    out.flush()
    validate_matrix(out, len(ids), path)
    del out
    return [ids[j] for j in order]


def _split_of(named_rows: list[tuple[Path, list[tuple]]], what: str) -> list[int]:
    """Each video in exactly one row of one split file; returns the videos used, sorted."""
    seen: dict[int, str] = {}
    for path, rows in named_rows:
        for i, r in enumerate(rows):
            if r[0] in seen:
                raise DataError(f"{path} row {i}: {what} {r[0]} already in {seen[r[0]]}; "
                                "expected one music per video and one of the splits per video")
            seen[r[0]] = f"{path.name} row {i}"
    return sorted(seen)


def _feature_keys(audio: np.ndarray, smile: np.ndarray) -> list[bytes | None]:
    """Bytes of each music row's features; None for an all-zero row (a placeholder, not a clip)."""
    return [None if not a.any() else a.tobytes() + s.tobytes() for a, s in zip(audio, smile)]


def _genres_by_features(audio, smile, ugc_audio, ugc_smile, ugc_genre: dict[int, str]) -> dict[int, str]:
    """PGC music whose features equal those of UGC music with one agreed genre: the same clip, same genre."""
    genres_of: dict[bytes, set] = {}
    for m, key in enumerate(_feature_keys(ugc_audio, ugc_smile)):
        if key is not None:
            genres_of.setdefault(key, set()).add(ugc_genre.get(m))
    out = {}
    for m, key in enumerate(_feature_keys(audio, smile)):
        found = genres_of.get(key) if key is not None else None
        if found is not None and len(found) == 1 and None not in found:
            out[m] = next(iter(found))
    return out


def _ugc_part(src: Path, codes: tuple[int | None, ...]) -> dict:
    """The UGC release as canonical rows."""
    _require_files(src, TT_FILES)
    visual, audio, smile = (_load_matrix(src / f) for f in TT_FILES[:3])
    if len(smile) != len(audio):
        raise DataError(f"{src / TT_FILES[2]}: {len(smile)} rows, expected {len(audio)} (one per row of {TT_FILES[1]})")
    spaces = (TT_FILES[0], TT_FILES[1])
    train = parse_train(src / "train.npy", len(visual), len(audio), spaces, codes)
    if not train:  # refused here, not six stages later in split
        raise DataError(f"{src / 'train.npy'}: no rows; the training table needs at least one [video, music, genre, "
                        "genre distribution, propensity] row")
    held = {s: parse_neg(src / f"100neg/{s}.npy", len(visual), len(audio), spaces) for s in ("val", "test")}
    weights = {s: load_distribution(src / f"video_popularity_{s}.npy", len(held[s]),
                                    f"({len(held[s])},) float weights, one per row of 100neg/{s}.npy") for s in held}
    n_codes = len(train[0][3]) if train else len(codes)
    prior = load_distribution(src / "user_prior_mean.npy", n_codes,
                              f"{n_codes} floats (the mean uploader genre distribution, one value per genre code "
                              "as in train.npy)")
    prior = to_genre_order(prior, codes, str(src / "user_prior_mean.npy"))
    used = _split_of([(src / "train.npy", train)] + [(src / f"100neg/{s}.npy", held[s]) for s in held], "video")
    uploader, dists, upl_info = _uploaders(train, used, file_uploaders(src / TT_UPLOADER_FILE, len(visual)), codes,
                                           src / "train.npy")

    vid, mid = _id_maker("v", len(visual)), _id_maker("m", len(audio))
    pop = np.bincount([r[1] for r in train], minlength=len(audio))
    genre = {r[1]: GENRES[r[2]] for r in train if r[2] is not None}
    v_ids, m_ids = [vid(v) for v in used], [mid(m) for m in range(len(audio))]
    m_arr = np.array(m_ids, dtype=object)
    rows = np.arange(len(audio))
    per_genre = {g: sum(x == g for x in genre.values()) for g in GENRES}
    genre_counts_check(per_genre, len(audio), str(src / "train.npy"))
    return {
        "videos": [(i, uploader.get(v), "ugc") for i, v in zip(v_ids, used)],
        "music": [(i, int(pop[m]), genre.get(m)) for i, m in zip(m_ids, rows)],
        "pairs": [(vid(r[0]), mid(r[1]), "ugc") for part in (train, *held.values()) for r in part],
        "split": [(vid(r[0]), "train", None, r[4]) for r in train]
        + [(vid(r[0]), s, float(w), None) for s in held for r, w in zip(held[s], weights[s])],
        "negatives": [(vid(r[0]), s, m_arr[r[2]].tolist()) for s in held for r in held[s]],
        "uploaders": dists,
        "video_visual": [(v_ids, visual, np.array(used, dtype=np.int64))],
        "music_audio": [(m_ids, audio, rows)], "music_smile": [(m_ids, smile, rows)],
        "prior": None if prior is None else prior.tolist(), "genre_counts": per_genre, "uploader_info": upl_info,
        "raw": {"audio": audio, "smile": smile, "genre": {r[1]: r[2] for r in train if r[2] is not None}},
        "counts": {"ugc_videos": len(used), "unused_video_rows": len(visual) - len(used), "music": len(audio),
                   "train": len(train), "val": len(held["val"]), "test": len(held["test"]),
                   "uploaders": upl_info["uploaders"], "music_without_genre": len(audio) - len(genre),
                   "genre_codes": n_codes},
    }


def _pgc_part(pgc: Path, ugc: dict, src: Path) -> dict:
    """The PGC folder: its own video ids "p<int>" and music ids "pm<int>" (the release shares no ids).

    Only the music its pairs use is imported: an unused PGC clip has no role (the teacher trains on pairs),
    and as music no pair uses it would enter the UGC ranking pool (often as a copy of a UGC clip, when the
    folder shares the release's music matrix). A PGC music whose features equal a UGC clip's takes that
    clip's genre; the rest have none.
    """
    _require_files(pgc, PGC_FILES, "a TT-150k PGC folder (ingest.pgc, else <path>/../pgc, else <path>/pgc)")
    visual, audio, smile = (_load_matrix(pgc / f) for f in PGC_FILES[2:])
    for ugc_name, kind, pgc_name, mat in zip(TT_FILES[:3], MATRICES, PGC_FILES[2:], (visual, audio, smile)):
        _same_width(src / ugc_name, ugc[kind][0][1], pgc / pgc_name, mat)
    if len(smile) != len(audio):
        raise DataError(f"{pgc / PGC_FILES[4]}: {len(smile)} rows, expected {len(audio)} (as {PGC_FILES[3]})")
    split = {s: parse_pgc_pairs(pgc / f"{s}.npy", len(visual), len(audio), PGC_FILES[2:4]) for s in ("train", "val")}
    used = _split_of([(pgc / f"{s}.npy", rows) for s, rows in split.items()], "PGC video")
    raw = ugc["raw"]
    genre = _genres_by_features(audio, smile, raw["audio"], raw["smile"],
                                {m: GENRES[g] for m, g in raw["genre"].items()})
    vid, mid = _id_maker("p", len(visual)), _id_maker("pm", len(audio))
    pop = np.bincount([m for _, m in split["train"]], minlength=len(audio))
    rows = np.array(sorted({m for s in split for _, m in split[s]}), dtype=np.int64)
    v_ids, m_ids = [vid(v) for v in used], [mid(m) for m in rows]
    return {
        "videos": [(i, None, "pgc") for i in v_ids],
        "music": [(i, int(pop[m]), genre.get(m)) for i, m in zip(m_ids, rows)],
        "pairs": [(vid(v), mid(m), "pgc") for s in split for v, m in split[s]],
        "split": [(vid(v), s, None, None) for s in split for v, _ in split[s]], "negatives": [], "uploaders": [],
        "video_visual": [(v_ids, visual, np.array(used, dtype=np.int64))],
        "music_audio": [(m_ids, audio, rows)], "music_smile": [(m_ids, smile, rows)],
        "counts": {"pgc_videos": len(used), "pgc_music": len(rows), "pgc_music_unused": len(audio) - len(rows),
                   "pgc_music_with_genre": len(set(genre) & set(rows.tolist()))},
    }


def resolve_pgc(src: Path, pgc: Path | None) -> tuple[Path | None, str | None]:
    """The PGC folder and how it was found: `ingest.pgc` when set, else `<src>/../pgc`, else `<src>/pgc`."""
    if pgc is not None:
        if not Path(pgc).is_dir():
            raise DataError(f"{pgc}: ingest.pgc names no folder; expected the release's PGC folder holding "
                            f"{list(PGC_FILES)}, relative to ingest.path (ingest.pgc: . looks beside and inside it)")
        return Path(pgc), "ingest.pgc"
    sibling, child = src.resolve().parent / "pgc", src / "pgc"
    found = [(p, how) for p, how in ((sibling, "sibling"), (child, "child")) if p.is_dir()]
    if len(found) == 2 and sibling.resolve() != child.resolve():
        raise DataError(f"{sibling} and {child}: two PGC folders beside and inside the release; set ingest.pgc to "
                        "the one to use")
    if found and found[0][1] == "sibling":
        log.warning("%s: PGC folder found beside the release; DVC re-runs ingest on its changes only when "
                    "ingest.pgc names it (ingest.pgc: ../pgc)", sibling)
    return found[0] if found else (None, None)


def import_tt150k(src: Path, out: Path, pgc: Path | None = None, genre_names=None) -> dict:
    """Import a TT-150k release (docs/architecture.md section 8), keeping its split, negatives and weights.

    `pgc`: the PGC folder (default: `<src>/../pgc` as the release's README lays it out, else `<src>/pgc`);
    its features are appended to the same matrices under their own ids. `genre_names`: the genre of each
    of the release's codes (default schema.GENRES' order; see importcommon.genre_code_map). Music
    popularity = train rows using it (PGC train pairs for "pm"). Nothing in the release is executed.
    """
    src, out = Path(src), Path(out)
    _check_out(src, out)
    codes = genre_code_map(genre_names)
    pgc, pgc_found = resolve_pgc(src, None if pgc is None else Path(pgc))
    ugc = _ugc_part(src, codes)
    parts = [ugc] + ([_pgc_part(pgc, ugc, src)] if pgc is not None else [])
    rows = {k: [r for p in parts for r in p[k]] for k in ROW_KEYS + MATRICES}
    v = pd.DataFrame(rows["videos"], columns=["video_id", "uploader_id", "kind"])
    videos = pd.DataFrame({"video_id": _str(v.video_id), "uploader_id": _str(v.uploader_id), "kind": _str(v.kind),
                           "path": _str([None] * len(v)), "text": _str([None] * len(v)),
                           "popularity": np.full(len(v), np.nan)})
    m = pd.DataFrame(rows["music"], columns=["music_id", "popularity", "genre"])
    music = pd.DataFrame({"music_id": _str(m.music_id), "path": _str([None] * len(m)),
                          "popularity": m.popularity.astype(np.int64), "genre": _str(m.genre)})
    pairs = pd.DataFrame(rows["pairs"], columns=list(PAIR_COLUMNS))
    split = pd.DataFrame(rows["split"], columns=["video_id", "split", "weight", "propensity"]).astype(
        {"weight": np.float64, "propensity": np.float64}).sort_values("video_id", kind="stable")
    negatives = pd.DataFrame(rows["negatives"], columns=["video_id", "split", "negatives"]).sort_values("video_id")
    uploaders = pd.DataFrame(rows["uploaders"], columns=["uploader_id", "genre_dist"])
    summary = {"source": "tt150k", "src": str(src), "pgc": None if pgc is None else str(pgc), "pgc_found": pgc_found,
               "genre_names": [None if c is None else GENRES[c] for c in codes],
               "user_prior_mean": ugc["prior"], "genre_counts": ugc["genre_counts"], "uploaders": ugc["uploader_info"],
               "counts": {k: n for p in parts for k, n in p["counts"].items()}}
    with atomic_dir(out) as tmp:
        optional = {"split": split, "negatives": negatives, **({"uploaders": uploaders} if len(uploaders) else {})}
        _write_tables(tmp, videos, music, pairs, str(src), **optional)
        for name, ids_file in zip(MATRICES, (VIDEO_IDS_FILE, MUSIC_IDS_FILE, MUSIC_IDS_FILE)):
            ids = _write_gathered(rows[name], tmp / "features" / f"{name}.npy")
            write_ids(ids, tmp / "features" / ids_file)
        write_json(summary, tmp / "source.json")
    log.info("imported TT-150k release %s -> %s: %s", src, out, summary["counts"])
    return summary
