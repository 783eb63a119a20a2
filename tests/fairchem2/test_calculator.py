"""The fairchem-core 2.x ASE calculator: a FAIRChemCalculator whose results equal predict's.

(Relaxations and MD with a trained model: tests/e2e/test_fairchem2_screening.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from fairchem.core.calculate.ase_calculator import FAIRChemCalculator
from fairchem.core.units.mlip_unit import load_predict_unit

from fairchem_categorical.data import read_frames
from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
from fairchem_categorical.fairchem2.predict import predict_atoms
from tests.reference import LEGACY, single_torch_thread  # noqa: F401

FOLDER = LEGACY / "fairchem2"
CONSERVING = FOLDER / "esen_categorical_conserving.pt"
DIRECT = FOLDER / "esen_categorical_direct.pt"


@pytest.fixture(scope="module")
def frames():
    return read_frames([FOLDER / "frames.extxyz"])


@pytest.fixture(scope="module")
def conserving():
    return CategoricalCalculator.from_model_checkpoint(CONSERVING, device="cpu")


@pytest.mark.parametrize("checkpoint", [CONSERVING, DIRECT], ids=["conserving", "direct"])
def test_results_equal_predict_one_structure_and_batched(checkpoint, frames):
    calc = CategoricalCalculator.from_model_checkpoint(checkpoint, device="cpu", seed=5)
    assert isinstance(calc, FAIRChemCalculator)
    atoms = frames[1].copy()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    (want,) = predict_atoms(checkpoint, [frames[1]], seed=5)
    assert energy == want.energy
    np.testing.assert_array_equal(calc.results["forces"], want.forces)
    assert calc.results["energy_uncertainty"] == pytest.approx(want.energy_std, rel=1e-12)
    assert calc.results["energy_low90"] == pytest.approx(want.energy_low90, rel=1e-12)
    assert calc.results["energy_high90"] == pytest.approx(want.energy_high90, rel=1e-12)
    if want.forces_std is not None:
        np.testing.assert_array_equal(calc.results["forces_uncertainty"], want.forces_std)
        assert calc.results["forces_uncertainty"].shape == (len(atoms),)
    else:
        assert "forces_uncertainty" not in calc.results
    assert atoms.info["energy_uncertainty"] == calc.results["energy_uncertainty"]
    assert "energy_uncertainty" in calc.implemented_properties
    assert calc.get_property("energy_std", atoms) == pytest.approx(want.energy_std, rel=1e-12)

    batched = calc.calculate_batch(frames, batch_size=2)
    preds = predict_atoms(checkpoint, frames, batch_size=2, seed=5)
    assert [r["energy"] for r in batched] == [p.energy for p in preds]
    assert [r["energy_std"] for r in batched] == pytest.approx([p.energy_std for p in preds])


def test_repeated_calls_do_not_recompute_and_give_the_same_numbers(conserving, frames):
    atoms = frames[0].copy()
    atoms.calc = conserving
    first = atoms.get_potential_energy()
    results = conserving.results
    assert atoms.get_potential_energy() == first
    assert conserving.results is results  # info gained keys, but no recalculation
    atoms.positions[-1] += 0.05
    assert atoms.get_potential_energy() != first


def test_plain_fairchem_predict_unit_gains_the_uncertainty(frames):
    unit = load_predict_unit(str(CONSERVING), inference_settings="batch", device="cpu")
    calc = CategoricalCalculator(unit)
    atoms = frames[0].copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    assert calc.results["energy_std"] > 0


def test_missing_property_is_refused(conserving, frames):
    atoms = frames[0].copy()
    atoms.calc = conserving
    with pytest.raises(PropertyNotImplementedError):
        atoms.calc.get_property("ood_score", atoms)


def test_structure_with_an_element_the_model_never_saw_is_marked(frames, caplog):
    """The legacy model was fitted on C, N, O, Pt, Au: a Cu slab is outside what it knows."""
    calc = CategoricalCalculator.from_model_checkpoint(CONSERVING, device="cpu")
    known = frames[2].copy()
    unknown = frames[2].copy()
    unknown.numbers = np.where(unknown.numbers == 79, 29, unknown.numbers)  # Au -> Cu
    with caplog.at_level("WARNING"):
        for atoms in (known, unknown, unknown.copy()):
            atoms.calc = calc
            atoms.get_potential_energy()
    assert "unseen_elements" not in known.info
    assert unknown.info["unseen_elements"] == "Cu"
    assert calc.results["unseen_elements"] == "Cu"
    assert sum("never saw in training: Cu" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(("cuda", "want"), [(True, "cuda"), (False, "cpu")])
def test_defaults_are_fairchems(cuda, want, monkeypatch) -> None:
    """No ``device``: CUDA when there is a GPU, as FAIRChemCalculator; seed 41 as fairchem's."""
    import inspect

    import torch

    from fairchem_categorical.fairchem2 import calculator as calc_module

    ours = inspect.signature(CategoricalCalculator.from_model_checkpoint).parameters
    theirs = inspect.signature(FAIRChemCalculator.from_model_checkpoint).parameters
    assert ours["seed"].default == theirs["seed"].default == 41
    assert ours["device"].default is theirs["device"].default is None

    asked = {}

    class Stop(Exception):
        pass

    def unit(path, device, **kwargs):  # noqa: ANN001, ANN003, ANN202
        asked.update(device=device, seed=kwargs["seed"])
        raise Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(calc_module, "CategoricalPredictUnit", unit)
    with pytest.raises(Stop):
        CategoricalCalculator.from_model_checkpoint(CONSERVING)
    assert asked == {"device": want, "seed": 41}
    with pytest.raises(Stop):
        calc_module.load_calculator(CONSERVING)
    assert asked == {"device": want, "seed": 41}


def test_predict_chooses_the_task_by_name_and_names_the_choices(frames) -> None:
    from fairchem_categorical.fairchem2.predict import load_unit, predict_unit

    unit = load_unit(CONSERVING)
    (own,) = unit.energy_task.datasets
    default = predict_unit(unit, frames[:2])
    chosen = predict_unit(unit, frames[:2], task=own)
    np.testing.assert_array_equal([p.energy for p in chosen], [p.energy for p in default])
    with pytest.raises(ValueError) as err:
        predict_unit(unit, frames[:2], task="omat")
    assert str(err.value) == (f"task 'omat': {CONSERVING.name} predicts energies for {own}; "
                              "choose one of them")
