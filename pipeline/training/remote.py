"""A training stage's runs on a Ray cluster (`train.backend: ray`), with the bytes the local backend gives.

Each run is the same call as on the local backend (pipeline.training.parallel.map_runs): the same
module-level run function, the same shared inputs and task arguments, on the torch thread count `plan` gives
a local process (the thread count can change float rounding, so it is kept; a Ray task reserves that many
CPUs). Every run seeds itself, so where it runs changes nothing it computes. A task asks Ray for CPUs
only: Ray hides the GPUs from it, so `train.loop.device: auto` trains on the CPU there; the bytes match a
local run on the CPU, not one on a GPU.

A worker need not share a filesystem with the stage. The folders of the shared dict named in `folders` are
replaced, inside the task, by folders of a temporary directory on the worker: an `in` folder (the teachers)
travels with the task, an `out` folder (models, dvclive logs) comes back as its files' bytes, a `scratch`
folder (resume checkpoints) stays on the worker. The stage writes the files back atomically
(pipeline.io.atomic_path) where the local backend writes them, one task at a time in task order, as soon as
a task and every task before it are back; results come back in task order too. A stage killed on Ray leaves
no resume checkpoint: its runs start over, with the same results.

Errors: a PipelineError inside a run is returned as a value, and the stage raises the first failure in
task order as the one-line error of the local backend, its message naming the stage's folders rather than
the worker's. Anything else is a bug and keeps Ray's traceback.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tqdm import tqdm

from pipeline.errors import ParamsError, PipelineError
from pipeline.io import atomic_path

log = logging.getLogger(__name__)

# the folders of pipeline.experiment's shared dict: models and logs come back, checkpoints stay, teachers travel
RUN_FOLDERS = {"out_dir": "out", "live_dir": "out", "work_dir": "scratch", "teacher_dir": "in"}
ROLES = ("in", "out", "scratch")
Files = list[tuple[str, bytes]]  # (path relative to its folder, bytes), sorted by path


@dataclass
class Outcome:
    """What one run sends back: its result and the files of its `out` folders, or its expected error."""

    result: Any = None
    files: dict[str, Files] = field(default_factory=dict)
    roots: dict[str, str] = field(default_factory=dict)  # folder key -> the worker's path standing in for it
    error: PipelineError | None = None


def _read_tree(root: Path) -> Files:
    if not root.is_dir():
        return []
    return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def _write_tree(root: Path, files: Files) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def pack_inputs(shared: dict, folders: dict[str, str]) -> dict[str, Files | None]:
    """The files of each `in` folder of `shared` (None: the folder does not exist, and will not on the worker)."""
    packed = {}
    for key, role in folders.items():
        if role not in ROLES:
            raise ValueError(f"folder {key!r}: role {role!r}, expected one of {ROLES}")
        if role == "in" and shared.get(key) is not None:
            packed[key] = _read_tree(Path(shared[key])) if Path(shared[key]).is_dir() else None
    return packed


def run_task(fn: Callable, shared: dict, task: tuple, threads: int, folders: dict[str, str],
             inputs: dict[str, Files | None], guard_truth: bool) -> Outcome:
    """fn(shared, *task) in this process on `threads` torch threads, its folders in a temporary directory:
    the body of a Ray task (callable anywhere; the thread count and the epoch bars are restored after)."""
    import torch

    from pipeline.training import loop

    if guard_truth:
        from pipeline.truth import forbid_truth_reads
        forbid_truth_reads()
    before = torch.get_num_threads(), loop.EPOCH_BARS
    with tempfile.TemporaryDirectory(prefix="bgm-run.") as tmp:
        local, roots = dict(shared), {}
        for key, role in folders.items():
            if shared.get(key) is None:
                continue
            local[key] = Path(tmp) / key
            roots[key] = str(local[key])
            if role == "in" and inputs.get(key) is not None:
                _write_tree(local[key], inputs[key])
        torch.set_num_threads(threads)
        loop.EPOCH_BARS = False  # the stage shows one bar over the runs
        try:
            result = fn(local, *task)
        except PipelineError as e:
            return Outcome(roots=roots, error=e)
        finally:
            torch.set_num_threads(before[0])
            loop.EPOCH_BARS = before[1]
        files = {key: _read_tree(Path(roots[key])) for key, role in folders.items() if role == "out" and key in roots}
        return Outcome(result=result, files=files, roots=roots)


def _stage_error(outcome: Outcome, shared: dict) -> PipelineError:
    """The run's error with the worker's folders replaced by the stage's (the message the local run gives)."""
    error, message = outcome.error, str(outcome.error)
    for key, root in sorted(outcome.roots.items(), key=lambda kv: -len(kv[1])):
        message = message.replace(root, str(shared[key]))
    try:
        return type(error)(message)
    except TypeError:
        error.args = (message,)
        return error


