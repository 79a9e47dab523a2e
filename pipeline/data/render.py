"""Media renderer of the simulated world: latent rows (pipeline.data.latents) -> real WAV and MP4 files.

The media carry the latents in ways pretrained extractors can see: genre in drum pattern and timbre, tempo
in a trackable beat, valence in the mode and in a bright bell line against a dark pad, loudness by energy;
scene in shapes, mood in colour, a visual beat.

The music side (and `RenderSpec`) is pipeline.data.render_music; this module draws the videos and renders
a whole world's media in parallel. `RenderSpec` and `render_music_clip` are re-exported here.
"""
from __future__ import annotations

import colorsys
import logging
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from fractions import Fraction
from pathlib import Path
from typing import Mapping

import av
import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data.latents import MUSIC_LATENTS, SCENES, VIDEO_LATENTS
from pipeline.data.render_music import RenderSpec, _field, render_music_clip
from pipeline.resources import available_cpus
from pipeline.errors import DataError, MediaError
from pipeline.io import atomic_path

__all__ = ["RenderSpec", "render_all", "render_music_clip", "render_video_clip"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- video: scenes
# A scene is drawn on a canvas larger than the frame by _MARGIN on each side, so the beat's camera shake
# can crop anywhere without showing an edge. Colours are neutral here; the grade adds mood and brightness.
_MARGIN = 8


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(255 * r), int(255 * g), int(255 * b)


def _layout(scene: str, rng: np.random.Generator, w: int) -> dict:
    """Random placement of a scene's shapes; drawn anew at every cut."""
    u = lambda *shape: rng.random(shape)  # noqa: E731
    return {
        "beach": lambda: {"horizon": int(w * (0.35 + 0.15 * u(1)[0])), "sun": (u(2) * [w, 0.25 * w]).astype(int)},
        "city": lambda: {"x": np.cumsum(6 + 14 * u(12)).astype(int), "h": (0.25 + 0.6 * u(12)) * w,
                         "shade": 60 + 80 * u(12)},
        "party": lambda: {"xy": u(14, 2) * w, "v": (u(14, 2) - 0.5) * 2, "hue": u(14)},
        "sport": lambda: {"xy": u(2) * w, "v": (u(2) - 0.5) * 2 + np.sign(u(2) - 0.5)},
        "nature": lambda: {"x": (u(5) * w).astype(int), "size": (8 + 10 * u(5)).astype(int),
                           "phase": 6.28 * u(5)},
        "food": lambda: {"angle": 6.28 * u(5), "radius": 0.12 + 0.14 * u(5), "size": (5 + 6 * u(5)).astype(int),
                         "hue": u(5)},
    }[scene]()


def _draw(scene: str, img: np.ndarray, lay: dict, t: float, speed: float, beat_no: int) -> None:
    """Draw one frame of `scene` at time t (seconds since the last cut); speed scales all motion (px/s)."""
    w = img.shape[0]
    aa = cv2.LINE_AA
    if scene == "beach":  # sky, sea with moving wave crests, sand, sun
        h = lay["horizon"]
        img[h:] = (40, 110, 170)
        img[int(h + 0.35 * w):] = (220, 200, 150)
        cv2.circle(img, tuple(int(c) for c in lay["sun"]), w // 10, (255, 240, 180), -1, aa)
        xs = np.arange(0, w + 8, 8)
        for j in range(3):
            y = h + (j + 1) * 0.08 * w + 3 * np.sin(xs / 9.0 + (speed / 9.0) * t + j)
            cv2.polylines(img, [np.stack([xs, y], 1).astype(np.int32)], False, (210, 230, 245), 2, aa)
    elif scene == "city":  # buildings with lit windows, panning sideways (skyline drawn once per layout)
        if "strip" not in lay:
            xs, ground = lay["x"].tolist(), int(0.9 * w)
            strip = np.zeros((w, xs[-1] + 1, 3), np.uint8)
            for x0, x1, hgt, shade in zip([0] + xs[:-1], xs, lay["h"], lay["shade"]):
                top = int(ground - hgt)
                cv2.rectangle(strip, (x0, top), (x1 - 2, ground), (int(shade),) * 3, -1)
                for yy in range(top + 4, ground - 4, 7):
                    cv2.rectangle(strip, (x0 + 2, yy), (x0 + 4, yy + 2), (250, 220, 120), -1)
            strip[ground:] = (50, 50, 55)
            lay["strip"], lay["mask"] = strip, strip.any(axis=2)
        cols = (np.arange(w) + int(speed * t)) % lay["strip"].shape[1]
        np.copyto(img, lay["strip"][:, cols], where=lay["mask"][:, cols, None])
    elif scene == "party":  # coloured dots drifting, half of them switching on each beat
        for k, ((x, y), (vx, vy), hue) in enumerate(zip(lay["xy"], lay["v"], lay["hue"])):
            if (k + beat_no) % 2 == 0:
                centre = (int(x + vx * speed * t) % w, int(y + vy * speed * t) % w)
                cv2.circle(img, centre, 5, _rgb(hue, 0.9, 1.0), -1, aa)
    elif scene == "sport":  # a green pitch with lines and a fast ball bouncing off its sides
        img[int(0.3 * w):] = (40, 140, 60)
        cv2.line(img, (w // 2, int(0.3 * w)), (w // 2, w), (235, 235, 235), 2)
        cv2.circle(img, (w // 2, int(0.65 * w)), w // 8, (235, 235, 235), 2, aa)
        pos = lay["xy"] + lay["v"] * 3.0 * speed * t
        pos = w - np.abs(pos % (2 * w) - w)  # bounce = reflect at both walls
        cv2.circle(img, (int(pos[0]), int(0.3 * w + 0.7 * pos[1])), 6, (250, 250, 250), -1, aa)
    elif scene == "nature":  # ground and trees swaying in the wind
        img[int(0.75 * w):] = (70, 120, 40)
        for x, size, ph in zip(lay["x"].tolist(), lay["size"].tolist(), lay["phase"]):
            sway = int(3 * np.sin(ph + 0.05 * speed * t))
            base = int(0.75 * w)
            cv2.rectangle(img, (x - 2, base - 2 * size), (x + 2, base), (90, 60, 30), -1)
            cv2.circle(img, (x + sway, base - 2 * size), size, (30, 130 + size * 3, 40), -1, aa)
    elif scene == "food":  # a plate on a table, food items turning slowly around its centre
        c = w // 2
        cv2.circle(img, (c, c), int(0.4 * w), (245, 245, 240), -1, aa)
        cv2.circle(img, (c, c), int(0.3 * w), (225, 225, 220), 2, aa)
        for ang, rad, size, hue in zip(lay["angle"], lay["radius"], lay["size"], lay["hue"]):
            a = ang + 0.01 * speed * t
            p = (int(c + rad * w * np.cos(a)), int(c + rad * w * np.sin(a)))
            cv2.circle(img, p, int(size), _rgb(0.02 + 0.3 * hue, 0.8, 0.8), -1, aa)
    else:
        raise KeyError(scene)


_PULSE = (0.0, 0.4, 1.0)  # beat level -> pulse strength: off, decaying, on the beat


def _grade_luts(energy: float, valence: float) -> list[np.ndarray]:
    """Per-channel lookup tables, one per beat level (_PULSE): mood tint, brightness, flash on the beat."""
    warm = 2.0 * valence - 1.0  # warm (red/yellow) for high valence, cold (blue) for low
    tint = np.array([1.0 + 0.35 * warm, 1.0 + 0.05 * warm, 1.0 - 0.35 * warm])
    bright = (0.3 + 0.7 * energy) * (0.85 + 0.15 * valence)  # brightness by energy, darker when sad
    x = np.arange(256, dtype=float)[:, None]
    return [np.clip(x * tint * bright * (1.0 + 0.35 * f), 0, 255).astype(np.uint8)[:, None, :] for f in _PULSE]


def _beat_pulse(n_frames: int, fps: int, bpm: float, phase: float) -> np.ndarray:
    """Visual beat level per frame: 2 on the frame nearest each beat at `bpm`, 1 on the frame after, else 0."""
    beats = np.round((phase + np.arange(0.0, n_frames / fps * bpm / 60.0 + 1) * 60.0 / bpm) * fps).astype(int)
    level = np.zeros(n_frames + 2, int)
    level[beats[beats < n_frames] + 1] = 1
    level[beats[beats < n_frames]] = 2
    return level[:n_frames]


def _yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB -> planar YUV 4:2:0 (BT.601, limited range) in integer numpy: the same bytes on every CPU, which
    swscale's SIMD paths do not promise. Returns the (1.5 * H, W) layout PyAV takes for yuv420p."""
    x = rgb.astype(np.int32)
    h, w = x.shape[:2]
    y = (x @ np.array([66, 129, 25], np.int32) + (128 + (16 << 8))) >> 8
    mean = (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2] + 2) >> 2  # chroma of each 2x2 block
    uv = (mean @ np.array([[-38, 112], [-74, -94], [112, -18]], np.int32) + (128 + (128 << 8))) >> 8
    return np.concatenate([y.ravel(), uv[..., 0].ravel(), uv[..., 1].ravel()]).astype(np.uint8).reshape(h * 3 // 2, w)


def render_video_clip(row: Mapping, path: Path, spec: RenderSpec) -> None:
    """Render one silent video: scene shapes, mood colours, motion by energy, a jump and flash on each beat."""
    vid = _field(row, "video_id", "video")
    scene = _field(row, "scene", "video")
    if scene not in SCENES:
        raise MediaError(f"video {vid}: scene {scene!r} not in {SCENES}")
    energy = _field(row, "energy", "video", 0.0, 1.0)
    valence = _field(row, "valence", "video", 0.0, 1.0)
    bpm = _field(row, "motion_tempo", "video", 20.0, 400.0)
    rng = np.random.default_rng(int(_field(row, "render_seed", "video")))
    fps, size = spec.video_fps, spec.video_size
    if size % 2 or size < 32:
        raise MediaError(f"video {vid}: video_size {size} must be even and >= 32 (yuv420p)")
    if "libx264" not in av.codecs_available:
        raise MediaError(f"video {vid}: this PyAV build has no libx264 encoder; install the pinned av wheel")
    n_frames = int(round(spec.video_seconds * fps))
    w = size + 2 * _MARGIN
    scale = size / 128.0
    speed = (6.0 + 40.0 * energy) * scale  # continuous motion (px/s) by energy
    jump = min(_MARGIN - 1.0, (2.5 + 4.5 * energy) * scale)  # camera jump on the beat (px)
    background = _rgb((220.0 + 170.0 * valence) / 360.0, 0.55, 0.55 + 0.35 * valence)  # blue -> purple -> red -> orange
    luts = _grade_luts(energy, valence)
    level = _beat_pulse(n_frames, fps, bpm, rng.uniform(0.0, 60.0 / bpm))
    cut_prob = 0.08 + 0.12 * energy
    layout, t_cut, beat_no, direction = _layout(scene, rng, w), 0.0, 0, 0.0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", container_options={"fflags": "+bitexact"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.codec_context.thread_count = 1  # one thread: identical bytes on every machine load
            stream.options = {"crf": "23", "preset": "veryfast", "g": str(fps), "flags": "+bitexact"}
            for i in range(n_frames):
                if level[i] == 2:
                    beat_no += 1
                    direction = rng.uniform(-1.0, 1.0)
                    if beat_no > 1 and rng.random() < cut_prob:  # cuts fall on beats only
                        layout, t_cut = _layout(scene, rng, w), i / fps
                img = np.empty((w, w, 3), np.uint8)
                img[:] = background
                _draw(scene, img, layout, i / fps - t_cut, speed, beat_no)
                dy = int(round(-jump * _PULSE[level[i]]))  # the camera jumps up on the beat and settles
                dx = int(round(0.6 * jump * _PULSE[level[i]] * direction))
                crop = np.ascontiguousarray(img[_MARGIN + dy:_MARGIN + dy + size, _MARGIN + dx:_MARGIN + dx + size])
                graded = cv2.LUT(crop, luts[level[i]])
                frame = av.VideoFrame.from_ndarray(_yuv420p(graded), format="yuv420p")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


# ---------------------------------------------------------------- batch rendering

_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


def _render_one(task: tuple[str, dict, str, RenderSpec]) -> tuple[str, str | None]:
    """Worker: render one file; report a failure as text so it crosses the process boundary intact."""
    kind, row, path, spec = task
    rid = row[f"{kind}_id"]
    try:
        (render_music_clip if kind == "music" else render_video_clip)(row, Path(path), spec)
        return rid, None
    except Exception as exc:  # noqa: BLE001 - any failure becomes a MediaError naming the id
        return rid, f"{type(exc).__name__}: {exc}"


def _tasks(frame: pd.DataFrame, kind: str, columns: tuple[str, ...], out_dir: Path, subdir: str,
           ext: str, spec: RenderSpec) -> list[tuple[str, dict, str, RenderSpec]]:
    if frame is None or frame.empty:
        return []
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{kind} latents: missing column(s) {missing}; expected {list(columns)}")
    tasks = []
    for i, row in enumerate(frame[list(columns)].to_dict("records")):
        rid = row[f"{kind}_id"] = str(row[f"{kind}_id"])
        if not _SAFE_ID.match(rid):
            raise DataError(f"{kind} latents row {i}: id {rid!r} is not a safe file name ([A-Za-z0-9_.-])")
        tasks.append((kind, row, str(out_dir / subdir / f"{rid}{ext}"), spec))
    return tasks


def render_all(music: pd.DataFrame, videos: pd.DataFrame, out_dir: Path, spec: RenderSpec,
               workers: int = 0, music_subdir: str = "music", video_subdir: str = "video") -> dict[str, str]:
    """Render every music clip and video on `workers` processes (0 = all cores); return {id: path in out_dir}.

    Files are independent and each is a pure function of its row, so the output does not depend on the
    number of workers. On the first failure the pool stops and a MediaError names the id; files already
    finished stay whole, and no temporary file is left behind.
    """
    out_dir = Path(out_dir)
    tasks = (_tasks(music, "music", MUSIC_LATENTS, out_dir, music_subdir, ".wav", spec)
             + _tasks(videos, "video", VIDEO_LATENTS, out_dir, video_subdir, ".mp4", spec))
    ids = [t[1][f"{t[0]}_id"] for t in tasks]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"render_all: id {dup!r} appears twice; music and video ids must be unique")
    paths = {rid: Path(t[2]).relative_to(out_dir).as_posix() for rid, t in zip(ids, tasks)}
    if not tasks:
        return {}
    for sub in {Path(t[2]).parent for t in tasks}:
        sub.mkdir(parents=True, exist_ok=True)
    workers = min(workers or available_cpus(), len(tasks))
    log.info("rendering %d music clips and %d videos on %d worker(s) into %s",
             sum(t[0] == "music" for t in tasks), sum(t[0] == "video" for t in tasks), workers, out_dir)
    bar = tqdm(total=len(tasks), desc="render media", unit="file", mininterval=2.0)
    pool = None
    try:
        if workers == 1:
            results = map(_render_one, tasks)
        else:
            # spawn: fresh interpreters, safe even when the parent holds threads (torch, ray); a worker that
            # dies raises BrokenProcessPool here instead of hanging the run
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=cv2.setNumThreads, initargs=(1,))  # a core each
            results = pool.map(_render_one, tasks, chunksize=max(1, min(16, len(tasks) // (8 * workers))))
        for (rid, error), task in zip(results, tasks):
            if error is not None:
                raise MediaError(f"{task[0]} {rid}: rendering {task[2]} failed: {error}")
            bar.update()
    except BrokenProcessPool as exc:
        raise MediaError(f"render_all: a worker process died while rendering into {out_dir}: {exc}") from exc
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # let running chunks finish whole
        _sweep_temporaries([Path(t[2]) for t in tasks])
    return paths


def _sweep_temporaries(paths: list[Path]) -> None:
    """Delete atomic_path's temporary files (.<name>.*.tmp) of `paths`, which a killed worker leaves behind."""
    names = {p.name for p in paths}
    for folder in {p.parent for p in paths}:
        for entry in os.scandir(folder):
            parts = entry.name.split(".")
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and ".".join(parts[1:-2]) in names:
                os.unlink(entry.path)
