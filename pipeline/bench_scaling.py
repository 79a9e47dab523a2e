"""How the cost grows: `python -m pipeline.bench --scaling` writes reports/scaling.{csv,json,png}.

Two curves, each point measured in a fresh spawned process (so its peak memory is its own):

- **training**: the DebCM student with a frozen teacher (TT-150k's widths: 2048-d visual, 512-d text, 256-d
  music, batch 1024) on seeded random features of 10k, 30k, 100k and 300k training pairs (the videos are
  pairs / 0.8, as in `pipeline.bench.tt150k_data`): wall and CPU seconds of `pipeline.training.loop.train_epoch`
  (the median of the epochs after the first; the first also pays allocation warm-up) and the process's peak
  resident memory (`resource.getrusage(...).ru_maxrss`: every allocation, torch's included, with the data).
- **full ranking**: 15,000 test videos against pools of 3k, 30k and 300k music with an untrained student:
  the evaluate stage's path (embed, `pipeline.metrics.full_ranks` on torch matrix products: the exact rank of
  each positive, then Recall/NDCG) and `recommend`'s path (an exact faiss IndexFlatIP, top 25 per video).

Each curve's growth exponent is the least-squares slope of log(cost) on log(size): 1 is linear.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

TRAIN_PAIRS = (10_000, 30_000, 100_000, 300_000)
POOL_MUSIC = (3_000, 30_000, 300_000)
TEST_VIDEOS = 15_000
RANK_CHUNK = 2048  # full_ranks' rows per chunk (its default 4096 would hold a 4.9 GB score block at 300k music)


def _peak_rss_gib() -> float:
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def train_point(pairs: int, epochs: int, threads: int = 0) -> dict:
    """One training point (run in its own process): epoch seconds and peak memory at `pairs` pairs."""
    import torch

    from pipeline.bench import tt150k_data
    from pipeline.models.cmvae import CMVAE, CMVAEConfig
    from pipeline.models.debcm import DebCM, DebCMConfig
    from pipeline.training.config import TrainConfig
    from pipeline.training.loop import make_optimizer, prepare, train_epoch

    if threads:
        torch.set_num_threads(threads)
    data = tt150k_data(n_videos=math.ceil(pairs / 0.8))
    visual, music, text = data.visual.shape[1], data.music.shape[1], data.text.shape[1]
    torch.manual_seed(0)
    teacher, student = CMVAE(visual, music, text, CMVAEConfig()), DebCM(visual, music, text, DebCMConfig())
    cfg = TrainConfig()
    data = prepare(student, data, cfg, torch.device("cpu"), teacher)
    optimizer = make_optimizer(student, cfg)
    n = int(data.video_idx.shape[0])
    wall, cpu = [], []
    for epoch in range(epochs):
        w, c = time.perf_counter(), time.process_time()
        train_epoch(student, data, optimizer, cfg.effective_batch_size(n), cfg.seed, epoch)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    data_gib = sum(t.numel() * t.element_size() for t in (data.visual, data.text, data.music)) / 2**30
    return {"curve": "train_epoch", "size": n, "seconds": _median(wall[1:]), "cpu_seconds": _median(cpu[1:]),
            "first_seconds": round(wall[0], 3), "repeats": len(wall) - 1, "peak_rss_gib": _peak_rss_gib(),
            "data_gib": round(data_gib, 3), "threads": torch.get_num_threads()}


def ranking_point(n_music: int, repeats: int, threads: int = 0, n_videos: int = TEST_VIDEOS) -> list[dict]:
    """Full-ranking evaluation of `n_videos` against `n_music` (own process): the torch and the faiss path."""
    import faiss
    import numpy as np
    import torch

    from pipeline.bench import MUSIC, TEXT, VISUAL
    from pipeline.data.schema import GENRES
    from pipeline.inference import embed, eval_mode
    from pipeline.metrics import ScoreMatrix, full_ranks, ranking_metrics
    from pipeline.models.debcm import DebCM, DebCMConfig

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DebCM(VISUAL, MUSIC, TEXT, DebCMConfig())
    model.set_prior(np.full(len(GENRES), 1.0 / len(GENRES)))
    g = torch.Generator().manual_seed(1)
    videos = {"visual": torch.randn(n_videos, VISUAL, generator=g), "text": torch.randn(n_videos, TEXT, generator=g),
              "text_mask": torch.rand(n_videos, generator=g) < 0.7}
    genre = torch.zeros(n_music, len(GENRES))
    genre[torch.arange(n_music), torch.randint(0, len(GENRES), (n_music,), generator=g)] = 1.0
    music = {"music": torch.randn(n_music, MUSIC, generator=g), "music_genre": genre}
    positive = torch.randint(0, n_music, (n_videos,), generator=g).numpy()

    def embeddings():
        with eval_mode(model):
            return embed(model.video_embedding, videos), embed(model.music_embedding, music)

    def torch_path():
        video_z, music_z = embeddings()
        ranks = full_ranks(ScoreMatrix(video_emb=video_z, music_emb=music_z), positive, chunk_size=RANK_CHUNK)
        ranking_metrics(ranks, (10, 15, 20, 25), np.ones(n_videos))

    def faiss_path():
        video_z, music_z = embeddings()
        index = faiss.IndexFlatIP(music_z.shape[1])
        index.add(np.ascontiguousarray(music_z.numpy(), dtype=np.float32))
        index.search(np.ascontiguousarray(video_z.numpy(), dtype=np.float32), 25)

    times = {"eval_torch": [], "eval_faiss": []}
    for _ in range(repeats):  # the two paths alternate
        for name, path in (("eval_torch", torch_path), ("eval_faiss", faiss_path)):
            t = time.perf_counter()
            path()
            times[name].append(time.perf_counter() - t)
    return [{"curve": name, "size": n_music, "seconds": _median(ts), "repeats": len(ts), "test_videos": n_videos,
             "peak_rss_gib": _peak_rss_gib(), "threads": torch.get_num_threads()} for name, ts in times.items()]


def _median(xs) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    mid = len(xs) // 2
    return round(xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2, 3)


def growth_exponent(sizes, costs) -> float:
    """Least-squares slope of log(cost) on log(size): cost ~ size ** slope."""
    import numpy as np
    return round(float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(costs, float)), 1)[0]), 3)


def exponents(rows: list[dict]) -> dict[str, float]:
    """{curve/measure: growth exponent} for every curve with at least two points."""
    out = {}
    for curve in sorted({r["curve"] for r in rows}):
        pts = sorted((r["size"], r) for r in rows if r["curve"] == curve)
        for measure in ("seconds", "peak_rss_gib"):
            xs = [s for s, r in pts if r.get(measure)]
            if len(xs) >= 2:
                out[f"{curve}/{measure}"] = growth_exponent(xs, [r[measure] for s, r in pts if r.get(measure)])
    return out


def in_process(fn, *args):
    """fn(*args) in a fresh spawned process (its own peak memory; nothing left behind in this one)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def measure(pairs=TRAIN_PAIRS, music=POOL_MUSIC, threads: int = 0, log=print) -> list[dict]:
    """Every point: training epochs (2 timed epochs up to 30k pairs, 1 above, after a warm-up epoch) and the
    ranking paths (3 alternating repeats up to 30k music, 1 above)."""
    rows = []
    for n in pairs:
        rows.append(in_process(train_point, n, 3 if n <= 30_000 else 2, threads))
        log(rows[-1])
    for m in music:
        rows += in_process(ranking_point, m, 3 if m <= 30_000 else 1, threads)
        log(rows[-2:])
    return rows


