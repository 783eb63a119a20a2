"""Active learning's whole-curve measures and its diversity-aware batches, on curves and
scores whose answers are worked out by hand (no fairchem)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fairchem_categorical.active import (
    RoundLog,
    calls_at_error,
    calls_saved,
    calls_saved_curve,
    diverse_order,
    learning_curve_area,
    per_system_order,
    select,
    structure_features,
    system_key,
)
from tests.reference import small_frames

CALLS = [0, 8, 16, 24]


def curve(*maes: float) -> list[RoundLog]:
    return [RoundLog(i, c, 10 + c, m, 0.0, 0.0) for i, (c, m) in enumerate(zip(CALLS, maes,
                                                                              strict=True))]


def test_learning_curve_area_is_the_mean_error_over_the_budget():
    assert learning_curve_area(CALLS, [10, 8, 6, 4]) == pytest.approx(7.0)  # 168 / 24
    assert learning_curve_area([0, 10, 30], [4, 2, 2]) == pytest.approx(70 / 30)
    assert learning_curve_area([0], [5.0]) == 5.0


def test_calls_at_error_interpolates_the_best_so_far_curve():
    got = calls_at_error(CALLS, [10, 8, 9, 4], np.array([10, 9, 8, 6, 3]))
    # 9 is first reached half way to 8 calls; the rise to 9 at 16 calls is ignored (the
    # best so far stays 8), so 6 lies half way from (16 calls, 8) to (24, 4)
    np.testing.assert_allclose(got[:4], [0, 4, 8, 16 + 8 * 2 / 4])
    assert math.isnan(got[4])


def test_calls_saved_on_the_whole_curve():
    fast, slow = curve(10, 8, 6, 4), curve(10, 9, 8, 7)
    # at error e in [7, 10]: fast needs 4 (10 - e) calls, slow 8 (10 - e): mean gap 4 x 1.5
    assert calls_saved_curve(fast, slow) == pytest.approx(6.0)
    assert calls_saved_curve(slow, fast) == pytest.approx(-6.0)
    assert calls_saved_curve(fast, fast) == pytest.approx(0.0)


def test_a_last_round_dip_does_not_decide_the_curve_measure():
    """Ours is slower all along and dips below theirs in the last round: the final-round
    measure says ours saved calls, the whole curve says it cost 7.93 calls (by hand: over
    e in [4, 10] theirs needs 48 calls x eV in all, ours 95.61, (48 - 95.61) / 6)."""
    ours, theirs = curve(10, 9, 8, 3.9), curve(10, 6, 5, 4)
    assert calls_saved(ours, theirs) == pytest.approx(0.195, abs=1e-3)
    assert calls_saved_curve(ours, theirs) == pytest.approx((48 - (64 + 16 + 64 / 4.1)) / 6,
                                                            abs=1e-3)


def test_curves_with_no_common_error_give_nan():
    low = [RoundLog(0, 0, 10, 2.0, 0, 0), RoundLog(1, 8, 18, 1.0, 0, 0)]
    high = [RoundLog(0, 0, 10, 6.0, 0, 0), RoundLog(1, 8, 18, 5.0, 0, 0)]
    assert math.isnan(calls_saved_curve(low, high))


def test_per_system_takes_each_systems_best_first():
    scores = np.array([0.9, 0.8, 0.1, 0.5, 0.4])
    systems = ["a", "a", "b", "c", "c"]
    assert per_system_order(scores, systems, 3).tolist() == [0, 3, 2]  # top-3: 0, 1, 3
    assert per_system_order(scores, systems, 5).tolist() == [0, 3, 2, 1, 4]


def test_diverse_trades_uncertainty_for_distance():
    x = np.array([[0.0], [0.1], [5.0]])
    scores = np.array([1.0, 0.9, 0.5])
    # far from the labelled point at 10: 1 x 10 wins; then 0.5 x 5 beats 0.9 x 0.1
    assert diverse_order(scores, x, np.array([[10.0]]), 2).tolist() == [0, 2]
    assert diverse_order(scores, x, np.zeros((0, 1)), 2).tolist() == [0, 2]
    # a candidate already labelled (distance 0) waits until nothing else is left
    assert diverse_order(scores, x, np.array([[0.0]]), 3).tolist() == [2, 1, 0]


def test_select_diverse_and_per_system_on_frames():
    frames = small_frames(n_systems=2, frames_per_system=3)
    sids = [system_key(a) for a in frames]
    assert len(set(sids)) == 2
    # the uncertainty favours system 0's frames: plain top-2 takes two of them
    preds = [{"energy": 0.0, "energy_uncertainty": (3.0 if s == sids[0] else 1.0) * len(a)
              + 0.01 * i} for i, (a, s) in enumerate(zip(frames, sids, strict=True))]
    rng = np.random.default_rng(0)
    top = select(preds, frames, 2, "uncertainty", rng)
    assert {sids[i] for i in top} == {sids[0]}
    per = select(preds, frames, 2, "per_system", rng)
    assert {sids[i] for i in per} == set(sids)
    div = select(preds, frames, 2, "diverse", rng, labelled=frames[:1])
    assert len(set(div.tolist())) == 2
    f = structure_features(frames[0])
    assert f.shape == (8,) and np.isfinite(f).all() and f[6] > 0  # adsorbate-slab distance


def test_benchmark_summary_reports_the_area_and_the_whole_curve_saving(tmp_path):
    """Two seeds of known curves through the benchmark's summary: areas 7.00 and 8.50
    meV/atom, and +6.0 calls saved against random on both seeds."""
    import json

    from benchmarks.active_learning import summarize

    fast, slow = curve(0.010, 0.008, 0.006, 0.004), curve(0.010, 0.009, 0.008, 0.007)
    folders = []
    for seed in (0, 1):
        folders.append(tmp_path / f"seed{seed}")
        folders[-1].mkdir()
        (folders[-1] / "active_learning.json").write_text(json.dumps(
            {"uncertainty": [e.row() for e in fast], "random": [e.row() for e in slow]}))
    summarize(folders, tmp_path / "out")
    text = (tmp_path / "out" / "active_learning_seeds.md").read_text()
    assert "| 2 | 7.00 ± 0.00 | 7.00 7.00 | -1.50 ± 0.00 |" in text
    assert "| 2 | 8.50 ± 0.00 | 8.50 8.50 | - |" in text
    assert "| +6.0 +6.0 | +6.0 ± 0.0 |" in text
    assert (tmp_path / "out" / "active_learning_seeds.png").is_file()


def test_benchmark_summary_without_a_random_run(tmp_path):
    import json

    from benchmarks.active_learning import summarize

    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "active_learning.json").write_text(json.dumps(
        {"diverse": [e.row() for e in curve(0.010, 0.008, 0.006, 0.004)]}))
    summarize([tmp_path / "seed0"], tmp_path / "out")
    assert "| uncertainty x distance | 1 | 7.00 ± 0.00 | 7.00 | - |" in (
        tmp_path / "out" / "active_learning_seeds.md").read_text()
