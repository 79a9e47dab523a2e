"""Input standardisation stored inside a model: per-column mean and standard deviation of one modality,
fitted on the training rows only, applied to every input (training, evaluation, `recommend`).

Feature sources differ by orders of magnitude (ResNet video vectors with norms ~200 next to music values in
0..2.6); a small MLP on such raw inputs can stay at chance where a linear map learns. Keeping the transform
as buffers of the model means a saved model carries it, so no caller can forget or mismatch it.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import DataError

MIN_STD = 1e-6  # a (near-)constant column, e.g. an all-zero openSMILE column, is centred but not scaled


class Standardizer(nn.Module):
    """x -> (x - mean) / std per column; the identity until `fit` is called."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(int(dim)))
        self.register_buffer("std", torch.ones(int(dim)))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, where: str = "features") -> None:
        """Mean and (population) std of the rows of `x` [N, dim]; needs at least one row."""
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise DataError(f"{where}: shape {tuple(x.shape)}, expected (rows, {self.mean.shape[0]}) to standardise")
        if x.shape[0] == 0:
            raise DataError(f"{where}: no training rows to fit the standardisation on")
        # float32, two passes (torch sums pairwise): a float64 copy of TT-150k's visual matrix took 5.5 s
        x = x.to(torch.float32)
        mean = x.mean(dim=0)
        std = (x - mean).square().mean(dim=0).sqrt()
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(torch.where(std < MIN_STD, torch.ones_like(std), std).to(self.std.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


TEACHER_SCALINGS = ("pgc", "ugc")  # params train.teacher_scaling


@torch.no_grad()
def restandardise_videos(model: nn.Module, rows: dict[str, torch.Tensor]) -> None:
    """Refit `model`'s video-side standardisation (visual; text where it has one) on `rows`
    (TrainData.scaling_rows of the UGC run it is applied to: training videos only).

    Domain-specific normalisation (as AdaBN): a teacher fitted on PGC footage meets UGC inputs centred and
    scaled as its own were, so a per-column offset or scale between the domains (world.pgc_domain_shift)
    no longer reaches its encoders. Music keeps its fit: the same clips and features on both sides.
    """
    model.scalers["visual"].fit(rows["visual"], "UGC visual features")
    if "text" in model.scalers and rows.get("text") is not None and rows["text"].shape[0] > 0:
        model.scalers["text"].fit(rows["text"], "UGC text features")
