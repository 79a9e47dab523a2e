"""Docs that cannot rot silently: every file path and every dotted Python name that README.md and docs/*.md
mention exists, the variant count they state is the registry's, and the params rule they state holds.

What is checked in a page (prose, tables, code spans, links):
- dotted names `pipeline.x.y` / `stages.x` (a module, or a module and attributes: `pipeline.gaussian.
  product_of_experts`, `pipeline.models.debcm.DebCM.loss`), resolved with `ast` over the project's files (a
  def, class, assignment, annotated field or import of that name), without importing anything;
- file paths in code spans and link targets that start with a folder or file of the repository's root
  (`pipeline/losses.py`, `reports/claim.md`, `docs/world.md`, `Makefile`). A path exists when git knows it
  (tracked, or new and not ignored) or when it is (under) an output that dvc.yaml declares (`data/raw/...`,
  `models/student/...`): those appear only after `make repro`. Paths with placeholders (`<variant>`,
  `{val,test}`, `*`, `${...}`, `...`) are patterns, not paths, and are skipped.
"""
from __future__ import annotations

import ast
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"(?<![\w./-])((?:pipeline|stages)(?:\.[A-Za-z_]\w*)+)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"[<>{}*$]|\.\.\.|…")
# Made by `make setup` or `dvc plots show`, ignored by git, not DVC outputs.
MADE_LOCALLY = ("web/plots_template.html", "web/node_modules", "dvc_plots", ".venv")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# --- dotted names ------------------------------------------------------------------------------------------

def _module_path(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _defined(body: list[ast.stmt], attr: str) -> ast.AST | None:
    """The statement of `body` that binds `attr` (def, class, assignment, annotated field, import), or None."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == attr:
            return node
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == attr or isinstance(t, ast.Tuple) and
                any(isinstance(e, ast.Name) and e.id == attr for e in t.elts) for t in node.targets):
            return node
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == attr:
            return node
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (a.asname or a.name.split(".")[0]) == attr for a in node.names):
            return node
        if isinstance(node, (ast.If, ast.Try)):  # names bound under a guard still exist
            found = _defined(node.body + node.orelse + sum((h.body for h in getattr(node, "handlers", [])), []),
                             attr)
            if found is not None:
                return found
    return None


def resolves(name: str, root: Path = ROOT) -> bool:
    """Whether a dotted name is a project module, or a module followed by attributes it defines."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        path = _module_path(".".join(parts[:i]), root)
        if path is None:
            continue
        attrs = parts[i:]
        if not attrs:
            return True
        body = ast.parse(path.read_text()).body
        for attr in attrs:
            node = _defined(body, attr)
            if node is None and any(isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and n.attr == attr
                                    and getattr(n.value, "id", "") == "self" for s in body for n in ast.walk(s)):
                return True  # an instance attribute set in a method (`self.genre_embedding = ...`)
            if node is None:
                return False
            if isinstance(node, (ast.Import, ast.ImportFrom)):  # a re-export: follow it
                alias = next(a for a in node.names if (a.asname or a.name.split(".")[0]) == attr)
                origin = f"{node.module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
                rest = attrs[attrs.index(attr) + 1:]
                return resolves(".".join([origin, *rest]), root) if origin.startswith(("pipeline", "stages")) \
                    else True
            body = getattr(node, "body", [])
        return True
    return False


FILE_SUFFIXES = {"md", "py", "yaml", "yml", "json", "csv", "png", "txt", "toml", "npy", "parquet", "html"}


def dotted_names(text: str) -> set[str]:
    """`pipeline.x.y` / `stages.x` names; `stages.md` (a file named like a module) is a path, not a name."""
    return {m for m in DOTTED.findall(text) if m.rsplit(".", 1)[-1] not in FILE_SUFFIXES}


# --- file paths --------------------------------------------------------------------------------------------

@lru_cache
def _git_files(root: Path = ROOT) -> frozenset[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                         text=True, check=True).stdout.split()
    return frozenset(out)


def _dvc_outputs(root: Path = ROOT) -> list[str]:
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    outs = []
    for stage in spec["stages"].values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []) or []:
                outs.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return [o.split("${", 1)[0].rstrip("/") for o in outs]


def path_exists(path: str, files: frozenset[str], outputs: list[str]) -> bool:
    path = path.rstrip("/")
    if path.startswith(MADE_LOCALLY):
        return True
    if path in files or any(f.startswith(path + "/") for f in files):
        return True
    return any(path == o or path.startswith(o + "/") or (o.startswith(path + "/")) for o in outputs)


def _roots(files: frozenset[str]) -> set[str]:
    return {f.split("/", 1)[0] for f in files} | {"data", "models", "metrics", "plots", "dvclive", "reports"}


