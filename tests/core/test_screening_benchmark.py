"""The screening benchmark's harness with EMT as both model and reference (no fairchem-core):
a perfect model's top-1 and P(lowest) pick the reference minimum on the first call."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase.build import fcc111
from ase.calculators.emt import EMT

from benchmarks.screening import (
    independent_p_lowest,
    load_p_lowest,
    mixed_placer,
    outcome,
    reference_energies,
)
from fairchem_categorical import ocdata
from fairchem_categorical.report import adsorbml
from fairchem_categorical.screening import (
    ScreeningTools,
    adsorbate_spec,
    prepare_slab,
    screen_system,
)


@pytest.fixture(scope="module")
def perfect():
    slab = prepare_slab(fcc111("Cu", size=(2, 2, 3), vacuum=6.0))
    tools = ScreeningTools(EMT(), mixed_placer(ocdata.place), ocdata.detect_anomaly)
    spec = adsorbate_spec("*O", ocdata.adsorbate_database())
    result = screen_system("Cu+O", slab, spec, tools, num_placements=4, steps=60, seed=3)
    ref = reference_energies(result, EMT(), ocdata.detect_anomaly, 0.05, 60)
    return result, ref


def test_mixed_placer_gives_heuristic_and_random_placements(perfect):
    result, _ = perfect
    assert len(result.configurations) == 4
    starts = [c.initial.positions[c.initial.get_tags() == 2][0] for c in result.configurations]
    assert len({tuple(np.round(p, 3)) for p in starts}) == 4  # four different placements


def test_a_perfect_model_succeeds_with_one_call(perfect):
    result, ref = perfect
    o = outcome(result, ref, independent_p_lowest)
    valid = o.valid
    assert len(valid) >= 2
    # the model is the reference: its single points are its own energies
    np.testing.assert_allclose(np.array(ref["sp"])[valid], o.predicted[valid], atol=1e-6)
    assert o.reference_min == pytest.approx(np.nanmin(o.predicted), abs=1e-3)
    # no uncertainty in EMT's results: P(lowest) is all on the lowest prediction
    assert o.p_lowest[int(np.nanargmin(o.predicted))] == 1.0 and o.p_lowest.sum() == 1.0
    rows = {(r["strategy"], r["parameter"]): r for v in adsorbml.VARIANTS
            for r in adsorbml.score([o], v) if r["variant"] == v and v == "rx"}
    assert rows["top-k", 1]["success"] == 1.0 and rows["top-k", 1]["calls"] == 1.0
    assert rows["p_lowest coverage", 0.9]["calls"] == 1.0
    assert adsorbml.success(o, adsorbml.top_k(o, 1), "sp")
    assert ref["force_calls"] > len(result.configurations)


def test_p_lowest_is_swappable():
    assert load_p_lowest(None) is independent_p_lowest
    assert load_p_lowest("math:fsum") is math.fsum
