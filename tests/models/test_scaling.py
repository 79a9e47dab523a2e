"""Input standardisation: fitted on training rows, stored in the model, applied to every caller."""
import numpy as np
import pytest
import torch

from pipeline.errors import DataError
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.registry import load_model, model_spec
from pipeline.models.scaling import Standardizer
from pipeline.training.checkpoint import save_torch


def test_standardizer_centres_scales_and_leaves_constant_columns_unscaled():
    x = torch.tensor([[1.0, 200.0, 0.0], [3.0, 600.0, 0.0], [5.0, 1000.0, 0.0]])
    s = Standardizer(3)
    assert torch.equal(s(x), x)  # identity before fit
    s.fit(x)
    y = s(x)
    np.testing.assert_allclose(y[:, :2].mean(0).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(y[:, :2].std(0, unbiased=False).numpy(), 1.0, atol=1e-6)
    assert torch.equal(y[:, 2], torch.zeros(3))  # an all-zero column (e.g. openSMILE absent) stays zero
    with pytest.raises(DataError, match="no training rows"):
        s.fit(torch.zeros(0, 3))
    with pytest.raises(DataError, match="expected"):
        s.fit(torch.zeros(4, 2))


def test_a_saved_model_carries_its_scaling(tmp_path):
    torch.manual_seed(0)
    model = CMVAE(5, 4, 3, CMVAEConfig(latent_dim=4, hidden_dims=(8,)))
    g = torch.Generator().manual_seed(1)
    visual, music, text = (torch.randn(20, d, generator=g) * 100 + 7 for d in (5, 4, 3))
    model.fit_scaling(visual, music, text)
    save_torch({"model": model_spec(model), "state_dict": model.state_dict()}, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    model.eval()
    batch = {"visual": visual[:3], "text": text[:3], "text_mask": torch.tensor([True, False, True]), "music": music[:3]}
    assert torch.equal(model.video_embedding(batch), again.video_embedding(batch))
    torch.testing.assert_close(again.scalers["visual"].mean, visual.double().mean(0).float())
    # the encoders see standardised inputs: shifting the raw features by their mean is what the model undoes
    fresh = CMVAE(5, 4, 3, CMVAEConfig(latent_dim=4, hidden_dims=(8,)))
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("scalers.")}, strict=False)
    fresh.eval()
    assert not torch.allclose(fresh.music_embedding(batch), model.music_embedding(batch))
