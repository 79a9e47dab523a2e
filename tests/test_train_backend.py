"""train.backend (pipeline/training/remote.py, pipeline/training/parallel.py): which runs go where, the order
of their results and files, their errors; and on a local Ray cluster (slow) the same models, dvclive logs,
summaries and sweep table as the local backend, byte for byte."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from pipeline.errors import DataError, ParamsError, PipelineError
from pipeline.experiment import RunsConfig, train_teachers, train_variant
from pipeline.training import loop, parallel, remote
from pipeline.training.remote import RUN_FOLDERS, Outcome, deliver, pack_inputs, run_task
from test_train import tiny_train, world  # noqa: F401  (module fixture of the synthetic world)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_run(shared: dict, name: str, fail: bool = False):
    """A run as pipeline.experiment's: reads the teacher folder, writes a model, a log and a checkpoint."""
    teacher = Path(shared["teacher_dir"]) / "t.txt"
    if fail:
        raise DataError(f"{Path(shared['teacher_dir']) / 's5.pt'}: no teacher for {name}")
    (Path(shared["out_dir"])).mkdir(parents=True, exist_ok=True)
    (Path(shared["out_dir"]) / f"{name}.pt").write_bytes(name.encode() + teacher.read_bytes())
    (Path(shared["live_dir"]) / name / "plots").mkdir(parents=True, exist_ok=True)
    (Path(shared["live_dir"]) / name / "plots" / "total.tsv").write_text(f"step\ttotal\n0\t{len(name)}\n")
    (Path(shared["work_dir"]) / name).mkdir(parents=True, exist_ok=True)
    (Path(shared["work_dir"]) / name / "last.pt").write_bytes(b"checkpoint")
    return name, torch.get_num_threads(), loop.EPOCH_BARS


def _shared(root: Path) -> dict:
    (root / "teacher").mkdir(parents=True)
    (root / "teacher" / "t.txt").write_bytes(b"|teacher")
    return dict(out_dir=root / "out", live_dir=root / "live", work_dir=root / "work", teacher_dir=root / "teacher",
                live_other=None, features="anything picklable")


def _outcomes(shared: dict, tasks: list[tuple], threads: int = 1) -> list[Outcome]:
    inputs = pack_inputs(shared, RUN_FOLDERS)
    return [run_task(_fake_run, shared, task, threads, RUN_FOLDERS, inputs, False) for task in tasks]


def test_bad_backend_is_named():
    with pytest.raises(ParamsError, match=r"^train.backend: 'spark', expected one of \('local', 'ray'\)"):
        RunsConfig(backend="spark").validate()
    with pytest.raises(ParamsError, match="train.backend: 'dask'"):
        parallel.map_runs(_fake_run, [("a",)], {}, 1, 1, backend="dask")
    assert RunsConfig(backend="ray", ray_address="10.0.0.1:6379").dispatch() == {"backend": "ray",
                                                                                 "address": "10.0.0.1:6379"}


