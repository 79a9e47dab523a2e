"""Where extraction runs: `local` (this process) or `ray` (a cluster), over the same fixed shards.

The sorted ids are cut into shards of `shard_size`; one function call per shard does the work, and the
results are gathered in shard order. The local and Ray matrices are therefore byte-identical by
construction: the same shards (so the same CNN batches) meet the same computation, only the place it runs
differs. The torch thread count may differ between machines; EfficientNet-Lite0's output was measured
bit-identical with 1 and 2 threads here, and tests/features/test_backend.py checks local against Ray.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

from pipeline.errors import ParamsError

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKENDS = ("local", "ray")


@dataclass
class BackendConfig:
    backend: str = "local"  # local | ray
    ray_address: str | None = None  # null: start a local Ray cluster on this machine's cores; else ray.init(address)
    shard_size: int = 256  # items per task
    threads_per_task: int = 0  # torch threads (and Ray CPUs) per task; 0: every core of the machine running it

    def validate(self, group: str) -> None:
        if self.backend not in BACKENDS:
            raise ParamsError(f"{group}.backend: {self.backend!r}, expected one of {BACKENDS}")
        if self.shard_size < 1:
            raise ParamsError(f"{group}.shard_size: {self.shard_size}, expected >= 1")
        if self.threads_per_task < 0:
            raise ParamsError(f"{group}.threads_per_task: {self.threads_per_task}, expected >= 0 (0: every core)")

    def threads(self) -> int:
        return self.threads_per_task or os.cpu_count() or 1


def shards(ids: Sequence[str], size: int) -> list[list[str]]:
    """The sorted ids cut into consecutive shards of `size` (the last may be shorter)."""
    ordered = sorted(ids)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def map_shards(fn: Callable[..., T], parts: Sequence, cfg: BackendConfig, desc: str, *args) -> list[T]:
    """[fn(part, *args) for part in parts], run locally or as Ray tasks; results in `parts` order."""
    if cfg.backend == "local":
        return [fn(part, *args) for part in tqdm(parts, desc=desc, unit="shard")]
    import ray

    started = not ray.is_initialized()
    if started:
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    try:
        remote = ray.remote(num_cpus=cfg.threads(), max_retries=0)(fn)
        shared = [ray.put(a) for a in args]
        refs = [remote.remote(part, *shared) for part in parts]
        order = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = list(refs)
        with tqdm(total=len(refs), desc=f"{desc} (ray)", unit="shard") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results[order[done[0]]] = ray.get(done[0])
                bar.update()
        log.info("%s: %d shards on Ray (%s)", desc, len(refs), cfg.ray_address or "local cluster")
        return results
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------- video features over shards

def _video_shard(ids: list[str], paths: dict, cfg, threads: int):
    """One shard of `extract_video_features` (failures collected, not raised: the caller decides)."""
    import torch

    from pipeline.features.video import extract_video_features

    torch.set_num_threads(threads)
    return extract_video_features({i: paths[i] for i in ids}, cfg, on_error="skip", workers=threads)


def video_features_sharded(paths: dict, cfg, on_error: str, backend: BackendConfig):
    """(sorted ids, [N, D] float32, failures) like extract_video_features, computed shard by shard on the
    chosen backend; with on_error 'fail' one MediaError names every bad file of every shard."""
    import numpy as np
    import pandas as pd

    from pipeline.errors import MediaError
    from pipeline.features.video import FAILURE_COLUMNS

    backend.validate("features_video")
    parts = shards([str(k) for k in paths], backend.shard_size)
    paths = {str(k): str(v) for k, v in paths.items()}
    results = map_shards(_video_shard, parts, backend, "video shards", paths, cfg, backend.threads())
    ids = [i for r in results for i in r[0]]
    failures = pd.concat([r[2] for r in results], ignore_index=True) if results else \
        pd.DataFrame(columns=list(FAILURE_COLUMNS), dtype=str)
    if len(failures) and on_error == "fail":
        listing = "\n".join(f"  {v} ({p}): {r}" for v, p, r in failures.itertuples(index=False))
        raise MediaError(f"{len(failures)} of {len(paths)} video(s) cannot be decoded:\n{listing}")
    matrices = [r[1] for r in results if len(r[0])]
    features = np.concatenate(matrices) if matrices else np.zeros((0, 0), np.float32)
    return ids, np.ascontiguousarray(features, dtype=np.float32), failures.reset_index(drop=True)
