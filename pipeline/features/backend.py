"""Where extraction runs: `local` (this process) or `ray` (a cluster), over the same fixed shards.

The sorted ids are cut into shards of `shard_size`; one function call per shard does the work, and the
results are gathered in shard order. The local and Ray matrices are therefore byte-identical by
construction: the same shards (so the same CNN and musicnn batches) meet the same computation, only the
place it runs differs. The thread count may differ between machines: each CNN batch runs on one thread
whatever the count (more threads run more batches at once), and tests/features/test_backend.py checks
local against Ray for video, musicnn and openSMILE.

Ray is used as a plain task pool here (no actors, no object spilling): what it adds over a process pool is
placement on other machines, which no local executor gives.

This module knows no extractor: each extractor module holds its own `*_sharded` function (video.py,
music.py, smile.py) built on `run_sharded`, so an extract stage imports only its own extractor's code.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

from pipeline.errors import ParamsError
from pipeline.resources import available_cpus

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKENDS = ("local", "ray")
# Variables a library reads once, when its process starts: glibc's malloc tunables, which `extract_video`'s
# cmd sets (dvc.yaml; 1.38x its wall time, reports/performance.md). A Ray worker is started by the raylet,
# which on a running cluster does not have this process's environment, so they travel with each task.
WORKER_ENV = ("GLIBC_TUNABLES",)


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
        return self.threads_per_task or available_cpus()


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


def worker_env() -> dict[str, str]:
    """The WORKER_ENV variables this process has: what a Ray task's worker process starts with."""
    return {k: os.environ[k] for k in WORKER_ENV if k in os.environ}


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
            ray.init(num_cpus=available_cpus(), **kwargs)
    try:
        options = dict(num_cpus=cpus_per_task or cfg.threads(), max_retries=0)
        if fresh_process:
            options["max_calls"] = 1
        env = worker_env()
        if env:
            options["runtime_env"] = {"env_vars": env}
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


def run_sharded(fn: Callable, paths: dict, backend: BackendConfig, group: str, desc: str, on_error: str,
                raise_failures: Callable, empty_dim: int, *args, cpus_per_task: int | None = None,
                fresh_process: bool = False):
    """(sorted ids, [N, D] float32, failures table or None) of `fn(shard ids, {id: path}, *args)` over the
    sorted ids of `paths` cut into `backend.shard_size` shards, on `backend` (`group` names its params)."""
    backend.validate(group)
    parts = shards([str(k) for k in paths], backend.shard_size)
    paths = {str(k): str(v) for k, v in paths.items()}
    results = map_shards(fn, parts, backend, desc, paths, *args, cpus_per_task=cpus_per_task,
                         fresh_process=fresh_process)
    return gather(results, len(paths), on_error, raise_failures, empty_dim)
