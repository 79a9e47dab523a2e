"""Speed at TT-150k size: `python -m pipeline.bench [--features DIR --dataset DIR --scheme weak] [--epochs 4]`.

Trains the DebCM student with a frozen teacher in the loop through the pipeline's own `fit` (validation and
checkpoint every epoch, as the stages run it) and times a full-pool evaluation of 15,000 videos. The data is
either seeded random features of TT-150k's shape (146,351 videos with 2048-d visual and 512-d text features,
3,003 music with 128 + 128-d audio, 80 % of the videos as training pairs, 20,000 uploaders, a 14.6k
validation set with 100 negatives) or a built dataset (`--features data/features --dataset data/dataset`,
e.g. an imported release or the TT-150k-sized world of configs/tt150k_world.yaml). Random features make the
timing honest (the work per step does not depend on what the numbers are) but say nothing about quality;
the teacher is an untrained CMVAE of the right shape (its posteriors cost the same as a trained one's).

After each student epoch a plain reference loop of the same shape (pipeline/bench_reference.py: two Gaussian
encoders, cross-reconstruction, in-batch hardest-k ranking, the whole data as tensors) trains one epoch on the
same tensors, so the two alternate under the same load; the record holds both and their ratio
(`--no-reference` skips it). After the epochs one step's matrix products are replayed alone
(pipeline/bench_floor.py): the seconds per epoch that no implementation of the same products can beat.
`--scaling` measures how the cost grows instead (pipeline/bench_scaling.py:
reports/scaling.{csv,json,png}).

`--extract data/raw` times extraction instead (pipeline/bench_extract.py: extract_video and rhythm on the
first videos and pairs of a built data/raw), recorded under "extraction".

Each run is written to reports/bench.json under its label (with the exact command, CPU model, threads, torch
version and load average before and after); `--render` rewrites the speed table of reports/performance.md from
that file (`speed_table`), and tests/test_bench.py checks that the two agree.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from pipeline.errors import DataError

N_VIDEOS, N_MUSIC, N_UPLOADERS, VISUAL, TEXT, MUSIC = 146_351, 3_003, 20_000, 2048, 512, 256
BENCH_JSON = Path("reports/bench.json")
PAGE = Path("reports/performance.md")  # the dated measurements page that holds the rendered table
TABLE_START, TABLE_END = "<!-- bench table: python -m pipeline.bench --render -->", "<!-- end bench table -->"
# Environment variables that change how torch's CPU threads behave; a run records the ones that were set.
THREAD_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def tt150k_data(seed: int = 0, n_videos: int = N_VIDEOS, visual_dim: int = VISUAL, n_music: int = N_MUSIC):
    """A TrainData of TT-150k's shape from seeded random features."""
    import numpy as np
    import torch

    from pipeline.data.schema import GENRES
    from pipeline.sampling.negatives import sample_negatives
    from pipeline.training.data import TrainData

    g = torch.Generator().manual_seed(seed)
    n_train, n_val = int(0.8 * n_videos), int(0.1 * n_videos)
    tastes = torch.distributions.Dirichlet(torch.full((len(GENRES),), 0.4)).sample((N_UPLOADERS,))
    genre = torch.zeros(n_music, len(GENRES))
    genre[torch.arange(n_music), torch.randint(0, len(GENRES), (n_music,), generator=g)] = 1.0
    val_video = torch.arange(n_train, n_train + n_val)
    positive = np.random.default_rng(seed).integers(0, n_music, n_val)
    negatives = sample_negatives(positive, n_music, 100, np.random.default_rng(seed + 1), where="bench val")
    candidates = torch.from_numpy(np.concatenate([positive[:, None], negatives], axis=1))
    return TrainData(
        visual=torch.randn(n_videos, visual_dim, generator=g), music=torch.randn(n_music, MUSIC, generator=g),
        video_idx=torch.arange(n_train), music_idx=torch.randint(0, n_music, (n_train,), generator=g),
        uploader_idx=torch.randint(0, N_UPLOADERS, (n_train,), generator=g), uploader_dist=tastes,
        music_genre=genre, val_video=val_video, val_candidates=candidates, val_weight=np.ones(n_val),
        prior=tastes.mean(0).double().numpy(), text=torch.randn(n_videos, TEXT, generator=g),
        text_mask=torch.rand(n_videos, generator=g) < 0.7)


