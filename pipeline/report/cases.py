"""What the models put in their top-K on T_diverse: the genre mix of each variant's lists beside the uploaders'
training taste and the true top-K (genre_share.csv / .png), and a case study of a few videos (case_study.md,
and index.html where one watches each video and hears every model's music: pipeline/report/page.py).
These call the trained models (pipeline.inference.top_music); every other number of the report comes from
evaluate's per-video table."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.data.features import load_features
from pipeline.data.schema import GENRES
from pipeline.errors import DataError
from pipeline.evaluate import Truth
from pipeline.experiment import load_runs, skipped, variant_dir
from pipeline.inference import top_music
from pipeline.io import atomic_path
from pipeline.report.figures import plot_genre_shares
from pipeline.report.page import Case, RawMedia, Track, report_page
from pipeline.report.pervideo import GRADED
from pipeline.sampling.dataset import Dataset
from pipeline.training.data import uploader_distributions

log = logging.getLogger(__name__)


def genre_shares(top: np.ndarray, genre_codes: np.ndarray, n_genres: int) -> np.ndarray:
    """Share of each genre among all the top-K lists `top` [N, K] (indices into `genre_codes`); sums to 1."""
    top = np.asarray(top)
    if top.ndim != 2 or top.size == 0:
        raise ValueError(f"genre_shares: top must be a non-empty [N, K] array, got shape {top.shape}")
    counts = np.bincount(np.asarray(genre_codes)[top].ravel(), minlength=n_genres).astype(np.float64)
    return counts / counts.sum()


def true_top(relevance: np.ndarray, k: int) -> np.ndarray:
    """[N, k] indices of each row's k most compatible music (stable: ties keep the lower index)."""
    return np.argsort(-np.asarray(relevance, dtype=np.float64), axis=1, kind="stable")[:, :k]


def genre_codes(dataset: Dataset, truth: Truth | None, labels: Path) -> tuple[np.ndarray, str]:
    """Per dataset music: the true genre on the simulated world, else the genre stage's label."""
    if truth is not None:
        return truth.music_genre, "true genre"
    table = pd.read_parquet(labels, columns=["music_id", "genre"]).set_index("music_id")["genre"]
    missing = [m for m in dataset.music_ids if m not in table.index]
    if missing:
        raise DataError(f"{labels}: music {missing[0]!r} has no genre label")
    return np.array([GENRES.index(g) for g in table.loc[dataset.music_ids]], dtype=np.int64), "labelled genre"


def uploader_taste(dataset: Dataset, scheme: str, video_ids: list[str]) -> np.ndarray:
    """The mean training genre distribution of these videos' uploaders (the confounder they carry)."""
    dists = dataset.uploader_dists(scheme).set_index("uploader_id")[list(GENRES)]
    uploaders = dataset.ugc.set_index("video_id").loc[video_ids, "uploader_id"]
    return dists.loc[uploaders.to_numpy()].to_numpy(dtype=np.float64).mean(axis=0)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_empty(out: Path, media: RawMedia) -> None:
    """The declared outputs still exist, saying why they are empty."""
    log.info("report: the dataset has no T_diverse set; genre_share and case_study left empty")
    _write_text(out / "genre_share.csv", ",".join(["source", *GENRES]) + "\n")
    with atomic_path(out / "genre_share.png") as tmp:
        plot_genre_shares({}, GENRES, "no T_diverse set in this dataset", tmp)
    _write_text(out / "case_study.md", "# Case study\n\nThe dataset has no T_diverse set.\n")
    report_page(out, media, [], "The dataset has no T_diverse set: there is no case study to play.")


def _cases(dataset: Dataset, truth: Truth | None, scheme: str, videos: list[str], scored: dict[str, tuple],
           codes: np.ndarray, media: RawMedia, n_videos: int, n_top: int) -> list[Case]:
    """The case study's videos for the page: the uploader's own choice, each model's top-n with its score, and
    the true top-n with the true compatibility c(v, m) on the simulated world."""
    ugc = dataset.ugc.set_index("video_id")
    names = dataset.music_ids
    index = {m: i for i, m in enumerate(names)}

    def track(i: int, score: float | None) -> Track:
        return Track(names[int(i)], GENRES[codes[int(i)]], None if score is None else float(score))

    cases = []
    for row, v in enumerate(videos[:n_videos]):
        chosen = str(ugc.loc[v, "music_id"])
        lists = {"uploader's choice": [track(index[chosen], None) if chosen in index else Track(chosen, "?")]}
        lists.update({name: [track(i, s) for i, s in zip(top[row, :n_top], score[row, :n_top])]
                      for name, (top, score) in scored.items()})
        if truth is not None:
            c = truth.compatibility[truth.rows([v])][0]
            lists[f"true top-{n_top} (simulated world)"] = [track(i, c[i]) for i in true_top(c[None], n_top)[0]]
        taste = uploader_taste(dataset, scheme, [v])
        liked = ", ".join(f"{g} {t:.2f}" for g, t in sorted(zip(GENRES, taste), key=lambda x: -x[1])[:3])
        cases.append(Case(v, f"uploader {ugc.loc[v, 'uploader_id']} (training taste: {liked})", media.video(v),
                          lists))
    return cases