def write_outputs(out_dir: Path, rows: list[dict], meta: dict) -> dict:
    """scaling.csv (one row per point), scaling.json (meta, exponents, points) and scaling.png."""
    import csv
    import io

    from pipeline.io import atomic_path, write_json

    fields = ["curve", "size", "seconds", "cpu_seconds", "first_seconds", "repeats", "peak_rss_gib", "data_gib",
              "test_videos", "threads"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(out_dir / "scaling.csv") as tmp:
        tmp.write_text(buf.getvalue())
    summary = {**meta, "growth_exponents": exponents(rows), "points": rows}
    write_json(summary, out_dir / "scaling.json")
    plot(rows, summary["growth_exponents"], out_dir / "scaling.png")
    return summary


def plot(rows: list[dict], slopes: dict[str, float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.io import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = ((axes[0], ("train_epoch",), "seconds", "training pairs", "epoch (s)"),
              (axes[1], ("train_epoch",), "peak_rss_gib", "training pairs", "peak RSS (GiB)"),
              (axes[2], ("eval_torch", "eval_faiss"), "seconds", f"music in the pool ({TEST_VIDEOS:,} test videos)",
               "full ranking (s)"))
    for ax, curves, measure, xlabel, ylabel in panels:
        for curve in curves:
            pts = sorted((r["size"], r[measure]) for r in rows if r["curve"] == curve and r.get(measure))
            if pts:
                ax.loglog(*zip(*pts), "o-", label=f"{curve}: slope {slopes.get(f'{curve}/{measure}', float('nan')):.2f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run_scaling(out_dir: Path, argv, threads: int = 0) -> dict:
    """Measure every point and write the outputs with the command, machine and load average."""
    import torch

    from pipeline.bench import THREAD_ENV, command_line, cpu_model, load_average

    load_start = load_average()
    rows = measure(threads=threads)
    meta = {"command": command_line(argv), "date": time.strftime("%Y-%m-%d"),
            "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "torch": torch.__version__,
                        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}},
            "load_average_start": load_start, "load_average_end": load_average(),
            "memory": "peak resident set size of the point's own process (resource.getrusage ru_maxrss)"}
    return write_outputs(out_dir, rows, meta)
