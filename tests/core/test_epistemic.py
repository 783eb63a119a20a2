"""The epistemic math against numpy by hand: moments, shrinkage, distances, LLPR, storage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fairchem_categorical.epistemic import (
    METHODS,
    EpistemicState,
    FeatureStatistics,
    fit_state,
    head_prefixes,
    oas_shrink,
    read_head_state,
    write_head_state,
)

H = 4


def np_oas(cov: np.ndarray, n: float) -> np.ndarray:
    """Chen et al.'s OAS in scikit-learn's form, in numpy."""
    p = cov.shape[0]
    mu = np.trace(cov) / p
    alpha = np.mean(cov**2)
    rho = min((alpha + mu**2) / ((n + 1) * (alpha - mu**2 / p)), 1.0)
    return (1 - rho) * cov + rho * mu * np.eye(p)


@pytest.fixture(scope="module")
def features() -> dict[str, np.ndarray]:
    """Two elements (Z=1: 60 atoms, Z=8: 20 atoms) in 4 dimensions, 10 structures of 8 atoms."""
    rng = np.random.default_rng(0)
    z = np.array([1] * 6 + [8] * 2) [None, :].repeat(10, 0).reshape(-1)
    h = np.where((z == 1)[:, None], rng.normal([1.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.3, 0.2],
                                               (80, H)),
                 rng.normal([-2.0, 1.0, 0.0, 0.5], [0.2, 0.2, 0.4, 0.1], (80, H)))
    batch = np.repeat(np.arange(10), 8)
    pooled = np.stack([h[batch == b].mean(0) for b in range(10)])
    return {"h": h, "z": z, "batch": batch, "pooled": pooled}


def _stats(f: dict[str, np.ndarray], chunks: int = 1) -> FeatureStatistics:
    stats = FeatureStatistics()
    for part in np.array_split(np.arange(10), chunks):  # whole structures per chunk
        atoms = np.isin(f["batch"], part)
        stats.add(torch.tensor(f["h"][atoms], dtype=torch.float32),
                  torch.tensor(f["z"][atoms]), torch.tensor(f["pooled"][part]))
    return stats


def _np_state(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What fit_state should give, from the definitions in its docstring."""
    h = f["h"].astype(np.float32).astype(np.float64)
    z = f["z"]
    n = len(h)
    elements = [1, 8]
    means = {e: h[z == e].mean(0) for e in elements}
    covs = {e: np.cov(h[z == e].T, bias=True) for e in elements}
    counts = {e: int((z == e).sum()) for e in elements}
    pooled = np_oas(sum(counts[e] * covs[e] for e in elements) / n, n)
    per = {e: (counts[e] * covs[e] + H * pooled) / (counts[e] + H) for e in elements}
    fb = np.c_[f["pooled"], np.ones(10)]
    second = np_oas(fb.T @ fb / 10, 10)
    return {"means": means, "per": per, "pooled": pooled, "second": second}


def test_oas_matches_scikit_learn() -> None:
    from sklearn.covariance import oas

    x = np.random.default_rng(1).normal(size=(15, 6)) * [1, 2, 3, 0.5, 0.1, 1]
    want, rho = oas(x)
    got, got_rho = oas_shrink(torch.tensor(np.cov(x.T, bias=True)), 15)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    assert got_rho == pytest.approx(rho)


def test_fit_state_moments_by_hand(features: dict) -> None:
    state = fit_state(_stats(features))
    want = _np_state(features)
    assert state["elements"].tolist() == [1, 8] and state["dim"] == H
    np.testing.assert_allclose(state["element_counts"].numpy(), [60, 20])
    for i, e in enumerate((1, 8)):
        np.testing.assert_allclose(state["means"][i].numpy(), want["means"][e], rtol=1e-10)
        np.testing.assert_allclose(state["precisions"][i].numpy(), np.linalg.inv(want["per"][e]),
                                   rtol=1e-8)
    np.testing.assert_allclose(state["tied_precision"].numpy(), np.linalg.inv(want["pooled"]),
                               rtol=1e-8)
    np.testing.assert_allclose(state["llpr_precision"].numpy(), np.linalg.inv(want["second"]),
                               rtol=1e-8)
    assert state["alpha"] == dict.fromkeys(METHODS, 1.0)


