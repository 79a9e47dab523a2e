"""Diagonal Gaussian posteriors: product of experts, analytic KLs and reparameterised sampling.

Every latent in CMVAE/DebCM is a diagonal Gaussian N(mu, diag(exp(logvar))); this module is the maths,
plus the mixture of experts that CMVAE's fusion ablation (`fusion: moe`) compares PoE with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from pipeline.errors import DataError


@dataclass
class Gaussian:
    """A batch of diagonal Gaussians: `mu` and `logvar` are [B, d] tensors."""

    mu: torch.Tensor
    logvar: torch.Tensor

    def __post_init__(self) -> None:
        if self.mu.shape != self.logvar.shape:
            raise DataError(f"Gaussian: mu shape {tuple(self.mu.shape)} != logvar shape {tuple(self.logvar.shape)}")

    @property
    def var(self) -> torch.Tensor:
        return self.logvar.exp()

    def __getitem__(self, rows) -> "Gaussian":
        """Select rows (a slice, index tensor or boolean mask) of the batch."""
        return Gaussian(self.mu[rows], self.logvar[rows])

    def detach(self) -> "Gaussian":
        return Gaussian(self.mu.detach(), self.logvar.detach())


def sample(g: Gaussian, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised draw z = mu + sigma * eps, so gradients reach mu and logvar (VAE trick)."""
    if generator is None:  # the same draw as randn(shape, generator=None), and traceable with a dynamic batch size
        eps = torch.randn_like(g.mu, memory_format=torch.contiguous_format)
    else:
        eps = torch.randn(g.mu.shape, generator=generator, device=g.mu.device, dtype=g.mu.dtype)
    return g.mu + eps * torch.exp(0.5 * g.logvar)


def product_of_experts(experts: Sequence[Gaussian], masks: Sequence[torch.Tensor | None] | None = None,
                       include_prior: bool = False) -> Gaussian:
    """Fuse Gaussian experts: precision-weighted mean, variance 1 / (sum of precisions) (CMVAE PoE).

    `masks[i]` is a [B] bool tensor (or None = present in every row); a masked-out expert drops out of
    that row's product entirely, so a video without text keeps exactly its visual posterior.
    `include_prior` adds the N(0, I) expert of MVAE (Wu & Goodman). CMVAE's models default to False:
    the visual expert is always present, so the product is always defined, and the separate KL(q || N(0, I))
    term already pulls posteriors towards the prior; adding the prior expert as well would shrink every
    variance below 1 a second time. Computed in log space: logvar = -logsumexp(-logvar_i + log mask_i).
    """
    if not experts:
        raise DataError("product_of_experts: no experts given")
    if masks is None:
        masks = [None] * len(experts)
    if len(masks) != len(experts):
        raise DataError(f"product_of_experts: {len(experts)} experts but {len(masks)} masks")
    ref = experts[0].mu
    log_precisions, weighted_mus = [], []
    for i, (g, m) in enumerate(zip(experts, masks)):
        if g.mu.shape != ref.shape:
            raise DataError(f"product_of_experts: expert {i} has shape {tuple(g.mu.shape)}, expected {tuple(ref.shape)}")
        log_prec = -g.logvar
        if m is not None:
            if m.shape != ref.shape[:1]:
                raise DataError(f"product_of_experts: mask {i} has shape {tuple(m.shape)}, expected ({ref.shape[0]},)")
            log_prec = log_prec.masked_fill(~m.bool().unsqueeze(-1), float("-inf"))
        log_precisions.append(log_prec)
        weighted_mus.append(g.mu)
    if include_prior:  # N(0, I): precision 1 (log 0), mean 0
        log_precisions.append(torch.zeros_like(ref))
        weighted_mus.append(torch.zeros_like(ref))
    stacked = torch.stack(log_precisions)  # [E, B, d]
    # A row can lack every expert only when each expert has a mask (decided on the host: an unmasked expert,
    # CMVAE's visual one, makes the check and its device sync unnecessary in every training step).
    if all(m is not None for m in masks) and not include_prior:
        absent = torch.isinf(stacked).all(dim=0).any(dim=-1)
        if bool(absent.any()):
            row = int(torch.nonzero(absent)[0, 0])
            raise DataError(f"product_of_experts: row {row} has every expert masked out and no prior; "
                            "at least one modality must be present")
    total_log_prec = torch.logsumexp(stacked, dim=0)  # log sum_i T_i
    # Each expert's weight T_i / sum_j T_j; a masked expert has weight exp(-inf) = 0.
    weights = torch.exp(stacked - total_log_prec)
    mu = (weights * torch.stack(weighted_mus)).sum(dim=0)
    return Gaussian(mu, -total_log_prec)


