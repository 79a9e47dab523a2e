"""Popularity (docs/architecture.md section 9): every video gets the same list, the music ranked by how many
training pairs use it (popularity; popularity_pgc also counts the teacher's PGC training pairs).

Model batches carry features, not ids, so a music row is identified by its feature vector: the count of the
stored training-time clip nearest to it (the dataset's own clips match exactly; a new clip inherits its
nearest neighbour's count). Equal counts tie, and ties rank pessimistically (pipeline/metrics.py).
"""
from __future__ import annotations

import torch

from pipeline.models.variants import register
from pipeline.models.baselines.closed_form import ClosedForm, ClosedFormConfig
from pipeline.models.cmvae import Batch, require
from pipeline.models.registry import model_class

ORDER = 20  # position of this file's variants in VARIANTS (pipeline/models/variants.py)


@model_class
class Popularity(ClosedForm):
    """Score(v, m) = training count of m: video embedding [1], music embedding [count]."""

    config_class = ClosedFormConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: ClosedFormConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim, config)
        self.register_buffer("known_music", torch.zeros(0, self.music_dim))
        self.register_buffer("counts", torch.zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the stored pool's size is the data's: take the saved buffers' shapes before loading them
        for name in ("known_music", "counts"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit(self, data, select, seed: int) -> dict:
        n_music = data.music.shape[0]
        self.known_music = data.music.detach().float().cpu().clone()
        self.counts = torch.bincount(data.music_idx.cpu(), minlength=n_music).float()
        return {"pairs": int(data.music_idx.numel()), "music_used": int((self.counts > 0).sum())}

    def video_embedding(self, batch: Batch) -> torch.Tensor:
        visual = require(batch, "visual", dim=self.visual_dim)
        return torch.ones(visual.shape[0], 1, dtype=torch.float32, device=visual.device)

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        music = require(batch, "music", dim=self.music_dim).float()
        known = self.known_music.to(music.device)
        nearest = torch.cdist(music, known, compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=1)
        return self.counts.to(music.device)[nearest].unsqueeze(1)


def _popularity(s):
    cfg = ClosedFormConfig(dim=1, use_text=s.use_text)
    return lambda v, m, t: Popularity(v, m, t, cfg)


@register("popularity", kind="closed_form", table="every table (architecture 9)", row="Popularity")
def popularity(s, p):
    """Music ranked by its number of UGC training pairs, the same list for every video."""
    return _popularity(s)


@register("popularity_pgc", kind="closed_form", data="ugc+pgc", union=True, table="every table (architecture 9)",
          row="Popularity")
def popularity_pgc(s, p):
    """Music ranked by its number of UGC + PGC training pairs."""
    return _popularity(s)
