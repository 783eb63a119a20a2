"""fit-uncertainty on the fairchem-core 1.10 line, on real (tiny, trained) checkpoints.

The same checks as the 2.x line: the fitted state goes into the trainer checkpoint, loads
back with the same numbers, leaves energies and forces alone, and scores an unseen element
and hot-rattled structures above in-distribution ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairchem_categorical.fairchem1 import uncertainty
from fairchem_categorical.fairchem1.predict import LoadedModel, predict_atoms, predict_loaded
from tests.reference import (
    LEGACY,
    assert_epistemic_outputs,
    epistemic_frames,
    single_torch_thread,  # noqa: F401
)

FOLDER = LEGACY / "fairchem1"


@pytest.fixture(scope="module")
def frames() -> dict[str, list]:
    return epistemic_frames()


@pytest.fixture(scope="module")
def fitted(frames, tmp_path_factory) -> dict[str, tuple]:
    out = {}
    for name in ("equiformer_v2_categorical", "esen_categorical_conserving"):
        state = uncertainty.fit(FOLDER / f"{name}.pt", frames["train"], batch_size=8)
        path = tmp_path_factory.mktemp("fit") / f"{name}.pt"
        uncertainty.write(FOLDER / f"{name}.pt", path, epistemic=state)
        out[name] = (state, path)
    return out


@pytest.mark.parametrize("name", ["equiformer_v2_categorical", "esen_categorical_conserving"])
def test_fitted_state_round_trips_and_leaves_energies_alone(name, fitted, frames) -> None:
    state, path = fitted[name]
    original = FOLDER / f"{name}.pt"
    assert uncertainty.read_state(original) is None
    assert uncertainty.read_state(str(original)) is None  # the CLI passes strings
    uncertainty.require_categorical(str(original), "calibrate")
    assert torch.equal(uncertainty.read_state(path)["precisions"], state["precisions"])
    test = frames["held_out"]
    from_file = predict_atoms(path, test)
    loaded = LoadedModel(original)
    loaded.energy_head.epistemic.load(state)
    in_memory = predict_loaded(loaded, test)
    before = predict_atoms(original, test)
    for p, q, b in zip(from_file, in_memory, before, strict=True):
        assert p.ood_score == q.ood_score and p.energy_uncertainty == q.energy_uncertainty
        assert np.array_equal(p.atom_ood_score, q.atom_ood_score)
        assert p.energy == b.energy and np.array_equal(p.forces, b.forces)
        assert np.isnan(b.ood_score) and b.atom_ood_score is None
    assert_epistemic_outputs(from_file, alpha=1.0)


def test_unseen_element_and_hot_rattles_score_above_in_distribution(fitted, frames) -> None:
    path = fitted["equiformer_v2_categorical"][1]
    score = {name: np.array([p.ood_score for p in predict_atoms(path, frames[name])])
             for name in ("held_out", "hot", "unseen_element")}
    assert score["unseen_element"].min() > score["held_out"].max()
    assert (score["hot"] > score["held_out"]).all()  # each structure against itself, rattled


def test_write_scales_the_temperature_and_the_epistemic_term(fitted, frames, tmp_path) -> None:
    out = tmp_path / "calibrated.pt"
    path = fitted["esen_categorical_conserving"][1]
    assert uncertainty.write(path, out, temperature_factor=2.0,
                             alpha={"mahalanobis_tied": 0.3}) == pytest.approx(2.0)
    assert uncertainty.read_state(out)["alpha"]["mahalanobis_tied"] == 0.3
    assert_epistemic_outputs(predict_atoms(out, frames["held_out"]), alpha=0.3)
