"""The one media check: whether a file is usable audio or video, with the same one-line verdict in `ingest`
(a header probe) and in every extractor (which read media only through `VideoReader` and `read_audio`).

A file passes when it exists, is not empty and opens; holds the stream a stage reads (video: a video stream
with a frame rate; music: an audio stream); lasts at least MIN_SECONDS; a video has at least
MIN_VIDEO_FRAMES frames and its frames cover MIN_COVERAGE of the duration its stream declares (a cut file
fails); audio samples are finite and not silent. `probe` reads only the header (ingest: about a millisecond
a file); the readers decode everything before judging, so every stage that reads a file judges it alike.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from pipeline.errors import DataError, MediaError, ParamsError

log = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")
KINDS = ("video", "audio")
# Rhythm finds no beats in less than a second, and its optical-flow tempo needs 8 frames; every stage
# refuses such media, so a clip is never in one feature matrix and missing from another.
MIN_SECONDS = 1.0
MIN_VIDEO_FRAMES = 8
MIN_COVERAGE = 0.9  # a video whose frames end before 90% of its stream's declared duration is truncated
# RMS below 1e-4 (-80 dBFS, under 16-bit dither) is silence: log-mel features of digital silence are a
# constant that would pass as a real clip, and silence has no beats to match.
SILENCE_RMS = 1e-4
MAX_LISTED = 10  # bad files named in one error message (every one is logged)


class BadMedia(Exception):
    """Why one file fails the media check: one line, without the path (the caller adds id and path)."""


@dataclass(frozen=True)
class MediaParams:
    """The `media` params group: one switch for what every media stage does with a file that fails."""

    on_error: str = "fail"  # fail: stop, naming every bad file; skip: leave them out (failures.parquet)

    def validate(self) -> None:
        check_on_error(self.on_error)


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ParamsError(f"media.on_error: {on_error!r}, expected one of {ON_ERROR}")


def _one_line(e: Exception, path: str = "") -> str:
    """The exception on one short line, without the file name the caller already prints."""
    text = f"{type(e).__name__}: {e}".replace(f": '{path}'", "") if path else f"{type(e).__name__}: {e}"
    return " ".join(text.split())[:200]


def _check_file(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise BadMedia("file not found")
    if not p.is_file():
        raise BadMedia("not a regular file")
    if p.stat().st_size == 0:
        raise BadMedia("empty file (0 bytes)")
    return str(p)


def _too_short(seconds: float) -> BadMedia:
    return BadMedia(f"too short: {seconds:.2f} s, expected at least {MIN_SECONDS:g} s")


def _open(path: str):
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except Exception as e:  # noqa: BLE001 - FFmpeg raises many types for a file that is not media
        raise BadMedia(f"cannot decode: unsupported or corrupt file ({_one_line(e, path)})") from None


# ---------------------------------------------------------------------------------------------- video

class VideoReader:
    """One video file, opened and checked: `frames()` decodes every frame, then judges the whole file.

        with VideoReader(path) as video:       # BadMedia: missing, empty, not media, no video stream
            for t, frame in video.frames():    # BadMedia after the last frame: truncated, too short, ...
                ...

    t is the frame's time in seconds from the first frame (Fraction, by timestamp; by index at `rate`
    when a frame has none). Iterate to the end even when fewer frames are needed: the verdict comes last.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = _check_file(path)
        self.container = _open(self.path)
        try:
            if not self.container.streams.video:
                raise BadMedia(f"no video stream (container {self.container.format.name!r})")
            self.stream = self.container.streams.video[0]
            codec = self.stream.codec_context  # None when the header holds no codec parameters
            if codec is not None and (codec.width or 0) * (codec.height or 0) >= 640 * 360:
                # frame threads pay only on large frames; H.264 decoding is bit-exact whatever the threading
                self.stream.thread_type = "AUTO"
            rate = self.stream.average_rate or self.stream.guessed_rate
            if not rate or rate <= 0:
                raise BadMedia("the video stream declares no frame rate")
            self.rate = Fraction(rate)
            tb = self.stream.time_base
            # the stream's own duration; the container's may be the audio track's, so it only sets sampling
            self.stream_duration = Fraction(self.stream.duration) * tb if self.stream.duration and tb else None
            container_duration = Fraction(self.container.duration, 1_000_000) if self.container.duration else None
            self.duration = self.stream_duration or container_duration  # None: unknown until decoded
            self.end = Fraction(0)  # end of the frames decoded so far (s): the last one's time + duration
        except BaseException:
            self.container.close()
            raise

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def frames(self) -> Iterator[tuple[Fraction, "av.VideoFrame"]]:
        import av

        tb = self.stream.time_base
        origin, n = None, 0
        try:
            for frame in self.container.decode(self.stream):
                if frame.pts is not None and tb:
                    origin = frame.pts if origin is None else origin
                    t = (frame.pts - origin) * tb
                else:  # no timestamp: the frame index at the nominal rate
                    t = n / self.rate
                n += 1
                self.end = max(self.end, t + (frame.duration * tb if frame.duration and tb else 1 / self.rate))
                yield t, frame
        except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
            raise BadMedia(f"cannot decode ({_one_line(e)})") from None
        if n == 0:
            raise BadMedia("no decodable video frames")
        if self.stream_duration and self.end < MIN_COVERAGE * self.stream_duration:
            raise BadMedia(f"truncated: frames cover {float(self.end):.2f} s of the declared "
                           f"{float(self.stream_duration):.2f} s")
        if self.end < MIN_SECONDS:
            raise _too_short(float(self.end))
        if n < MIN_VIDEO_FRAMES:
            raise BadMedia(f"too few frames: {n}, expected at least {MIN_VIDEO_FRAMES}")


