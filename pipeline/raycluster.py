"""The pipeline's Ray convention, in one place: which backends exist, how a cluster is joined or started,
and how tasks come back.

`backend: local | ray` is a params key of extraction (`features_*`, pipeline/features/backend.py) and of
training (`train`, pipeline/training/remote.py). With `ray`, `ray_address` names a running cluster
(ray.init(address=...)); empty, a local cluster is started on the cores this process may use for the stage
and shut down after it. A Ray session that is already running (a test's cluster, a notebook's) is used as it is and
left running. Dashboards and driver-side worker logs stay off: a stage prints its own progress.

pipeline/features/backend.py's map_shards predates this module and starts Ray the same way inline; it can
call `session` and `as_completed` unchanged.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from pipeline.errors import ParamsError
from pipeline.resources import available_cpus

BACKENDS = ("local", "ray")


def check_backend(group: str, backend: str) -> None:
    """A ParamsError naming `<group>.backend` unless it is one of BACKENDS."""
    if backend not in BACKENDS:
        raise ParamsError(f"{group}.backend: {backend!r}, expected one of {BACKENDS}")


@contextlib.contextmanager
def session(address: str | None) -> Iterator:
    """The `ray` module, initialised for this block: the running session if there is one, else
    ray.init(address=address), else (no address) a local cluster on this machine's cores; a session started
    here is shut down when the block ends."""
    import ray

    started = not ray.is_initialized()
    if started:
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=available_cpus(), **kwargs)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def largest_node_cpus() -> float:
    """The CPUs of the cluster's largest live node: a task asking for more would wait forever."""
    import ray

    return max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)


def as_completed(refs: Sequence) -> Iterator[tuple[int, object]]:
    """(index in `refs`, result) for each task as it finishes; a task's exception is raised by ray.get."""
    import ray

    order = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield order[done[0]], ray.get(done[0])

