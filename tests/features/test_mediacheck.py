"""The one media check: every extractor, the rhythm stage and ingest's header probe give a bad file the same
one-line verdict, and `media.on_error: skip` carries it through every stage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.data.importers import import_folder
from pipeline.errors import DataError, MediaError, ParamsError
from pipeline.features import music, rhythm, smile, video
from pipeline.features.mediacheck import (MIN_SECONDS, BadMedia, MediaParams, VideoReader, decode_audio, probe,
                                          read_audio)
from test_video import numbered_frames, scene_video, write_mp4


def beat_clip(path: Path, seconds: float, sr: int = 22050, gain: float = 0.5, bpm: float = 120.0) -> str:
    """A 220-Hz tone with a click on every beat (something to track), mono float WAV."""
    t = np.arange(int(seconds * sr)) / sr
    y = gain * 0.3 * np.sin(2 * np.pi * 220 * t)
    for start in np.arange(0, seconds, 60 / bpm):
        i = int(start * sr)
        y[i:i + 400] += gain * np.exp(-np.arange(len(y[i:i + 400])) / 60)
    sf.write(path, y.astype(np.float32), sr, subtype="FLOAT")
    return str(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("media")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("a caption file renamed .mp4\n" * 40)
    (d / "text.wav").write_text("not audio\n" * 40)
    whole = write_mp4(d / "whole.mp4", numbered_frames(30), options={"movflags": "faststart"}).read_bytes()
    (d / "cut.mp4").write_bytes(whole[: len(whole) * 2 // 3])
    sf.write(d / "silent.wav", np.zeros(3 * 22050, np.float32), 22050)
    return {
        "video_ok": str(scene_video(d / "ok.mp4", seed=1, seconds=2.0)),
        "video_short": str(scene_video(d / "short.mp4", seed=2, seconds=0.6)),  # 9 frames, 0.6 s
        "video_cut": str(d / "cut.mp4"),
        "video_text": str(d / "text.mp4"),
        "video_empty": str(d / "empty.mp4"),
        "video_missing": str(d / "missing.mp4"),
        "audio_ok": beat_clip(d / "ok.wav", 4.0),
        "audio_short": beat_clip(d / "short.wav", 0.2),
        "audio_silent": str(d / "silent.wav"),
        "audio_text": str(d / "text.wav"),
        "audio_missing": str(d / "gone.wav"),
    }


class _Spectrogram:
    """What music._decode_one needs of a TensorFlow graph, without TensorFlow: the log-mel and patch size."""

    spectrogram, n_frames = staticmethod(music.musicnn_logmel), 188


def _verdicts(kind: str, path: str) -> dict[str, str | None]:
    """The reason each stage's per-file reader gives (None: accepted)."""
    if kind == "video":
        return {"extract_video": video._decode_one(("x", path), video.VideoConfig())[2],
                "rhythm": rhythm._analyse(("video", "x", path, None))[3]}
    return {"extract_music": music._decode_one(("x", path), _Spectrogram())[2],
            "extract_smile": smile._functionals_one(("x", path), smile.SMILE_SAMPLE_RATE, decode_only=True)[2],
            "rhythm": rhythm._analyse(("music", "x", path, None))[3]}


@pytest.mark.parametrize("name,first_word", [
    ("video_short", "too short"), ("video_cut", ("truncated:", "cannot decode")), ("video_text", "cannot decode"),
    ("video_empty", "empty file"), ("video_missing", "file not found"), ("audio_short", "too short"),
    ("audio_silent", "silent"), ("audio_text", "cannot decode"), ("audio_missing", "file not found")])
def test_every_stage_gives_a_bad_file_the_same_verdict(media, name, first_word):
    """Before: silence was scored 0.0 by rhythm but refused by musicnn/openSMILE, a 0.2-s clip the reverse."""
    verdicts = _verdicts(name.split("_")[0], media[name])
    assert len(set(verdicts.values())) == 1, verdicts
    reason = next(iter(verdicts.values()))
    assert reason is not None and reason.startswith(first_word) and "\n" not in reason, verdicts


@pytest.mark.parametrize("name", ["video_ok", "audio_ok"])
def test_every_stage_accepts_good_media(media, name):
    assert set(_verdicts(name.split("_")[0], media[name]).values()) == {None}


