"""The pre-registered science grid: where does deconfounding beat plain CMVAE on the truth?

configs/science.yaml fixes everything before a cell runs: the world (feature-level, large enough that
T_diverse holds >= 1,000 test videos), the grid (taste strength b x content coupling), the variants, the
seeds and the metrics. `queue` turns every cell into a `dvc exp run --queue` of the whole pipeline with
those params (`dvc queue start` then runs them); `collect` reads each finished cell's reports/claim.json
from its experiment commit and writes reports/science.md (every cell, every variant, with CIs and the
paired verdicts against CMVAE) and reports/science.png.

    python -m pipeline science queue      # prints and runs the dvc exp run --queue commands
    dvc queue start -j 1                  # runs them (make science does both and waits)
    python -m pipeline science collect    # reports/science.md, reports/science.png
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from pipeline.errors import ParamsError, PipelineError

CONFIG = Path("configs/science.yaml")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    name: str
    fixed: dict  # params key -> value, the same in every cell
    # params key -> list of values, or a named axis: name -> {value name: {params key: value}} (the grid is
    # their product; a named value sets every key of its mapping, e.g. pgc: {clean: {}, shifted: {...}})
    axes: dict
    metrics: list  # claim.json metric keys reported per cell
    baseline: str
    figure: list  # the metrics drawn against the first axis in reports/<name>.png
    hypotheses: list = dataclasses.field(default_factory=list)  # pre-registered (pipeline/report/hypotheses.py)
    source: str = str(CONFIG)  # the file the grid was read from, named in the report

    def cells(self) -> list[dict]:
        keys = list(self.axes)
        return [dict(zip(keys, values)) for values in itertools.product(*(list(self.axes[k]) for k in keys))]

    def cell_params(self, cell: dict) -> dict:
        """The params keys a cell sets: plain axes directly, a named axis's value through its mapping."""
        out = {}
        for key, value in cell.items():
            out.update(self.axes[key][value] or {} if isinstance(self.axes[key], dict) else {key: value})
        return out

    def cell_name(self, cell: dict) -> str:
        short = {"world.preference_exponent": "b", "world.content_coupling": "c"}
        return f"{self.name}-" + "-".join(f"{short.get(k, k.split('.')[-1])}{_short(v)}" for k, v in cell.items())


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def load_grid(path: str | Path = CONFIG) -> Grid:
    raw = yaml.safe_load(Path(path).read_text())
    for key in ("name", "fixed", "grid", "metrics", "figure"):
        if key not in raw:
            raise ParamsError(f"{path}: missing {key!r}")
    grid = Grid(raw["name"], dict(raw["fixed"]), dict(raw["grid"]), list(raw["metrics"]), raw.get("baseline", "cmvae"),
                list(raw["figure"]), list(raw.get("hypotheses") or []), str(path))
    from pipeline.report.hypotheses import check_hypotheses

    check_hypotheses(grid.hypotheses, grid.cells())
    return grid


def _value(v) -> str:
    """A value as `dvc exp run -S` parses it (YAML flow style; null as null)."""
    return yaml.safe_dump(v, default_flow_style=True, width=float("inf")).strip().removesuffix("\n...").strip()


def queue_commands(grid: Grid) -> list[list[str]]:
    out = []
    for cell in grid.cells():
        sets = [f"{k}={_value(v)}" for k, v in {**grid.fixed, **grid.cell_params(cell)}.items()]
        out.append(["dvc", "exp", "run", "--queue", "--name", grid.cell_name(cell),
                    *itertools.chain.from_iterable(("-S", s) for s in sets)])
    return out


def finished(shown: list) -> dict[str, str]:
    """Experiment name -> its commit, of the experiments in `dvc exp show --json` output that finished: a
    queued or running one is listed too, under its queue commit, whose reports are the baseline's."""
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state", "success")
            for rev in exp.get("revs") or []:
                if rev.get("name") and rev.get("rev") and state == "success":
                    found[rev["name"]] = rev["rev"]
    return found


def _experiments() -> dict[str, str]:
    """Experiment name -> its commit, every branch's finished experiments (`dvc exp show --json`)."""
    out = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits", "--no-fetch"], capture_output=True,
                         text=True, check=True).stdout
    return finished(json.loads(out))


def _claim(rev: str, path: str = "reports/claim.json", missing_ok: bool = False) -> dict:
    text = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=not missing_ok)
    return json.loads(text.stdout) if text.returncode == 0 else {}