def full_pool_eval_seconds(model, data, n_test: int = 15_000, ks=(10, 15, 20, 25)) -> float:
    """Wall time of the evaluate stage's work for one test set: embed, score against every music, rank."""
    import numpy as np
    import torch

    from pipeline.inference import embed
    from pipeline.metrics import ScoreMatrix, full_ranks, ranking_metrics

    device = next(model.parameters()).device
    n_test = min(n_test, data.visual.shape[0], data.music_idx.shape[0])
    rows = torch.arange(n_test)
    start = time.perf_counter()
    video_z = embed(model.video_embedding, {k: v.to(device) for k, v in data.video_batch(rows).items()})
    music_z = embed(model.music_embedding, {k: v.to(device) for k, v in data.music_batch().items()})
    ranks = full_ranks(ScoreMatrix(video_emb=video_z, music_emb=music_z), data.music_idx[:n_test].cpu().numpy())
    ranking_metrics(ranks, ks, np.ones(n_test))
    return time.perf_counter() - start


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('unknown' where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def command_line(argv) -> str:
    """The command as typed, with the thread environment variables that were set in front of it."""
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in THREAD_ENV if k in os.environ]
    return " ".join(env + ["python -m pipeline.bench", *map(shlex.quote, argv)])


def _median(xs) -> float | None:
    import numpy as np
    return round(float(np.median(xs)), 2) if len(xs) else None


def run(args, argv) -> dict:
    """One benchmark run: the record that reports/bench.json keeps under its label.

    Long on purpose: one linear record (set-up, timed epochs, validation, full ranking) in the order bench.json
    keeps it.
    """
    import resource

    import numpy as np
    import torch

    from pipeline.bench_reference import ReferenceRun
    from pipeline.models.cmvae import CMVAE, CMVAEConfig
    from pipeline.models.debcm import DebCM, DebCMConfig
    from pipeline.training.config import TrainConfig
    from pipeline.resources import resolve_device
    from pipeline.training.loop import fit, validation_recall

    load_start = load_average()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dataset:
        from pipeline.training.data import build_train_data
        from pipeline.sampling.dataset import load_dataset
        data = build_train_data(args.features, load_dataset(args.dataset), args.scheme)
        source = {"source": "dataset", "features": str(args.features), "dataset": str(args.dataset),
                  "scheme": args.scheme}
    else:
        data = tt150k_data()
        source = {"source": "random"}
    visual, music, text = data.visual.shape[1], data.music.shape[1], None if data.text is None else data.text.shape[1]
    torch.manual_seed(0)
    teacher = CMVAE(visual, music, text, CMVAEConfig())
    student = DebCM(visual, music, text, DebCMConfig())
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, patience=10**6,
                      precision=args.precision)
    device = resolve_device(args.device)
    on_device = data.to(device)
    # The plain reference loop (pipeline/bench_reference.py) runs one epoch after each of the student's, on the
    # same tensors: the two alternate, so a change of load reaches both.
    reference = ReferenceRun(on_device) if args.reference else None
    wall, cpu, ref_wall = [], [], []
    mark = [time.perf_counter(), time.process_time()]

    def epoch_end(epoch, record):
        wall.append(time.perf_counter() - mark[0])  # the first includes scaling and the teacher's posteriors
        cpu.append(time.process_time() - mark[1])
        if reference is not None:
            ref_wall.append(reference.epoch(epoch, cfg.effective_batch_size(int(data.video_idx.shape[0]))))
        mark[:] = [time.perf_counter(), time.process_time()]

    with tempfile.TemporaryDirectory() as work:
        summary = fit(student, data, cfg, work, teacher=teacher, on_epoch_end=epoch_end)
    validation = []
    for _ in range(3):  # the validation inside each epoch above, timed on its own
        t = time.perf_counter()
        validation_recall(student, on_device, cfg.val_k)
        validation.append(time.perf_counter() - t)
    evals = [full_pool_eval_seconds(student, on_device) for _ in range(3)]
    n = int(data.video_idx.shape[0])
    steps = -(-n // summary["batch_size"])
    floor = training_floor(student, teacher, on_device, cfg, device, summary["batch_size"], steps)
    return {
        "command": command_line(argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": str(device),
                    "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}},
        "load_average_start": load_start, "load_average_end": load_average(),
        "data": {**source, "videos": int(data.visual.shape[0]), "music": int(data.music.shape[0]), "train_pairs": n,
                 "validation_videos": int(data.val_video.shape[0]), "visual_dim": visual, "text_dim": text,
                 "music_dim": music},
        "config": {"epochs": args.epochs, "batch_size": summary["batch_size"],
                   "steps_per_epoch": steps, "precision": args.precision},
        "figures": {
            "epoch_seconds": [round(float(s), 2) for s in wall],
            "epoch_cpu_seconds": [round(float(s), 2) for s in cpu],
            "first_epoch_seconds": round(float(wall[0]), 2),
            "epoch_seconds_median": _median(wall[1:]),
            "epoch_cpu_seconds_median": _median(cpu[1:]),
            "validation_seconds_median": round(float(np.median(validation)), 3),
            "full_ranking_seconds_median": round(float(np.median(evals)), 3),
            "full_ranking_videos": min(15_000, int(data.visual.shape[0]), n),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            **reference_figures(wall, ref_wall), **floor},
    }


def training_floor(student, teacher, data, cfg, device, batch_size: int, steps: int) -> dict:
    """pipeline/bench_floor.py's figures for one training step of the trained student on the first
    `batch_size` pairs (its forward under cfg.precision, then backward), scaled to `steps` per epoch."""
    import torch

    from pipeline.bench_floor import step_floor
    from pipeline.training.loop import _precompute_teacher, step_precision

    _precompute_teacher(teacher, data)  # the student's batch carries the teacher's posteriors
    rows = torch.arange(min(batch_size, int(data.video_idx.shape[0])), device=data.video_idx.device)
    batch = data.batch(rows)
    student.train()

    def step():
        with step_precision(student, cfg.precision, device):
            total = student.loss(batch)["total"]
        total.backward()

    try:
        return step_floor(step, steps, device)
    finally:
        student.zero_grad(set_to_none=True)


def reference_figures(student: list[float], reference: list[float]) -> dict:
    """The reference loop's epochs (training only) and the student's median epoch (with its validation and
    checkpoint, as `fit` runs it) over the reference's median, both after the first epoch."""
    if not reference:
        return {}
    ref = _median(reference[1:]) if len(reference) > 1 else None
    ratio = _median(student[1:]) / ref if ref else None
    return {"reference_epoch_seconds": [round(float(s), 2) for s in reference],
            "reference_epoch_seconds_median": ref,
            "student_to_reference": None if ratio is None else round(ratio, 2)}


def extraction_record(args, argv) -> dict:
    """One `--extract` run: pipeline.bench_extract's figures with the command, machine and load average."""
    import torch

    from pipeline.bench_extract import run_extraction

    load_start = load_average()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_extraction(args.extract, args.videos, args.pairs, args.rounds, args.precision)
    return {"command": command_line(argv), "date": time.strftime("%Y-%m-%d"),
            "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__, "device": "cpu",
                        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}},
            "load_average_start": load_start, "load_average_end": load_average(), **result}


