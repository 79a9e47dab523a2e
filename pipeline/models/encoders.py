"""MLP building blocks of CMVAE: a Gaussian encoder [F -> hidden -> d] and its mirror decoder [d -> ... -> F]."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pipeline.errors import DataError
from pipeline.gaussian import Gaussian

# Guard against exp() overflow/underflow of the variance early in training; far outside any useful range.
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


def _mlp(dims: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for each consecutive pair of `dims` (every layer is a hidden layer)."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """Feature vector -> diagonal Gaussian posterior q(z | x), the expert of one modality."""

    def __init__(self, in_dim: int, latent_dim: int, hidden_dims: Sequence[int] = (128,), dropout: float = 0.2):
        super().__init__()
        self.in_dim = int(in_dim)
        dims = [self.in_dim, *[int(h) for h in hidden_dims]]
        self.body = _mlp(dims, dropout)
        self.mu = nn.Linear(dims[-1], latent_dim)
        self.logvar = nn.Linear(dims[-1], latent_dim)

    def forward(self, x: torch.Tensor) -> Gaussian:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise DataError(f"GaussianEncoder: input shape {tuple(x.shape)}, expected (batch, {self.in_dim})")
        h = self.body(x)
        return Gaussian(self.mu(h), self.logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX))


class Decoder(nn.Module):
    """Latent -> feature vector, the mirror of an encoder: d -> reversed(hidden) -> F, linear output for MSE."""

    def __init__(self, latent_dim: int, out_dim: int, hidden_dims: Sequence[int] = (128,), dropout: float = 0.2):
        super().__init__()
        dims = [int(latent_dim), *[int(h) for h in reversed(tuple(hidden_dims))]]
        self.body = _mlp(dims, dropout)
        self.out = nn.Linear(dims[-1], int(out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z))