def cell_table(grid: Grid, claims: dict[str, dict]) -> list[dict]:
    """One row per (cell, variant, metric): value, CI, and the verdict against the baseline."""
    rows = []
    for cell in grid.cells():
        claim = claims.get(grid.cell_name(cell))
        if claim is None:
            continue
        verdicts = {(v["challenger"], v.get("baseline", "cmvae"), v["metric"]): v for v in claim["verdicts"]}
        for variant, metrics in claim["variants"].items():
            for metric in grid.metrics:
                if metric not in metrics:
                    continue
                m = metrics[metric]
                signed = metric.replace("abs_bias_amplification", "bias_amplification")
                v = verdicts.get((variant, grid.baseline, signed), {})
                rows.append({**cell, "variant": variant, "metric": metric, "value": m["value"], "low": m["low"],
                             "high": m["high"], "videos": m["videos"], "effect": v.get("effect"),
                             "p_holm": v.get("p_holm"), "verdict": v.get("verdict", "–" if variant == grid.baseline
                                                                            else "n/a")})
    return rows


def science_md(grid: Grid, rows: list[dict], missing: Sequence[str]) -> str:
    import pandas as pd

    lines = [f"# Science grid `{grid.name}` (pre-registered in {grid.source})\n",
             "Every cell: value [95% CI over seeds and test videos, pipeline/report/stats.py] of each variant, and "
             f"its paired verdict against {grid.baseline} as the cell's reports/claim.md gives it (seed-aware p; Holm "
             "over that cell's confirmatory family, uncorrected for its exploratory rows). The hypotheses above are "
             "decided by their own Holm over the whole experiment. |BA|: magnitude of bias amplification, lower is "
             "better.\n"]
    if missing:
        lines.append(f"**Cells without results: {', '.join(missing)}** (not run or failed).\n")
    table = pd.DataFrame(rows)
    for cell in grid.cells():
        sub = table[(table[list(cell)] == pd.Series(cell)).all(axis=1)] if len(table) else table
        if sub.empty:
            continue
        lines.append(f"## {', '.join(f'{k} = {_short(v)}' for k, v in cell.items())}\n")
        lines.append("| variant | " + " | ".join(grid.metrics) + " |")
        lines.append("|---|" + "---|" * len(grid.metrics))
        for variant in dict.fromkeys(sub["variant"]):
            cells = []
            for metric in grid.metrics:
                r = sub[(sub["variant"] == variant) & (sub["metric"] == metric)]
                if r.empty:
                    cells.append("–")
                    continue
                r = r.iloc[0]
                verdict = "" if r["verdict"] in ("–", "n/a") else f" **{r['verdict']}**"
                cells.append(f"{r['value']:.4f} [{r['low']:.4f}, {r['high']:.4f}]{verdict}")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append(f"\n(videos per metric: {', '.join(f'{m} {int(sub[sub.metric == m].videos.max())}' for m in grid.metrics if (sub.metric == m).any())})\n")
    return "\n".join(lines)


