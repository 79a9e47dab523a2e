"""The causal world simulator (docs/architecture.md section 5): latent content, true compatibility,
confounded choices.

UGC choice follows P(m | v, u) ~ pop(m)^a * pi_u(g_m)^b * exp(c(v, m) / tau): the uploader's genre taste
pi_u confounds what is observed. PGC pairs are chosen by c(v, m) alone unless the `pgc_*` knobs (pgc.py)
give them a channel taste, a popularity weight, a higher temperature or shifted content. With
`content_coupling` > 0 the taste also shapes what a UGC uploader films (`couple_to_taste`): a backdoor path
video <- uploader -> music. Everything is drawn from one seeded generator in a fixed order, so the same params
give the same world; the coupling and the PGC shift draw from independent ones, so a world without them is
unchanged to the byte.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data import pgc as PGC
from pipeline.data.latents import GENRE_TEMPO, SCENES
from pipeline.data.schema import GENRE_COUNTS, GENRES
from pipeline.errors import ParamsError

log = logging.getLogger(__name__)

# Scene-genre affinity A[scene, genre] in [0, 1]: the "this music fits this kind of scene" part of c(v, m).
AFFINITY = np.array(
    [  # classical jazz hiphop reggae pop  metal
        [0.2, 0.4, 0.5, 1.0, 0.8, 0.2],  # beach
        [0.2, 0.7, 1.0, 0.3, 0.6, 0.5],  # city
        [0.0, 0.4, 0.9, 0.6, 1.0, 0.4],  # party
        [0.1, 0.1, 0.8, 0.3, 0.6, 1.0],  # sport
        [1.0, 0.5, 0.1, 0.5, 0.3, 0.1],  # nature
        [0.6, 1.0, 0.3, 0.4, 0.5, 0.0],  # food
    ]
)
# Per-scene (energy mean, valence mean, motion tempo BPM) of videos; per-genre (energy, valence) of music.
SCENE_PROFILE = {
    "beach": (0.45, 0.75, 80.0), "city": (0.6, 0.45, 100.0), "party": (0.85, 0.8, 124.0),
    "sport": (0.9, 0.6, 140.0), "nature": (0.25, 0.55, 70.0), "food": (0.35, 0.65, 92.0),
}
GENRE_PROFILE = {
    "classical": (0.25, 0.5), "jazz": (0.45, 0.55), "hiphop": (0.7, 0.45),
    "reggae": (0.5, 0.75), "pop": (0.7, 0.75), "metal": (0.95, 0.25),
}


@dataclass(frozen=True)
class CompatibilityWeights:
    """c(v, m) = mood * (1 - mood distance) + scene * A[s_v, g_m] + tempo * tempo agreement."""

    mood: float = 1.0
    scene: float = 1.0
    tempo: float = 0.6
    tempo_width: float = 0.12  # octaves: how close two tempi must be to agree


@dataclass(frozen=True)
class WorldParams:
    seed: int = 0
    n_music: int = 200
    n_videos: int = 2400  # UGC videos
    n_uploaders: int = 120
    n_pgc: int = 600  # professional music-video segments, one music each
    n_channels: int = 20  # PGC publishers; their taste enters their choices only with pgc_taste > 0
    n_corpus_per_genre: int = 12  # genre-labelled clips rendered apart from the pool (genre stage)
    popularity_exponent: float = 1.0  # a
    preference_exponent: float = 2.0  # b
    temperature: float = 0.15  # tau
    genre_skew: float = 1.0  # genre shares ~ TT-150k counts ** skew (0: uniform)
    preference_concentration: float = 0.4  # Dirichlet total mass of uploader tastes (small: concentrated)
    popularity_shape: float = 0.74  # Gamma shape of music popularity (TT-150k: 49 +- 57 videos per music)
    popularity_cap: float = 3.0  # popularity weights clipped at this multiple of their mean (TT-150k max 219)
    popularity_floor: float = 0.07  # ... and at this one from below (TT-150k min 3 of mean 49)
    min_videos_per_music: int = 3  # music used by fewer UGC videos is dropped, as TT-150k was filtered
    caption_missing: float = 0.3
    content_coupling: float = 0.0  # uploader taste -> what UGC videos show (couple_to_taste); 0: independent
    # the PGC side (pgc.py; issue 20), each 0 = the world from before the knob
    pgc_taste: float = 0.0  # b_pgc: PGC choices ~ pi_c(g_m)^b_pgc, the channel's own genre taste
    pgc_popularity_exponent: float = 0.0  # a_pgc: PGC choices ~ pop(m)^a_pgc
    pgc_domain_shift: float = 0.0  # s in [0, 1]: PGC scene mix, mood, beat and visual feature map move
    pgc_temperature: float = 0.0  # PGC choice temperature tau * (1 + this): noisier matches
    genre_label_noise: float = 0.25  # render: false only: share of music whose shipped g(m) is wrong (labeller.py)
    render: bool = True
    workers: int = 0  # 0: every core
    sample_rate: int = 22050
    music_seconds: float = 8.0
    video_seconds: float = 6.0
    video_fps: int = 15
    video_size: int = 128
    visual_dim: int = 2048  # feature-level world (render: false) only
    text_dim: int = 512
    audio_dim: int = 128
    smile_dim: int = 128
    compatibility: CompatibilityWeights = field(default_factory=CompatibilityWeights)

    def validate(self) -> None:
        for name in ("n_music", "n_videos", "n_uploaders", "n_pgc", "n_channels"):
            if getattr(self, name) < 1:
                raise ParamsError(f"world.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ParamsError(f"world.temperature must be > 0, got {self.temperature}")
        if not (self.content_coupling >= 0 and np.isfinite(self.content_coupling)):
            raise ParamsError(f"world.content_coupling must be a finite number >= 0, got {self.content_coupling}")
        PGC.validate(self)
        if not 0 <= self.genre_label_noise <= 1:
            raise ParamsError(f"world.genre_label_noise must be in [0, 1], got {self.genre_label_noise}")
        if not 0 <= self.caption_missing <= 1:
            raise ParamsError(f"world.caption_missing must be in [0, 1], got {self.caption_missing}")
        if self.n_music < len(GENRES):
            raise ParamsError(f"world.n_music must be >= {len(GENRES)} (one clip per genre at least)")
        if self.n_music * self.min_videos_per_music > self.n_videos:
            raise ParamsError(
                f"world.n_videos={self.n_videos} cannot give {self.n_music} music "
                f"{self.min_videos_per_music} videos each"
            )


def genre_shares(skew: float) -> np.ndarray:
    counts = np.asarray(GENRE_COUNTS, dtype=float)
    shares = counts**skew
    return shares / shares.sum()


def _ids(prefix: str, n: int) -> list[str]:
    width = max(5, len(str(n - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _allocate(shares: np.ndarray, n: int, minimum: int = 1) -> np.ndarray:
    """Integer counts summing to n, proportional to shares, each at least `minimum` (largest remainder)."""
    k = len(shares)
    rest = n - minimum * k
    raw = shares * rest
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: rest - counts.sum()]] += 1
    return counts + minimum


def draw_music(rng: np.random.Generator, n: int, shares: np.ndarray, prefix: str = "m") -> pd.DataFrame:
    """Music latents: genre (skewed like TT-150k), tempo in the genre's range, energy and valence."""
    counts = _allocate(shares, n)
    genre_idx = np.repeat(np.arange(len(GENRES)), counts)
    genre_idx = genre_idx[rng.permutation(n)]
    genres = np.array(GENRES)[genre_idx]
    lo = np.array([GENRE_TEMPO[g][0] for g in genres])
    hi = np.array([GENRE_TEMPO[g][1] for g in genres])
    tempo = lo + (hi - lo) * rng.random(n)
    e_mean = np.array([GENRE_PROFILE[g][0] for g in genres])
    v_mean = np.array([GENRE_PROFILE[g][1] for g in genres])
    energy = np.clip(e_mean + 0.15 * rng.standard_normal(n), 0.02, 0.98)
    valence = np.clip(v_mean + 0.2 * rng.standard_normal(n), 0.02, 0.98)
    return pd.DataFrame({
        "music_id": _ids(prefix, n), "genre": genres, "tempo": tempo.round(3),
        "energy": energy, "valence": valence,
        "render_seed": rng.integers(0, 2**62, n, dtype=np.int64),
    })


