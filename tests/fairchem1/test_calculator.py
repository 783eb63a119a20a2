"""The fairchem-core 1.10 ASE calculator: OCPCalculator's path, results equal predict's."""

from __future__ import annotations

import numpy as np
import pytest
from fairchem.core.common.relaxation.ase_utils import OCPCalculator

from fairchem_categorical.data import read_frames
from fairchem_categorical.fairchem1.calculator import CategoricalCalculator
from fairchem_categorical.fairchem1.predict import predict_atoms
from tests.reference import LEGACY, single_torch_thread  # noqa: F401

FOLDER = LEGACY / "fairchem1"


@pytest.fixture(scope="module")
def frames():
    return read_frames([FOLDER / "frames.extxyz"])


@pytest.mark.parametrize("name", ["equiformer_v2_categorical", "esen_categorical_conserving"])
def test_results_equal_predict_one_structure_and_batched(name, frames):
    checkpoint = FOLDER / f"{name}.pt"
    calc = CategoricalCalculator(checkpoint_path=checkpoint, cpu=True, seed=3)
    assert isinstance(calc, OCPCalculator)
    atoms = frames[1].copy()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    (want,) = predict_atoms(checkpoint, [frames[1]], seed=3)  # EMA weights, as predict uses
    assert energy == want.energy
    np.testing.assert_array_equal(calc.results["forces"], want.forces)
    assert calc.results["energy_uncertainty"] == pytest.approx(want.energy_std, rel=1e-12)
    assert (calc.results["energy_low90"], calc.results["energy_high90"]) == pytest.approx(
        (want.energy_low90, want.energy_high90), rel=1e-12)
    if want.forces_std is not None:
        np.testing.assert_array_equal(calc.results["forces_uncertainty"], want.forces_std)
    else:
        assert "forces_uncertainty" not in calc.results
    assert atoms.info["energy_std"] == calc.results["energy_std"]
    assert "energy_uncertainty" in calc.implemented_properties

    batched = calc.calculate_batch(frames, batch_size=2)
    preds = predict_atoms(checkpoint, frames, batch_size=2, seed=3)
    assert [r["energy"] for r in batched] == [p.energy for p in preds]
    for r, p in zip(batched, preds, strict=True):
        np.testing.assert_array_equal(r["forces"], p.forces)


def test_structure_with_an_element_the_model_never_saw_is_marked(frames):
    """The legacy model was fitted on C, N, O, Pt, Au: a Cu slab is outside what it knows."""
    calc = CategoricalCalculator(checkpoint_path=FOLDER / "esen_categorical_conserving.pt",
                                 cpu=True)
    unknown = frames[2].copy()
    unknown.numbers = np.where(unknown.numbers == 79, 29, unknown.numbers)  # Au -> Cu
    results = calc.calculate_batch([frames[2], unknown])
    assert "unseen_elements" not in results[0]
    assert results[1]["unseen_elements"] == "Cu"