def default_label(args) -> str:
    source = f"{Path(args.dataset).name}-{args.scheme}" if args.dataset else "random"
    threads = args.threads or os.cpu_count()
    policy = os.environ.get("OMP_WAIT_POLICY", "").lower()
    return f"{source}-{args.precision}-{threads}t" + (f"-{policy}" if policy else "")


def record_run(path: Path, label: str, record: dict, kind: str = "runs") -> dict:
    """reports/bench.json with `record` stored under bench[kind][label] (replacing an earlier run of that
    label); kind "runs" holds the training runs, "extraction" the extraction ones."""
    from pipeline.io import write_json

    bench = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    bench.setdefault(kind, {})[label] = record
    write_json(bench, path)
    return bench


def _cell(x) -> str:
    return "" if x is None else f"{x:g}"


def _reference_cell(f: dict) -> str:
    if "reference_epoch_seconds" not in f:
        return ""
    return f"{_cell(f['reference_epoch_seconds_median'])} ({', '.join(map(_cell, f['reference_epoch_seconds'][1:]))})"


def _floor_cell(f: dict) -> str:
    if "matmul_floor_epoch_seconds" not in f:
        return ""
    return (f"{_cell(f['matmul_floor_epoch_seconds'])} ({_cell(f['gflop_per_step'])} GFLOP per step "
            f"at {_cell(f['matmul_gflops'])} GFLOP/s)")


