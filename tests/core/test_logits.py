"""LocationScaleLogits: features -> logits whose mean follows a regressed location."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.logits import LocationScaleLogits
from tests.reference import np_probs

SUPPORT = HistogramSupport(-4.0, 6.0, 40)


def test_starts_at_the_prior_bump_for_every_input() -> None:
    layer = LocationScaleLogits(5, SUPPORT, loc0=1.0, scale0=0.8)
    x = torch.randn(7, 5)
    logits = layer(x)
    assert logits.shape == (7, 40)
    c = SUPPORT.centers.double().numpy()
    # logits_k = -((c_k - 1) / 0.8)^2 / 2 for every row: zero weights, a bias giving s = 0.8
    expected = -0.5 * ((c - 1.0) / 0.8) ** 2
    np.testing.assert_allclose(logits.detach().double().numpy(),
                               np.broadcast_to(expected, (7, 40)), rtol=1e-5, atol=1e-5)
    assert all(p.abs().sum() == 0 for n, p in layer.named_parameters() if n.endswith("weight"))


def test_mean_follows_location_with_unit_slope_at_any_sharpness() -> None:
    """d(mean)/d(location) stays 1 for a sharp bump (the reason for this parametrisation)."""
    wide = HistogramSupport(-12.0, 12.0, 96)  # bins 0.25 wide; the bump is far from the edges
    for scale0 in (2.0, 0.3):
        layer = LocationScaleLogits(1, wide, loc0=0.0, scale0=scale0)
        with torch.no_grad():
            layer.location.weight.fill_(1.0)
        x = torch.tensor([[0.5]], requires_grad=True)
        mean = wide.mean(layer(x))
        (grad,) = torch.autograd.grad(mean.sum(), x)
        assert float(mean.detach()) == pytest.approx(0.5, abs=0.01)
        assert float(grad) == pytest.approx(1.0, abs=0.02)


def test_loc_gain_scales_the_location_units() -> None:
    layer = LocationScaleLogits(1, SUPPORT, loc0=0.0, scale0=0.5, loc_gain=1 / 0.05)
    with torch.no_grad():
        layer.location.bias.fill_(0.05)  # 0.05 "eV" -> 1.0 support units
    mean = float(SUPPORT.mean(layer(torch.zeros(1, 1))).detach())
    assert mean == pytest.approx(1.0, abs=0.02)


def test_width_never_below_its_floor() -> None:
    layer = LocationScaleLogits(1, SUPPORT, scale0=1.0, min_scale_bins=0.5)
    with torch.no_grad():
        layer.scale.bias.fill_(-50.0)  # softplus -> 0: the width sits at its floor
    logits = layer(torch.zeros(1, 1))
    s = 0.5 * SUPPORT.width
    c = SUPPORT.centers.double().numpy()
    np.testing.assert_allclose(np_probs(logits)[0], np_probs(torch.tensor(
        -0.5 * (c / s) ** 2))[..., :], rtol=1e-4, atol=1e-6)


def test_residual_reaches_any_distribution() -> None:
    """Zero location/scale weights plus a residual equal to target log-probs minus the
    bump: the softmax is the target, so no histogram is out of reach."""
    layer = LocationScaleLogits(1, SUPPORT, scale0=1.0)
    target = torch.distributions.Dirichlet(torch.ones(40)).sample((1,)).double()
    bump = layer(torch.zeros(1, 1)).detach().double()
    with torch.no_grad():
        layer.residual.bias.copy_((target.log() - bump)[0].float())
    np.testing.assert_allclose(np_probs(layer(torch.zeros(1, 1))), target.numpy(), rtol=1e-3,
                               atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"loc_gain": 0.0}, "loc_gain"), ({"loc_gain": math.inf}, "loc_gain"),
    ({"scale0": 0.1, "min_scale_bins": 0.5}, "initial scale"),
])
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LocationScaleLogits(3, SUPPORT, **kwargs)
