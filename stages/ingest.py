"""Stage `ingest`: import a source (the simulated world, a TT-150k release, a media folder) to data/raw/."""
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.importers import ingest
from pipeline.errors import ParamsError
from stages.common import setup

OUT = Path("data/raw")


@dataclass(frozen=True)
class IngestParams:
    source: str = "world"  # world | tt150k | folder
    path: str = "data/world"
    csv: str = "pairs.csv"  # folder source: the pairs table inside `path`
    pgc: str | None = None  # tt150k source: the PGC sibling folder (default <path>/pgc when present)

    def validate(self) -> None:
        if self.source not in ("world", "tt150k", "folder"):
            raise ParamsError(f"ingest.source must be world, tt150k or folder, got {self.source!r}")


def main() -> None:
    p = from_group(IngestParams, setup("ingest"), "ingest")
    kw = {"csv": p.csv} if p.source == "folder" else {}
    if p.source == "tt150k" and p.pgc:
        kw["pgc"] = Path(p.pgc)
    info = ingest(p.source, Path(p.path), OUT, **kw)
    print(f"ingest: {info}")


if __name__ == "__main__":
    main()
