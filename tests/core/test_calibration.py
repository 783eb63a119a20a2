"""Tests for fairchem_categorical.calibration: temperature scaling of histogram logits.

The synthetic model's true distributions are known, so the right temperature is
known: logits scaled by s need T = s to recover them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairchem_categorical.calibration import (
    apply_temperature,
    bin_index_from_centers,
    fit_temperature,
    logits_from_probs,
    nll_at_temperature,
)
from fairchem_categorical.histogram import HistogramSupport

B, K = 3000, 32


@pytest.fixture(scope="module")
def synthetic() -> dict[str, torch.Tensor]:
    """True logits (a noisy bump per row), their probabilities, and targets sampled from them."""
    g = torch.Generator().manual_seed(0)
    support = HistogramSupport(-4.0, 4.0, K)
    c = support.centers.double()
    loc = torch.rand(B, generator=g, dtype=torch.float64) * 4 - 2
    scale = 0.2 + torch.rand(B, generator=g, dtype=torch.float64) * 0.8
    z = -0.5 * ((c - loc[:, None]) / scale[:, None]) ** 2
    z = z + 0.5 * torch.randn(B, K, generator=g, dtype=torch.float64)
    idx = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(-1)
    # scalar targets uniform inside the sampled bin
    y = support.edges[idx].double() + torch.rand(B, generator=g, dtype=torch.float64) * 0.25
    return {"z": z, "idx": idx, "y": y}


def test_over_confident_model_gets_t_near_3(synthetic: dict) -> None:
    z, idx = synthetic["z"], synthetic["idx"]
    t = fit_temperature(3 * z, idx)
    assert t > 1
    assert t == pytest.approx(3.0, rel=0.15)
    assert nll_at_temperature(3 * z, idx, t) < nll_at_temperature(3 * z, idx, 1.0)


def test_calibrated_model_keeps_t_near_1(synthetic: dict) -> None:
    assert fit_temperature(synthetic["z"], synthetic["idx"]) == pytest.approx(1.0, rel=0.10)


def test_soft_targets_recover_the_exact_temperature(synthetic: dict) -> None:
    # cross-entropy against the true distributions is minimised exactly at softmax(3z/T) = p
    z = synthetic["z"]
    assert fit_temperature(3 * z, torch.softmax(z, -1)) == pytest.approx(3.0, rel=1e-4)


def test_scalar_targets_with_support_equal_bin_indices(synthetic: dict) -> None:
    support = HistogramSupport(-4.0, 4.0, K)
    z, idx, y = synthetic["z"], synthetic["idx"], synthetic["y"]
    t_scalar = fit_temperature(3 * z, y.float(), support=support)
    assert t_scalar == pytest.approx(fit_temperature(3 * z, idx), abs=1e-6)
    with pytest.raises(ValueError, match="support"):
        fit_temperature(3 * z, y)


def test_temperature_from_probabilities_equals_temperature_from_logits(synthetic: dict) -> None:
    z, idx = synthetic["z"], synthetic["idx"]
    for s in (1.0, 3.0):
        probs = torch.softmax(s * z, -1).float().numpy()  # what a predict NPZ stores
        t_probs = fit_temperature(logits_from_probs(probs), idx)
        assert t_probs == pytest.approx(fit_temperature(s * z, idx), abs=1e-3)


def test_bin_index_from_per_row_centers(synthetic: dict) -> None:
    # per-atom scaled bins: centers * natoms + offset map each target to the same bin
    support = HistogramSupport(-4.0, 4.0, K)
    y, idx = synthetic["y"][:50].numpy(), synthetic["idx"][:50]
    natoms = np.arange(1, 51, dtype=np.float64)
    centers = support.centers.double().numpy()[None, :] * natoms[:, None] + 7.0
    found = bin_index_from_centers(centers, y * natoms + 7.0)
    assert torch.equal(found, idx)
    # beyond the support: the edge bins, as encode clamps
    edge = bin_index_from_centers(centers[:2], np.array([-1e6, 1e6]))
    assert edge.tolist() == [0, K - 1]


def test_nll_at_temperature_by_hand() -> None:
    logits = torch.tensor([[0.0, np.log(3.0)]], dtype=torch.float64)  # softmax = (1/4, 3/4)
    assert nll_at_temperature(logits, torch.tensor([1])) == pytest.approx(-np.log(0.75))
    # T = 2 halves the logits: (1, sqrt 3) / (1 + sqrt 3)
    expected = -np.log(np.sqrt(3) / (1 + np.sqrt(3)))
    assert nll_at_temperature(logits, torch.tensor([1]), 2.0) == pytest.approx(expected)
    soft = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert nll_at_temperature(logits, soft) == pytest.approx(-0.5 * np.log(0.25 * 0.75))


def test_temperature_at_the_bound_warns(synthetic: dict) -> None:
    with pytest.warns(UserWarning, match="bound"):
        t = fit_temperature(3 * synthetic["z"], synthetic["idx"], bounds=(0.5, 2.0))
    assert t == pytest.approx(2.0, rel=1e-3)


def test_bad_inputs_raise() -> None:
    logits = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="bin indices"):
        fit_temperature(logits, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(logits, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(logits, torch.tensor([0, 1, 2, 3]), bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(torch.full((4, 5), float("nan")), torch.tensor([0, 1, 2, 3]))


def test_apply_temperature_changes_decoding() -> None:
    support = HistogramSupport(-1.0, 1.0, 8)
    logits = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    before = support.std(logits)
    apply_temperature(support, 2.0)
    assert float(support.temperature) == 2.0
    assert torch.all(support.std(logits) > before)
    with pytest.raises(ValueError):
        apply_temperature(support, 0.0)


def _noisy_histograms(n: int, alpha: float, seed: int = 0):
    """Gaussian histograms of std s; targets off by N(0, s^2) + N(0, (alpha e)^2)."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    s = rng.uniform(0.5, 1.5, n)
    e = rng.uniform(0.0, 2.0, n)
    mean = rng.normal(0.0, 3.0, n)
    width = 0.1
    centers = mean[:, None] + width * (np.arange(200) - 99.5)
    edges = np.c_[centers - width / 2, centers[:, -1:] + width / 2]
    probs = np.diff(norm.cdf(edges, mean[:, None], s[:, None]), axis=1)
    probs /= probs.sum(1, keepdims=True)
    y = mean + rng.normal(0.0, 1.0, n) * np.sqrt(s**2 + (alpha * e) ** 2)
    return probs, centers, y, e