# ---------------------------------------------------------------------------------------------- audio

def _decode_pyav(path: str) -> tuple[np.ndarray, int]:
    """Formats libsndfile lacks (AAC/M4A, audio tracks of video files) through FFmpeg: mono float32."""
    import av

    with _open(path) as container:
        if not container.streams.audio:
            raise BadMedia(f"no audio stream (container {container.format.name!r})")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.rate or 16000)
        chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(stream) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), resampler.rate


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(mono float32 samples at the file's own rate, that rate), checked; BadMedia saying why not.

    libsndfile reads WAV/FLAC/OGG/MP3 (as librosa.load does: float32, channel mean), PyAV the rest. The
    verdict is taken on this native signal, so it never depends on the rate a stage resamples to.
    """
    import soundfile

    path = _check_file(path)
    try:
        try:
            y, sr = soundfile.read(path, dtype="float32", always_2d=False)
            y = y.T
        except soundfile.LibsndfileError:  # not a format libsndfile reads: try FFmpeg
            y, sr = _decode_pyav(path)
    except BadMedia:
        raise
    except Exception as e:  # noqa: BLE001 - every decoder error means the same here: unreadable or corrupt
        raise BadMedia(f"cannot decode: unsupported or corrupt audio ({_one_line(e, path)})") from None
    if y.ndim > 1:
        import librosa

        y = librosa.to_mono(y)
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.size == 0:
        raise BadMedia("no audio samples decoded (empty or unsupported stream)")
    if y.size < MIN_SECONDS * sr:
        raise _too_short(y.size / sr)
    if not np.isfinite(y).all():
        raise BadMedia("decoded samples hold NaN or inf")
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise BadMedia(f"silent: RMS {rms:.2e} below {SILENCE_RMS:.0e}")
    return y, int(sr)


def read_audio(path: str | os.PathLike, sr: int) -> np.ndarray:
    """`decode_audio`, then resampled to `sr` (soxr_hq, as librosa.load): mono float32; BadMedia if unusable."""
    y, native = decode_audio(path)
    if native != sr:
        import librosa

        y = np.ascontiguousarray(librosa.resample(y, orig_sr=native, target_sr=sr, res_type="soxr_hq"),
                                 dtype=np.float32)
    return y


# ---------------------------------------------------------------------------------------------- probe

def probe(path: str | os.PathLike, kind: str) -> None:
    """The header-only check (no decoding): BadMedia if the file is not `kind` media a stage could read.

    What it cannot see (a cut, silence, a corrupt packet) fails later with the readers' verdict.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}, expected one of {KINDS}")
    path = _check_file(path)
    with _open(path) as container:
        streams = container.streams.video if kind == "video" else container.streams.audio
        if not streams:
            raise BadMedia(f"no {kind} stream (container {container.format.name!r})")
        stream = streams[0]
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        else:
            seconds = container.duration / 1_000_000 if container.duration else None
        if seconds is not None and seconds < MIN_SECONDS:
            raise _too_short(seconds)
        if kind == "video":
            if not (stream.average_rate or stream.guessed_rate):
                raise BadMedia("the video stream declares no frame rate")
            if 0 < (stream.frames or 0) < MIN_VIDEO_FRAMES:
                raise BadMedia(f"too few frames: header declares {stream.frames}, expected at least {MIN_VIDEO_FRAMES}")


def media_paths(table, id_col: str, root: str | os.PathLike) -> dict[str, Path]:
    """{id: root / path} for the rows of a canonical table (videos or music) that have a media path."""
    return {str(i): Path(root) / p for i, p in zip(table[id_col], table["path"]) if isinstance(p, str) and p}


def probe_media(videos: dict, music: dict, where: str, on_error: str = "fail") -> list[tuple[str, str, str]]:
    """Header-probe every video and music file ({id: path}); the failures as (kind, id, reason).

    For `ingest`: a file that is not media at all (a text file named .mp4), lacks its stream or is too
    short by its own header is refused in seconds instead of in an extractor much later: with
    `media.on_error: fail` one DataError naming every one; with `skip` each is logged and returned, and
    the importer drops it.
    """
    check_on_error(on_error)
    files = [("video", i, p) for i, p in sorted(videos.items())] + [("audio", i, p) for i, p in sorted(music.items())]
    failures, bad = [], []
    for kind, ident, path in tqdm(files, desc="media probe", unit="file", disable=len(files) < 500, leave=False):
        try:
            probe(path, kind)
        except BadMedia as e:
            failures.append((f"{'video' if kind == 'video' else 'music'} {ident}", str(path), str(e)))
            bad.append(("video" if kind == "video" else "music", ident, str(e)))
            log.warning("%s: %s (%s): %s%s", where, failures[-1][0], path, e,
                        "; skipped (media.on_error: skip)" if on_error == "skip" else "")
    if failures and on_error == "fail":
        raise DataError(f"{where}: {len(failures)} of {len(files)} media file(s) fail the media check "
                        f"(replace or remove them, or set media.on_error: skip to leave them out): {listing(failures)}")
    log.info("%s: %d of %d media files pass the header probe", where, len(files) - len(failures), len(files))
    return bad


def check_audio(paths: dict[str, str], on_error: str, what: str, workers: int = 0) -> list[tuple[str, str, str]]:
    """`decode_audio`'s verdict on every file ({id: path}), for a stage that reads audio with another decoder
    (the genre LSTM's frames): fail -> one MediaError naming every bad clip by id; skip -> the failures
    (id, path, reason), each logged, for the caller to leave out."""
    from concurrent.futures import ThreadPoolExecutor

    check_on_error(on_error)

    def verdict(item: tuple[str, str]) -> tuple[str, str, str] | None:
        try:
            decode_audio(item[1])
        except BadMedia as e:
            return item[0], item[1], str(e)
        return None

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:  # decoders release the GIL
        failures = [f for f in pool.map(verdict, sorted(paths.items())) if f is not None]
    for ident, path, reason in failures:
        log.warning("%s: music %s (%s): %s%s", what, ident, path, reason,
                    "; skipped (media.on_error: skip)" if on_error == "skip" else "")
    if failures and on_error == "fail":
        raise_failures(what, failures, len(paths), "music file(s)")
    return failures


def listing(failures: list[tuple[str, str, str]]) -> str:
    """'id (path): reason; ...' on one line, the first MAX_LISTED of them (the rest are in the log)."""
    shown = "; ".join(f"{i} ({p}): {r}" for i, p, r in sorted(failures)[:MAX_LISTED])
    more = len(failures) - MAX_LISTED
    return shown + (f"; and {more} more (each logged above)" if more > 0 else "")


def raise_failures(what: str, failures: list[tuple[str, str, str]], total: int, unit: str) -> None:
    """One one-line MediaError naming every bad file (up to MAX_LISTED) and the switch that skips them."""
    raise MediaError(f"{what}: {len(failures)} of {total} {unit} cannot be used (set media.on_error: skip "
                     f"to leave them out of every stage): {listing(failures)}")