def _case_study(dataset: Dataset, truth: Truth | None, scheme: str, videos: list[str], tops: dict[str, np.ndarray],
                codes: np.ndarray, genre_source: str, seed: int, n_videos: int, n_top: int, listed: int) -> str:
    names = dict(enumerate(dataset.music_ids))
    ugc = dataset.ugc.set_index("video_id")
    trained = list(tops)
    lines = [f"# Case study: T_diverse of {scheme}, top-{n_top} music per model (seed {seed})\n",
             f"Genres are the {genre_source}. The uploader's taste is its training genre distribution.\n"]
    for v in videos[:n_videos]:
        taste = uploader_taste(dataset, scheme, [v])
        liked = ", ".join(f"{g} {t:.2f}" for g, t in sorted(zip(GENRES, taste), key=lambda x: -x[1])[:3])
        lines.append(f"## {v} (uploader {ugc.loc[v, 'uploader_id']}: {liked}; chosen {ugc.loc[v, 'music_id']})\n")
        lines.append("| rank | " + " | ".join([*trained, *([GRADED] if truth is not None else [])]) + " |")
        lines.append("|---|" + "---|" * (len(trained) + (truth is not None)))
        row = videos.index(v)
        columns = [tops[name][row, :n_top] for name in trained]
        if truth is not None:
            columns.append(true_top(truth.compatibility[truth.rows([v])], n_top)[0])
        for r in range(min(n_top, listed)):
            lines.append(f"| {r + 1} | " + " | ".join(f"{names[int(c[r])]} ({GENRES[codes[int(c[r])]]})"
                                                       for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def genre_and_cases(out: Path, dataset: Dataset, truth: Truth | None, variants: Sequence[str], seeds: Sequence[int],
                    k: int, case_videos: int, case_top: int, features_dir: Path, labels: Path,
                    models: Path = Path("models"), raw: Path | None = None) -> None:
    """Write genre_share.csv / .png, case_study.md and index.html (media from `raw`'s tables) for the intervene
    scheme's T_diverse (files saying why when there is none). Variants whose training was skipped are left out."""
    media = RawMedia.read(raw) if raw is not None else RawMedia({}, {})
    scheme = dataset.info.get("intervene_scheme")
    if not scheme or f"{scheme}/diverse" not in dataset.eval_sets:
        _write_empty(out, media)
        return
    trained = [v for v in variants if not skipped(variant_dir(v, models) / "summary.json")]
    features = load_features(features_dir)
    videos = sorted(dataset.eval_sets[f"{scheme}/diverse"].video_id)
    codes, genre_source = genre_codes(dataset, truth, labels)
    k = min(k, len(dataset.music_ids))
    shares = {"uploaders' taste (training)": uploader_taste(dataset, scheme, videos)}
    if truth is not None:
        shares[f"true top-{k}"] = genre_shares(true_top(truth.compatibility[truth.rows(videos)], k), codes, len(GENRES))
    tops, scored, listed = {}, {}, min(max(k, case_top), len(dataset.music_ids))
    genre = dataset.genre_matrix()
    for name in trained:
        runs = load_runs(variant_dir(name, models), [scheme], seeds)
        per_seed = {seed: top_music(runs[(scheme, seed)], features, videos, dataset.music_ids, genre, listed,
                                    uploader_distributions(dataset, scheme, videos), with_scores=True)
                    for seed in seeds}
        scored[name] = per_seed[seeds[0]]
        per_seed = {seed: top for seed, (top, _) in per_seed.items()}
        tops[name] = per_seed[seeds[0]]
        shares[name] = np.mean([genre_shares(t[:, :k], codes, len(GENRES)) for t in per_seed.values()], axis=0)
    table = pd.DataFrame([{"source": s, **dict(zip(GENRES, map(float, v)))} for s, v in shares.items()])
    with atomic_path(out / "genre_share.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_path(out / "genre_share.png") as tmp:
        plot_genre_shares(shares, GENRES, f"T_diverse ({len(videos)} videos of {scheme}): {genre_source} of the "
                          f"top-{k}, mean over {len(seeds)} seed(s)", tmp)
    _write_text(out / "case_study.md", _case_study(dataset, truth, scheme, videos, tops, codes, genre_source, seeds[0],
                                                   case_videos, case_top, listed))
    cases = _cases(dataset, truth, scheme, videos, scored, codes, media, case_videos, min(case_top, listed))
    report_page(out, media, cases, f"Case study: the first {len(cases)} T_diverse videos of {scheme} (by sorted id), "
                f"each model's top-{min(case_top, listed)} music of seed {seeds[0]} with its score, the genres being "
                f"the {genre_source}; numbers and lists as in case_study.md.")
