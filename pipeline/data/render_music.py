"""Music renderer of the simulated world: a latent row (pipeline.data.latents) -> a real WAV file.

Genre is carried by drum pattern and timbre, tempo by a trackable beat, valence by the mode and by a bright
bell line against a dark pad, loudness by energy. `RenderSpec` and the latent reader `_field` live here
too, because the video renderer (pipeline.data.render) reads the same spec and rows: this module imports
nothing from it, so the two never import each other.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import scipy.signal
import soundfile as sf

from pipeline.data.schema import GENRES
from pipeline.errors import MediaError
from pipeline.io import atomic_path



@dataclass(frozen=True)
class RenderSpec:
    sample_rate: int = 22050
    music_seconds: float = 8.0
    video_seconds: float = 6.0
    video_fps: int = 15
    video_size: int = 128  # square frames, pixels


def _field(row: Mapping, key: str, what: str, lo: float | None = None, hi: float | None = None):
    """Read one latent; a missing or out-of-range value is a MediaError naming the clip."""
    rid = row.get("music_id", row.get("video_id", "?"))
    if key not in row:
        raise MediaError(f"{what} {rid}: latent row has no {key!r}")
    value = row[key]
    if lo is not None:
        value = float(value)
        if not (lo <= value <= hi):
            raise MediaError(f"{what} {rid}: {key}={value} outside [{lo}, {hi}]")
    return value


# ---------------------------------------------------------------- music: instruments

def _decay_env(n: int, sr: int, rate: float, attack: float = 0.002) -> np.ndarray:
    t = np.arange(n) / sr
    return np.minimum(t / attack, 1.0) * np.exp(-rate * t)


def _kick(sr: int, rng: np.random.Generator, decay: float) -> np.ndarray:
    t = np.arange(int(0.5 * sr)) / sr
    freq = 45.0 + 110.0 * np.exp(-35.0 * t)  # the pitch sweep is the thump's attack
    x = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-decay * t)
    return x + 0.3 * rng.standard_normal(len(t)) * np.exp(-400.0 * t)


def _snare(sr: int, rng: np.random.Generator, tone: float, noise: float) -> np.ndarray:
    t = np.arange(int(0.25 * sr)) / sr
    return (noise * np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-18.0 * t)
            + (1.0 - noise) * np.sin(2 * np.pi * tone * t) * np.exp(-30.0 * t))


def _hat(sr: int, rng: np.random.Generator, rate: float) -> np.ndarray:
    n = int(min(0.4, 7.0 / rate) * sr)
    return 0.5 * np.diff(rng.standard_normal(n + 2), n=2) * _decay_env(n, sr, rate, 0.0005)


def _ride(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.6 * sr)) / sr
    partials = np.array([3120.0, 4230.0, 5410.0, 6550.0, 8020.0]) * rng.uniform(0.97, 1.03)
    x = 0.08 * np.sin(2 * np.pi * t[:, None] * partials).sum(1) * _decay_env(len(t), sr, 5.0)
    return x + 0.3 * np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-25.0 * t)


_TABLE = 2048
_TABLE_X = np.arange(_TABLE + 1)


@functools.lru_cache(maxsize=16)
def _harmonic_sines(n_harmonics: int) -> np.ndarray:
    """[_TABLE + 1, n_harmonics] one period of each harmonic's sine; the same for every note, so made once."""
    k = np.arange(1.0, n_harmonics + 1.0)
    sines = np.sin(2 * np.pi * np.outer(_TABLE_X / _TABLE, k))
    sines.flags.writeable = False
    return sines


def _note(freq: float, dur: float, sr: int, rolloff: float, decay: float, attack: float = 0.005,
          vibrato: float = 0.0) -> np.ndarray:
    """Additive tone, harmonics k^-rolloff (lower = brighter) below Nyquist, read from a one-period wavetable
    (far cheaper than a sine per harmonic and sample); it stops once its decay is 60 dB down."""
    n = max(int(min(dur, attack + 6.9 / decay) * sr), 16)
    t = np.arange(n) / sr
    k = np.arange(1.0, 13.0)
    k = k[k * freq < 0.45 * sr]
    table = _harmonic_sines(len(k)) @ (k ** -rolloff / (k ** -rolloff).sum())
    cycles = freq * (t + vibrato / (2 * np.pi * 5.5) * np.sin(2 * np.pi * 5.5 * t)) if vibrato else freq * t
    env = _decay_env(n, sr, decay, attack)
    tail = min(n, int(0.01 * sr))
    env[-tail:] *= np.linspace(1.0, 0.0, tail)  # no click at the note's end
    # linear interpolation in the table as np.interp computes it (slope * (x - x_j) + y_j: the same bits), without
    # its binary search per sample, the grid being the integers; x < _TABLE, so j + 1 stays in the table
    x = (cycles % 1.0) * _TABLE
    j = x.astype(np.intp)
    return ((x - j) * np.diff(table)[j] + table[j]) * env


