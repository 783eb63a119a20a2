"""Screening math and plumbing without fairchem: P(lowest), the DFT recommendation, a
whole screening with EMT and a hand-made placer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from scipy.stats import norm

from fairchem_categorical.screening import (
    AdsorbateSpec,
    EnergyDistribution,
    ScreeningTools,
    adsorbate_spec,
    build_slab,
    prepare_slab,
    probability_lowest,
    recommend,
    screen_system,
    write_csv,
)


def test_two_gaussians_match_the_closed_form():
    a, b = EnergyDistribution(-1.0, extra_std=0.3), EnergyDistribution(-0.8, extra_std=0.4)
    p = probability_lowest([a, b])
    want = norm.cdf(0.2 / math.hypot(0.3, 0.4))  # P(A < B)
    assert p[0] == pytest.approx(want, abs=1e-4)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_identical_histograms_share_equally_and_random_ones_sum_to_one():
    centers = np.linspace(-2, 2, 32)
    probs = np.exp(-0.5 * (centers / 0.4) ** 2)
    probs /= probs.sum()
    same = [EnergyDistribution(0.0, centers, probs) for _ in range(4)]
    np.testing.assert_allclose(probability_lowest(same), 0.25, atol=1e-6)
    rng = np.random.default_rng(0)
    dists = []
    for shift in rng.normal(0, 0.5, 7):
        p = rng.dirichlet(np.ones(32))
        dists.append(EnergyDistribution(float((p * (centers + shift)).sum()), centers + shift,
                                        p, extra_std=float(rng.uniform(0, 0.2))))
    p = probability_lowest(dists)
    assert p.sum() == pytest.approx(1.0, abs=1e-12) and (p >= 0).all()


def test_histogram_monte_carlo_agreement():
    """P(lowest) of three histograms equals a Monte Carlo estimate from the same model
    (bins smoothed to N(c_k, w^2/12), as the module docstring states)."""
    rng = np.random.default_rng(1)
    centers = np.linspace(-1, 1, 16)
    w = centers[1] - centers[0]
    dists = [EnergyDistribution(0.0, centers + s, rng.dirichlet(np.ones(16) * 2))
             for s in (0.0, 0.1, 0.3)]
    n = 400_000
    draws = np.stack([d.centers[rng.choice(16, n, p=d.probs)] + rng.normal(0, w / 12 ** 0.5, n)
                      for d in dists])
    mc = np.bincount(draws.argmin(0), minlength=3) / n
    np.testing.assert_allclose(probability_lowest(dists), mc, atol=4e-3)


def test_no_distributions_put_everything_on_the_lowest():
    p = probability_lowest([EnergyDistribution(e) for e in (0.3, -0.2, 0.1)])
    np.testing.assert_array_equal(p, [0, 1, 0])


def test_recommendation_by_coverage_and_by_budget():
    p = np.array([0.05, 0.5, 0.3, 0.15, 0.0])
    np.testing.assert_array_equal(recommend(p, coverage=0.8), [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(recommend(p, coverage=0.9), [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(recommend(p, coverage=None, budget=1), [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(recommend(p, coverage=None, budget=9), [1, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="exactly one"):
        recommend(p, coverage=0.9, budget=2)


def test_slab_inputs_and_adsorbate_names():
    slab = build_slab("Cu/fcc111")
    assert len(slab) == 36 and (slab.get_tags() == 1).sum() == 9 and slab.constraints
    bare = fcc111("Pt", (2, 2, 3), vacuum=6.0)
    bare.set_tags(0)
    prepared = prepare_slab(bare)
    assert (prepared.get_tags() == 1).sum() == 4  # the top layer
    assert len(prepared.constraints[0].index) == 4  # the bottom layer
    assert adsorbate_spec("CO").binding_indices == [0]
    db = {"*OH": (Atoms("OH", positions=[(0, 0, 0), (0, 0, 0.97)]), [0])}
    assert adsorbate_spec("OH", db).name == "*OH"
    with pytest.raises(ValueError, match="unknown adsorbate 'Xyz'"):
        adsorbate_spec("Xyz", db)
    with pytest.raises(ValueError, match="METAL/FACET"):
        build_slab("Cu-fcc111/x")


def _placer(slab: Atoms, ads: AdsorbateSpec, n: int, mode: str, seed: int) -> list[Atoms]:
    out = []
    for site in ("ontop", "fcc", "hcp", "bridge")[:n]:
        a = slab.copy()
        add_adsorbate(a, ads.atoms, 1.8, site)
        a.set_tags([*slab.get_tags(), *[2] * len(ads.atoms)])
        out.append(a)
    return out


def test_screen_with_emt_writes_ranked_rows(tmp_path):
    slab = prepare_slab(fcc111("Cu", (2, 2, 3), vacuum=7.0))
    tools = ScreeningTools(EMT(), _placer, lambda i, f, s: [])
    res = screen_system("Cu111+O", slab, adsorbate_spec("O"), tools, num_placements=3,
                        fmax=0.05, steps=100, references={"O": -1.0})
    assert len(res.configurations) == 3
    e_slab = res.slab.results["energy"]
    for c in res.configurations:
        assert c.adsorption_energy == pytest.approx(c.relaxed.results["energy"] - e_slab + 1.0)
        assert c.relaxed.converged and c.relaxed.fmax < 0.05
    # EMT gives no distribution: all probability on the lowest; it is the one sent
    best = res.best
    assert best.p_lowest == 1.0 and best.send_to_dft and best.adsorbml_rank == 1
    text = write_csv([res], tmp_path / "screen.csv").read_text().splitlines()
    assert text[0].startswith("system,configuration,adsorption_energy,")
    assert len(text) == 4 and text[1].split(",")[1] == str(best.configuration)
