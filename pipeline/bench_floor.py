"""The matrix-product floor of a training step, for `python -m pipeline.bench`.

How fast could an epoch be if everything but the matrix products cost nothing? One training step runs under
a dispatch mode that records every dense matrix product torch executes (aten mm, addmm, bmm, baddbmm: the MLP
layers, the in-batch score matrices and their backward, forward and backward alike) with its shapes, strides
and dtype; then only those products are replayed on fresh tensors of the same layout, several rounds, and
timed. The floor (replay seconds per step x steps per epoch) is what any implementation that performs the
same products pays on this machine, whatever it fuses; the FLOP count makes it a rate (GFLOP/s), comparable
with the machine's best. torch's own FlopCounterMode counts the same FLOPs; it is not used because the
replay also needs each product's layout, which it does not keep.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
_MATMULS = {_aten.mm.default: "mm", _aten.addmm.default: "addmm", _aten.bmm.default: "bmm",
            _aten.baddbmm.default: "baddbmm"}


@dataclass(frozen=True)
class Product:
    """One recorded matrix product: its operands' (shape, stride, dtype) and its FLOPs (2 per multiply-add)."""

    op: str
    operands: tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...]
    flops: int


def _flops(op: str, a: torch.Tensor, b: torch.Tensor) -> int:
    if op in ("mm", "addmm"):
        return 2 * a.shape[0] * a.shape[1] * b.shape[1]
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.products: list[Product] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        op = _MATMULS.get(func)
        if op is not None:
            tensors = [x for x in args if isinstance(x, torch.Tensor)]
            a, b = tensors[-2], tensors[-1]  # addmm/baddbmm: (bias, a, b)
            if any(t.layout != torch.strided for t in tensors):
                raise NotImplementedError(f"bench_floor: {op} with a sparse operand; only dense products replay")
            self.products.append(Product(op, tuple((tuple(t.shape), tuple(t.stride()), t.dtype) for t in tensors),
                                         _flops(op, a, b)))
        return func(*args, **(kwargs or {}))


def record_products(step) -> list[Product]:
    """Every dense matrix product `step()` executes, in order."""
    recorder = _Recorder()
    with recorder:
        step()
    return recorder.products


def _operand(shape, stride, dtype, device, gen) -> torch.Tensor:
    t = torch.empty_strided(shape, stride, dtype=dtype, device=device)
    # fill the storage the strides reach (a transposed view reaches all of it) with seeded values
    flat = torch.randn(t.untyped_storage().nbytes() // t.element_size(), generator=gen).to(dtype)
    t.untyped_storage().copy_(flat.to(device).untyped_storage())
    return t


def replay_seconds(products: list[Product], device: torch.device | str = "cpu", rounds: int = 5) -> float:
    """Median wall seconds of executing exactly `products` (fresh operands of the recorded layouts), after
    one warm-up round."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    calls = []
    for p in products:
        args = [_operand(shape, stride, dtype, device, gen) for shape, stride, dtype in p.operands]
        calls.append((getattr(torch, p.op), args))
    times = []
    for r in range(rounds + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for fn, args in calls:
            fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def step_floor(step, steps_per_epoch: int, device: torch.device | str = "cpu", rounds: int = 5) -> dict:
    """The floor figures of a training step: products per step, GFLOP per step, the products' own seconds per
    step and their rate, and their seconds per epoch (`steps_per_epoch` steps of this size)."""
    products = record_products(step)
    seconds = replay_seconds(products, device, rounds)
    flops = sum(p.flops for p in products)
    return {"matmuls_per_step": len(products), "gflop_per_step": round(flops / 1e9, 3),
            "matmul_seconds_per_step": round(seconds, 4), "matmul_gflops": round(flops / seconds / 1e9, 1),
            "matmul_floor_epoch_seconds": round(seconds * steps_per_epoch, 2)}
