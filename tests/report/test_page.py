"""The listening page (pipeline/report/page.py) on a tiny generated source: links relative to the page, nothing
inlined, the claim table whatever its columns, ids and a reason without media, `recommend --html`, and in
headless Chromium with the network off: every video and song loads, no console error, a screenshot."""
from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from chromium import visit_offline
from pipeline.report.page import NO_MEDIA, Case, RawMedia, Track, claim_html, playable, recommend_page, \
    render_page, report_page

CLAIM = {"verdicts": [
    {"challenger": "student", "metric": "t_diverse/truth/ndcg@25", "effect": 0.0241, "low": 0.0034, "high": 0.0443,
     "p_holm": 0.012, "seeds": 3, "verdict": "yes", "family": "confirmatory", "seed_effects": [0.01, 0.03, 0.02]},
    {"challenger": "student", "metric": "weak/truth/bias_amplification@25", "effect": None, "verdict": "no"},
    {"challenger": "no_teacher", "metric": "t_diverse/full/recall@25", "effect": -0.1, "verdict": "no (⚠ 21 videos)"}]}


def _video(path: Path, seconds: float = 1.0, codec: str = "libx264", fmt: str = "mp4", shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 10)
        for i in range(int(seconds * 10)):
            frame = np.zeros((64, 64, 3), np.uint8)
            frame[:, : 6 * i + 4] = (200, shade, 255 - shade)  # a bar that grows: frames differ
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _song(path: Path, hz: float, seconds: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(8000 * seconds)) / 8000
    sf.write(path, (0.2 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 8000, subtype="PCM_16")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """<root>/data/raw in the canonical layout (two MP4 videos, three WAV songs, two songs without one) and
    <root>/reports with a figure, as the workspace holds them."""
    root = tmp_path_factory.mktemp("look")
    raw = root / "data/raw"
    for i, vid in enumerate(("v1", "v2")):
        _video(raw / f"media/video/{vid}.mp4", shade=100 * i)
    for i, mid in enumerate(("m1", "m2", "m 3")):  # a space in a name: links must be URL-quoted
        _song(raw / f"media/music/{mid}.wav", 220.0 * (i + 1))
    pd.DataFrame({"video_id": ["v1", "v2"], "path": ["media/video/v1.mp4", "media/video/v2.mp4"]}).to_parquet(
        raw / "videos.parquet")
    pd.DataFrame({"music_id": ["m1", "m2", "m 3", "m4", "m5"],  # m4: no file in the source; m5's is missing
                  "path": ["media/music/m1.wav", "media/music/m2.wav", "media/music/m 3.wav", None,
                           "media/music/m5.wav"]}).to_parquet(
        raw / "music.parquet")
    (root / "reports").mkdir()
    Image.new("RGB", (120, 60), (30, 120, 200)).save(root / "reports/genre_share.png")
    return root


def _cases(media: RawMedia) -> list[Case]:
    lists = {"student": [Track("m1", "pop", 0.91), Track("m 3", "rock", 0.52)],
             "cmvae": [Track("m2", "jazz", 0.77), Track("m4", "folk", 0.12), Track("m5", "pop", 0.05)],
             "true top-2 (simulated world)": [Track("m2", "jazz", 0.64), Track("m1", "pop", 0.60)]}
    return [Case(v, f"uploader u{v}", media.video(v), lists) for v in ("v1", "v2")]


def _links(html: str) -> list[str]:
    return re.findall(r"\bsrc='([^']+)'", html)


def test_report_page_links_every_file_relatively_and_inlines_nothing(source):
    media = RawMedia.read(source / "data/raw")
    out = source / "reports"
    (out / "claim.json").write_text(json.dumps(CLAIM))
    report_page(out, media, _cases(media), "two videos")
    html = (out / "index.html").read_text()
    links = _links(html)
    assert sorted(set(links)) == ["../data/raw/media/music/m%203.wav", "../data/raw/media/music/m1.wav",
                                  "../data/raw/media/music/m2.wav", "../data/raw/media/video/v1.mp4",
                                  "../data/raw/media/video/v2.mp4", "genre_share.png"]
    assert html.count("<video ") == 2 and html.count("<audio ") == 2 * 5  # m4 has no file: listed, not played
    assert "m4 · folk · 0.120</span></li>" in html and "m5 · pop · 0.050</span></li>" in html and NO_MEDIA not in html
    assert "base64" not in html and "<script" not in html and len(html) < 20_000
    assert render_page("t", "i", out, _cases(media), media, claim=CLAIM) == \
        render_page("t", "i", out, _cases(media), media, claim=CLAIM)


def test_claim_table_shows_whatever_columns_and_verdicts_the_rows_carry():
    html = claim_html(CLAIM)
    assert html.count("<table>") == 2 and "<h3>student</h3>" in html and "<h3>no_teacher</h3>" in html
    head = re.search(r"<tr>((?:<th>[^<]*</th>)+)</tr>", html).group(1)
    assert re.findall("<th>([^<]*)</th>", head) == ["metric", "family", "verdict", "effect", "low", "high",
                                                     "p_holm", "seeds", "seed_effects"]  # the leading ones first
    assert "<td class='v-yes'>yes</td>" in html and "<td class='v-no'>no (⚠ 21 videos)</td>" in html
    assert "<td class='num'>0.0100, 0.0300, 0.0200</td>" in html and "<td>–</td>" in html and "0.0241" in html
    assert "no verdicts" in claim_html({"variants": {}}) and "no verdicts" in claim_html(None)


def test_a_source_without_media_lists_the_ids_and_says_why(tmp_path):
    media = RawMedia({"v1": None}, {"m1": None, "m2": None})
    report_page(tmp_path, media, _cases(media), "a release")
    html = (tmp_path / "index.html").read_text()
    assert NO_MEDIA in html and "<audio" not in html and "<video" not in html
    assert "m1 · pop · 0.910" in html and "no video file" in html
    assert "reports/claim.json has no verdicts" not in html  # no claim.json: the section is left out


def test_playable_names_what_a_browser_cannot_decode(source, tmp_path):
    assert playable(source / "data/raw/media/video/v1.mp4") is None
    _video(tmp_path / "old.avi", codec="mpeg4", fmt="avi")
    assert "browsers play" in playable(tmp_path / "old.avi")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert "PyAV cannot open it" in playable(tmp_path / "junk.mp4")


def test_recommend_html_writes_the_page_beside_the_users_videos(source, tmp_path, monkeypatch):
    import pipeline.recommend
    from pipeline.recommend_cli import main

    clip = source / "data/raw/media/video/v2.mp4"
    results = [{"video": str(clip), "music": [{"music_id": "m2", "score": 0.5, "genre": "jazz"},
                                              {"music_id": "m4", "score": 0.25, "genre": "folk"}]}]
    monkeypatch.setattr(pipeline.recommend, "recommend", lambda *a, **k: results)
    monkeypatch.chdir(source)
    (source / "params.yaml").write_text("features_video: {}\n")
    page = tmp_path / "deep/out.html"
    assert main([str(clip), "--model", "m.pt", "--html", str(page)]) == 0
    html = page.read_text()
    for link in _links(html):
        assert (page.parent / link.replace("%20", " ")).resolve().is_file(), link
    assert html.count("<video ") == 1 and html.count("<audio ") == 1 and "m4 · folk · 0.250" in html
    assert "ranked by m.pt" in html
    recommend_page(results, tmp_path / "bare.html", tmp_path / "no_raw", "m.pt")  # no data/raw: ids and why
    assert NO_MEDIA in (tmp_path / "bare.html").read_text()


def test_page_plays_every_video_and_song_offline_in_chromium(source, tmp_path):
    media = RawMedia.read(source / "data/raw")
    out = source / "reports"
    (out / "claim.json").write_text(json.dumps(CLAIM))
    report_page(out, media, _cases(media), "two videos")
    seen = visit_offline(out / "index.html", tmp_path / "profile", tmp_path / "page.png")
    assert seen["requests"] == [] and seen["errors"] == []
    assert len(seen["players"]) == 2 + 10
    for m in seen["players"]:
        assert m["ready"] >= 1 and m["duration"] > 0 and m["error"] == 0, m
        assert m["width"] in (None, 64), m
    assert seen["images"] == [["genre_share.png", 120]] and seen["decoded"] and len(seen["decoded"]) == 2
    shot = Image.open(tmp_path / "page.png")
    assert shot.width == 1400 and shot.height > 400