def test_ray_gets_every_run_on_the_threads_a_local_process_would_get(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(remote, "ray_runs", lambda *a: seen.append(a) or ["from ray"])
    tasks = [("a",), ("b",), ("c",)]
    assert parallel.map_runs(_fake_run, tasks, {"x": 1}, 4, 2, "runs", backend="ray", address="head:6379") \
        == ["from ray"]
    assert seen == [(_fake_run, tasks, {"x": 1}, 2, "runs", "head:6379", RUN_FOLDERS)]  # plan(4, 2, 3) -> 2 threads
    parallel.map_runs(_fake_run, tasks, {}, 3, 0, backend="ray", folders={"out_dir": "out"})
    assert seen[-1][3] == 1 and seen[-1][-1] == {"out_dir": "out"}  # plan(3, 0, 3): three processes of one thread
    shared = _shared(tmp_path)
    assert parallel.map_runs(_fake_run, [("a",)], shared, 1, 1) == [("a", 1, True)]  # local: never Ray
    assert len(seen) == 2


def test_runs_come_back_in_task_order_with_the_local_files_written_in_task_order(tmp_path):
    tasks = [("r0",), ("r1",), ("r2",)]
    local = _shared(tmp_path / "local")
    expected = parallel.map_runs(_fake_run, tasks, local, 1, 1)
    threads, bars = torch.get_num_threads(), loop.EPOCH_BARS
    ray = _shared(tmp_path / "ray")
    outcomes = _outcomes(ray, tasks, threads=2)
    assert (torch.get_num_threads(), loop.EPOCH_BARS) == (threads, bars)  # a task restores its process
    assert not (tmp_path / "ray" / "out").exists()  # a task writes only in its own temporary folder
    assert all(o.result[1:] == (2, False) for o in outcomes)  # its thread count, no per-epoch bars
    assert "work_dir" not in outcomes[0].files and "teacher_dir" not in outcomes[0].files

    def arriving():  # the last run finishes first, then the first, then the middle one
        yield 2, outcomes[2]
        assert not (tmp_path / "ray" / "out").exists()  # run 2 waits for runs 0 and 1
        yield 0, outcomes[0]
        assert sorted(_tree(tmp_path / "ray" / "out")) == ["r0.pt"]
        yield 1, outcomes[1]

    got = deliver(arriving(), 3, ray, "runs")
    assert [r[0] for r in got] == [r[0] for r in expected] == ["r0", "r1", "r2"]
    for folder in ("out", "live"):
        assert _tree(tmp_path / "ray" / folder) == _tree(tmp_path / "local" / folder) != {}
    assert (tmp_path / "local" / "work" / "r0" / "last.pt").exists() and not (tmp_path / "ray" / "work").exists()


def test_the_first_failed_run_in_task_order_raises_the_local_one_line_error(tmp_path):
    tasks = [("r0",), ("r1", True), ("r2", True)]
    with pytest.raises(DataError) as local:
        parallel.map_runs(_fake_run, tasks, _shared(tmp_path / "local"), 1, 1)
    ray = _shared(tmp_path / "ray")
    outcomes = _outcomes(ray, tasks)
    assert str(tmp_path) not in str(outcomes[1].error)  # the worker's message names its temporary folder
    with pytest.raises(DataError) as raised:
        deliver([(2, outcomes[2]), (1, outcomes[1]), (0, outcomes[0])], 3, ray, "runs")
    assert str(raised.value) == str(local.value).replace("/local/", "/ray/")
    assert str(raised.value) == f"{tmp_path / 'ray' / 'teacher' / 's5.pt'}: no teacher for r1"
    assert raised.value.__cause__ is None and "\n" not in str(raised.value)
    assert sorted(_tree(tmp_path / "ray" / "out")) == ["r0.pt"]  # the runs before it are written, none after
    with pytest.raises(RuntimeError, match="1 of 2 runs never came back"):
        deliver([(0, outcomes[0])], 2, ray, "runs")


def test_a_missing_input_folder_stays_missing_on_the_worker(tmp_path):
    shared = dict(_shared(tmp_path), teacher_dir=tmp_path / "nowhere")
    assert pack_inputs(shared, RUN_FOLDERS) == {"teacher_dir": None}
    outcome = run_task(_fake_run, shared, ("r0", True), 1, RUN_FOLDERS, {"teacher_dir": None}, False)
    assert isinstance(outcome.error, DataError) and outcome.roots["teacher_dir"].endswith("/teacher_dir")
    with pytest.raises(ValueError, match="role 'both'"):
        pack_inputs(shared, {"out_dir": "both"})


class _FakeRay:
    """Ray's task calls run in this process, finishing last task first: ray_runs' dispatch without a cluster."""

    def __init__(self, crash: bool = False):
        import ray.exceptions

        self.exceptions, self.crash, self.calls, self.options = ray.exceptions, crash, [], {}

    def remote(self, **options):
        self.options = options

        def wrap(fn):
            return type("Remote", (), {"remote": staticmethod(lambda *a: self.calls.append((fn, a)) or
                                                                       len(self.calls) - 1)})
        return wrap

    def put(self, value):
        return value

    def as_completed(self, refs):
        for ref in reversed(refs):
            if self.crash:
                raise self.exceptions.WorkerCrashedError()
            fn, args = self.calls[ref]
            yield ref, fn(*args)


def _fake_cluster(monkeypatch, fake: _FakeRay, cpus: float = 4.0) -> list:
    import contextlib

    from pipeline import raycluster

    sessions = []
    monkeypatch.setattr(raycluster, "session", lambda address: sessions.append(address) or
                        contextlib.nullcontext(fake))
    monkeypatch.setattr(raycluster, "largest_node_cpus", lambda: cpus)
    monkeypatch.setattr(raycluster, "as_completed", fake.as_completed)
    return sessions


def test_ray_runs_sends_each_run_once_and_gathers_in_task_order(monkeypatch, tmp_path):
    fake = _FakeRay()
    sessions = _fake_cluster(monkeypatch, fake)
    shared = _shared(tmp_path)
    tasks = [("r0",), ("r1",), ("r2",)]
    got = remote.ray_runs(_fake_run, tasks, shared, 2, "runs", "head:6379")
    assert sessions == ["head:6379"] and fake.options == {"num_cpus": 2, "max_retries": 0}
    assert [a[2] for _, a in fake.calls] == tasks and all(a[0] is _fake_run and a[3] == 2 for _, a in fake.calls)
    assert all(a[1] is shared and a[4] == RUN_FOLDERS and a[6] is False for _, a in fake.calls)  # no truth guard here
    assert got == [("r0", 2, False), ("r1", 2, False), ("r2", 2, False)]  # finished last-first, gathered in order
    assert sorted(_tree(tmp_path / "out")) == ["r0.pt", "r1.pt", "r2.pt"] and not (tmp_path / "work").exists()
    assert remote.ray_runs(_fake_run, [], shared, 2, "runs", None) == [] and len(sessions) == 1  # no task, no Ray
    with pytest.raises(ParamsError, match=r"a run takes 8 torch thread\(s\).*largest Ray node has 4"):
        remote.ray_runs(_fake_run, tasks, shared, 8, "runs", None)


def test_a_dead_ray_worker_is_one_line(monkeypatch, tmp_path):
    fake = _FakeRay(crash=True)
    _fake_cluster(monkeypatch, fake)
    with pytest.raises(PipelineError, match=r"^kl sweep: a Ray worker died \(WorkerCrashedError\); out of memory"):
        remote.ray_runs(_fake_run, [("r0",), ("r1",)], _shared(tmp_path), 1, "kl sweep", None)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ on a local Ray cluster

@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_training_stage_on_ray_writes_the_local_bytes(world, tmp_path, ray_cluster):  # noqa: F811
    from pipeline.data.features import load_features
    from pipeline.models.baselines import cmvae_part
    from pipeline.sweep import kl_sweep
    from test_experiment import STUDENT

    feats, ds = load_features(world[0]), world[1]
    out = {}
    for backend in ("local", "ray"):
        start, root = time.perf_counter(), tmp_path / backend
        runs = RunsConfig(seeds=(0, 1), schemes=("weak", "strong"), loop=tiny_train(epochs=2), workers=1,
                          backend=backend)
        teachers = train_teachers(feats, ds, cmvae_part(STUDENT), runs, root / "teacher", root / "tw",
                                  root / "live_teacher")
        student = train_variant("student", feats, ds, STUDENT, runs, root / "student", root / "sw",
                                root / "teacher", root / "live")
        table = kl_sweep(feats, ds, STUDENT, runs, [0.0, STUDENT.kl_weight], root / "teacher", root / "sweep")
        out[backend] = (teachers, student, table)
        print(f"{backend}: 2 teachers + 4 students + 8 sweep runs in {time.perf_counter() - start:.1f} s")
    assert out["local"][:2] == out["ray"][:2]  # summaries, in the same order
    assert list(out["ray"][1]) == ["weak_s0", "weak_s1", "strong_s0", "strong_s1"]
    assert out["local"][2].equals(out["ray"][2])
    for folder in ("teacher", "live_teacher", "student", "live", "sweep"):
        local, ray = _tree(tmp_path / "local" / folder), _tree(tmp_path / "ray" / folder)
        assert sorted(local) == sorted(ray) and local == ray, folder
    assert len(_tree(tmp_path / "ray" / "sweep")) == 2 * 4 * 3  # weights x runs x criteria
    messages = {}
    for backend in ("local", "ray"):  # a run's expected error: the same one line from either backend
        root = tmp_path / backend
        with pytest.raises(DataError, match="no teacher for seed 5") as raised:
            train_variant("student", feats, ds, STUDENT, RunsConfig(seeds=(5, 6), schemes=("weak",), loop=tiny_train(),
                          workers=1, backend=backend), root / "c", root / "cw", root / "teacher")
        messages[backend] = str(raised.value)
    assert messages["ray"] == messages["local"].replace("/local/", "/ray/")
