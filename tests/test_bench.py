"""The speed benchmark's data has TT-150k's shape and passes the pipeline's own checks (pipeline/bench.py)."""
import numpy as np
import torch

from pipeline.bench import MUSIC, N_MUSIC, TEXT, VISUAL, full_pool_eval_seconds, tt150k_data
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.training.loop import validation_recall


def test_benchmark_data_is_well_formed_and_evaluable():
    data = tt150k_data(n_videos=2_000)
    assert data.visual.shape == (2_000, VISUAL) and data.text.shape == (2_000, TEXT)
    assert data.music.shape == (N_MUSIC, MUSIC) and data.video_idx.shape == (1_600,)
    cand = data.val_candidates.numpy()
    assert cand.shape == (200, 101) and not (cand[:, 1:] == cand[:, :1]).any()  # the positive is never a negative
    torch.manual_seed(0)
    model = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(latent_dim=8, hidden_dims=(16,)))
    assert 0.0 <= validation_recall(model, data, 25) <= 1.0
    assert full_pool_eval_seconds(model, data, n_test=500) > 0
    np.testing.assert_array_equal(tt150k_data(n_videos=2_000).music_idx, data.music_idx)  # seeded