def test_streaming_in_batches_equals_one_pass(features: dict) -> None:
    one, many = fit_state(_stats(features, 1)), fit_state(_stats(features, 5))
    for key in ("means", "precisions", "tied_precision", "llpr_precision"):
        np.testing.assert_allclose(many[key].numpy(), one[key].numpy(), rtol=1e-9, atol=1e-12)


def _module(state: dict) -> EpistemicState:
    m = EpistemicState()
    m.load(state)
    return m


def test_scores_by_hand_training_point_low_far_point_high(features: dict) -> None:
    state = fit_state(_stats(features))
    want = _np_state(features)
    m = _module(state)
    mu1 = want["means"][1]
    # structure 0: one H atom at its element's mean, one O atom far away, one atom of
    # an element never seen (Z=29) near the O mean; structure 1: an H atom far away
    h = np.stack([mu1, want["means"][8] + [6.0, 0, 0, 0], want["means"][8] + [0, 0.5, 0, 0],
                  mu1 + [0, 0, 0, 30.0]])
    z = torch.tensor([1, 8, 29, 1])
    batch = torch.tensor([0, 0, 0, 1])
    pooled = np.stack([h[:3].mean(0), h[3]])
    s = m.scores(torch.tensor(h), torch.tensor(pooled), z, batch)
    d = h[1] - want["means"][8]
    far_o = d @ np.linalg.inv(want["per"][8]) @ d / H
    d = h[3] - mu1
    far_h = d @ np.linalg.inv(want["per"][1]) @ d / H
    # the unseen element: its distance to the nearest seen element (O here)
    near = min((h[2] - want["means"][e]) @ np.linalg.inv(want["per"][e]) @ (h[2] - want["means"][e])
               for e in (1, 8)) / H
    d = h[2] - want["means"][8]
    assert near == pytest.approx(d @ np.linalg.inv(want["per"][8]) @ d / H)
    np.testing.assert_allclose(s["mahalanobis"]["atom"].numpy(), [0.0, far_o, near, far_h],
                               atol=1e-9, rtol=1e-8)
    assert far_o > 20 and far_h > 20  # far points score far above training atoms (~1)
    np.testing.assert_allclose(s["mahalanobis"]["structure"].numpy(),
                               [(far_o + near) / 3, far_h], rtol=1e-8)
    np.testing.assert_allclose(s["mahalanobis_max"]["structure"].numpy(), [far_o, far_h],
                               rtol=1e-8)
    tied = [(x - want["means"][e]) @ np.linalg.inv(want["pooled"]) @ (x - want["means"][e]) / H
            for x, e in ((h[1], 8), (h[3], 1))]
    np.testing.assert_allclose(s["mahalanobis_tied"]["atom"].numpy()[[1, 3]], tied, rtol=1e-8)
    near_tied = min((h[2] - want["means"][e]) @ np.linalg.inv(want["pooled"])
                    @ (h[2] - want["means"][e]) for e in (1, 8)) / H
    assert float(s["mahalanobis_tied"]["atom"][2]) == pytest.approx(near_tied, rel=1e-8)
    # LLPR: [f, 1]^T (F^T F / n + eps I)^-1 [f, 1], per structure and per atom
    cinv = np.linalg.inv(want["second"])
    fb = np.c_[pooled, np.ones(2)]
    np.testing.assert_allclose(s["llpr"]["structure"].numpy(),
                               np.einsum("bi,ij,bj->b", fb, cinv, fb), rtol=1e-6)
    hb = np.c_[h, np.ones(4)]
    np.testing.assert_allclose(s["llpr"]["atom"].numpy(), np.einsum("bi,ij,bj->b", hb, cinv, hb),
                               rtol=1e-6)


def test_training_atoms_score_about_one_on_average(features: dict) -> None:
    """d^2 / H averages ~1 over the data it was fitted on (chi^2_H / H, before shrinkage)."""
    m = _module(fit_state(_stats(features)))
    s = m.scores(torch.tensor(features["h"]), torch.tensor(features["pooled"]),
                 torch.tensor(features["z"]), torch.tensor(features["batch"]))
    assert 0.7 < float(s["mahalanobis"]["atom"].mean()) < 1.05
    assert 0.7 < float(s["mahalanobis_tied"]["atom"].mean()) < 1.05


