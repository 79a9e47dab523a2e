"""DVC deps are facts, not memory: every project module a stage's command imports (transitively) is covered by
the stage's `deps` in dvc.yaml, or DVC serves a result the current code would not produce.

The import graph is read with `ast` from the project's own files (pipeline/, stages/), nothing is imported:
- `import a.b`, `from a import b` (b a module or a name), relative imports, at any depth: imports inside
  functions (lazy imports) count, they run when the stage calls that function;
- importing `a.b.c` runs the `__init__.py` of `a` and `a.b` too, so those count;
- `if TYPE_CHECKING:` blocks do not count (they never run);
- dynamic imports count when the module names them in a string literal (`"pipeline.models.cmvae:CMVAE"`, a
  registry) or imports its own submodules with `importlib.import_module(f"{__name__}.{...}")` (then every
  module of its package counts); a module that walks packages with `pkgutil` (the model registry's discovery,
  `pipeline.models.registry.discover`) imports every module under each package it names in a string literal.
A dep directory covers every file under it. Not required: the two root `__init__.py` files (they hold a
version string and an OpenMP setting that changes no output; they import no project module, checked below).
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
EXEMPT = {"pipeline/__init__.py", "stages/__init__.py"}
_DOTTED = re.compile(r"^(?:%s)(?:\.\w+)+(?::\w+)?$" % "|".join(PACKAGES))


def module_file(name: str, root: Path = ROOT) -> str | None:
    """The project file (relative posix path) of a dotted module name, or None when it is not a module here."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.relative_to(root).as_posix()
    return None


def _module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(node: ast.AST):
    """ast.walk without the bodies of `if TYPE_CHECKING:` (their `else` branch still runs)."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in [tree, *ast.walk(tree)]:
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            ids.add(id(body[0].value))
    return ids


def imported_names(rel: str, root: Path = ROOT) -> set[str]:
    """Every dotted name the file `rel` may import (candidates: `from a import b` gives `a` and `a.b`)."""
    tree = ast.parse((root / rel).read_text(), rel)
    package = _module_name(rel) if rel.endswith("__init__.py") else _module_name(rel).rpartition(".")[0]
    names: set[str] = set()
    docstrings = _docstrings(tree)
    walks = any(isinstance(node, ast.Attribute) and node.attr in ("iter_modules", "walk_packages")
                for node in _walk(tree))
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and _DOTTED.match(node.value):
            names.add(node.value.partition(":")[0])
            pkg_dir = root / node.value.partition(":")[0].replace(".", "/")
            if walks and (pkg_dir / "__init__.py").is_file():  # discovery: the whole package tree
                names.update(_module_name(p.relative_to(root).as_posix()) for p in pkg_dir.rglob("*.py"))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                "import_module" and node.args and isinstance(node.args[0], ast.JoinedStr):
            first = node.args[0].values[0] if node.args[0].values else None
            if isinstance(first, ast.FormattedValue) and getattr(first.value, "id", "") == "__name__":
                pkg_dir = root / _module_name(rel).replace(".", "/")
                names.update(_module_name(p.relative_to(root).as_posix()) for p in pkg_dir.glob("*.py"))
    return names


def closure(entry: str, root: Path = ROOT) -> set[str]:
    """The project files (relative posix paths) that running module `entry` (`python -m entry`) executes."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a module's parent packages run first
            rel = module_file(".".join(parts[:i]), root)
            if rel and rel not in seen:
                seen.add(rel)
                todo.extend(imported_names(rel, root))
    return seen


def covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def stage_modules(cmd: str) -> list[str]:
    """The project modules a stage command runs: each `python -m <module>` in it."""
    return [m for m in re.findall(r"python\S*\s+-m\s+([\w.]+)", cmd) if module_file(m)]


def missing_deps(stages: dict, root: Path = ROOT) -> dict[str, list[str]]:
    """stage -> the project files its command imports that its deps do not cover."""
    gaps = {}
    for name, stage in stages.items():
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        deps = [d for d in stage.get("deps", []) if "${" not in d]  # ${ingest.path}: data, not code
        files = set().union(*(closure(m, root) for c in cmds for m in re.findall(r"python\S*\s+-m\s+([\w.]+)", c)
                              if module_file(m, root)))
        missing = sorted(f for f in files - EXEMPT if not covered(f, deps))
        if missing:
            gaps[name] = missing
    return gaps


def message(gaps: dict[str, list[str]]) -> str:
    lines = ["dvc.yaml: these stages import project files their deps do not cover (DVC would not re-run them "
             "when those files change). Add under each stage's `deps:`"]
    for name, files in gaps.items():
        lines += [f"  {name}:", "    deps:"]
        lines += [f"      - {f}" for f in files]
    return "\n".join(lines)


@lru_cache
def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_command_runs_a_project_module():
    for name, stage in _dvc_stages().items():
        assert stage_modules(stage["cmd"]), f"{name}: {stage['cmd']!r} runs no pipeline/stages module"


def test_every_stage_deps_cover_the_modules_its_command_imports():
    gaps = missing_deps(_dvc_stages())
    assert not gaps, message(gaps)


def test_the_exempt_root_init_files_import_nothing_of_the_project():
    for rel in EXEMPT:
        assert not {n for n in imported_names(rel) if module_file(n)}, rel