def deliver(outcomes: Iterable[tuple[int, Outcome]], n: int, shared: dict, desc: str) -> list:
    """The results in task order from (task index, Outcome) pairs arriving in any order: each task's files
    are written (atomically, under the stage's folders) once it and every task before it are back; the first
    failed task in order raises its error, and nothing of the tasks after it is written."""
    results: list = [None] * n
    waiting: dict[int, Outcome] = {}
    done = 0
    with tqdm(total=n, desc=desc, unit="run", leave=False) as bar:
        for i, outcome in outcomes:
            waiting[i] = outcome
            bar.update(1)
            while done in waiting:
                outcome = waiting.pop(done)
                if outcome.error is not None:
                    raise _stage_error(outcome, shared) from None
                for key, files in outcome.files.items():
                    for rel, data in files:
                        with atomic_path(Path(shared[key]) / rel) as tmp:
                            tmp.write_bytes(data)
                results[done] = outcome.result
                done += 1
    if done != n:
        raise RuntimeError(f"{desc}: {n - done} of {n} runs never came back")
    return results


def ray_runs(fn: Callable, tasks: Sequence[tuple], shared: dict, threads: int, desc: str, address: str | None,
             folders: dict[str, str] = RUN_FOLDERS) -> list:
    """[fn(shared, *task) for task in tasks] as Ray tasks of `threads` CPUs each (pipeline.raycluster's
    session: `address`, or a local cluster), with their files written here and their results in task order."""
    from pipeline import raycluster, truth

    if not tasks:
        return []
    inputs = pack_inputs(shared, folders)
    with raycluster.session(address) as ray:
        largest = raycluster.largest_node_cpus()
        if threads > largest:
            raise ParamsError(f"train.backend: ray: a run takes {threads} torch thread(s) and as many Ray CPUs (the "
                              f"share train.loop.threads / train.workers give it locally, which keeps the bytes), "
                              f"but the largest Ray node has {largest:g}; lower train.loop.threads or raise "
                              "train.workers")
        remote = ray.remote(num_cpus=threads, max_retries=0)(run_task)
        shared_ref, inputs_ref = ray.put(shared), ray.put(inputs)
        refs = [remote.remote(fn, shared_ref, task, threads, folders, inputs_ref, truth.guarded()) for task in tasks]
        log.info("%s: %d runs on Ray (%s), %d torch thread(s) each", desc, len(tasks), address or "local cluster",
                 threads)
        lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError)
        # a failed run stops the stage; runs still going are not cancelled (ray.cancel of a task that is just
        # finishing can abort the driver in Ray 2.60): a session started here ends with the stage, and a task
        # left running on a cluster writes only in its own temporary folder
        try:
            return deliver(raycluster.as_completed(refs), len(tasks), shared, desc)
        except lost as e:  # as the local backend's dead process: one line, not Ray's report
            raise PipelineError(f"{desc}: a Ray worker died ({type(e).__name__}); out of memory? give the Ray "
                                "nodes more memory, or fewer runs per node (lower train.workers: more CPUs per "
                                "run)") from None
