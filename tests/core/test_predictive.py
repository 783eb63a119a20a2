"""The one predictive distribution: mixture math against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairchem_categorical.predictive import (
    PredictiveDistribution,
    PredictiveParams,
    Recalibration,
    kernel_variance,
)

CENTERS = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)


def two_members(kernel: float = 0.1) -> PredictiveDistribution:
    """Member A all on bin 1 (center 1), member B half on bins 2 and 3 (2.5)."""
    probs = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]], dtype=torch.float64)
    return PredictiveDistribution(probs, CENTERS, kernel)


def test_mixture_mean_variance_by_hand() -> None:
    d = two_members()
    # mixture: 0.5 on 1, 0.25 on 2, 0.25 on 3 -> mean 1.75
    assert float(d.mean()) == pytest.approx(1.75)
    assert d.member_means().tolist() == [[1.0, 2.5]]
    # mean member variance (0 and 0.25) + variance of means (0.5625) = 0.6875,
    # + w^2/12 (uniform within a bin) + kernel^2
    assert float(d.disagreement_variance()) == pytest.approx(0.5625)
    assert float(d.variance()) == pytest.approx(0.125 + 0.5625 + 1 / 12 + 0.01)


def test_entropy_splits_into_aleatoric_and_mutual_information() -> None:
    terms = two_members().entropy_terms()
    total = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    aleatoric = (0.0 + math.log(2.0)) / 2
    assert float(terms["total"]) == pytest.approx(total)
    assert float(terms["aleatoric"]) == pytest.approx(aleatoric)
    assert float(terms["epistemic"]) == pytest.approx(total - aleatoric)
    # one member: no mutual information
    one = PredictiveDistribution(two_members().members[:, :1], CENTERS, 0.1)
    assert float(one.entropy_terms()["epistemic"]) == pytest.approx(0.0, abs=1e-12)


def test_cdf_and_quantile_by_hand() -> None:
    d = two_members(kernel=1e-4)
    # bins [0.5, 1.5) hold 0.5, so with a narrow kernel F(1.5) ~ 0.5 and F(1.0) ~ 0.25
    assert float(d.cdf(1.5)) == pytest.approx(0.5, abs=1e-3)
    assert float(d.cdf(1.0)) == pytest.approx(0.25, abs=1e-3)
    assert float(d.quantile(0.5)) == pytest.approx(1.5, abs=1e-2)
    lo, hi = d.interval(0.5)
    assert float(d.cdf(hi) - d.cdf(lo)) == pytest.approx(0.5, abs=1e-6)


def test_density_integrates_to_one_and_matches_the_cdf() -> None:
    d = two_members()
    y = torch.linspace(-2.0, 6.0, 8001, dtype=torch.float64)
    many = PredictiveDistribution(d.members.expand(len(y), -1, -1), CENTERS, 0.1)
    pdf = many.log_pdf(y).exp()
    assert float(torch.trapezoid(pdf, y)) == pytest.approx(1.0, abs=1e-4)
    assert float(torch.trapezoid(pdf[y <= 2.0], y[y <= 2.0])) == pytest.approx(
        float(d.cdf(2.0)), abs=1e-3)


def test_samples_follow_the_distribution_and_joint_samples_share_members() -> None:
    probs = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]] * 2,
                         dtype=torch.float64)  # two rows with the same two members
    d = PredictiveDistribution(probs, CENTERS, 0.01)
    g = torch.Generator().manual_seed(0)
    s = d.sample(4000, generator=g, joint=True)
    assert s.shape == (4000, 2)
    assert float(s.mean()) == pytest.approx(2.0, abs=0.1)
    # joint: both rows drew the same member, so their difference stays small
    assert float((s[:, 0] - s[:, 1]).abs().max()) < 1.2
    s = d.sample(4000, generator=g, joint=False)
    # independent: different members half the time, and then the difference (1 to 3,
    # triangular about 2) exceeds 1.5 with probability 7/8
    assert float(((s[:, 0] - s[:, 1]).abs() > 1.5).double().mean()) == pytest.approx(
        0.5 * 7 / 8, abs=0.04)
    sd = float(s[:, 0].std())
    assert sd == pytest.approx(float(d.std()[0]), rel=0.05)


def test_crps_of_a_narrow_distribution_is_the_absolute_error() -> None:
    d = PredictiveDistribution(torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64),
                               CENTERS * 0.001, 1e-5)
    assert float(d.crps(0.5)) == pytest.approx(0.5 - 0.001, abs=1e-3)


def test_recalibration_is_monotone_and_fixes_a_too_wide_distribution() -> None:
    rng = np.random.default_rng(0)
    # predictions say N(0, 2^2) where the errors are N(0, 1): PITs crowd the middle
    y = rng.normal(size=4000)
    probs = torch.full((1, 20), 1 / 20, dtype=torch.float64)
    centers = torch.linspace(-0.095, 0.095, 20, dtype=torch.float64)  # a narrow core
    wide = PredictiveDistribution(probs.expand(4000, -1), centers, 2.0)
    pit = wide.raw_cdf(torch.as_tensor(y)).numpy()
    half = 2000
    recal = Recalibration.fit(pit[:half])
    assert (np.diff(recal.values) >= 0).all() and (np.diff(recal.levels) > 0).all()
    fixed = PredictiveDistribution(probs.expand(half, -1), centers, 2.0, recal)
    lo, hi = fixed.interval(0.9)
    test = torch.as_tensor(y[half:])
    covered = float(((test >= lo) & (test <= hi)).double().mean())
    raw_lo, raw_hi = wide.interval(0.9)
    raw = float(((test >= raw_lo[:half]) & (test <= raw_hi[:half])).double().mean())
    assert raw > 0.99  # too wide before
    assert covered == pytest.approx(0.9, abs=0.03)
    again = Recalibration.from_dict(recal.to_dict())
    assert np.allclose(again.values, recal.values)


def test_recalibration_rejects_bad_knots() -> None:
    with pytest.raises(ValueError, match="increase"):
        Recalibration([0.0, 0.6, 0.5, 1.0], [0.0, 0.2, 0.3, 1.0])
    with pytest.raises(ValueError, match=r"\(0, 0\)"):
        Recalibration([0.1, 1.0], [0.0, 1.0])


def test_kernel_variance_adds_disagreement_and_distance() -> None:
    params = PredictiveParams(temperature=0.5, disagreement=2.0, alpha=3.0)
    var = kernel_variance(0.1, torch.tensor([0.25]), torch.tensor([0.5]), params)
    assert float(var) == pytest.approx((0.75 * 0.1) ** 2 + 2.0 * 0.25 + 9.0 * 0.5)
    with pytest.raises(ValueError, match="temperature"):
        PredictiveParams(temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        PredictiveParams(alpha=-1.0)
