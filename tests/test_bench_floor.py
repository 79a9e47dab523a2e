"""The matrix-product floor (pipeline/bench_floor.py): what it records and what its replay times."""
import torch
from torch import nn

from pipeline.bench_floor import record_products, replay_seconds, step_floor


def test_records_every_product_of_forward_and_backward_with_its_flops():
    torch.manual_seed(0)
    layer, x = nn.Linear(8, 4), torch.randn(5, 8)
    w = torch.randn(4, 3, requires_grad=True)

    def step():
        (layer(x) @ w).sum().backward()

    products = record_products(step)
    ops = sorted(p.op for p in products)
    # forward: addmm (the layer) and mm (@ w); backward: two mm for w's product (both operands need grad),
    # one for the layer's weight (x needs none)
    assert ops == ["addmm", "mm", "mm", "mm", "mm"]
    flops = {p.op: p.flops for p in products}
    assert flops["addmm"] == 2 * 5 * 8 * 4
    assert sum(p.flops for p in products) == 2 * (5 * 8 * 4 + 5 * 4 * 3 + 5 * 3 * 4 + 4 * 5 * 3 + 4 * 5 * 8)
    # a transposed operand keeps its layout: the replay multiplies the same memory order
    assert any(p.operands[0][1] != tuple(torch.empty(p.operands[0][0]).stride()) or
               p.operands[1][1] != tuple(torch.empty(p.operands[1][0]).stride()) for p in products if p.op == "mm")


def test_replay_time_grows_with_the_work_and_the_floor_scales_to_an_epoch():
    big = torch.randn(256, 256)

    def step(reps):
        for _ in range(reps):
            big @ big

    one, many = record_products(lambda: step(1)), record_products(lambda: step(40))
    assert len(one) == 1 and len(many) == 40
    assert replay_seconds(many, rounds=3) > replay_seconds(one, rounds=3)
    floor = step_floor(lambda: step(4), steps_per_epoch=10, rounds=3)
    assert floor["matmuls_per_step"] == 4 and floor["gflop_per_step"] == round(4 * 2 * 256 ** 3 / 1e9, 3)
    assert floor["matmul_floor_epoch_seconds"] >= 0 and floor["matmul_gflops"] > 0
