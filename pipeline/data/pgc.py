"""The PGC side of the world (docs/architecture.md section 5; issue 20): knobs that make professional
pairs confounded, popularity-driven, noisier or different-looking, each 0 = the world from before the knobs.

Today's PGC music is drawn by the true compatibility alone, which builds the teacher's win into the world. The
knobs (params `world.pgc_*`, fields of WorldParams) are applied by `world.simulate` (latents, choices) and
`simfeatures.write_features` (the feature map). None draws from the world's main random stream: a knob at 0
changes nothing, and the latent shift draws from its own stream, so every world shares its other randomness.
"""
from __future__ import annotations

import numpy as np

from pipeline.data.latents import SCENES
from pipeline.errors import ParamsError

# What professional footage shows more of (music videos are staged: stages, clubs, streets, dance): the scene
# law at full domain shift. Uniform (UGC's law) at shift 0; in between, the mixture (1 - s) uniform + s * this.
PRO_SCENE_SHARES = dict(zip(SCENES, (0.05, 0.30, 0.45, 0.10, 0.05, 0.05)))  # beach city party sport nature food
# At full shift, energy and valence move by these (in latent units, [0, 1]) and the visual beat is this much
# faster (professional editing cuts faster): professional content sits elsewhere in the latent space.
PRO_ENERGY, PRO_VALENCE, PRO_TEMPO_FACTOR = 0.15, -0.10, 1.25
# Spread of the feature-level offset of PGC visual features at full shift, per column (columns have ~unit
# variance): with the rotation, the same content "looks different" to a model fitted on UGC features.
PRO_FEATURE_OFFSET = 1.0
# Streams of their own (seeded with the world seed), so the main stream draws what it drew before the knobs.
SHIFT_STREAM, FEATURE_STREAM = 3, 8


def validate(p) -> None:
    """Check the `world.pgc_*` knobs of a WorldParams."""
    for name in ("pgc_taste", "pgc_popularity_exponent", "pgc_temperature"):
        value = getattr(p, name)
        if not (np.isfinite(value) and value >= 0):
            raise ParamsError(f"world.{name} must be a finite number >= 0, got {value}")
    if not 0 <= p.pgc_domain_shift <= 1:
        raise ParamsError(f"world.pgc_domain_shift must be in [0, 1], got {p.pgc_domain_shift}")


def temperature(p) -> float:
    """The PGC choice temperature tau * (1 + pgc_temperature): 0 keeps tau, 1 doubles it (noisier matches)."""
    return p.temperature * (1.0 + p.pgc_temperature) if p.pgc_temperature > 0 else p.temperature


def base_logit(p, pop_weight: np.ndarray) -> np.ndarray:
    """a_pgc * log pop(m) per pool music: what popularity adds to a PGC choice logit (zeros at a_pgc = 0)."""
    if p.pgc_popularity_exponent == 0:
        return np.zeros(len(pop_weight))
    return p.pgc_popularity_exponent * np.log(pop_weight)


def choice_taste(p, channel_tastes: np.ndarray, channel: np.ndarray) -> np.ndarray | None:
    """pi_c of each PGC row's channel when the channels' taste enters their choices (b_pgc > 0), else None."""
    return channel_tastes[channel] if p.pgc_taste > 0 else None


def shift_latents(noise: dict[str, np.ndarray], shift: float, seed: int) -> dict[str, np.ndarray]:
    """The PGC video noise of `world.draw_video_noise` moved toward professional content, at shift s in [0, 1].

    Scene: the inverse CDF of (1 - s) uniform + s PRO_SCENE_SHARES at U = (scene + u) / 6, u ~ U(0, 1) from its
    own stream (as `world.couple_to_taste` does): U is uniform, and s = 0 returns the unshifted scene. Energy
    and valence move by s * PRO_ENERGY, s * PRO_VALENCE and the beat speeds up by PRO_TEMPO_FACTOR ** s, through
    the standard normals that `world.video_table` scales (0.18, 0.2, 0.15), so each video keeps its own noise.
    """
    if shift == 0:
        return noise
    n_scenes = len(SCENES)
    pro = np.array([PRO_SCENE_SHARES[s] for s in SCENES])
    prob = (1.0 - shift) / n_scenes + shift * pro
    u = (noise["scene_idx"] + np.random.default_rng([seed, SHIFT_STREAM]).random(len(noise["scene_idx"]))) / n_scenes
    scene_idx = np.minimum((u[:, None] >= np.cumsum(prob)[None, :-1]).sum(1), n_scenes - 1)
    return {**noise, "scene_idx": scene_idx,
            "z_energy": noise["z_energy"] + shift * PRO_ENERGY / 0.18,
            "z_valence": noise["z_valence"] + shift * PRO_VALENCE / 0.2,
            "z_tempo": noise["z_tempo"] + shift * np.log(PRO_TEMPO_FACTOR) / 0.15}


class FeatureShift:
    """x -> x ((1 - s) I + s R) + s o on PGC rows: the feature map of professional footage (feature-level world).

    R is a random rotation and o a random offset (PRO_FEATURE_OFFSET per column), both fixed by the world seed
    and drawn from their own stream. At s = 1 the PGC visual features are a rotated, shifted copy of what the
    same content would give in a UGC video, so a map fitted on PGC inputs does not transfer as it is.
    """

    def __init__(self, shift: float, dim: int, seed: int):
        rng = np.random.default_rng([seed, FEATURE_STREAM])
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        rotation = q * np.sign(np.diag(r))[None, :]  # Haar-uniform: QR's sign convention removed
        self.matrix = ((1.0 - shift) * np.eye(dim) + shift * rotation).astype(np.float32)
        self.offset = (shift * PRO_FEATURE_OFFSET * rng.standard_normal(dim)).astype(np.float32)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        return block @ self.matrix + self.offset