def _place(buf: np.ndarray, sound: np.ndarray, t: float, sr: int, gain: float = 1.0) -> None:
    start = max(0, int(round(t * sr)))
    end = min(len(buf), start + len(sound))
    if start < end:
        buf[start:end] += gain * sound[: end - start]


def _midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69) / 12)


# ---------------------------------------------------------------- music: genre styles

@dataclass(frozen=True)
class _Style:
    """How a genre sounds: drum pattern and kit, bass and chord rhythm, timbre, mix."""
    drums: Callable[[float], list]  # energy -> [(instrument, position in beats of a 4-beat bar, velocity)]
    swing: float                    # where off-beat 8ths fall (0.5 straight, 0.66 triplet swing)
    kit: tuple                      # kick decay 1/s, snare tone Hz, snare noise share, hat decay 1/s
    bass: tuple                     # ((position, duration) in beats, ...) per bar; () = walking bass
    bass_rolloff: float
    chords: tuple                   # positions of chord hits in a bar
    chord_beats: float              # chord duration (beats)
    chord_decay: float              # 1/s
    chord_rolloff: float            # added to the energy's rolloff: + mellow, - bright
    lowpass_hz: float = 0.0         # master low-pass (hiphop's dusty sound); 0 = none
    levels: tuple = (1.0, 0.5, 0.35)  # drums, bass, chords (relative RMS)


_EIGHTHS = tuple(np.arange(0.0, 4.0, 0.5).tolist())
_STYLES = {
    # four-on-the-floor kick, backbeat clap, 8th (16th when energetic) hats, bright held pad
    "pop": _Style(lambda e: [("kick", b, 1.0) for b in range(4)] + [("snare", b, 0.9) for b in (1, 3)]
                  + [("hat", s / (4 if e > 0.6 else 2), 0.35) for s in range(16 if e > 0.6 else 8)],
                  0.5, (10.0, 200.0, 0.6, 80.0), tuple((p, 0.5) for p in _EIGHTHS), 1.8, (0.0,), 4.0, 0.6, 0.2,
                  levels=(1.0, 0.5, 0.6)),
    # boom-bap: long 808 kick on 1 and 3 plus a pickup, snare on 2 and 4, swung hats, mellow keys, low-passed
    "hiphop": _Style(lambda e: [("kick", 0, 1.0), ("kick", 2, 0.9), ("kick", 2.5, 0.6)]
                     + [("snare", b, 1.0) for b in (1, 3)] + [("hat", s / 2, 0.45) for s in range(8)],
                     0.6, (4.0, 180.0, 0.6, 90.0), ((0, 1.6), (2, 0.45), (2.5, 1.2)), 3.5, (0.0, 2.0), 1.8, 1.5, 1.0,
                     lowpass_hz=3500.0, levels=(1.0, 0.7, 0.3)),
    # one-drop: kick and rimshot together on beat 3 only; deep bass; bright skank stabs on the off-beats
    "reggae": _Style(lambda e: [("kick", 2, 1.0), ("snare", 2, 0.8)]
                     + [("hat", s / 2, 0.55 if s % 2 == 0 else 0.35) for s in range(8)],
                     0.6, (8.0, 420.0, 0.3, 70.0), ((0, 0.9), (1.5, 0.4), (2, 0.9), (3, 0.9)), 3.0,
                     (0.5, 1.5, 2.5, 3.5), 0.2, 14.0, -0.8, levels=(1.0, 0.8, 0.45)),
    # tight double kick, backbeat snare, crash on quarters, distorted chords chugging in 8ths
    "metal": _Style(lambda e: [("kick", s / (4 if e > 0.55 else 2), 0.9 if s % (4 if e > 0.55 else 2) == 0 else 0.55)
                               for s in range(16 if e > 0.55 else 8)]
                    + [("snare", b, 1.0) for b in (1, 3)] + [("hat", b, 0.6) for b in range(4)],
                    0.5, (14.0, 220.0, 0.7, 18.0), tuple((p, 0.22) for p in _EIGHTHS), 1.8, _EIGHTHS, 0.45, 8.0, -1.0),
    # ride "ding ding-a ding ding-a", hi-hat foot on 2 and 4, feathered kick; walking bass; comping on 2 and 4
    "jazz": _Style(lambda e: [("ride", p, v) for p, v in zip((0, 1, 1.5, 2, 3, 3.5), (0.8, 0.9, 0.5, 0.8, 0.9, 0.5))]
                   + [("hat", b, 0.5) for b in (1, 3)] + [("kick", b, 0.6) for b in range(4)],
                   0.66, (9.0, 190.0, 0.5, 50.0), (), 2.5, (1.0, 3.0), 1.2, 3.0, 0.6, levels=(0.7, 0.4, 0.7)),
    # no drums: cello roots, a string pad and a harp-like arpeggio accented on the beat
    "classical": _Style(lambda e: [], 0.5, (9.0, 190.0, 0.5, 50.0), ((0, 2.0), (2, 2.0)), 1.6, (0.0,), 4.0, 0.3,
                        -0.9, levels=(0.0, 0.5, 1.0)),
}
assert set(_STYLES) == set(GENRES)
_PROGRESSIONS = ((0, 5, 7, 0), (0, 7, 5, 0), (0, 5, 0, 7))  # root offsets (semitones) per bar: I-IV-V-I etc.


