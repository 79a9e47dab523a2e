"""What a DVC user meets: params files in the form `dvc exp run -S` writes, plots that name every variant
and draw offline, a quick CLI help, and documentation links that stay inside the repository."""
from __future__ import annotations

import configparser
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config import from_group
from pipeline.errors import DataError
from pipeline.models.baselines import DEFAULT_VARIANTS
from pipeline.models.debcm import DebCMConfig
from pipeline.offline_plots import PACKAGES, build_template, inline_script

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# every params file a user hands to DVC (configs/science.yaml is not one: it lists `-S key=value` overrides
# for `python -m pipeline science queue`, never read by DVC)
PARAMS_FILES = ["params.yaml", "tests/e2e/params.yaml"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.yaml") if p.name != "science.yaml")


def _env():
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT))


# --- params files: exactly the bytes DVC's writer produces ------------------------------------------------

def _dvc_set(path: Path, *overrides: str) -> str:
    """What `dvc exp run -S override` leaves in `path` (the same function DVC's experiment queue calls)."""
    from dvc.utils.hydra import apply_overrides

    apply_overrides(path, list(overrides))
    return path.read_text()


def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + (key,))
        else:
            yield ".".join(prefix + (key,)), value


def _literal(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return str(value)


@pytest.mark.parametrize("name", PARAMS_FILES)
def test_setting_a_key_to_its_value_leaves_the_file_byte_identical(name, tmp_path):
    # DVC rewrites every value on any -S, so one key set to itself checks the form of the whole file
    text = (ROOT / name).read_text()
    key, value = next(_leaves(yaml.safe_load(text)))
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert _dvc_set(path, f"{key}={_literal(value)}") == text


def test_kl_weight_as_typed_on_the_command_line_is_a_no_op(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    assert _dvc_set(path, "student.kl_weight=40") == (ROOT / "params.yaml").read_text()


def test_setting_another_value_changes_only_its_line(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text)
    new = _dvc_set(path, "split.seed=3")
    changed = [line for line in difflib.unified_diff(text.splitlines(), new.splitlines(), n=0, lineterm="")
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-  seed: 0", "+  seed: 3"]
    assert yaml.safe_load(new)["split"]["seed"] == 3 and yaml.safe_load(new)["world"]["seed"] == 0


@pytest.mark.parametrize("name", ["params.yaml", "tests/e2e/params.yaml"])
def test_lists_survive_being_emptied_and_restored(name, tmp_path):
    # ruamel writes broken YAML for `key:  # comment` + block list set to []: the form keeps comments off lists
    text = (ROOT / name).read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text)
    for key, value in _leaves(yaml.safe_load(text)):
        if isinstance(value, list):
            yaml.safe_load(_dvc_set(path, f"{key}=[]"))
            assert _dvc_set(path, f"{key}={_literal(value)}") == text, key


def test_a_whole_number_for_a_float_field_becomes_a_float():
    cfg = from_group(DebCMConfig, {"kl_weight": 40, "use_text": True}, "student")
    assert type(cfg.kl_weight) is float and cfg.kl_weight == 40.0  # the saved model config keeps its bytes
    assert cfg.use_text is True and type(cfg.latent_dim) is int


# --- plots: every variant, drawn without a network ----------------------------------------------------------

def _plot_defs() -> dict:
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    return {name: props for item in dvc_yaml["plots"] for name, props in item.items()}, dvc_yaml


def test_plot_definitions_and_baseline_matrix_name_every_variant():
    defs, dvc_yaml = _plot_defs()
    for name in ("plots/recall", "plots/ndcg", "plots/bias_amplification", "reports/intervention.csv"):
        assert defs[name]["y"] == ["student", *DEFAULT_VARIANTS], name  # what the default params evaluate
        assert (ROOT / ".dvc/plots" / f"{defs[name]['template']}.json").is_file(), name  # a colour per variant
    assert dvc_yaml["stages"]["baselines"]["matrix"]["variant"] == "${baselines.variants}"


def test_plotted_csvs_have_exactly_the_plotted_columns():
    defs, _ = _plot_defs()
    files = sorted((ROOT / "plots").rglob("*.csv"))
    assert files, "no plots/**/*.csv in the repository"
    for path in files:
        header = path.read_text().splitlines()[0].split(",")
        props = defs[str(path.parent.relative_to(ROOT))]
        assert header[0] == props["x"] and sorted(header[1:]) == sorted(props["y"]), path  # order is free
    header = (ROOT / "reports/intervention.csv").read_text().splitlines()[0].split(",")
    assert sorted(c for c in header[1:] if not c.endswith("_std")) == sorted(defs["reports/intervention.csv"]["y"])


def test_inline_script_cannot_close_early_and_refuses_placeholders():
    body = inline_script('var a = "</script>";\n//# sourceMappingURL=a.min.js.map\n', "x.js")
    assert body.count("</script>") == 1 and "<\\/script>" in body and "sourceMappingURL" not in body
    for bad in ("{plot_divs}", "{scripts}", "{refresh_tag}", "<!--"):
        with pytest.raises(DataError, match="x.js"):
            inline_script(f"var a = '{bad}';", "x.js")


@pytest.fixture(scope="module")
def template() -> str:
    modules = ROOT / "web" / "node_modules"
    if not (modules / "vega").is_dir():
        pytest.fail("web/node_modules is missing: `make setup` runs npm ci in web/")
    return build_template(modules)


def test_template_carries_the_pinned_libraries_and_no_url(template):
    pins = json.loads((ROOT / "web/package.json").read_text())["dependencies"]
    assert set(pins) == set(PACKAGES)
    assert template.count("{plot_divs}") == 1 and "{scripts}" not in template  # no CDN tags from dvc-render
    assert re.search(r"<script[^>]*\bsrc=", template) is None
    for name in PACKAGES:
        assert f"{name} {pins[name]}" in template


def test_dvc_config_names_the_built_template():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    configured = (ROOT / ".dvc" / config["plots"]["html_template"]).resolve()
    assert configured == (ROOT / "web/plots_template.html").resolve()  # where `offline-plots` writes
    ignored = subprocess.run(["git", "check-ignore", "-q", "web/plots_template.html"], cwd=ROOT)
    assert ignored.returncode == 0, "the built template must stay out of git"


def _chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    from chromium import executable  # fails without chromium (BGM_SKIP_BROWSER=1: skips)

    exe = executable()
    profile = tempfile.mkdtemp(dir=tmp)
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_dvc_plots_show_page_draws_a_chart_offline(template, tmp_path):
    from PIL import Image

    repo = tmp_path / "repo"
    (repo / "plots/recall").mkdir(parents=True)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=repo, env=_env(), check=True)
    with open(repo / ".dvc/config", "a") as config:  # the repository's plots.html_template, as is
        config.write("\n" + (ROOT / ".dvc/config").read_text())
    shutil.copytree(ROOT / ".dvc/plots", repo / ".dvc/plots")  # the plot templates dvc.yaml names
    (repo / "web").mkdir()
    (repo / "web/plots_template.html").write_text(template)
    defs, _ = _plot_defs()
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": [{"plots/recall": defs["plots/recall"]}]}))
    plotted = defs["plots/recall"]["y"]
    rows = [[k] + [round(0.1 + 0.02 * k + 0.05 * i, 3) for i in range(len(plotted))] for k in (10, 15, 20, 25)]
    (repo / "plots/recall/weak_full.csv").write_text(
        "\n".join(",".join(map(str, r)) for r in [["k", *plotted], *rows]) + "\n")
    r = subprocess.run(["dvc", "plots", "show"], cwd=repo, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    page = repo / "dvc_plots/index.html"
    html = page.read_text()
    assert re.search(r"<script[^>]*\bsrc=", html) is None, "the page loads a script from elsewhere"

    dom = _chromium(page, tmp_path, "--dump-dom").stdout
    embedded = re.search(r'<div id="plots_recall_weak_full_csv" class="vega-embed[^"]*">(.*?)</details>', dom, re.S)
    assert embedded, "vega-embed did not take over the plot's div"
    canvas = re.search(r'<canvas width="(\d+)" height="(\d+)" class="marks"', embedded.group(1))
    assert canvas and int(canvas.group(1)) > 100 and int(canvas.group(2)) > 100, embedded.group(1)[:500]

    # each variant is painted in its own colour (the template's range, in the order dvc.yaml names them):
    # look for every one in a screenshot as wide as a laptop's screen
    template = json.loads((ROOT / ".dvc/plots" / f"{defs['plots/recall']['template']}.json").read_text())
    colours = template["encoding"]["color"]["scale"]["range"][:len(plotted)]
    assert len(set(colours)) == len(plotted), "two variants share a colour"
    shot = tmp_path / "shot.png"
    _chromium(page, tmp_path, "--window-size=1400,900", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    for name, colour in zip(plotted, colours):
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        columns = np.nonzero(np.abs(pixels - rgb).sum(axis=-1) < 12)[1]
        # its legend symbol spans ~20 px; its line crosses the plot (420 px wide) to the legend
        assert len(columns) and columns.max() - columns.min() > 200, f"{name}'s colour {colour}: no line drawn"


# --- CLI -------------------------------------------------------------------------------------------------------

def test_help_lists_every_command_with_its_description():
    from pipeline.__main__ import COMMANDS

    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and time.perf_counter() - t0 < 3, r.stderr
    for name, (_, summary) in COMMANDS.items():
        assert name in r.stdout and " ".join(summary.split()[:3]) in " ".join(r.stdout.split()), name


def test_recommend_help_answers_before_importing_torch():
    probe = "\n".join([
        "import contextlib, io, json, sys",
        "from pipeline.__main__ import main",
        "out = io.StringIO()",
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):",
        "    main(['recommend', '--help'])",
        "heavy = sorted(m for m in ('torch', 'faiss', 'pandas', 'tensorflow') if m in sys.modules)",
        "print(json.dumps([out.getvalue(), heavy]))"])
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=60)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    text, heavy = json.loads(r.stdout)
    assert heavy == [] and elapsed < 3, (heavy, elapsed)
    for option in ("--top", "--model", "--text", "--json", "videos"):
        assert option in text


# --- documentation links -----------------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_in_readme_and_docs_resolve_inside_the_repository():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not files
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.is_file() and ROOT in dest.parents, f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page.name}: {target}"
            checked += 1
    assert checked >= 3


def test_no_file_points_outside_the_repository_for_the_design():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./shared/|DESIGN(?: section|'s| \d|\.md)")
    hits = [f for f in files if (ROOT / f).is_file() and Path(f).suffix in {".md", ".py", ".txt", ".yaml", ".toml"}
            and Path(f).name != Path(__file__).name and outside.search((ROOT / f).read_text(errors="ignore"))]
    assert hits == []
