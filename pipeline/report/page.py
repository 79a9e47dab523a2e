"""The listening page (reports/index.html, `recommend --html`): each video in a <video> element beside every
model's top music as <audio> elements, with the claim table and the report's figures; plain HTML, no script.

Media are linked by paths relative to the page (data/raw/media/... from reports/), never copied or inlined,
so the page is as small as its tables and works offline when opened from the workspace.
"""
from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import quote

from pipeline.io import atomic_path

log = logging.getLogger(__name__)

# what Chromium, Firefox and Safari decode in a <video> element (Debian's chromium included: measured)
BROWSER_CODECS = {"h264", "vp8", "vp9", "av1"}
BROWSER_CONTAINERS = {"mp4", "mov", "webm", "matroska"}
# claim.json's verdict fields a reader looks at first; any others follow in the file's order
LEADING = ("metric", "baseline", "family", "verdict", "effect", "low", "high", "p_holm")
NO_MEDIA = ("This source ships no media files (a feature release): the page lists the ids a model "
            "ranked, with nothing to play.")

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1800px}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}h3{margin-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px}
th{background:#f4f4f4}.wide{overflow-x:auto}td.num{text-align:right;font-variant-numeric:tabular-nums}
.v-yes{background:#c6efce;font-weight:bold}.v-no{color:#666}.note{color:#8a4b00}
figure{display:inline-block;margin:0 1em 1em 0}figure img{max-width:100%;border:1px solid #eee}
.case{display:flex;gap:1.5em;align-items:flex-start;margin-bottom:2em}.case video{width:320px;background:#000}
.player{position:sticky;top:.5em}
.lists{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:.8em;flex:1}
.list h4{margin:.2em 0;font-size:.95em}.list ol{margin:0;padding-left:1.4em}.list li{margin-bottom:.3em}
.list audio{width:230px;height:32px;display:block}.meta{font-size:.8em;color:#444}"""


@dataclass(frozen=True)
class Track:
    """One ranked music clip: its id, genre and the model's score (the true compatibility for the truth)."""

    music_id: str
    genre: str
    score: float | None = None


@dataclass(frozen=True)
class Case:
    """One video: a heading, a line about it, its file (None: no media) and each model's ranked music."""

    title: str
    about: str
    video: Path | None
    lists: Mapping[str, Sequence[Track]] = field(default_factory=dict)


@dataclass(frozen=True)
class RawMedia:
    """Where each id's media file lies (None: the source has none), from a raw directory's tables; a lookup
    gives None too when the file is missing (checked per lookup: a release's tables hold 150k rows)."""

    videos: Mapping[str, Path | None]
    music: Mapping[str, Path | None]

    @classmethod
    def read(cls, raw_dir: Path) -> "RawMedia":
        import pandas as pd

        def paths(name: str, key: str) -> dict[str, Path | None]:
            table = raw_dir / f"{name}.parquet"
            if not table.exists():
                log.info("page: no %s, so no %s media", table, name)
                return {}
            rows = pd.read_parquet(table, columns=[key, "path"])
            return {str(i): raw_dir / p if isinstance(p, str) and p else None for i, p in zip(rows[key], rows["path"])}

        return cls(paths("videos", "video_id"), paths("music", "music_id"))

    def video(self, video_id: str) -> Path | None:
        return _existing(self.videos.get(video_id))

    def song(self, music_id: str) -> Path | None:
        return _existing(self.music.get(music_id))

    def any(self) -> bool:
        return any(p is not None for p in self.videos.values()) or any(p is not None for p in self.music.values())


def _existing(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        log.warning("page: %s is missing; its id is listed without a player", path)
        return None
    return path


def playable(path: Path) -> str | None:
    """None when browsers decode the file's video stream, else why not (codec or container, as PyAV reads them)."""
    import av

    try:
        with av.open(str(path)) as container:
            formats = set(container.format.name.split(","))
            codecs = {s.codec_context.name for s in container.streams.video}
    except (av.FFmpegError, OSError) as e:
        return f"PyAV cannot open it ({e})"
    if not codecs & BROWSER_CODECS or not formats & BROWSER_CONTAINERS:
        return (f"{'/'.join(sorted(formats))} with {'/'.join(sorted(codecs)) or 'no video stream'}; browsers "
                f"play {'/'.join(sorted(BROWSER_CODECS))} in MP4 or WebM")
    return None


def _href(path: Path, base: Path) -> str:
    return quote(Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix(), safe="/")


def _cell(value) -> tuple[str, str]:
    """(text, class) of one claim.json value: numbers to 4 decimals, nested values as compact JSON."""
    if isinstance(value, bool) or value is None:
        return ("–" if value is None else str(value).lower()), ""
    if isinstance(value, float):
        return f"{value:.4f}", "num"
    if isinstance(value, int):
        return str(value), "num"
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return ", ".join(_cell(v)[0] for v in value), "num"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":")), ""
    return str(value), ""


def claim_html(claim: Mapping | None) -> str:
    """Every verdict of reports/claim.json by challenger, with whatever columns its rows carry."""
    verdicts = list((claim or {}).get("verdicts") or [])
    if not verdicts:
        return "<p class='note'>reports/claim.json has no verdicts.</p>"
    found = list(dict.fromkeys(k for row in verdicts for k in row if k != "challenger"))
    columns = [c for c in LEADING if c in found] + [c for c in found if c not in LEADING]
    parts = []
    for challenger in dict.fromkeys(str(row.get("challenger", "")) for row in verdicts):
        rows = [r for r in verdicts if str(r.get("challenger", "")) == challenger]
        body = []
        for row in rows:
            cells = []
            for c in columns:
                text, cls = _cell(row.get(c))
                if c == "verdict":
                    cls = f"v-{text.split()[0].lower()}" if text.strip() else ""
                cells.append(f"<td class='{cls}'>{html.escape(text)}</td>" if cls else f"<td>{html.escape(text)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        parts.append(f"<h3>{html.escape(challenger)}</h3>\n<div class='wide'><table><tr>{head}</tr>\n"
                     + "\n".join(body) + "</table></div>")
    return "\n".join(parts)


def _track_html(track: Track, audio: Path | None, base: Path) -> str:
    score = "" if track.score is None else f" · {track.score:.3f}"
    meta = f"<span class='meta'>{html.escape(track.music_id)} · {html.escape(track.genre)}{score}</span>"
    if audio is None:
        return f"<li>{meta}</li>"
    return f"<li>{meta}<audio controls preload='metadata' src='{_href(audio, base)}'></audio></li>"


def cases_html(cases: Sequence[Case], media: RawMedia, base: Path) -> str:
    parts = []
    for case in cases:
        lists = []
        for name, tracks in case.lists.items():
            items = "".join(_track_html(t, media.song(t.music_id), base) for t in tracks)
            lists.append(f"<div class='list'><h4>{html.escape(name)}</h4><ol>{items}</ol></div>")
        if case.video is None:
            player = "<div class='note'>no video file</div>"
        else:
            why = playable(case.video)
            player = f"<video controls preload='metadata' src='{_href(case.video, base)}'></video>"
            if why:
                log.warning("page: %s may not play in a browser: %s", case.video, why)
                player += f"<div class='note'>a browser may not play this file: {html.escape(why)}</div>"
        parts.append(f"<h3>{html.escape(case.title)}</h3><p class='meta'>{html.escape(case.about)}</p>\n"
                     f"<div class='case'><div class='player'>{player}</div><div class='lists'>{''.join(lists)}</div></div>")
    return "\n".join(parts)


def render_page(title: str, intro: str, base: Path, cases: Sequence[Case], media: RawMedia,
                claim: Mapping | None = None, figures: Sequence[tuple[str, Path]] = (), note: str | None = None) -> str:
    """The page's HTML; `base` is the folder it will lie in (links are relative to it). Same input, same bytes."""
    sections = [f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(intro)}</p>"]
    if claim is not None:
        sections.append("<h2>Claim: paired verdicts (reports/claim.json)</h2>\n" + claim_html(claim))
    if figures:
        sections.append("<h2>Figures</h2>\n" + "\n".join(
            f"<figure><img src='{_href(p, base)}' alt='{html.escape(c)}'><figcaption>{html.escape(c)}</figcaption>"
            "</figure>" for c, p in figures))
    sections.append("<h2>Look and listen</h2>" + (f"\n<p class='note'>{html.escape(note)}</p>" if note else "")
                    + "\n" + cases_html(cases, media, base))
    return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


def write_page(path: Path, title: str, intro: str, cases: Sequence[Case], media: RawMedia, **kwargs) -> None:
    """render_page, written atomically to `path` (links relative to its folder)."""
    text = render_page(title, intro, path.parent, cases, media, **kwargs)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("wrote %s (%d kB)", path, len(text.encode("utf-8")) // 1024)


def report_page(out: Path, media: RawMedia, cases: Sequence[Case], heading: str) -> None:
    """reports/index.html: the claim table (out/claim.json), the report's figures and any science*.png beside
    them (`python -m pipeline science collect` writes those), and the case study's players."""
    claim_path = out / "claim.json"
    claim = json.loads(claim_path.read_text(encoding="utf-8")) if claim_path.exists() else None
    figures = [(c, out / n) for n, c in (("genre_share.png", "genre mix of each model's top-K on T_diverse"),
                                         ("sweeps.png", "teacher weight and intervention sweeps"))
               if (out / n).exists()]
    figures += [(f"{p.stem}: the science grid", p) for p in sorted(out.glob("science*.png"))]
    heading += (" The players link the media by paths relative to this page (data/raw/ of the workspace): open it "
                "where `dvc repro` or `dvc pull` has put data/raw.")
    write_page(out / "index.html", "bgm-pipeline: look and listen", heading, cases, media, claim=claim,
               figures=figures, note=None if media.any() or not cases else NO_MEDIA)


def recommend_page(results: Sequence[Mapping], path: Path, raw: Path, model: str) -> None:
    """`recommend --html`: each given video beside the model's ranked music from the dataset's pool."""
    media = RawMedia.read(raw)
    cases = [Case(Path(r["video"]).name, str(r["video"]), Path(r["video"]),
                  {model: [Track(m["music_id"], m["genre"], m["score"]) for m in r["music"]]}) for r in results]
    write_page(path, "bgm-pipeline: music for your videos", f"Top {max((len(r['music']) for r in results), default=0)}"
               f" music of the dataset's pool per video, ranked by {model}; links relative to this page.", cases, media,
               note=None if any(p is not None for p in media.music.values()) else NO_MEDIA)