def test_the_header_probe_agrees_where_the_header_tells(media):
    """ingest's probe decodes nothing, so it sees what the header says; there its verdict is the readers'."""
    probe(media["video_ok"], "video")
    probe(media["audio_ok"], "audio")
    for name in ("video_short", "video_text", "video_empty", "video_missing", "audio_short", "audio_text",
                 "audio_missing"):
        kind = name.split("_")[0]
        with pytest.raises(BadMedia) as err:
            probe(media[name], kind)
        assert str(err.value) == _verdicts(kind, media[name])["rhythm"], name
    with pytest.raises(BadMedia, match="no audio stream"):
        probe(media["video_ok"], "audio")
    probe(media["audio_silent"], "audio")  # silence and cuts need decoding: the extractors catch them


def test_minimums_are_inclusive_and_stated(tmp_path):
    assert MIN_SECONDS == 1.0
    y, sr = decode_audio(beat_clip(tmp_path / "one.wav", 1.0))
    assert len(y) == sr  # exactly the minimum passes
    with pytest.raises(ParamsError, match="media.on_error"):
        MediaParams(on_error="ignore").validate()


def test_audio_is_read_as_librosa_load_would(media):
    """The check decodes once at the file's rate; resampling then gives librosa.load's samples exactly."""
    import librosa

    ours = read_audio(media["audio_ok"], 16000)
    theirs, _ = librosa.load(media["audio_ok"], sr=16000, mono=True, res_type="soxr_hq")
    assert ours.dtype == np.float32 and ours.tobytes() == theirs.tobytes()


def test_video_reader_decodes_every_frame_then_judges(media, tmp_path):
    with VideoReader(media["video_ok"]) as v:
        times = [t for t, _ in v.frames()]
    assert len(times) == 30 and times[1] - times[0] == pytest.approx(1 / 15) and v.end == 2
    whole = write_mp4(tmp_path / "w.mp4", numbered_frames(30), options={"movflags": "faststart"}).read_bytes()
    yielded_then_refused = 0
    for cut in range(len(whole) // 3, len(whole), 97):  # cut files: frames first, the verdict after the last
        (tmp_path / "cut.mp4").write_bytes(whole[:cut])
        seen, verdict = 0, ""
        try:
            with VideoReader(tmp_path / "cut.mp4") as v:
                for _ in v.frames():
                    seen += 1
        except BadMedia as e:
            verdict = str(e)
        assert verdict, cut  # no cut passes as a shorter video
        yielded_then_refused += seen > 0
    assert yielded_then_refused > 0


def test_skip_carries_a_bad_file_through_rhythm_and_fail_names_the_switch(media):
    """Before: rhythm failed on a video features_video skipped, naming no key; silence scored 0.0 silently."""
    videos = {"ok": media["video_ok"], "text": media["video_text"]}
    clips = {"beat": media["audio_ok"], "quiet": media["audio_silent"]}
    pairs = pd.DataFrame({"video_id": ["ok", "text", "ok"], "music_id": ["beat", "beat", "quiet"]})
    with pytest.raises(MediaError) as err:
        rhythm.rhythm_table(pairs, videos, clips, workers=1)
    message = str(err.value)
    assert "\n" not in message and "media.on_error: skip" in message
    assert "video text" in message and "music quiet" in message and "silent" in message
    table, failures = rhythm.rhythm_table(pairs, videos, clips, workers=1, on_error="skip")
    assert table[["video_id", "music_id"]].values.tolist() == [["ok", "beat"]]
    assert sorted(failures["video_id"]) == ["ok", "text"]
    assert failures.set_index("video_id").loc["ok", "reason"].startswith("music quiet: silent")


def test_ingest_refuses_a_text_file_named_mp4(media, tmp_path):
    """Before: it passed ingest and failed in an extractor (20 minutes into `make repro`)."""
    src = tmp_path / "src"
    (src / "videos").mkdir(parents=True)
    (src / "music").mkdir()
    for name, file in (("videos/v1.mp4", media["video_ok"]), ("videos/v2.mp4", media["video_text"]),
                       ("music/m1.wav", media["audio_ok"])):
        (src / name).write_bytes(Path(file).read_bytes())
    (src / "pairs.csv").write_text("video_id,uploader_id,music_id\nv1,u1,m1\nv2,u1,m1\n")
    with pytest.raises(DataError) as err:
        import_folder(src, tmp_path / "raw")
    message = str(err.value)
    assert "1 of 3 media file(s) fail the media check" in message and "\n" not in message
    assert f"video v2 ({src / 'videos/v2.mp4'}): cannot decode" in message
    assert not (tmp_path / "raw").exists()  # nothing half-imported
    (src / "videos/v2.mp4").write_bytes(Path(media["video_ok"]).read_bytes())
    assert import_folder(src, tmp_path / "raw")["counts"]["videos"] == 2
