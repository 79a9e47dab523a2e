"""Where extraction runs: `local` (this process) or `ray` (a cluster), over the same fixed shards.

The sorted ids are cut into shards of `shard_size`; one function call per shard does the work, and the
results are gathered in shard order. The local and Ray matrices are therefore byte-identical by
construction: the same shards (so the same CNN and musicnn batches) meet the same computation, only the
place it runs differs. The thread count may differ between machines: each CNN batch runs on one thread
whatever the count (more threads run more batches at once), and tests/features/test_backend.py checks
local against Ray for video, musicnn and openSMILE.

Ray is used as a plain task pool here (no actors, no object spilling): what it adds over a process pool is
placement on other machines, which no local executor gives.
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


@dataclass(frozen=True)
class BackendParams:
    """The backend keys shared by the extract_* params groups (a mixin of their dataclasses)."""

    backend: str = "local"  # local | ray: the same shards on a Ray cluster, byte-identical matrices
    ray_address: str | None = None  # null: a local Ray cluster; else ray.init(address=...)
    shard_size: int = 256  # items per task
    threads_per_task: int = 0  # 0: every core of the machine running the task

    def backend_config(self) -> BackendConfig:
        return BackendConfig(self.backend, self.ray_address, self.shard_size, self.threads_per_task)


def shards(ids: Sequence[str], size: int) -> list[list[str]]:
    """The sorted ids cut into consecutive shards of `size` (the last may be shorter)."""
    ordered = sorted(ids)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def map_shards(fn: Callable[..., T], parts: Sequence, cfg: BackendConfig, desc: str, *args,
               cpus_per_task: int | None = None, fresh_process: bool = False) -> list[T]:
    """[fn(part, *args) for part in parts], run locally or as Ray tasks; results in `parts` order.

    On Ray a task reserves `cpus_per_task` CPUs (default cfg.threads()); `fresh_process` retires a worker
    process after one task, so a library that cannot share a process (TensorFlow, openSMILE) never meets
    another task's state.
    """
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
        options = dict(num_cpus=cpus_per_task or cfg.threads(), max_retries=0)
        if fresh_process:
            options["max_calls"] = 1
        remote = ray.remote(**options)(fn)
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


def gather(results: list, total: int, on_error: str, raise_failures: Callable, empty_dim: int):
    """Concatenate per-shard (ids, [n, D] matrix, failures table) in shard order; with on_error 'fail',
    `raise_failures(failures table, total)` is called once with the failures of every shard."""
    import numpy as np
    import pandas as pd

    ids = [i for r in results for i in r[0]]
    tables = [r[2] for r in results if len(r[2])]
    failures = pd.concat(tables, ignore_index=True) if tables else (results[0][2].iloc[:0] if results else None)
    if failures is not None and len(failures) and on_error == "fail":
        raise_failures(failures, total)
    matrices = [r[1] for r in results if len(r[0])]
    dim = matrices[0].shape[1] if matrices else empty_dim
    features = np.concatenate(matrices) if matrices else np.zeros((0, dim), np.float32)
    return ids, np.ascontiguousarray(features, dtype=np.float32), failures


# ---------------------------------------------------------------- video features over shards

def _video_shard(ids: list[str], paths: dict, cfg, threads: int):
    """One shard of `extract_video_features` on `threads` cores (failures collected, not raised)."""
    from pipeline.features.video import extract_video_features

    return extract_video_features({i: paths[i] for i in ids}, cfg, on_error="skip", workers=threads)


def video_features_sharded(paths: dict, cfg, on_error: str, backend: BackendConfig):
    """(sorted ids, [N, D] float32, failures) like extract_video_features, computed shard by shard on the
    chosen backend; with on_error 'fail' one MediaError names every bad file of every shard."""
    import pandas as pd

    from pipeline.features.mediacheck import raise_failures
    from pipeline.features.video import FAILURE_COLUMNS

    def fail(failures, total):
        raise_failures("video features", list(failures.itertuples(index=False, name=None)), total, "video(s)")

    backend.validate("features_video")
    parts = shards([str(k) for k in paths], backend.shard_size)
    paths = {str(k): str(v) for k, v in paths.items()}
    results = map_shards(_video_shard, parts, backend, "video shards", paths, cfg, backend.threads())
    ids, features, failures = gather(results, len(paths), on_error, fail, 0)
    if failures is None:
        failures = pd.DataFrame(columns=list(FAILURE_COLUMNS), dtype=str)
    return ids, features, failures.reset_index(drop=True)


# ---------------------------------------------------------------- music features over shards

def _music_failures(what: str):
    from pipeline.features.music import raise_failures

    return lambda failures, total: raise_failures(list(failures.itertuples(index=False, name=None)), total, what)


def _music_shard(ids: list[str], paths: dict, cfg, threads: int):
    """One shard of `embed_music` in this process (failures collected, not raised)."""
    import dataclasses

    from pipeline import numba_cache
    from pipeline.features.music import embed_music

    numba_cache.warm_locked()  # a Ray worker machine may start with a cold librosa cache
    if threads:
        cfg = dataclasses.replace(cfg, threads=threads)
    return embed_music({i: paths[i] for i in ids}, cfg, on_error="skip")


def music_embedding_sharded(paths: dict, cfg, on_error: str, backend: BackendConfig):
    """(sorted ids, [N, D] float32, failures) like embed_music, shard by shard on the chosen backend.

    Each shard runs the network over its own clips in batches of cfg.batch_size, so the shards, not the
    backend, fix the batches and hence the bytes. On Ray each task builds its own TensorFlow graph in a
    worker process that is retired afterwards (TensorFlow and openSMILE must not share a process).
    """
    from pipeline.features.music import failure_table

    backend.validate("features_music")
    cfg.validate()
    parts = shards([str(k) for k in paths], backend.shard_size)
    paths = {str(k): str(v) for k, v in paths.items()}
    results = map_shards(_music_shard, parts, backend, "music shards", paths, cfg, backend.threads_per_task,
                         fresh_process=True)
    ids, features, failures = gather(results, len(paths), on_error, _music_failures("music embedding"), 0)
    return ids, features, (failure_table([]) if failures is None else failures.reset_index(drop=True))


def _smile_shard(ids: list[str], paths: dict, workers: int):
    from pipeline import numba_cache
    from pipeline.features.smile import smile_functionals

    numba_cache.warm_locked()
    return smile_functionals({i: paths[i] for i in ids}, on_error="skip", workers=workers)


def smile_functionals_sharded(paths: dict, on_error: str, workers: int, backend: BackendConfig):
    """(sorted ids, float32 [N, 6373], failures) like smile_functionals, shard by shard on the chosen backend.

    Rows are independent, so sharding never changes the bytes. Locally each shard uses `workers`
    processes; on Ray each task is one single-CPU process (Ray runs as many at once as a machine has
    cores), retired after its shard.
    """
    from pipeline.features.music import failure_table
    from pipeline.features.smile import COMPARE_DIM

    backend.validate("features_smile")
    parts = shards([str(k) for k in paths], backend.shard_size)
    paths = {str(k): str(v) for k, v in paths.items()}
    ray = backend.backend == "ray"
    results = map_shards(_smile_shard, parts, backend, "openSMILE shards", paths, 1 if ray else workers,
                         cpus_per_task=1, fresh_process=True)
    ids, features, failures = gather(results, len(paths), on_error, _music_failures("openSMILE functionals"),
                                      COMPARE_DIM)
    return ids, features, (failure_table([]) if failures is None else failures.reset_index(drop=True))