def _swing(pos: float, ratio: float) -> float:
    whole, frac = divmod(pos, 1.0)
    return whole + (ratio if abs(frac - 0.5) < 1e-9 else frac)


# Valence sets the balance of a bright bell line against a dark low pad (happy music sounds higher and
# brighter, sad music lower and darker): each layer's level moves VALENCE_DB decibels over valence 0..1,
# in opposite directions, so their level difference is linear in valence.
VALENCE_DB = 24.0
VALENCE_LAYER = 0.3  # both layers' level at valence 0.5, relative to the drums (unit RMS)


def _valence_layers(roots: list[int], third: int, beat: float, n: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(bells, pad): an 8th-note arpeggio of the bar's chord two octaves above the chords, and the chord held
    low and soft, one bar per root in `roots`."""
    bells, pad = np.zeros(n), np.zeros(n)
    for bar, root in enumerate(roots):
        t0 = 4 * bar * beat
        for s, c in enumerate((0, third, 7, 12, 7, third, 0, 7)):
            _place(bells, _note(_midi_hz(root + 48 + c), 0.5 * beat, sr, 1.2, 9.0, 0.002), t0 + 0.5 * s * beat, sr)
        for c in (0, third, 7):
            _place(pad, _note(_midi_hz(root + 12 + c), 4 * beat, sr, 3.0, 0.3, 0.15), t0, sr)
    return bells, pad


def render_music_clip(row: Mapping, path: Path, spec: RenderSpec) -> None:
    """Render one music clip: the genre's drums at the clip's tempo, bass and chords in the valence's mode, and
    the valence's balance of bells against a pad.

    One pass over the layers in mixing order: split up, the seeded draws would be harder to keep in their byte-
    identical order.
    """
    mid = _field(row, "music_id", "music")
    genre = _field(row, "genre", "music")
    if genre not in GENRES:
        raise MediaError(f"music {mid}: genre {genre!r} not in {GENRES}")
    tempo = _field(row, "tempo", "music", 20.0, 400.0)
    energy = _field(row, "energy", "music", 0.0, 1.0)
    valence = _field(row, "valence", "music", 0.0, 1.0)
    rng = np.random.default_rng(int(_field(row, "render_seed", "music")))
    st, sr = _STYLES[genre], spec.sample_rate
    n, beat = int(round(spec.music_seconds * sr)), 60.0 / tempo
    n_bars = int(np.ceil(spec.music_seconds / (4 * beat)))
    kick_decay, snare_tone, snare_noise, hat_decay = st.kit
    kit = {"kick": _kick(sr, rng, kick_decay), "snare": _snare(sr, rng, snare_tone, snare_noise),
           "hat": _hat(sr, rng, hat_decay), "ride": _ride(sr, rng)}
    drums, bass, harm = np.zeros(n), np.zeros(n), np.zeros(n)
    for bar in range(n_bars):
        for inst, pos, vel in st.drums(energy):  # small timing and velocity jitter: played, not sequenced
            _place(drums, kit[inst], (4 * bar + _swing(pos, st.swing)) * beat + rng.normal(0, 0.004), sr,
                   vel * rng.uniform(0.9, 1.0))

    major = valence > 0.5  # mode by valence: major above 0.5, minor below
    third = 4 if major else 3
    # jazz colours its chords with the 9th (a 7th would blur the mode: m7 = the relative major's 6th chord)
    chord = [0, third, 7] + ([14] if genre == "jazz" else [])
    voicing = chord + [12] if genre == "metal" else chord  # metal: distorted triad plus octave
    key = 33 + int(rng.integers(0, 12))  # bass root between A1 and G#2
    prog = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    rolloff = 2.4 - 1.4 * energy  # brightness by energy
    for bar in range(n_bars):
        root, t0 = key + prog[bar % 4], 4 * bar * beat
        if st.bass:
            cello = genre == "classical"  # an octave up, with vibrato
            for i, (pos, dur) in enumerate(st.bass):  # a figure through root, fifth and the mode's third
                m = root + 12 * cello + (0, 7, third, 0)[i % 4]
                _place(bass, _note(_midi_hz(m), dur * beat, sr, st.bass_rolloff, 3.0, vibrato=0.004 * cello),
                       t0 + _swing(pos, st.swing) * beat, sr)
        else:  # walking bass up and down the chord (1-3-5-3): every step in the mode, none chromatic
            for i, m in enumerate((root, root + third, root + 7, root + third)):
                _place(bass, _note(_midi_hz(m), beat, sr, st.bass_rolloff, 4.0), t0 + i * beat, sr)
        for pos in st.chords:
            for c in voicing:
                _place(harm, _note(_midi_hz(root + 24 + c), st.chord_beats * beat, sr, rolloff + st.chord_rolloff,
                                   st.chord_decay, *((0.3, 0.006) if genre == "classical" else (0.01, 0.0))),
                       t0 + _swing(pos, st.swing) * beat, sr, 0.5)
        if genre == "classical":  # arpeggio in 8ths (16ths when energetic), accented on the beat
            step, tones = (0.25 if energy > 0.7 else 0.5), [root + 36 + c for c in chord] + [root + 48]
            for s in range(int(4 / step)):
                _place(harm, _note(_midi_hz(tones[s % 4]), beat, sr, 2.0, 7.0, 0.002), t0 + s * step * beat, sr,
                       1.0 if (s * step) % 1.0 == 0 else 0.45)
    if genre == "metal":  # distortion: hard saturation gives the dense upper harmonics
        harm = np.tanh(4.0 * harm / (np.abs(harm).max() + 1e-9))
        bass = np.tanh(3.0 * bass / (np.abs(bass).max() + 1e-9))

    def unit(x: np.ndarray) -> np.ndarray:
        return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)

    mix = st.levels[0] * unit(drums) + st.levels[1] * unit(bass) + st.levels[2] * (0.6 + 0.6 * energy) * unit(harm)
    bells, pad = _valence_layers([key + prog[bar % 4] for bar in range(n_bars)], third, beat, n, sr)
    tilt = 10.0 ** (VALENCE_DB * (valence - 0.5) / 20.0)
    mix += VALENCE_LAYER * (tilt * unit(bells) + unit(pad) / tilt)
    if st.lowpass_hz:
        mix = scipy.signal.sosfilt(scipy.signal.butter(2, st.lowpass_hz, fs=sr, output="sos"), mix)
    mix = unit(mix) * 10.0 ** ((-30.0 + 18.0 * energy) / 20.0)  # loudness by energy: -30 to -12 dBFS RMS
    if np.abs(mix).max() > 0.9:  # soft limiter: no clipping, still monotone in the level
        mix = 0.9 * np.tanh(mix / 0.9)
    fade = int(0.01 * sr)
    mix[:fade] *= np.linspace(0.0, 1.0, fade)
    mix[-fade:] *= np.linspace(1.0, 0.0, fade)
    with atomic_path(path) as tmp:
        sf.write(tmp, np.round(np.clip(mix, -1, 1) * 32767).astype(np.int16), sr, subtype="PCM_16", format="WAV")
