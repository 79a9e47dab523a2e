"""An HTML template for `dvc plots show/diff` that carries vega, vega-lite and vega-embed inline.

dvc-render's default page loads the three libraries from a CDN, so it stays blank offline. `make setup`
fetches the pinned npm packages (web/package.json) and runs this module once; .dvc/config points
`plots.html_template` at the page it writes. Nothing is fetched when the page is opened.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Sequence

from pipeline.errors import DataError
from pipeline.io import atomic_path

log = logging.getLogger(__name__)

# Load order matters: vega-lite's and vega-embed's UMD builds look up the globals the earlier ones define.
PACKAGES = ("vega", "vega-lite", "vega-embed")
# dvc-render fills these by plain string replacement over the whole page, inlined code included.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- {versions}: inlined from npm by `make setup` (pipeline/offline_plots.py), so the page works offline -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def package_script(modules: Path, name: str) -> tuple[str, str]:
    """(version, browser build) of one npm package: the file its package.json names for CDNs to serve."""
    meta_path = modules / name / "package.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing; run `make setup` (npm ci in web/) to fetch {name}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    entry = meta.get("jsdelivr") or meta.get("unpkg")
    if not entry:
        raise DataError(f"{meta_path}: names no browser build (no 'jsdelivr' or 'unpkg' field)")
    code = (modules / name / entry).read_text(encoding="utf-8")
    return meta["version"], code


def inline_script(code: str, source: str) -> str:
    """`code` as the body of a <script> element that the HTML parser cannot end early."""
    for text in PLACEHOLDERS + ("<!--",):  # `<!--` would switch the HTML parser into script-escape states
        if text in code:
            raise DataError(f"{source}: contains {text!r}, which cannot be inlined into dvc-render's page as is")
    code = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", code)  # the map is not shipped beside the page
    # `\/` means `/` in JavaScript strings and regexes, and hides the end tag from the HTML parser.
    code = re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)
    return f"    <script>\n{code.rstrip()}\n    </script>"


def build_template(modules: Path) -> str:
    parts, versions = [], []
    for name in PACKAGES:
        version, code = package_script(modules, name)
        parts.append(inline_script(code, f"{modules / name}"))
        versions.append(f"{name} {version}")
    return PAGE.format(versions=", ".join(versions), scripts="\n".join(parts))


def main(argv: Sequence[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(prog="python -m pipeline offline-plots", description=__doc__.splitlines()[0])
    ap.add_argument("--modules", type=Path, default=root / "web" / "node_modules", help="npm's node_modules")
    ap.add_argument("--out", type=Path, default=root / "web" / "plots_template.html", help="the template")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    page = build_template(args.modules)
    with atomic_path(args.out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("wrote %s (%d kB)", args.out, len(page.encode("utf-8")) // 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