def test_fit_needs_data_and_known_method(features: dict) -> None:
    stats = FeatureStatistics()
    with pytest.raises(ValueError, match="at least 2 structures"):
        fit_state(stats)
    with pytest.raises(ValueError, match="unknown epistemic method"):
        fit_state(_stats(features), method="knn")
    with pytest.raises(ValueError, match="NaN"):
        stats.add(torch.full((2, H), math.nan), torch.tensor([1, 1]), torch.zeros(1, H))
    with pytest.raises(ValueError, match="not fitted"):
        _ = EpistemicState().method


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.epistemic = EpistemicState()


def test_state_round_trips_through_a_state_dict(features: dict) -> None:
    head = _Head()
    head.epistemic.load(fit_state(_stats(features), method="llpr"))
    head.epistemic.set_alpha(0.25)
    saved = head.state_dict()
    assert "epistemic._extra_state" in saved
    other = _Head()
    other.load_state_dict(saved)  # strict
    assert other.epistemic.method == "llpr" and other.epistemic.alpha() == 0.25
    args = (torch.tensor(features["h"][:16]), torch.tensor(features["pooled"][:2]),
            torch.tensor(features["z"][:16]), torch.tensor(features["batch"][:16]))
    a, b = head.epistemic.scores(*args), other.epistemic.scores(*args)
    for m in METHODS:
        assert torch.equal(a[m]["structure"], b[m]["structure"])
        assert torch.equal(a[m]["atom"], b[m]["atom"])


def test_state_dict_without_the_state_loads_strictly_as_unfitted() -> None:
    """Checkpoints written before the epistemic state existed."""
    head = _Head()
    legacy = {k: v for k, v in head.state_dict().items() if "epistemic" not in k}
    fresh = _Head()
    fresh.load_state_dict(legacy, strict=True)
    assert not fresh.epistemic.fitted
    with pytest.raises(ValueError, match="unknown format"):
        fresh.load_state_dict({**legacy, "epistemic._extra_state": {"version": 99}})


def test_write_and_read_head_state_in_raw_and_ema_dicts(features: dict) -> None:
    state = fit_state(_stats(features))
    t = torch.tensor(1.0)
    sd = {"output_heads.energy.support.temperature": t,
          "output_heads.energy.logits_block.support.temperature": t,  # the shared support
          "output_heads.forces.support.temperature": t,
          "module.output_heads.energy.support.temperature": t}
    assert head_prefixes(sd, "energy") == ["output_heads.energy.", "module.output_heads.energy."]
    assert read_head_state(sd, "energy") is None
    assert write_head_state(sd, "energy", temperature_factor=0.5, epistemic=state) == 0.5
    for key, value in sd.items():
        if key.endswith("temperature"):
            assert float(value) == (1.0 if ".forces." in key else 0.5), key
    assert read_head_state(sd, "energy") is state
    write_head_state(sd, "energy", alpha={"mahalanobis": 0.1})
    assert read_head_state(sd, "energy")["alpha"]["mahalanobis"] == 0.1
    assert read_head_state(sd, "energy")["alpha"]["llpr"] == 1.0
    assert state["alpha"]["mahalanobis"] == 1.0  # the caller's dict is not mutated
    with pytest.raises(ValueError, match="no output head"):
        write_head_state(sd, "stress")
    with pytest.raises(ValueError, match="no fitted epistemic state"):
        write_head_state({"output_heads.e.support.temperature": t}, "e", alpha={"llpr": 1.0})


def test_categorical_energy_heads_picks_them_or_says_what_is_there() -> None:
    from fairchem_categorical.epistemic import categorical_energy_heads

    modules = {"energy": "CategoricalEnergyHead", "forces": "ForceMagnitudeHead"}
    assert categorical_energy_heads(modules, {"CategoricalEnergyHead"}) == ["energy"]
    with pytest.raises(ValueError) as err:
        categorical_energy_heads({"efs": "MLP_EFS_Head"}, {"CategoricalEnergyHead"},
                                 "m.pt", "calibrate")
    assert str(err.value).startswith("calibrate needs a categorical checkpoint")
    assert "m.pt has no categorical energy head (its heads: MLP_EFS_Head)" in str(err.value)
