"""Independent training runs side by side: one process per run at a time, each on its share of the cores.

Why: a training stage makes one run per split scheme x seed (18 on the default world), and those runs share
nothing. On the default world a run's batches hold tens of rows, too small for a second torch thread to pay
(measured on 2 cores: one no_teacher run 7 s on one thread, 9-14 s on two), so one single-threaded run per
core finishes the stage about twice as fast as the runs one after another on every core. At TT-150k size a
run's matrices are large enough for threads to pay as well; the same split of cores still keeps every core
busy (with one copy of the training data per process).

What a run computes does not depend on which process runs it: each seeds itself (pipeline.experiment), and
its thread count follows from the params, the core count and the number of runs (`plan`); the thread count
itself can change float rounding (reports/performance.md). Workers are spawned (not forked: torch's OpenMP pool does
not survive a fork), get the shared inputs once, and return each run's summary in the order of the tasks.

With `backend` "ray" (params train.backend) the same runs go to a Ray cluster instead, each on the thread
count `plan` gives a local process, with byte-identical outputs (pipeline.training.remote).
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Callable, Sequence

from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.raycluster import check_backend
from pipeline.resources import available_cpus

log = logging.getLogger(__name__)

_SHARED: dict[str, Any] = {}


def plan(threads: int, workers: int, n_runs: int) -> tuple[int, int]:
    """(processes, torch threads per process) for `n_runs` independent runs.

    threads: train.loop.threads (0: every core), the cores the stage may use; workers: train.workers (0: one
    per core, as many as there are runs). Each process gets an equal share of the cores, at least one."""
    total = threads or available_cpus()
    processes = max(1, min(workers or total, n_runs))
    return processes, max(1, total // processes)


def _init_worker(shared: dict, threads: int, log_level: int, guard_truth: bool) -> None:
    import torch

    from pipeline.training import loop

    torch.set_num_threads(threads)
    loop.EPOCH_BARS = False  # the parent shows one bar over the runs
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")
    if guard_truth:
        from pipeline.truth import forbid_truth_reads
        forbid_truth_reads()
    _SHARED.clear()
    _SHARED.update(shared)


def _call(fn: Callable, task: tuple):
    return fn(_SHARED, *task)


def map_runs(fn: Callable[..., Any], tasks: Sequence[tuple], shared: dict, threads: int, workers: int,
             desc: str = "runs", backend: str = "local", address: str | None = None,
             folders: dict[str, str] | None = None) -> list:
    """[fn(shared, *task) for task in tasks], on `plan(threads, workers, len(tasks))` processes.

    `fn` must be a module-level function (workers import it by name). With one process the runs happen here,
    one after another, on all `threads`, exactly as a plain loop would run them. With `backend` "ray" they are
    Ray tasks (`address`: train.ray_address) on plan's threads per process; `folders` names the folders of
    `shared` a run reads and writes (pipeline.training.remote.RUN_FOLDERS by default)."""
    check_backend("train", backend)
    processes, per_process = plan(threads, workers, len(tasks))
    if backend == "ray":
        from pipeline.training.remote import RUN_FOLDERS, ray_runs

        return ray_runs(fn, tasks, shared, per_process, desc, address, RUN_FOLDERS if folders is None else folders)
    if processes == 1:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(per_process)
        try:
            return [fn(shared, *task) for task in tasks]
        finally:
            torch.set_num_threads(before)
    from pipeline import truth

    log.info("%s: %d runs on %d processes x %d torch thread(s)", desc, len(tasks), processes, per_process)
    init = (shared, per_process, logging.getLogger().getEffectiveLevel(), truth.guarded())
    try:
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=init) as pool:
            futures = [pool.submit(_call, fn, task) for task in tasks]
            with tqdm(total=len(futures), desc=desc, unit="run", leave=False) as bar:
                for f in futures:
                    f.add_done_callback(lambda _: bar.update(1))
                return [f.result() for f in futures]
    except BrokenProcessPool as e:
        raise PipelineError(f"{desc}: a training process died ({e}); out of memory? set train.workers: 1 to "
                            "train one run at a time") from None
