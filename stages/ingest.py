"""Stage `ingest`: import a source (the simulated world, a TT-150k release, a media folder) to data/raw/."""
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.importcommon import genre_code_map
from pipeline.data.importers import ingest
from pipeline.errors import ParamsError
from pipeline.features.mediacheck import MediaParams
from stages.common import group, run, setup

OUT = Path("data/raw")


@dataclass(frozen=True)
class IngestParams:
    source: str = "world"  # world | tt150k | folder
    path: str = "data/world"
    csv: str = "pairs.csv"  # folder source: the pairs table inside `path`
    # tt150k: the PGC folder relative to `path` (dvc.yaml tracks `${ingest.path}/${ingest.pgc}`, so a change in
    # it re-runs ingest): ".." + "/pgc" for a sibling; "." looks beside (untracked: a warning) and inside `path`.
    pgc: str = "."
    genre_names: list | None = None  # tt150k: the genre of each of the release's codes (null: schema.GENRES)

    def validate(self) -> None:
        if self.source not in ("world", "tt150k", "folder"):
            raise ParamsError(f"ingest.source must be world, tt150k or folder, got {self.source!r}")
        genre_code_map(self.genre_names)

    @property
    def pgc_folder(self) -> Path | None:
        if Path(self.pgc).is_absolute():
            raise ParamsError(f"ingest.pgc={self.pgc!r}: give the PGC folder relative to ingest.path (e.g. ../pgc), "
                              "so that DVC tracks it")
        return None if Path(self.pgc) == Path(".") else Path(self.path) / self.pgc


def main() -> None:
    p = from_group(IngestParams, setup("ingest"), "ingest")
    media = from_group(MediaParams, group("media"), "media")  # skip: media failing the header probe leave here
    kw = {"csv": p.csv} if p.source == "folder" else {}
    if p.source == "tt150k":
        kw.update(pgc=p.pgc_folder, genre_names=p.genre_names)
    info = ingest(p.source, Path(p.path), OUT, on_error=media.on_error, **kw)
    logging.getLogger("stages.ingest").info("ingest: %s", info)


if __name__ == "__main__":
    run(main)