def kl_to_standard_normal(q: Gaussian) -> torch.Tensor:
    """KL(q || N(0, I)) per row, summed over latent dims: 0.5 * sum(mu^2 + var - 1 - logvar) [B]."""
    return 0.5 * (q.mu.pow(2) + q.logvar.exp() - 1.0 - q.logvar).sum(dim=-1)


def kl_gaussians(q: Gaussian, p: Gaussian) -> torch.Tensor:
    """Analytic KL(q || p) per row for diagonal Gaussians, summed over latent dims [B].

    0.5 * sum(logvar_p - logvar_q + (var_q + (mu_q - mu_p)^2) / var_p - 1).
    """
    if q.mu.shape != p.mu.shape:
        raise DataError(f"kl_gaussians: q has shape {tuple(q.mu.shape)}, p has {tuple(p.mu.shape)}")
    ratio = torch.exp(q.logvar - p.logvar)
    mahal = (q.mu - p.mu).pow(2) * torch.exp(-p.logvar)
    return 0.5 * (p.logvar - q.logvar + ratio + mahal - 1.0).sum(dim=-1)


def log_density(g: Gaussian, z: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(var)) per row, summed over latent dims [B]."""
    return -0.5 * ((z - g.mu).pow(2) * torch.exp(-g.logvar) + g.logvar + math.log(2 * math.pi)).sum(dim=-1)


@dataclass
class Mixture:
    """A batch of mixtures of diagonal Gaussians (MMVAE's mixture of experts): `weights` [B, E] rows sum to 1;
    a modality missing from a row has weight 0 there."""

    experts: list[Gaussian]
    weights: torch.Tensor

    @classmethod
    def uniform(cls, experts: Sequence[Gaussian], masks: Sequence[torch.Tensor | None]) -> "Mixture":
        """Equal weight on each present expert of a row (`masks[i]` [B] bool, None = present everywhere)."""
        ref = experts[0].mu
        present = torch.stack([torch.ones(ref.shape[0], dtype=torch.bool, device=ref.device) if m is None
                               else m.bool() for m in masks], dim=1)
        if bool((~present.any(dim=1)).any()):
            row = int(torch.nonzero(~present.any(dim=1))[0, 0])
            raise DataError(f"mixture of experts: row {row} has every expert masked out")
        weights = present.to(ref.dtype)
        return cls(list(experts), weights / weights.sum(dim=1, keepdim=True))

    @property
    def mu(self) -> torch.Tensor:
        """The mixture's mean: the weighted mean of the experts' means (what ranking uses, z = E[z])."""
        return (self.weights.t().unsqueeze(-1) * torch.stack([g.mu for g in self.experts])).sum(dim=0)

    def moments(self) -> Gaussian:
        """The moment-matched diagonal Gaussian (same mean and per-dim variance as the mixture)."""
        w = self.weights.t().unsqueeze(-1)
        second = (w * torch.stack([g.var + g.mu.pow(2) for g in self.experts])).sum(dim=0)
        mu = self.mu
        return Gaussian(mu, torch.log(torch.clamp(second - mu.pow(2), min=1e-12)))

    def sample(self) -> torch.Tensor:
        """One reparameterised draw per row: an expert picked by its weight, then a draw from that expert."""
        pick = torch.multinomial(self.weights, 1).squeeze(1)
        draws = torch.stack([sample(g) for g in self.experts], dim=1)  # [B, E, d]
        return draws[torch.arange(pick.shape[0], device=pick.device), pick]

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log sum_e w_e N(z; mu_e, var_e) per row [B]; an absent expert (weight 0) contributes nothing."""
        parts = torch.stack([log_density(g, z) for g in self.experts], dim=1) + torch.log(self.weights)
        return torch.logsumexp(parts, dim=1)


def kl_mixture_to_standard_normal(q: Mixture, z: torch.Tensor) -> torch.Tensor:
    """Single-sample estimate of KL(q || N(0, I)) per row at z ~ q: log q(z) - log N(z; 0, I) [B] (MMVAE;
    a mixture has no closed-form KL)."""
    standard = Gaussian(torch.zeros_like(z), torch.zeros_like(z))
    return q.log_density(z) - log_density(standard, z)


def entropy(q: Gaussian) -> torch.Tensor:
    """Differential entropy of each row's diagonal Gaussian: 0.5 * sum(1 + log(2 pi) + logvar) [B]."""
    return 0.5 * (1.0 + math.log(2 * math.pi) + q.logvar).sum(dim=-1)