def science_figure(grid: Grid, rows: list[dict], path: Path, metrics: Sequence[str]) -> None:
    """One panel per (metric, coupling): the metric against b for every variant, with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import pandas as pd
    from matplotlib import pyplot as plt

    table = pd.DataFrame(rows)
    b_key, c_key = list(grid.axes)[:2]  # x: the first axis (taste strength b); a column of panels per second
    couplings = list(grid.axes[c_key])
    fig, axes = plt.subplots(len(metrics), len(couplings), figsize=(5 * len(couplings), 3.6 * len(metrics)),
                             dpi=100, squeeze=False)
    for i, metric in enumerate(metrics):
        for j, c in enumerate(couplings):
            ax = axes[i][j]
            sub = table[(table["metric"] == metric) & (table[c_key] == c)] if len(table) else table
            variants = list(dict.fromkeys(sub["variant"])) if len(sub) else []
            for n, variant in enumerate(variants):
                v = sub[sub["variant"] == variant].sort_values(b_key)
                dodge = (n - (len(variants) - 1) / 2) * 0.06
                x = v[b_key].to_numpy(dtype=float) + dodge
                y = v["value"].to_numpy(dtype=float)
                # a magnitude's value (|mean of signed BA|) can lie outside the percentile CI of the bootstrapped
                # magnitudes (near 0 both tails are folded up): draw the interval, never a negative bar
                low, high = v["low"].to_numpy(dtype=float), v["high"].to_numpy(dtype=float)
                err = np.clip(np.vstack([y - low, high - y]), 0, None)
                ax.errorbar(x, y, yerr=err, marker="o", capsize=2, label=variant)
            ax.set_title(f"{metric}, {c_key.split('.')[-1]} {_short(c)}", fontsize=9)
            ax.set_xlabel("taste strength b (world.preference_exponent)")
            if variants:
                ax.legend(fontsize=6, ncols=2)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def collect(grid: Grid, out: Path = Path("reports")) -> list[str]:
    """reports/<name>.md, .png and .json from every finished cell (with hypotheses: their experiment-wide
    verdicts, each cell's selection regret and teacher guard); the missing cells' names."""
    from pipeline.io import atomic_path
    from pipeline.report.hypotheses import evaluate, hypotheses_md

    experiments = _experiments()
    claims, selections, missing = {}, {}, []
    for cell in grid.cells():
        name = grid.cell_name(cell)
        if name in experiments:
            claims[name] = _claim(experiments[name])
            selections[name] = _claim(experiments[name], "reports/selection.json", missing_ok=True)
        else:
            missing.append(name)
    rows = cell_table(grid, claims)
    text = science_md(grid, rows, missing)
    extra = {}
    if grid.hypotheses:
        def named(cell):
            return grid.cell_name({k: cell[k] for k in grid.axes})

        tests, outcomes = evaluate(grid.hypotheses, named, claims, selections)
        text = (hypotheses_md(grid.hypotheses, tests, outcomes, named) + "\n" + text + "\n"
                + selection_md(grid, selections))
        extra = {"hypotheses": outcomes, "tests": tests, "selection": selections}
    with atomic_path(out / f"{grid.name}.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(out / f"{grid.name}.png") as tmp:
        science_figure(grid, rows, tmp, grid.figure)
    with atomic_path(out / f"{grid.name}.json") as tmp:
        tmp.write_text(json.dumps({"cells": rows, **extra} if extra else rows, indent=1, sort_keys=True) + "\n")
    return missing


def selection_md(grid: Grid, selections: dict[str, dict]) -> str:
    """Each cell's truth-free kl_weight choices with their regret, and its teacher guard."""
    lines = ["## Choosing kl_weight without truth, per cell (regret: truth NDCG of the truth-best weight minus "
             "the chosen one's)\n", "| cell | criterion | chosen kl_weight | its truth NDCG | truth-best kl_weight "
             "| regret |", "|---|---|---|---|---|---|"]
    guards = ["\n## Teacher guard per cell (truth-free)\n", "| cell | criterion | teacher UGC val Recall | UGC-only "
              "val Recall | visual domain AUC | warns |", "|---|---|---|---|---|---|"]
    for cell in grid.cells():
        name = grid.cell_name(cell)
        sel = selections.get(name) or {}
        for r in sel.get("selection", []):
            lines.append(f"| {name} | {r['criterion']} | {r['chosen_kl_weight']:g} | "
                         f"{r.get('chosen_truth_ndcg', float('nan')):.4f} | {r.get('best_kl_weight', float('nan')):g} "
                         f"| {r.get('regret', float('nan')):.4f} |")
        g = sel.get("guard") or {}
        if g:
            guards.append(f"| {name} | {g.get('criterion', 'val')} | {g['teacher_val']:.4f} | "
                          f"{g.get('reference_val', float('nan')):.4f} | "
                          f"{g['domain_auc'].get('visual', float('nan')):.3f} | {'yes' if g.get('warning') else 'no'} |")
    return "\n".join(lines + guards) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline science", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("queue", "print", "collect"))
    ap.add_argument("--config", type=Path, default=CONFIG)
    args = ap.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(name)s: %(message)s")
    try:
        grid = load_grid(args.config)
        if args.action in ("queue", "print"):
            for cmd in queue_commands(grid):
                print(" ".join(f"'{c}'" if any(ch in c for ch in "[] ,") else c for c in cmd), flush=True)
                if args.action == "queue":
                    subprocess.run(cmd, check=True)
        else:
            missing = collect(grid)
            if missing:
                print(f"cells without results: {missing}", file=sys.stderr)
    except (PipelineError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
