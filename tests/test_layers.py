"""The pipeline package by layer (docs/architecture.md section 3): no module imports one of a higher layer.

Each top-level name of `pipeline` (a module or a sub-package) has a layer; an import of another top-level name
must go to the same layer or a lower one. Within the runs layer the order is finer (training below experiment
below sweep and evaluate below report below science), so `evaluate` importing `report` is caught too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (layer, rank within the layer). base: no project imports beyond itself; core: maths, data, features and models;
# runs: training and the stages' orchestration; tools: command lines and benchmarks.
LAYERS = {
    "__init__": (0, 0), "errors": (0, 0), "resources": (0, 1), "io": (0, 1), "config": (0, 1), "numba_cache": (0, 0), "truth": (0, 1),
    "gaussian": (1, 0), "losses": (1, 1), "metrics": (1, 1), "features": (1, 0), "data": (1, 1),
    "genre": (1, 2), "sampling": (1, 2), "inference": (1, 2), "models": (1, 3),
    "raycluster": (2, 0), "training": (2, 1), "experiment": (2, 2), "sweep": (2, 3), "evaluate": (2, 3),
    "report": (2, 4), "science": (2, 5),
    "recommend": (3, 0), "offline_plots": (3, 0), "bench_extract": (3, 0), "bench": (3, 1),
    "bench_reference": (3, 0), "bench_floor": (3, 0), "bench_scaling": (3, 1), "export_cli": (3, 1),
    "recommend_cli": (3, 1),
    "__main__": (3, 3),
}


def top(module: str) -> str:
    """The top-level name under `pipeline` of a dotted module name ('pipeline' itself: '__init__')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def project_imports(path: Path, package: str) -> set[str]:
    """Dotted names of `pipeline` modules a file imports (absolute and relative, at any depth of the file)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "pipeline"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "pipeline":
                out.add(base)
    return out


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def upward_imports(layers: dict[str, tuple[int, int]]) -> list[str]:
    bad = []
    for name, path in modules().items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        src = top(name) if path.name != "__init__.py" or name.count(".") > 1 else "__init__"
        for target in project_imports(path, package):
            dst = top(target)
            if dst != src and layers[dst] > layers[src]:
                bad.append(f"{name} ({src}, layer {layers[src]}) imports {target} ({dst}, layer {layers[dst]})")
    return bad


def test_every_top_level_name_has_a_layer():
    names = {top(m) if not m.endswith(".__init__") or m.count(".") > 1 else "__init__" for m in modules()}
    assert names - set(LAYERS) == set(), "give each new top-level module of pipeline/ a layer in LAYERS"


def test_no_module_imports_one_of_a_higher_layer():
    assert upward_imports(LAYERS) == []


def test_the_check_catches_an_upward_import():
    """The report used to import evaluate while evaluate imported report: with report below evaluate, it fails."""
    swapped = {**LAYERS, "report": (2, 2), "evaluate": (2, 4)}
    assert any(line.startswith("pipeline.report.") and "imports pipeline.evaluate" in line
               for line in upward_imports(swapped))


@pytest.mark.parametrize("name", ["pipeline.report.build", "pipeline.training.loop"])
def test_relative_and_absolute_imports_are_both_read(name):
    path = modules()[name]
    assert project_imports(path, name.rsplit(".", 1)[0])
