"""The active-learning loop with a stand-in learner and EMT as the reference (no fairchem)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT

from fairchem_categorical.active import (
    RoundLog,
    calls_saved,
    calls_to_reach,
    heldout_scores,
    run_active_learning,
    select,
)
from fairchem_categorical.bins import fit_element_references
from tests.reference import small_frames


class CompositionLearner:
    """Energy = per-element references fitted on the training set; uncertainty shrinks
    with the number of training frames of the same composition."""

    def __init__(self) -> None:
        self.fits: list[int] = []

    def fit(self, frames, round_index):
        self.fits.append(len(frames))
        self.refs = fit_element_references([a.numbers for a in frames],
                                           np.array([a.get_potential_energy() for a in frames]))
        self.seen = [a.get_chemical_formula() for a in frames]

    def predict(self, frames):
        return [{"energy": float(self.refs[a.numbers].sum()), "forces": np.zeros((len(a), 3)),
                 "energy_uncertainty": len(a) / (1 + self.seen.count(a.get_chemical_formula()))}
                for a in frames]


def test_one_round_labels_exactly_the_most_uncertain():
    frames = small_frames(n_systems=4, frames_per_system=3)
    by_system = [[f for f in frames if f.info["sid"] == s] for s in range(4)]
    train, heldout = by_system[0][:2], by_system[3]
    pool = [f.copy() for f in by_system[0][2:] + by_system[1] + by_system[2]]
    truth = [f.get_potential_energy() for f in by_system[0][2:] + by_system[1] + by_system[2]]
    for a in pool:
        a.calc = None
    learner = CompositionLearner()
    log, labelled = run_active_learning(learner, train, pool, heldout, EMT(), rounds=1,
                                        per_round=2, strategy="uncertainty")
    # pool item 0 shares the training composition (lower uncertainty): never chosen first
    assert 0 not in log[0].selected and len(log[0].selected) == 2
    assert len(labelled) == 4 and learner.fits == [2, 4]
    for atoms, i in zip(labelled[2:], log[0].selected, strict=True):
        np.testing.assert_array_equal(atoms.positions, pool[i].positions)
        assert atoms.get_potential_energy() == pytest.approx(truth[i])  # EMT labels
    assert [e.reference_calls for e in log] == [0, 2]
    preds = learner.predict(heldout)
    mae = np.mean([abs(p["energy"] - a.get_potential_energy()) / len(a)
                   for p, a in zip(preds, heldout, strict=True)])
    assert log[1].heldout_energy_mae_per_atom == pytest.approx(mae)


def test_random_selection_is_seeded_and_uncertainty_needs_uncertainty():
    frames = small_frames(n_systems=2, frames_per_system=3)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    preds = [{"energy": 0.0} for _ in frames]
    np.testing.assert_array_equal(select(preds, frames, 3, "random", rng_a),
                                  select(preds, frames, 3, "random", rng_b))
    with pytest.raises(ValueError, match="no energy_uncertainty"):
        select(preds, frames, 2, "uncertainty", rng_a)
    with pytest.raises(ValueError, match="unknown strategy"):
        select(preds, frames, 2, "greedy", rng_a)


def test_heldout_scores_by_hand():
    frames = small_frames(n_systems=2, frames_per_system=1)
    preds = [{"energy": a.get_potential_energy() + 0.1 * len(a) * (i + 1),
              "energy_uncertainty": float(i + 1) * len(a)} for i, a in enumerate(frames)]
    mae, fmae, rho = heldout_scores(preds, frames)
    assert mae == pytest.approx(0.15) and np.isnan(fmae) and np.isnan(rho)  # 2 points: no rho


def test_calls_to_reach_interpolates():
    log = [RoundLog(0, 0, 4, 0.010, 0, 0), RoundLog(1, 8, 12, 0.006, 0, 0),
           RoundLog(2, 16, 20, 0.004, 0, 0)]
    assert calls_to_reach(log, 0.008) == pytest.approx(4.0)
    assert calls_to_reach(log, 0.005) == pytest.approx(12.0)
    assert calls_to_reach(log, 0.02) == 0.0
    assert np.isnan(calls_to_reach(log, 0.001))


def test_calls_saved_is_signed_and_symmetric():
    def log(*maes):
        return [RoundLog(i, 8 * i, 10 + 8 * i, m, 0, 0) for i, m in enumerate(maes)]

    fast, slow = log(0.010, 0.006, 0.004), log(0.010, 0.008, 0.006)
    assert calls_saved(fast, slow) == pytest.approx(8.0)  # reached 0.006 after 8 of 16
    assert calls_saved(slow, fast) == pytest.approx(-8.0)  # never reached 0.004
    assert calls_saved(fast, fast) == pytest.approx(0.0)

