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


def test_restandardise_videos_undoes_a_domain_offset_and_keeps_the_music_side(tmp_path):
    """train.teacher_scaling: ugc. A teacher fitted on PGC rows, restandardised on UGC rows that are the same
    content moved by a per-column offset and scale, embeds each UGC video as it embedded its PGC twin."""
    from pipeline.experiment import RunsConfig, _teacher
    from pipeline.models.baselines import variant
    from pipeline.models.debcm import DebCMConfig
    from pipeline.models.scaling import restandardise_videos
    from pipeline.errors import ParamsError

    torch.manual_seed(0)
    model = CMVAE(5, 4, 3, CMVAEConfig(latent_dim=4, hidden_dims=(8,))).eval()
    g = torch.Generator().manual_seed(2)
    visual, music, text = (torch.randn(50, d, generator=g) for d in (5, 4, 3))
    model.fit_scaling(visual, music, text)
    pgc = {"visual": visual, "text": text, "text_mask": torch.ones(50, dtype=torch.bool)}
    before = model.video_embedding(pgc)
    ugc = {**pgc, "visual": visual * 3 + 5, "text": text * 0.5 - 2}  # the style shift: same content, other look
    assert not torch.allclose(model.video_embedding(ugc), before, atol=1e-3)
    music_mean = model.scalers["music"].mean.clone()
    restandardise_videos(model, {"visual": ugc["visual"], "text": ugc["text"], "music": music * 9})
    torch.testing.assert_close(model.video_embedding(ugc), before, atol=1e-4, rtol=1e-4)
    assert torch.equal(model.scalers["music"].mean, music_mean)
    # the experiment applies it to the loaded teacher only when asked, and tells the resume fingerprint
    save_torch({"model": model_spec(model), "state_dict": model.state_dict()}, tmp_path / "s0.pt")

    class Rows:
        def scaling_rows(self):
            return {"visual": visual, "text": text}

    student = variant("student", DebCMConfig())
    plain, fp = _teacher(student, tmp_path, 0)
    refit, fp_ugc = _teacher(student, tmp_path, 0, "ugc", Rows())
    torch.testing.assert_close(refit.scalers["visual"].mean, visual.mean(0))
    assert torch.equal(plain.scalers["visual"].mean, model.scalers["visual"].mean) and fp_ugc == fp + ":ugc"
    with pytest.raises(ParamsError, match="teacher_scaling"):
        RunsConfig(teacher_scaling="both").validate()
