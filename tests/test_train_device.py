"""The training loop's device path: train.loop.device resolution, the run's tensors moved to the device once
per run (not per batch), and, where torch sees a GPU, training on CUDA in fp32 and with bf16 autocast.

The CUDA tests skip on a machine without a GPU (CI and the development machines are CPU-only); the CPU
behaviour of the same path is tested here without skipping."""
from __future__ import annotations

import math

import pytest
import torch

import pipeline.training.loop as loop
from pipeline.models.cmvae import CMVAE
from pipeline.models.registry import load_model
from pipeline.training.data import TrainData
from pipeline.resources import resolve_device
from pipeline.training.loop import fit, step_precision
from test_train import data, new_cmvae, tiny_train, world  # noqa: F401  (fixtures)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="no CUDA device here (CPU-only CI); the GPU path runs where torch sees one")


def test_auto_is_cpu_without_a_gpu_and_cuda_with_one(monkeypatch):
    env = {}
    monkeypatch.setattr(loop.os, "environ", env)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    assert env == {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert env == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # cuBLAS's deterministic workspace
    env["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and env["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def _spy(monkeypatch):
    """Record every TrainData.to target and the device of every training batch the model sees."""
    moves, batches = [], []
    original_to, original_loss = TrainData.to, CMVAE.loss

    def to(self, device):
        moves.append(torch.device(device))
        return original_to(self, device)

    def loss(self, batch):
        batches.append({v.device.type for v in batch.values() if isinstance(v, torch.Tensor)})
        return original_loss(self, batch)

    monkeypatch.setattr(TrainData, "to", to)
    monkeypatch.setattr(CMVAE, "loss", loss)
    return moves, batches


def test_fit_moves_the_run_tensors_once_not_per_batch(data, tmp_path, monkeypatch):
    moves, batches = _spy(monkeypatch)
    summary = fit(new_cmvae(), data, tiny_train(epochs=2, device="cpu"), tmp_path)
    steps = 2 * math.ceil(data.video_idx.shape[0] / summary["batch_size"])
    assert moves == [torch.device("cpu")] and len(batches) == steps and batches[0] == {"cpu"}


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fit_on_cuda_trains_on_the_device(data, tmp_path, monkeypatch, precision):
    moves, batches = _spy(monkeypatch)
    model = new_cmvae()
    summary = fit(model, data, tiny_train(epochs=2, device="cuda", precision=precision), tmp_path)
    assert moves == [torch.device("cuda")] and batches and all(b == {"cuda"} for b in batches)
    assert next(model.parameters()).device.type == "cuda"
    assert all(math.isfinite(h["train/total"]) for h in summary["history"])
    saved = load_model(tmp_path / "best.pt")  # a CUDA-trained model loads on a CPU-only machine
    assert next(saved.parameters()).device.type == "cpu"


@CUDA
def test_cuda_objective_matches_cpu_in_eval_mode(data):
    model = new_cmvae()
    model.eval()  # no dropout, z = mu: the objective is a function of the inputs
    batch = data.batch(torch.arange(64))
    cpu = model.loss(batch)["total"].item()
    model.cuda()
    gpu = model.loss({k: v.cuda() for k, v in batch.items()})["total"].item()
    assert gpu == pytest.approx(cpu, rel=1e-4)


@CUDA
def test_bf16_autocast_on_cuda_keeps_float32_terms(data):
    model = new_cmvae().cuda()
    batch = {k: v.cuda() for k, v in data.batch(torch.arange(64)).items()}
    with step_precision(model, "bf16", torch.device("cuda")):
        assert torch.is_autocast_enabled("cuda")
        out = model.visual_encoder.mu(torch.randn(4, 32, device="cuda"))
        terms = model.loss(batch)
    assert out.dtype == torch.float32 and terms["total"].dtype == torch.float32
    assert math.isfinite(terms["total"].item()) and all(not m._forward_hooks for m in model.modules())
