"""Stage `ingest`: import a source (the simulated world, a TT-150k release, a media folder) to data/raw/."""
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.importcommon import genre_code_map
from pipeline.data.importers import ingest
from pipeline.errors import ParamsError
from stages.common import setup

OUT = Path("data/raw")


@dataclass(frozen=True)
class IngestParams:
    source: str = "world"  # world | tt150k | folder
    path: str = "data/world"
    csv: str = "pairs.csv"  # folder source: the pairs table inside `path`
    # tt150k: the PGC folder. dvc.yaml lists it as a dependency, so params.yaml cannot leave it null: there it
    # defaults to `path` itself, which (like null or "auto") means <path>/../pgc, else <path>/pgc.
    pgc: str | None = None
    genre_names: list | None = None  # tt150k: the genre of each of the release's codes (null: schema.GENRES)

    def validate(self) -> None:
        if self.source not in ("world", "tt150k", "folder"):
            raise ParamsError(f"ingest.source must be world, tt150k or folder, got {self.source!r}")
        genre_code_map(self.genre_names)

    @property
    def pgc_folder(self) -> Path | None:
        auto = self.pgc in (None, "auto") or Path(self.pgc) == Path(self.path)
        return None if auto else Path(self.pgc)


def main() -> None:
    p = from_group(IngestParams, setup("ingest"), "ingest")
    kw = {"csv": p.csv} if p.source == "folder" else {}
    if p.source == "tt150k":
        kw.update(pgc=p.pgc_folder, genre_names=p.genre_names)
    info = ingest(p.source, Path(p.path), OUT, **kw)
    print(f"ingest: {info}")


if __name__ == "__main__":
    main()