def draw_video_noise(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The random part of video latents (scene index, standard normals, render seeds), in the draw order."""
    return {"scene_idx": rng.integers(0, len(SCENES), n), "z_energy": rng.standard_normal(n),
            "z_valence": rng.standard_normal(n), "z_tempo": rng.standard_normal(n),
            "render_seed": rng.integers(0, 2**62, n, dtype=np.int64)}


def video_table(noise: dict[str, np.ndarray], prefix: str, mood_mean: np.ndarray | None = None) -> pd.DataFrame:
    """Video latents: energy and valence around the scene's profile (or `mood_mean` [n, 2]), visual-beat tempo."""
    scenes = np.array(SCENES)[noise["scene_idx"]]
    prof = np.array([SCENE_PROFILE[s] for s in scenes]).reshape(len(scenes), 3)
    mean = prof[:, :2] if mood_mean is None else mood_mean
    energy = np.clip(mean[:, 0] + 0.18 * noise["z_energy"], 0.02, 0.98)
    valence = np.clip(mean[:, 1] + 0.2 * noise["z_valence"], 0.02, 0.98)
    motion_tempo = prof[:, 2] * np.exp(0.15 * noise["z_tempo"])
    return pd.DataFrame({
        "video_id": _ids(prefix, len(scenes)), "scene": scenes, "energy": energy, "valence": valence,
        "motion_tempo": motion_tempo.round(3), "render_seed": noise["render_seed"],
    })


# How sharply an uploader's taste picks the scenes its genres suit: for a one-genre taste, the suited scene
# distribution softmax(SCENE_SHARPNESS * A[:, g]) puts 0.48 (hip-hop) to 0.86 (metal) on the genre's best scene.
SCENE_SHARPNESS = 5.0


def coupling_weight(coupling: float) -> float:
    """w = c / (1 + c): 0 at c = 0, one half at c = 1, approaching (never reaching) 1 as c grows."""
    return coupling / (1.0 + coupling)


def suited_scenes(taste: np.ndarray) -> np.ndarray:
    """[n, scenes] softmax(SCENE_SHARPNESS * sum_g pi(g) A[s, g]): the scenes a genre taste pi suits."""
    logits = SCENE_SHARPNESS * (taste @ AFFINITY.T)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    return prob / prob.sum(1, keepdims=True)


def couple_to_taste(noise: dict[str, np.ndarray], taste: np.ndarray, coupling: float,
                    rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """What an uploader with genre taste pi (one row of `taste` per video) films, at coupling c >= 0.

    With w = c / (1 + c): the scene is drawn from (1 - w) * uniform + w * suited_scenes(pi), and the mood
    (energy, valence) mean is (1 - w) * the scene's profile + w * sum_g pi(g) * GENRE_PROFILE[g]; the video's
    own noise around that mean is kept. The scene is the inverse CDF of the mixture at U = (scene + u) / 6,
    u ~ U(0, 1) from `rng`: U is uniform, and at w = 0 it returns the uncoupled scene, so the videos of worlds
    at different c share their randomness. Returns the new noise dict and the [n, 2] mood means.
    """
    w = coupling_weight(coupling)
    n_scenes = len(SCENES)
    prob = (1.0 - w) / n_scenes + w * suited_scenes(taste)
    u = (noise["scene_idx"] + rng.random(len(taste))) / n_scenes
    scene_idx = (u[:, None] >= np.cumsum(prob, axis=1)[:, :-1]).sum(1)
    scene_prof = np.array([SCENE_PROFILE[s][:2] for s in SCENES])[scene_idx]
    genre_prof = np.array([GENRE_PROFILE[g] for g in GENRES])
    mood_mean = (1.0 - w) * scene_prof + w * (taste @ genre_prof)
    return {**noise, "scene_idx": scene_idx}, mood_mean


def compatibility(videos: pd.DataFrame, music: pd.DataFrame, w: CompatibilityWeights) -> np.ndarray:
    """True compatibility c(v, m) [len(videos), len(music)] (float32): mood, scene-genre affinity, tempo."""
    f32 = np.float32
    ev, vv = videos["energy"].to_numpy(f32)[:, None], videos["valence"].to_numpy(f32)[:, None]
    em, vm = music["energy"].to_numpy(f32)[None, :], music["valence"].to_numpy(f32)[None, :]
    scene_idx = pd.Categorical(videos["scene"], categories=SCENES).codes
    genre_idx = pd.Categorical(music["genre"], categories=GENRES).codes
    c = AFFINITY.astype(f32)[scene_idx][:, genre_idx] * f32(w.scene)
    c += f32(w.mood) * (1.0 - ((ev - em) ** 2 + (vv - vm) ** 2) / 2.0)
    octaves = np.log2(videos["motion_tempo"].to_numpy(f32))[:, None] - np.log2(music["tempo"].to_numpy(f32))[None, :]
    octaves -= np.round(octaves)  # tempo agreement up to doubling/halving
    octaves *= f32(1.0 / w.tempo_width)
    c += f32(w.tempo) * np.exp(-0.5 * octaves * octaves)
    return c


def draw_tastes(rng: np.random.Generator, n: int, shares: np.ndarray, concentration: float) -> np.ndarray:
    """Uploader genre preferences pi_u ~ Dirichlet(concentration * 6 * shares): concentrated, skewed."""
    alpha = np.maximum(concentration * len(shares) * shares, 1e-3)
    pi = rng.dirichlet(alpha, size=n)
    return pi


def compatibility_matrix(videos: pd.DataFrame, music: pd.DataFrame, w: CompatibilityWeights,
                         chunk: int = 4096, desc: str = "compatibility") -> np.ndarray:
    """c(v, m) for every pair as float16, computed in chunks (146k x 3k is 0.9 GB at half precision)."""
    out = np.empty((len(videos), len(music)), dtype=np.float16)
    starts = range(0, len(videos), chunk)
    for s in tqdm(starts, desc=desc, disable=len(starts) < 8, leave=False):
        out[s : s + chunk] = compatibility(videos.iloc[s : s + chunk], music, w)
    return out


def choose(
    rng: np.random.Generator, compat: np.ndarray, genre_idx: np.ndarray, base_logit: np.ndarray,
    taste: np.ndarray | None, temperature: float, taste_exponent: float, chunk: int = 4096,
) -> np.ndarray:
    """Index of the chosen music per row of `compat` by Gumbel-max over the choice logits.

    logit = c(v, m) / tau + a * log pop(m) [base_logit] + b * log pi_u(g_m) [taste: pi of each row's
    uploader or channel; None: no taste term, as for PGC by default].
    """
    chosen = np.empty(len(compat), dtype=np.int64)
    for s in range(0, len(compat), chunk):
        logits = compat[s : s + chunk].astype(np.float32)
        logits *= np.float32(1.0 / temperature)
        logits += base_logit.astype(np.float32)[None, :]
        if taste is not None:
            pi = np.maximum(taste[s : s + chunk][:, genre_idx], 1e-6)
            logits += np.float32(taste_exponent) * np.log(pi).astype(np.float32)
        logits += rng.gumbel(size=logits.shape).astype(np.float32)
        chosen[s : s + len(logits)] = np.argmax(logits, axis=1)
    return chosen


def popularity_weights(rng: np.random.Generator, n: int, p: WorldParams) -> np.ndarray:
    w = rng.gamma(p.popularity_shape, 1.0, n)
    # TT-150k keeps music used 3 to 219 times: a Gamma long tail clipped at both ends.
    return np.clip(w, p.popularity_floor * w.mean(), p.popularity_cap * w.mean())


def simulate(p: WorldParams) -> dict:
    """Draw the whole world. Returns latents, tastes, the UGC/PGC choices and the genre corpus latents.

    Long on purpose: the seeded draws must stay in this order (a world is byte-identical across versions).
    """
    rng = np.random.default_rng(p.seed)
    shares = genre_shares(p.genre_skew)
    music = draw_music(rng, p.n_music, shares)
    music["pop_weight"] = popularity_weights(rng, p.n_music, p)
    ugc_noise = draw_video_noise(rng, p.n_videos)
    tastes = draw_tastes(rng, p.n_uploaders, shares, p.preference_concentration)
    # Uploader activity is long-tailed; every uploader posts at least one video.
    activity = rng.gamma(0.8, 1.0, p.n_uploaders)
    owner = np.concatenate([np.arange(p.n_uploaders), rng.choice(
        p.n_uploaders, p.n_videos - p.n_uploaders, p=activity / activity.sum())]) if p.n_videos >= p.n_uploaders \
        else rng.choice(p.n_uploaders, p.n_videos, p=activity / activity.sum())
    owner = owner[rng.permutation(len(owner))]
    uploader_ids = np.array(_ids("u", p.n_uploaders))
    mood_mean = None
    if p.content_coupling > 0:  # its own stream: at c = 0 the main stream draws exactly what it drew before
        ugc_noise, mood_mean = couple_to_taste(ugc_noise, tastes[owner], p.content_coupling,
                                               np.random.default_rng([p.seed, 2]))
    ugc = video_table(ugc_noise, "v", mood_mean)

    # UGC choices over the pool; music used by fewer than min_videos_per_music videos leaves the pool
    # (TT-150k was filtered the same way) and the videos that chose it choose again among what is left.
    compat = compatibility_matrix(ugc, music, p.compatibility, desc="UGC compatibility")
    genre_idx = pd.Categorical(music["genre"], categories=GENRES).codes
    keep = np.ones(p.n_music, dtype=bool)
    chosen = np.full(p.n_videos, -1)
    redo = np.ones(p.n_videos, dtype=bool)
    for _ in range(50):
        pool = np.flatnonzero(keep)
        base = p.popularity_exponent * np.log(music["pop_weight"].to_numpy()[pool])
        idx = np.flatnonzero(redo)
        rows = compat[idx][:, pool] if len(pool) < p.n_music else compat[idx]
        chosen[idx] = pool[choose(rng, rows, genre_idx[pool], base, tastes[owner[idx]], p.temperature,
                                  p.preference_exponent)]
        counts = np.bincount(chosen, minlength=p.n_music)
        drop = keep & (counts < p.min_videos_per_music)
        if not drop.any():
            break
        # drop the least used first, a few at a time, so the pool shrinks no more than needed
        worst = np.flatnonzero(drop)[np.argsort(counts[drop], kind="stable")]
        worst = worst[: max(1, len(worst) // 4)]
        keep[worst] = False
        redo = np.isin(chosen, worst)
    else:
        raise ParamsError("world: could not give every music clip min_videos_per_music videos; lower it")

    pool = np.flatnonzero(keep)
    remap = -np.ones(p.n_music, dtype=np.int64)
    remap[pool] = np.arange(len(pool))
    music = music.iloc[pool].reset_index(drop=True)
    chosen = remap[chosen]

    # PGC (pgc.py): the pgc_* knobs change what is computed from these draws, never the draws themselves
    pgc = video_table(PGC.shift_latents(draw_video_noise(rng, p.n_pgc), p.pgc_domain_shift, p.seed), "p")
    channel_tastes = draw_tastes(rng, p.n_channels, shares, p.preference_concentration)
    channel = rng.integers(0, p.n_channels, p.n_pgc)
    pgc_compat = compatibility_matrix(pgc, music, p.compatibility, desc="PGC compatibility")
    pgc_chosen = choose(rng, pgc_compat, genre_idx[pool], PGC.base_logit(p, music["pop_weight"].to_numpy()),
                        PGC.choice_taste(p, channel_tastes, channel), PGC.temperature(p), p.pgc_taste)

    corpus = draw_music(rng, p.n_corpus_per_genre * len(GENRES), np.full(len(GENRES), 1 / len(GENRES)), "g")
    return {
        "music": music, "ugc": ugc, "pgc": pgc, "corpus": corpus,
        "ugc_choice": chosen, "pgc_choice": pgc_chosen,
        # c(v, m) of every UGC video to the initial pool (columns `pool` are the final pool), and of PGC
        "ugc_compat": compat, "pool": pool, "pgc_compat": pgc_compat,
        "uploader_ids": uploader_ids, "tastes": tastes, "owner": owner,
        "channel_ids": np.array(_ids("c", p.n_channels)), "channel_tastes": channel_tastes, "channel": channel,
        "rng": rng,
    }


# Knobs added after worlds were committed: at 0 they are left out of truth/world.json, so such a world keeps
# the bytes (and dvc.lock hash) it had before the knob. genre_label_noise acts on feature-level worlds only.
LATER_KNOBS = ("content_coupling", "pgc_taste", "pgc_popularity_exponent", "pgc_domain_shift", "pgc_temperature",
               "genre_label_noise")


def params_dict(p: WorldParams) -> dict:
    d = dataclasses.asdict(p)
    for knob in LATER_KNOBS:
        if d[knob] == 0 or (knob == "genre_label_noise" and p.render):
            del d[knob]
    return d
