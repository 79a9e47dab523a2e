"""Loss functions against brute-force loops on tiny inputs."""
import pytest
import torch

from pipeline.errors import DataError
from pipeline.losses import (bidirectional_ranking_loss, hardest_k_margin_loss, kl_transfer_loss,
                             reconstruction_loss, same_item_mask)
from pipeline.gaussian import Gaussian, kl_gaussians


def brute_force(scores, music_idx, margin, k, hardest=True):
    """Per anchor: sort valid negatives by score (desc = hardest, asc = the public code's easiest), hinge."""
    n = len(scores)
    total = 0.0
    for i in range(n):
        negs = [scores[i][j] for j in range(n) if j != i and music_idx[j] != music_idx[i]]
        negs = sorted(negs, reverse=hardest)[:k]
        total += sum(max(0.0, margin - scores[i][i] + s) for s in negs)
    return total / n


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 3), (2, 40), (3, 5)])
def test_hardest_k_matches_brute_force_both_directions(seed, k):
    g = torch.Generator().manual_seed(seed)
    n = 9
    scores = torch.randn(n, n, generator=g, dtype=torch.float64) * 0.1
    music_idx = torch.randint(0, 5, (n,), generator=g)  # repeats guaranteed with 9 rows, 5 music
    v2m, m2v = bidirectional_ranking_loss(scores, music_idx, margin=0.05, k=k)
    s, idx = scores.tolist(), music_idx.tolist()
    assert v2m.item() == pytest.approx(brute_force(s, idx, 0.05, k))
    st = scores.t().tolist()
    assert m2v.item() == pytest.approx(brute_force(st, idx, 0.05, k))


def test_hardest_differs_from_the_public_codes_easiest_k():
    # anchor 0: positive 0.5; negatives 0.6 (hard), 0.52, 0.1, -0.3 (easy). k = 2, margin 0.05.
    scores = torch.tensor([[0.5, 0.6, 0.52, 0.1, -0.3],
                           [0.0, 0.9, 0.0, 0.0, 0.0],
                           [0.0, 0.0, 0.9, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 0.9, 0.0],
                           [0.0, 0.0, 0.0, 0.0, 0.9]], dtype=torch.float64)
    idx = list(range(5))
    ours = hardest_k_margin_loss(scores, margin=0.05, k=2).item()
    # anchor 0: (0.05 - 0.5 + 0.6) + (0.05 - 0.5 + 0.52) = 0.15 + 0.07; other anchors: 0 (0.9 vs 0.0)
    assert ours == pytest.approx((0.15 + 0.07) / 5)
    easiest = brute_force(scores.tolist(), idx, 0.05, 2, hardest=False)
    assert easiest == pytest.approx(0.0)  # the easiest negatives never violate the margin: no signal
    assert ours != pytest.approx(easiest)


def test_same_music_rows_are_not_negatives():
    # rows 0 and 1 use the same music; video 0 scores music-of-row-1 far above its own.
    scores = torch.tensor([[0.1, 5.0, 0.0],
                           [5.0, 0.1, 0.0],
                           [0.0, 0.0, 0.1]], dtype=torch.float64)
    without = hardest_k_margin_loss(scores, margin=0.05, k=2).item()
    mask = same_item_mask(torch.tensor([7, 7, 3]), 3)
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    masked = hardest_k_margin_loss(scores, mask, margin=0.05, k=2).item()
    # masked: anchor 0 keeps only column 2 -> 0.05 - 0.1 + 0 < 0; anchor 2 sees 0.0, 0.0 -> 0
    assert masked == 0.0
    assert without == pytest.approx(2 * (0.05 - 0.1 + 5.0) / 3)


def test_too_few_negatives_and_gradients():
    scores = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    loss = hardest_k_margin_loss(scores, margin=0.05, k=40)
    loss.backward()
    assert loss.item() == pytest.approx(1.05)
    assert torch.equal(scores.grad, torch.tensor([[-0.5, 0.5], [0.5, -0.5]]))
    single = hardest_k_margin_loss(torch.zeros(1, 1, requires_grad=True), k=5)
    assert single.item() == 0.0
    everything_masked = hardest_k_margin_loss(scores.detach(), torch.ones(2, 2, dtype=torch.bool))
    assert everything_masked.item() == 0.0
    with pytest.raises(DataError, match="square"):
        hardest_k_margin_loss(torch.zeros(2, 3))


def test_reconstruction_and_masking():
    pred, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    assert reconstruction_loss(pred, target).item() == pytest.approx((1 + 4 + 9 + 9) / 4)
    assert reconstruction_loss(pred, target, torch.tensor([True, False])).item() == pytest.approx(2.5)
    assert reconstruction_loss(pred, target, torch.tensor([False, False])).item() == 0.0
    with pytest.raises(DataError, match="shape"):
        reconstruction_loss(pred, target[:, :1])


def test_kl_transfer_is_student_to_teacher_with_a_frozen_teacher():
    student = Gaussian(torch.tensor([[0.2, -0.4]], requires_grad=True), torch.tensor([[0.1, -0.3]]))
    teacher = Gaussian(torch.tensor([[1.0, 0.0]], requires_grad=True), torch.tensor([[-0.5, 0.4]]))
    value = kl_transfer_loss(student, teacher)
    assert value.item() == pytest.approx(kl_gaussians(student, teacher).item())
    assert value.item() != pytest.approx(kl_gaussians(teacher, student).item())  # direction matters here
    value.backward()
    assert teacher.mu.grad is None and student.mu.grad is not None


@pytest.mark.parametrize("n,k,n_music,scale", [(9, 3, 5, 0.1), (64, 5, 3, 0.05), (300, 40, 120, 1.0), (50, 40, 10, 0.01),
                                                (2, 40, 2, 1.0), (6, 2, 1, 1.0), (1, 5, 1, 1.0)])
def test_bidirectional_loss_is_the_two_hardest_k_graphs_bit_for_bit(n, k, n_music, scale):
    """The fused loss (one topk per direction, a sparse hand-written backward) gives the same bytes, value and
    gradient, as hardest_k_margin_loss on scores and on scores.t(), under any weighting of the two halves."""
    g = torch.Generator().manual_seed(n * 31 + k)
    scores = torch.randn(n, n, generator=g) * scale
    music_idx = torch.randint(0, n_music, (n,), generator=g)
    weights = torch.randn(2, generator=g)
    results = []
    for fused in (False, True):
        x = scores.clone().requires_grad_()
        if fused:
            v2m, m2v = bidirectional_ranking_loss(x, music_idx, margin=0.05, k=k)
        else:
            same = same_item_mask(music_idx, n)
            v2m = hardest_k_margin_loss(x, same, margin=0.05, k=k)
            m2v = hardest_k_margin_loss(x.t(), same.t(), margin=0.05, k=k)
        (weights[0] * v2m + weights[1] * m2v).backward()
        results.append((v2m.detach(), m2v.detach(), x.grad))
    for reference, fused in zip(*results):
        assert torch.equal(reference, fused)
