"""AdsorbML's success rate and the screening strategies on hand-made systems whose
answers are worked out by hand (no relaxations, no fairchem)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fairchem_categorical.report.adsorbml import (
    SystemOutcome,
    by_budget,
    by_coverage,
    calls_to_success,
    random_success,
    reliability,
    score,
    strategies,
    success,
    top_k,
)

NAN = math.nan


def systems() -> list[SystemOutcome]:
    # A: top-1 (config 0) misses, config 1 is the only one within 0.1 eV of -1.25
    a = SystemOutcome("A", [-1.0, -0.9, -0.5], [0.5, 0.3, 0.2],
                      {"rx": [-0.5, -1.2, -0.8], "sp": [-0.4, -1.0, -0.7]}, -1.25)
    # B: config 0 is anomalous for the model (never picked, although its reference is
    # lowest); config 2 is lower than the reference minimum, which counts as a success
    b = SystemOutcome("B", [NAN, -2.0, -1.5, -1.0], [0.0, 0.1, 0.6, 0.3],
                      {"rx": [-3.0, -1.0, -2.05, NAN], "sp": [-3.0, -1.0, -1.85, -1.95]},
                      -2.0)
    # C: no valid reference relaxation: not scored
    c = SystemOutcome("C", [-1.0, -1.1], [0.4, 0.6], {"rx": [NAN, NAN], "sp": [NAN, NAN]},
                      NAN)
    return [a, b, c]


def test_picks_of_each_strategy():
    a, b, _ = systems()
    assert top_k(a, 1).tolist() == [0]
    assert sorted(top_k(b, 2).tolist()) == [1, 2]  # the anomalous config 0 is skipped
    assert by_coverage(a, 0.5).tolist() == [0]
    assert sorted(by_coverage(b, 0.8).tolist()) == [2, 3]  # 0.6 + 0.3 >= 0.8
    assert by_budget(b, 1).tolist() == [2]


def test_top1_fails_top2_succeeds_and_lower_than_the_minimum_counts():
    a, b, _ = systems()
    assert not success(a, top_k(a, 1), "rx") and success(a, top_k(a, 2), "rx")
    assert not success(b, top_k(b, 1), "rx") and success(b, top_k(b, 2), "rx")
    assert success(b, [2], "rx")       # -2.05 < -2.0
    assert not success(b, [2], "sp")   # -1.85 > -2.0 + 0.1
    assert success(b, [3], "sp")       # -1.95 within 0.1 eV


def test_random_success_is_the_exact_expectation():
    a, b, _ = systems()
    assert random_success(a, 1, "rx") == pytest.approx(1 / 3)
    assert random_success(a, 2, "rx") == pytest.approx(2 / 3)  # 1 - C(2,2)/C(3,2)
    assert random_success(b, 3, "rx") == pytest.approx(1.0)
    # a Monte Carlo of the same draw agrees
    rng = np.random.default_rng(0)
    draws = [success(a, rng.choice(3, 2, replace=False), "rx") for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(2 / 3, abs=0.03)


def test_score_rates_and_calls_over_the_scored_systems():
    rows = {(r["strategy"], r["parameter"]): r
            for r in score(systems(), "rx", plan=strategies(budgets=(1,)))}
    assert rows["top-k", 1]["success"] == 0.0 and rows["top-k", 1]["calls"] == 1.0
    assert rows["top-k", 2]["success"] == 1.0 and rows["top-k", 2]["calls"] == 2.0
    assert rows["p_lowest coverage", 0.5]["success"] == 0.5   # A misses, B hits
    assert rows["p_lowest coverage", 0.5]["calls"] == 1.0
    assert rows["p_lowest coverage", 0.8]["success"] == 1.0
    assert rows["p_lowest budget", 1]["success"] == 0.5
    assert rows["random", 1]["success"] == pytest.approx(1 / 3)
    assert rows["random", 2]["success"] == pytest.approx(2 / 3)
    assert rows["top-k", 1]["systems"] == 2  # C has no reference minimum
    with pytest.raises(ValueError, match="variant"):
        score(systems(), "dft")


def test_calls_to_success_interpolates_between_strategies():
    assert calls_to_success([1, 2, 3], [0.0, 1.0, 1.0], 0.85) == pytest.approx(1.85)
    assert calls_to_success([2, 1, 3], [0.8, 0.6, 0.7], 0.7) == pytest.approx(1.5)
    assert calls_to_success([1, 2], [0.9, 0.95], 0.85) == 1.0
    assert math.isnan(calls_to_success([1, 2], [0.2, 0.5], 0.85))


def test_reliability_bins_predicted_against_observed():
    rows = reliability(systems(), "rx", bins=2)
    assert [r["count"] for r in rows] == [4, 2]
    assert rows[0]["predicted"] == pytest.approx(0.225)   # 0.3 0.2 0.1 0.3
    assert rows[0]["observed"] == pytest.approx(0.25)     # config A1 is A's lowest
    assert rows[1]["predicted"] == pytest.approx(0.55)    # 0.5 (miss) and 0.6 (hit)
    assert rows[1]["observed"] == pytest.approx(0.5)


def test_json_round_trip_keeps_nans():
    for o in systems():
        back = SystemOutcome.from_json(o.to_json())
        np.testing.assert_array_equal(back.predicted, o.predicted)
        np.testing.assert_array_equal(back.reference["rx"], o.reference["rx"])
        assert back.reference_min == o.reference_min or math.isnan(o.reference_min)
