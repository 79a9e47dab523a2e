"""CCA (docs/architecture.md section 9, the papers' linear baseline): scikit-learn's CCA between standardised
video features ([visual ; text]) and standardised music features over the training pairs; videos and music are
ranked by the cosine of their canonical vectors.

Capped by the data, and the summary says by how much: with more feature columns than training pairs
(1,792 video columns against ~1,200 pairs on the default world) CCA finds perfectly correlated directions
in noise, and scikit-learn's iterative solver takes minutes, so each side is first reduced by PCA to
min(baselines.cca_input_dim, its columns, pairs - 1) dimensions (fitted on the same training rows). The
number of canonical components is chosen among `baselines.cca_components` by validation Recall@val_k,
each capped at the PCA widths and the student's latent_dim. PCA and CCA fold into one affine map per side,
stored as buffers (columns past the chosen count are zero, which leaves cosines unchanged).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.errors import DataError, ParamsError
from pipeline.models.variants import register
from pipeline.models.baselines.closed_form import ClosedForm, unit
from pipeline.models.cmvae import Batch
from pipeline.models.registry import model_class

ORDER = 40  # position of this file's variants in VARIANTS (pipeline/models/variants.py)

log = logging.getLogger(__name__)


@dataclass
class CCAConfig:
    input_dim: int = 32  # PCA width of each side before CCA
    components: tuple[int, ...] = (2, 4, 8, 16, 32)  # candidates, chosen on validation
    max_components: int = 128  # the student's latent_dim: no wider than the neural models' latent
    use_text: bool = True

    def __post_init__(self) -> None:
        self.components = tuple(int(k) for k in self.components)

    @property
    def width(self) -> int:
        """The embedding width: the largest component count the params allow (the data may cap it further)."""
        return max(1, min(max(self.components), self.input_dim, self.max_components))

    def validate(self) -> None:
        if self.input_dim < 1 or self.max_components < 1 or not self.components or min(self.components) < 1:
            raise ParamsError(f"baselines.cca_input_dim={self.input_dim}, cca_components={list(self.components)}: "
                              "expected integers >= 1")


def _pca(x: np.ndarray, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(projection [F, width], mean [F]) of a PCA fitted on the rows of x."""
    from sklearn.decomposition import PCA  # scikit-learn only when fitting: discovery imports every model module

    pca = PCA(n_components=width, random_state=seed).fit(x)
    return pca.components_.T, pca.mean_


@model_class
class CCAMap(ClosedForm):
    """video -> (x A_x + c_x), music -> (y A_y + c_y) in the canonical space; unit vectors (cosine ranking)."""

    config_class = CCAConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: CCAConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim, config)
        k = self.config.width
        self.register_buffer("video_map", torch.zeros(self.video_width, k))
        self.register_buffer("video_shift", torch.zeros(k))
        self.register_buffer("music_map", torch.zeros(self.music_dim, k))
        self.register_buffer("music_shift", torch.zeros(k))
        self.register_buffer("n_components", torch.zeros((), dtype=torch.int64))

    def fit(self, data, select, seed: int) -> dict:
        from sklearn.cross_decomposition import CCA  # only when fitting (loading a saved map needs none)
        from sklearn.exceptions import ConvergenceWarning

        self.fit_scaling(data)
        x, y = (t.cpu().numpy() for t in self.pair_rows(data))
        n = x.shape[0]
        if n < 3:
            raise DataError(f"cca: {n} training pairs; at least 3 are needed to fit a canonical direction")
        widths = (min(self.config.input_dim, x.shape[1], n - 1), min(self.config.input_dim, y.shape[1], n - 1))
        (px, mx), (py, my) = _pca(x, widths[0], seed), _pca(y, widths[1], seed)
        cap = min(self.config.width, *widths)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            cca = CCA(n_components=cap, scale=False).fit((x - mx) @ px, (y - my) @ py)
        unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        # transform() of a zero row is the offset of each side's affine map (its centring), by the public API
        zero_x, zero_y = cca.transform(np.zeros((1, widths[0])), np.zeros((1, widths[1])))
        maps = (px @ cca.x_rotations_, zero_x[0] - mx @ px @ cca.x_rotations_,
                py @ cca.y_rotations_, zero_y[0] - my @ py @ cca.y_rotations_)
        candidates = sorted({min(k, cap) for k in self.config.components})
        scores = {}
        for k in candidates:
            self._set(maps, k)
            scores[k] = select(self)
        best = max(candidates, key=lambda k: (scores[k], -k))  # ties: fewer components
        self._set(maps, best)
        info = {"n_components": best, "pca_widths": list(widths), "component_cap": cap,
                "capped_by_data": cap < self.config.width, "unconverged_components": unconverged,
                "validation": {str(k): s for k, s in scores.items()}}
        log.info("cca: %d pairs, PCA widths %s, %d components chosen on validation (cap %d%s)%s", n, widths,
                 best, cap, ", capped by the data" if info["capped_by_data"] else "",
                 f"; {unconverged} components hit max_iter" if unconverged else "")
        return info

    def _set(self, maps, k: int) -> None:
        """The first k canonical directions; the rest zero."""
        for buffer, value in zip((self.video_map, self.video_shift, self.music_map, self.music_shift), maps):
            buffer.zero_()
            buffer[..., :k].copy_(torch.from_numpy(np.ascontiguousarray(value[..., :k])))
        self.n_components.fill_(k)

    def video_embedding(self, batch: Batch) -> torch.Tensor:
        return unit(self.video_features(batch) @ self.video_map + self.video_shift)

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        return unit(self.music_features(batch) @ self.music_map + self.music_shift)


def _cca(s, p):
    cfg = CCAConfig(input_dim=p.cca_input_dim, components=p.cca_components, max_components=s.latent_dim,
                    use_text=s.use_text)
    return lambda v, m, t: CCAMap(v, m, t, cfg)


@register("cca", kind="closed_form", table="every table (architecture 9)", row="CCA")
def cca(s, p):
    """PCA-reduced CCA of video and music features, cosine in the canonical space (UGC training pairs)."""
    return _cca(s, p)


@register("cca_pgc", kind="closed_form", data="ugc+pgc", union=True, table="every table (architecture 9)", row="CCA")
def cca_pgc(s, p):
    """The same CCA on the UGC + PGC training pairs."""
    return _cca(s, p)