def speed_table(bench: dict) -> str:
    """The speed table of reports/performance.md: one row per run of reports/bench.json (sorted by label)."""
    lines = ["| run | data | epochs | student epoch, median after the first (s) | CPU s per epoch | first epoch (s) "
             "| reference loop epoch (s) | student / reference | matrix products alone per epoch (s) | validation (s) "
             "| full ranking (s) | threads | load avg start -> end | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in sorted(bench["runs"].items()):
        d, f, m, c = r["data"], r["figures"], r["machine"], r["config"]
        what = "random features" if d["source"] == "random" else f"{d['dataset']} ({d['scheme']})"
        data = (f"{what}: {d['videos']:,} videos ({d['visual_dim']}-d visual, {d['text_dim']}-d text), "
                f"{d['music']:,} music ({d['music_dim']}-d), {d['train_pairs']:,} pairs, batch {c['batch_size']} "
                f"({c['steps_per_epoch']} steps), {d['validation_videos']:,} validation videos, {c['precision']}")
        load = f"{r['load_average_start'][0]:g} -> {r['load_average_end'][0]:g}"
        lines.append(f"| {label} | {data} | {c['epochs']} | **{_cell(f['epoch_seconds_median'])}** "
                     f"({', '.join(map(_cell, f['epoch_seconds'][1:]))}) | {_cell(f['epoch_cpu_seconds_median'])} "
                     f"| {_cell(f['first_epoch_seconds'])} | {_reference_cell(f)} | {_cell(f.get('student_to_reference'))} "
                     f"| {_floor_cell(f)} "
                     f"| {_cell(f['validation_seconds_median'])} "
                     f"| {_cell(f['full_ranking_seconds_median'])} ({f['full_ranking_videos']:,} videos) "
                     f"| {m['threads']} | {load} | `{r['command']}` |")
    every = [r for _, r in sorted(bench["runs"].items())] + list(bench.get("extraction", {}).values())
    machines = dict.fromkeys(f"{r['machine']['cpu']} ({r['machine']['cpus']} CPUs), torch {r['machine']['torch']}, "
                             f"{r['machine']['device']}, {r['date']}" for r in every)  # in order, once each
    tables = [f"Machine: {'; '.join(machines)}.", "", *lines]
    if bench.get("extraction"):
        from pipeline.bench_extract import extraction_table
        tables += ["", "Extraction (`--extract`):", "", extraction_table(bench["extraction"])]
    return "\n".join(tables)


def render_page(page: Path, bench: dict) -> None:
    """Replace the table between the bench markers of `page` with speed_table(bench)."""
    from pipeline.io import atomic_path

    text = page.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise DataError(f"{page}: no bench table markers ({TABLE_START!r} ... {TABLE_END!r})")
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    with atomic_path(page) as tmp:
        tmp.write_text(f"{head}{TABLE_START}\n{speed_table(bench)}\n{TABLE_END}{tail}")


def page_table(page: Path) -> str:
    """The table currently between the bench markers of `page`."""
    return page.read_text().split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip("\n")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help="epochs (default 4: the median is over the last 3)")
    ap.add_argument("--features", type=Path, help="a built data/features (with --dataset): time on real data")
    ap.add_argument("--dataset", type=Path, help="a built data/dataset")
    ap.add_argument("--scheme", default="weak", help="the split scheme whose training pairs are used")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                    help="train.loop.precision; with --extract features_video.precision (auto allowed)")
    ap.add_argument("--extract", type=Path, metavar="RAW", help="time extract_video and rhythm on a built data/raw")
    ap.add_argument("--videos", type=int, default=240, help="--extract: videos timed (the first by id)")
    ap.add_argument("--pairs", type=int, default=240, help="--extract: UGC pairs timed for rhythm")
    ap.add_argument("--rounds", type=int, default=3, help="--extract: alternating rounds (the median is kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: every core)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--label", help="the run's name in reports/bench.json (default: data-precision-threads)")
    ap.add_argument("--out", type=Path, default=BENCH_JSON, help="where runs are recorded (default reports/bench.json)")
    ap.add_argument("--render", action="store_true", help=f"only rewrite {PAGE}'s table from --out")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the plain reference loop timed after each student epoch")
    ap.add_argument("--scaling", action="store_true",
                    help="the scaling curves instead: reports/scaling.{csv,json,png} (pipeline/bench_scaling.py)")
    args = ap.parse_args(argv)
    if args.scaling:
        from pipeline.bench_scaling import run_scaling
        run_scaling(Path("reports"), argv, threads=args.threads)
        return
    if args.render:
        render_page(PAGE, json.loads(args.out.read_text()))
        return
    if args.extract is not None:
        record_run(args.out, args.label or f"extract-{args.precision}", extraction_record(args, argv), "extraction")
        return
    if args.precision == "auto":
        ap.error("--precision auto is for --extract only (training runs fp32 or bf16)")
    if (args.features is None) != (args.dataset is None):
        ap.error("--features and --dataset go together")
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch carries the one-off teacher posteriors)")
    record = run(args, argv)
    record_run(args.out, args.label or default_label(args), record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
