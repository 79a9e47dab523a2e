"""Speed at TT-150k size: `python -m pipeline.bench [--epochs 2] [--device auto]`.

Builds a TrainData of TT-150k's shape (146,351 UGC videos with 1280-d visual and 512-d text features, 3,003
music with 128 + 128-d audio, 80 % of the videos as training pairs, 20,000 uploaders, a 14.6k validation set
with 100 negatives) from seeded random features, trains the DebCM student with a frozen teacher through
the pipeline's own `fit`, and times a full-pool evaluation of 15,000 test videos. Random features make the
timing honest (the work per step does not depend on what the numbers are) but say nothing about quality.
Prints one JSON object: seconds per epoch (median), teacher precomputation, full ranking, peak memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import numpy as np
import torch

from pipeline.data.schema import GENRES
from pipeline.metrics import ScoreMatrix, full_ranks, ranking_metrics
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.debcm import DebCM, DebCMConfig
from pipeline.sampling.negatives import sample_negatives
from pipeline.inference import embed
from pipeline.training.config import TrainConfig
from pipeline.training.data import TrainData
from pipeline.training.loop import fit, resolve_device

N_VIDEOS, N_MUSIC, N_UPLOADERS, VISUAL, TEXT, MUSIC = 146_351, 3_003, 20_000, 1280, 512, 256


def tt150k_data(seed: int = 0, n_videos: int = N_VIDEOS) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    n_train, n_val = int(0.8 * n_videos), int(0.1 * n_videos)
    tastes = torch.distributions.Dirichlet(torch.full((len(GENRES),), 0.4)).sample((N_UPLOADERS,))
    genre = torch.zeros(N_MUSIC, len(GENRES))
    genre[torch.arange(N_MUSIC), torch.randint(0, len(GENRES), (N_MUSIC,), generator=g)] = 1.0
    val_video = torch.arange(n_train, n_train + n_val)
    positive = np.random.default_rng(seed).integers(0, N_MUSIC, n_val)
    negatives = sample_negatives(positive, N_MUSIC, 100, np.random.default_rng(seed + 1), where="bench val")
    candidates = torch.from_numpy(np.concatenate([positive[:, None], negatives], axis=1))
    return TrainData(
        visual=torch.randn(n_videos, VISUAL, generator=g), music=torch.randn(N_MUSIC, MUSIC, generator=g),
        video_idx=torch.arange(n_train), music_idx=torch.randint(0, N_MUSIC, (n_train,), generator=g),
        uploader_idx=torch.randint(0, N_UPLOADERS, (n_train,), generator=g), uploader_dist=tastes,
        music_genre=genre, val_video=val_video, val_candidates=candidates, val_weight=np.ones(n_val),
        prior=tastes.mean(0).double().numpy(), text=torch.randn(n_videos, TEXT, generator=g),
        text_mask=torch.rand(n_videos, generator=g) < 0.7)


def full_pool_eval_seconds(model, data: TrainData, n_test: int = 15_000, ks=(10, 15, 20, 25)) -> float:
    """Wall time of the evaluate stage's work for one test set: embed, score against every music, rank."""
    device = next(model.parameters()).device
    rows = torch.arange(n_test)
    start = time.perf_counter()
    video_z = embed(model.video_embedding, {k: v.to(device) for k, v in data.video_batch(rows).items()})
    music_z = embed(model.music_embedding, {k: v.to(device) for k, v in data.music_batch().items()})
    ranks = full_ranks(ScoreMatrix(video_emb=video_z, music_emb=music_z), data.music_idx[:n_test].numpy())
    ranking_metrics(ranks, ks, np.ones(n_test))
    return time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args(argv)
    data = tt150k_data()
    torch.manual_seed(0)
    teacher = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig())
    student = DebCM(VISUAL, MUSIC, TEXT, DebCMConfig())
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, patience=100)
    stamps = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        fit(student, data, cfg, work, teacher=teacher, on_epoch_end=lambda e, r: stamps.append(time.perf_counter()))
    epoch_s = np.diff([start, *stamps])  # the first includes the teacher's one-off posteriors
    evals = [full_pool_eval_seconds(student, data) for _ in range(3)]
    device = resolve_device(args.device)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    print(json.dumps({
        "device": str(device), "threads": torch.get_num_threads(), "train_pairs": int(data.video_idx.shape[0]),
        "batch_size": args.batch_size, "epoch_seconds": [round(float(s), 2) for s in epoch_s],
        "epoch_seconds_median_after_first": round(float(np.median(epoch_s[1:])), 2) if len(epoch_s) > 1 else None,
        "full_ranking_15k_x_3003_seconds_median": round(float(np.median(evals)), 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_gpu_gib": None if peak_gpu is None else round(peak_gpu, 2)}, indent=2))


if __name__ == "__main__":
    main()
