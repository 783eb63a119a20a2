"""Tests for fairchem_categorical.losses: soft cross-entropy and HistogramLoss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.losses import HistogramLoss, soft_cross_entropy

K = 16


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_probs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=gen(seed)) * 2.0, dim=-1)


# -- soft_cross_entropy ---------------------------------------------------------------


def test_soft_cross_entropy_by_hand() -> None:
    # softmax(log [1, 2, 3]) = [1/6, 1/3, 1/2]
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    target = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    out = soft_cross_entropy(logits, target)
    expected = [math.log(2.0), -(0.5 * math.log(1 / 6) + 0.5 * math.log(1 / 3))]
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=0)


def test_soft_cross_entropy_equals_torch_cross_entropy_with_prob_targets() -> None:
    logits = torch.randn(7, K, generator=gen(1)) * 3.0
    target = random_probs(7, K, seed=2)
    ref = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(soft_cross_entropy(logits, target), ref, atol=1e-5, rtol=1e-6)
    # With encoded histogram targets (exact zeros far from y) and leading dims (2, 3).
    support = HistogramSupport(-2.0, 2.0, K)
    y = torch.tensor([[-1.5, 0.0, 0.7], [1.9, -0.2, 3.0]])
    p = support.encode(y)
    logits3 = torch.randn(2, 3, K, generator=gen(3))
    ref3 = F.cross_entropy(logits3.reshape(6, K), p.reshape(6, K), reduction="none")
    out3 = soft_cross_entropy(logits3, p)
    assert out3.shape == (2, 3)
    torch.testing.assert_close(out3.reshape(6), ref3, atol=1e-5, rtol=1e-6)


def test_soft_cross_entropy_gradient_is_softmax_minus_target() -> None:
    logits = (torch.randn(5, K, generator=gen(4)) * 2.0).requires_grad_(True)
    target = random_probs(5, K, seed=5)
    soft_cross_entropy(logits, target).sum().backward()
    expected = torch.softmax(logits.detach(), -1) - target
    torch.testing.assert_close(logits.grad, expected, atol=1e-6, rtol=0)


def test_soft_cross_entropy_huge_logits_are_finite_and_accurate() -> None:
    logits = (torch.randn(6, K, generator=gen(6)) * 1e4).requires_grad_(True)
    support = HistogramSupport(-1.0, 1.0, K)
    target = support.encode(torch.tensor([-0.9, -0.3, 0.0, 0.2, 0.95, 5.0]))
    out = soft_cross_entropy(logits, target)
    assert torch.isfinite(out).all()
    ref = -(target.double() * torch.log_softmax(logits.detach().double(), -1)).sum(-1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-3)
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # All mass on one bin with a 1e4 logit margin: the loss is ~0, not NaN.
    sharp = torch.full((1, K), -1e4)
    sharp[0, 3] = 1e4
    one_hot = F.one_hot(torch.tensor([3]), K).float()
    assert float(soft_cross_entropy(sharp, one_hot)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "logit_shape, target_shape", [((4, K), (4, K + 1)), ((4, K), (3, K)), ((2, 3, K), (6, K))]
)
def test_soft_cross_entropy_shape_mismatch_raises(logit_shape, target_shape) -> None:
    with pytest.raises(ValueError, match="same shape"):
        soft_cross_entropy(torch.zeros(*logit_shape), torch.zeros(*target_shape))


# -- HistogramLoss --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["hl_gauss", "two_hot", "one_hot"])
def test_scalar_targets_equal_pre_encoded_targets(encoding: str) -> None:
    support = HistogramSupport(-3.0, 3.0, K, encoding=encoding)
    loss = HistogramLoss(support)
    y = torch.tensor([[-2.2, 0.0, 1.3], [2.9, -0.6, 0.05]])
    logits = torch.randn(2, 3, K, generator=gen(7))
    from_scalar = loss(logits, y)
    from_hist = loss(logits, support.encode(y))
    assert from_scalar.shape == (2, 3)
    torch.testing.assert_close(from_scalar, from_hist, atol=0, rtol=0)
    # ... and both are the cross-entropy against the encoding.
    ref = F.cross_entropy(logits.reshape(6, K), support.encode(y).reshape(6, K),
                          reduction="none").reshape(2, 3)
    torch.testing.assert_close(from_scalar, ref, atol=1e-5, rtol=1e-6)


def test_scalar_and_histogram_targets_agree_with_l1_for_two_hot() -> None:
    # two_hot is exactly mean-preserving inside [c_0, c_{K-1}], so the L1 part agrees too.
    support = HistogramSupport(-3.0, 3.0, K, encoding="two_hot")
    loss = HistogramLoss(support, l1_weight=0.3)
    y = torch.tensor([-2.5, -0.4, 0.0, 1.1, 2.7])
    logits = torch.randn(5, K, generator=gen(8))
    torch.testing.assert_close(loss(logits, y), loss(logits, support.encode(y)),
                               atol=2e-6, rtol=0)


def test_histogram_loss_gradient_is_softmax_minus_encoding() -> None:
    support = HistogramSupport(-1.0, 1.0, K)
    loss = HistogramLoss(support)
    y = torch.tensor([-0.8, 0.1, 0.55, 0.99])
    logits = torch.randn(4, K, generator=gen(9)).requires_grad_(True)
    loss(logits, y).sum().backward()
    expected = torch.softmax(logits.detach(), -1) - support.encode(y)
    torch.testing.assert_close(logits.grad, expected, atol=1e-6, rtol=0)


def test_l1_weight_adds_absolute_error_of_decoded_mean() -> None:
    support = HistogramSupport(-2.0, 2.0, K)
    centers = torch.linspace(-2.0, 2.0, K + 1)
    centers = (centers[1:] + centers[:-1]) / 2
    y = torch.tensor([-1.7, 0.0, 0.45, 1.2, 3.5])  # last one beyond the support
    logits = torch.randn(5, K, generator=gen(10))
    decoded = (torch.softmax(logits, -1) * centers).sum(-1)
    ce_only = HistogramLoss(support)(logits, y)
    with_l1 = HistogramLoss(support, l1_weight=0.7)(logits, y)
    torch.testing.assert_close(with_l1 - ce_only, 0.7 * (decoded - y).abs(), atol=1e-5, rtol=0)
    l1_only = HistogramLoss(support, ce_weight=0.0, l1_weight=1.0)(logits, y)
    torch.testing.assert_close(l1_only, (decoded - y).abs(), atol=1e-5, rtol=0)
    double_ce = HistogramLoss(support, ce_weight=2.0)(logits, y)
    torch.testing.assert_close(double_ce, 2.0 * ce_only, atol=1e-6, rtol=0)


def test_l1_term_gradient_flows_through_mean() -> None:
    support = HistogramSupport(-2.0, 2.0, K)
    logits = torch.zeros(1, K, requires_grad=True)  # mean 0
    loss = HistogramLoss(support, ce_weight=0.0, l1_weight=1.0)(logits, torch.tensor([1.0]))
    loss.sum().backward()
    # d|mean - y|/dlogit_k = -p_k (c_k - mean) for mean < y; p_k = 1/K, mean = 0
    centers = support.centers
    torch.testing.assert_close(logits.grad[0], -(centers - 0.0) / K, atol=1e-6, rtol=0)


def test_loss_under_bf16_autocast_is_float32_and_close() -> None:
    torch.manual_seed(0)
    support = HistogramSupport(-2.0, 2.0, K)
    head = torch.nn.Linear(8, K)
    x = torch.randn(12, 8, generator=gen(11))
    y = torch.rand(12, generator=gen(12)) * 3.0 - 1.5
    for l1 in (0.0, 0.5):
        loss_fn = HistogramLoss(support, l1_weight=l1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = head(x)
            assert logits.dtype == torch.bfloat16
            out = loss_fn(logits, y)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        ref = loss_fn(head(x), y)
        torch.testing.assert_close(out, ref, atol=1e-2, rtol=0)
        # The loss itself adds no bf16 rounding: it equals fp32 math on the bf16 logits.
        torch.testing.assert_close(out, loss_fn(logits.float(), y), atol=1e-6, rtol=0)
        out.sum().backward()
        assert torch.isfinite(head.weight.grad).all()
        head.zero_grad()


def test_soft_cross_entropy_bf16_logits_return_float32() -> None:
    logits = torch.randn(4, K, generator=gen(13)).bfloat16()
    target = random_probs(4, K, seed=14)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = soft_cross_entropy(logits, target)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, soft_cross_entropy(logits.float(), target), atol=1e-6,
                               rtol=0)


def test_histogram_loss_huge_logits_finite() -> None:
    support = HistogramSupport(-1.0, 1.0, K)
    logits = (torch.randn(8, K, generator=gen(15)) * 1e4).requires_grad_(True)
    y = torch.linspace(-1.2, 1.2, 8)
    out = HistogramLoss(support, l1_weight=1.0)(logits, y)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_histogram_loss_counts_clipped_scalar_targets() -> None:
    loss = HistogramLoss(HistogramSupport(-1.0, 1.0, K))
    assert loss.num_clipped == 0
    loss(torch.zeros(4, K), torch.tensor([0.0, 2.0, -5.0, 0.5]))
    assert loss.num_clipped == 2
    loss(torch.zeros(2, K), torch.tensor([3.0, 0.0]))
    assert loss.num_clipped == 3  # cumulative over calls
    loss(torch.zeros(1, K), torch.full((1, K), 1.0 / K))  # histogram targets are not counted
    assert loss.num_clipped == 3


def test_histogram_loss_histogram_shape_mismatch_raises() -> None:
    loss = HistogramLoss(HistogramSupport(-1.0, 1.0, K))
    with pytest.raises(ValueError):
        loss(torch.zeros(4, K), torch.full((3, K), 1.0 / K))


@pytest.mark.parametrize(
    "logit_shape, target_shape",
    [((4, K), (3,)), ((2, 3, K), (3, 2))],
    ids=["wrong-count", "transposed"],
)
def test_histogram_loss_scalar_target_shape_mismatch_raises(logit_shape, target_shape) -> None:
    # Scalar targets must match the leading dims of the logits; a wrong shape is a
    # ValueError, not a reshape error and not a silent reassignment of targets.
    loss = HistogramLoss(HistogramSupport(-1.0, 1.0, K))
    target = torch.arange(math.prod(target_shape), dtype=torch.float32).reshape(target_shape)
    with pytest.raises(ValueError):
        loss(torch.zeros(*logit_shape), target / 10.0)


@pytest.mark.parametrize("kwargs", [{"ce_weight": -1.0}, {"l1_weight": -0.1},
                                    {"ce_weight": -0.5, "l1_weight": -2.0}])
def test_negative_weights_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="weight"):
        HistogramLoss(HistogramSupport(-1.0, 1.0, K), **kwargs)