def file_paths(text: str, roots: set[str]) -> set[str]:
    """Repository paths mentioned in code spans and relative link targets (the pattern ones left out)."""
    found = set()
    spans = CODE_SPAN.findall(text)
    links = [t.partition("#")[0] for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    for candidate in [*spans, *links]:
        for token in candidate.split():
            token = token.strip(".,;:()'\"").removeprefix("./")
            if not token or PLACEHOLDER.search(token) or token.startswith(("-", "/")):
                continue
            head = token.split("/", 1)[0]
            if head in roots and ("/" in token or "." in head or head[:1].isupper()):
                found.add(token)
    return found


# --- the tests ---------------------------------------------------------------------------------------------

def problems(text: str, root: Path = ROOT, files: frozenset[str] | None = None,
             outputs: list[str] | None = None) -> list[str]:
    files = _git_files(root) if files is None else files
    outputs = _dvc_outputs(root) if outputs is None else outputs
    bad = [f"name {n}" for n in sorted(dotted_names(text)) if not resolves(n, root)]
    bad += [f"path {p}" for p in sorted(file_paths(text, _roots(files))) if not path_exists(p, files, outputs)]
    return bad


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_and_dotted_name_in_the_docs_exists(page):
    text = page.read_text()
    assert dotted_names(text) or file_paths(text, _roots(_git_files())), f"{page.name}: nothing checked"
    bad = problems(text)
    assert not bad, f"{page.relative_to(ROOT)} mentions what does not exist (fix the page or the name):\n  " + \
        "\n  ".join(bad)


def test_the_checker_flags_a_broken_name_and_path_and_accepts_real_ones():
    good = ("PoE is `pipeline.gaussian.product_of_experts`, the loss `pipeline.models.debcm.DebCM.loss`, the "
            "stage `stages.train_student` and its params `pipeline.config.from_group`; see "
            "[losses](pipeline/losses.py), `reports/claim.md`, `data/raw/truth/` and `models/student/weak_s0.pt`."
            " Patterns such as `models/<variant>/` or `100neg/{val,test}.npy` are not paths.")
    assert problems(good) == []
    broken = good + (" Stale: `pipeline.models.gaussian.product_of_experts`, pipeline.gaussian.no_such_fn, "
                     "`pipeline/train.py`, [report](pipeline/report.py) and `docs/nowhere.md`.")
    assert problems(broken) == ["name pipeline.gaussian.no_such_fn", "name pipeline.models.gaussian.product_of_experts",
                                "path docs/nowhere.md", "path pipeline/report.py", "path pipeline/train.py"]


def test_resolves_follows_re_exports_and_class_members():
    assert resolves("pipeline.models.baselines.BaselineParams")  # `from pipeline.models.variants import ...`
    assert resolves("pipeline.models.debcm.DebCMConfig.kl_weight")  # a dataclass field
    assert not resolves("pipeline.models.debcm.DebCM.no_such_method")
    assert not resolves("stages.train")


def test_the_variant_count_the_architecture_states_is_the_registrys():
    from pipeline.models.baselines import VARIANTS

    stated = re.findall(r"\*\*(\d+) registered variants\*\*", (ROOT / "docs/architecture.md").read_text())
    assert stated, "docs/architecture.md: state the count as **N registered variants**"
    assert {int(n) for n in stated} == {len(VARIANTS)}, (
        f"docs/architecture.md says {stated} registered variants; the registry has {len(VARIANTS)} "
        "(`python -m pipeline.models.baselines --names` plus the student): update the page")


def test_the_architecture_stage_table_names_the_params_groups_dvc_tracks():
    """Section 2's params column and dvc.yaml's `params:` name the same groups for every stage."""
    groups = set(yaml.safe_load((ROOT / "params.yaml").read_text()))
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    rows = {}
    for line in (ROOT / "docs/architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and (m := re.match(r"`(\w+)`", cells[0])) and m.group(1) in stages:
            rows[m.group(1)] = {t.split(".")[0] for t in CODE_SPAN.findall(cells[1])} & groups
    assert set(rows) == set(stages), f"section 2's table lists {sorted(rows)}, dvc.yaml has {sorted(stages)}"
    for name, stage in stages.items():
        tracked = {str(p).split(".")[0] for p in stage.get("params", [])}
        assert rows[name] == tracked, f"docs/architecture.md section 2, stage {name}: params {sorted(rows[name])}, " \
            f"dvc.yaml tracks {sorted(tracked)}"


# Where params files are read (docs/architecture.md section 4): the stages, and the command lines inside the
# package; every other library function takes typed arguments.
PARAMS_READERS = {("pipeline/config.py", "load_params"), ("pipeline/sweep.py", "main"),
                  ("pipeline/recommend_cli.py", "main"), ("pipeline/science.py", "load_grid")}


def test_library_reads_params_files_only_where_the_architecture_says():
    found = set()
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for call in ast.walk(fn):
                name = getattr(getattr(call, "func", None), "attr", None) or getattr(
                    getattr(call, "func", None), "id", None)
                if isinstance(call, ast.Call) and name in ("load_params", "safe_load"):
                    found.add((rel, fn.name))
    assert found <= PARAMS_READERS, f"new readers of a params/config file: {sorted(found - PARAMS_READERS)}; " \
        "take the values as arguments from the stage, or update docs/architecture.md section 4 and this list"
    architecture = (ROOT / "docs/architecture.md").read_text()
    for rel, fn in PARAMS_READERS - {("pipeline/config.py", "load_params")}:
        assert rel in architecture, f"docs/architecture.md section 4 should name {rel} as a params reader"