def test_closure_of_a_training_stage_is_what_it_imports():
    """Sanity on the real tree: direct, transitive, lazy and registry (string) imports are all found."""
    files = closure("stages.train_student")
    for rel in ("stages/train_student.py", "stages/common.py",  # direct
                "pipeline/config.py", "pipeline/truth.py",  # direct
                "pipeline/sampling/splits.py",  # transitive
                "pipeline/models/baselines/ridge.py",  # the registry's pkgutil discovery of pipeline.models
                "pipeline/models/cmvae_paper/cevar.py",  # ... sub-packages included
                "pipeline/models/__init__.py"):  # a parent package
        assert rel in files, rel
    assert "pipeline/recommend_cli.py" not in files  # not everything: training does not reach the CLI


# --- the checker itself, on a tiny fake project ------------------------------------------------------------

def _fake_project(tmp_path: Path) -> Path:
    files = {
        "pipeline/__init__.py": "",
        "pipeline/a.py": '"""pipeline.c is named in this docstring only."""\nfrom pipeline import b\n',
        "pipeline/b.py": "def f():\n    from .sub.d import g  # lazy\n    return g\n",
        "pipeline/c.py": "X = 1\n",
        "pipeline/sub/__init__.py": "",
        "pipeline/sub/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pipeline.c\n"
                             "LOADERS = {'e': 'pipeline.sub.e:E'}\n",
        "pipeline/sub/e.py": "E = 1\n",
        "pipeline/plug/__init__.py": "",
        "pipeline/plug/deep/__init__.py": "",
        "pipeline/plug/deep/f.py": "F = 1\n",
        "pipeline/finder.py": "import pkgutil\nPACKAGES = ('pipeline.plug',)\n"
                              "def find():\n    return list(pkgutil.iter_modules([]))\n",
        "stages/two.py": "import pipeline.finder\n",
        "stages/__init__.py": "",
        "stages/one.py": "import pipeline.a\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_checker_finds_lazy_relative_registry_imports_and_skips_docstrings_and_type_checking(tmp_path):
    root = _fake_project(tmp_path)
    assert closure("stages.one", root) == {
        "stages/__init__.py", "stages/one.py", "pipeline/__init__.py", "pipeline/a.py", "pipeline/b.py",
        "pipeline/sub/__init__.py", "pipeline/sub/d.py", "pipeline/sub/e.py"}


def test_checker_follows_a_pkgutil_discovery_into_every_module_of_the_named_packages(tmp_path):
    root = _fake_project(tmp_path)
    assert closure("stages.two", root) == {
        "stages/__init__.py", "stages/two.py", "pipeline/__init__.py", "pipeline/finder.py",
        "pipeline/plug/__init__.py", "pipeline/plug/deep/__init__.py", "pipeline/plug/deep/f.py"}


def test_checker_reports_a_missing_dep_and_says_which_lines_to_add(tmp_path):
    root = _fake_project(tmp_path)
    full = {"one": {"cmd": "python -m stages.one", "deps": ["stages/one.py", "pipeline/a.py", "pipeline/b.py",
                                                             "pipeline/sub", "data/raw"]}}
    assert missing_deps(full, root) == {}
    broken = {"one": {"cmd": "python -m stages.one --flag", "deps": ["stages/one.py", "pipeline/a.py",
                                                                      "pipeline/sub/d.py", "data/raw"]}}
    gaps = missing_deps(broken, root)
    assert gaps == {"one": ["pipeline/b.py", "pipeline/sub/__init__.py", "pipeline/sub/e.py"]}
    text = message(gaps)
    assert "  one:" in text and "      - pipeline/b.py" in text and "      - pipeline/sub/e.py" in text


def test_a_dep_directory_covers_only_what_is_under_it():
    assert covered("pipeline/models/cmvae.py", ["pipeline/models"])
    assert covered("pipeline/models/cmvae.py", ["pipeline/models/"])
    assert not covered("pipeline/models_extra.py", ["pipeline/models"])
    assert not covered("pipeline/models/cmvae.py", ["pipeline/model"])


@pytest.mark.parametrize("cmd", ["python -m stages.train_student --variant ${item.variant}",
                                 "python -m stages.world"])
def test_stage_modules_reads_the_module_of_a_command(cmd):
    assert stage_modules(cmd) == [cmd.split()[2]]


def test_evaluate_does_not_import_upward_from_the_report():
    """The report builds on evaluate (pipeline/report/pervideo.py imports it), so evaluate and the metrics reach
    nothing of pipeline/report: the seeds' mean / std lives in pipeline/metrics.py."""
    for entry in ("pipeline.evaluate", "pipeline.metrics", "stages.evaluate"):
        assert not {f for f in closure(entry) if f.startswith("pipeline/report/")}, entry


def test_the_report_depends_on_every_science_figure_its_page_shows():
    """reports/index.html shows every reports/science*.png (pipeline/report/page.py): a figure that is not a dep
    of `report` would change the page without DVC re-running it (a fresh clone's page differed from the lock's)."""
    import yaml

    deps = {str(d).split()[0] for d in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["deps"]}
    shown = {str(p.relative_to(ROOT)) for p in (ROOT / "reports").glob("science*.png")}
    assert shown and shown - deps == set(), f"add under report's deps in dvc.yaml: {sorted(shown - deps)}"