def test_fit_predictive_recovers_the_epistemic_scale() -> None:
    from fairchem_categorical.calibration import fit_predictive, predictive_nll

    probs, centers, y, e = _noisy_histograms(2000, alpha=0.5)
    fit = fit_predictive(probs, centers, y, e)
    assert fit["alpha"] == pytest.approx(0.5, rel=0.1)
    assert fit["temperature"] == pytest.approx(1.0, abs=0.1)
    assert fit["nll_after"] < fit["nll_before"]
    assert fit["nll_after"] == pytest.approx(
        predictive_nll(probs, centers, y, fit["temperature"], fit["alpha"], e).mean())
    # with nothing epistemic in the errors the scale goes (nearly) to zero
    probs, centers, y, e = _noisy_histograms(2000, alpha=0.0, seed=1)
    assert fit_predictive(probs, centers, y, e)["alpha"] < 0.1
    # without an epistemic term, the temperature alone
    fit = fit_predictive(probs, centers, y)
    assert fit["alpha"] == 0.0 and fit["temperature"] == pytest.approx(1.0, abs=0.05)


def test_fit_predictive_rejects_bad_input() -> None:
    from fairchem_categorical.calibration import fit_predictive

    probs, centers, y, e = _noisy_histograms(10, alpha=0.5)
    with pytest.raises(ValueError, match="finite energy target"):
        fit_predictive(probs, centers, np.r_[y[:-1], np.nan], e)
    with pytest.raises(ValueError, match="epistemic_std"):
        fit_predictive(probs, centers, y, -e)
    with pytest.raises(ValueError, match="disagree"):
        fit_predictive(probs, centers, y[:5], e[:5])
