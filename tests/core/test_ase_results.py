"""Calculator results from a predict_batch pair (both lines' calculators share this)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairchem_categorical.ase_results import copy_to_info, implemented, structure_results


def _pair(with_epistemic: bool):
    out = {"energy": torch.tensor([1.5, -2.0], dtype=torch.float64),
           "forces": torch.arange(15, dtype=torch.float32).reshape(5, 3),
           "stress": torch.arange(18, dtype=torch.float32).reshape(2, 9)}
    extras = {"energy_std": torch.tensor([0.1, 0.2]),
              "energy_low90": torch.tensor([1.3, -2.4]),
              "energy_high90": torch.tensor([1.7, -1.6]),
              "forces_std": torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05]),
              "energy_probs": torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.25, 0.75]]),
              "energy_bin_centers": torch.tensor([[1.0, 2, 3, 4], [-5, -4, -3, -2]]),
              "energy_entropy": torch.tensor([0.7, 0.8])}  # not a calculator result
    if with_epistemic:
        extras.update(energy_uncertainty=torch.tensor([0.3, 0.4]),
                      ood_score=torch.tensor([2.0, 5.0]),
                      atom_ood_score=torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    return out, extras


def test_results_split_per_structure_with_histogram_std_as_fallback():
    out, extras = _pair(with_epistemic=False)
    first, second = structure_results(out, extras, [2, 3])
    assert first["energy"] == first["free_energy"] == 1.5 and second["energy"] == -2.0
    np.testing.assert_array_equal(second["forces"], np.arange(6, 15).reshape(3, 3))
    # Voigt order xx, yy, zz, yz, xz, xy of the 3x3 [[9,10,11],[12,13,14],[15,16,17]]
    np.testing.assert_array_equal(second["stress"], [9, 13, 17, 14, 11, 10])
    assert first["energy_uncertainty"] == pytest.approx(0.1)  # energy_std until issue 12
    assert second["energy_std"] == pytest.approx(0.2)
    assert (second["energy_low90"], second["energy_high90"]) == pytest.approx((-2.4, -1.6))
    np.testing.assert_allclose(second["forces_uncertainty"], [0.03, 0.04, 0.05])
    assert "ood_score" not in first and "atom_ood_score" not in first
    np.testing.assert_array_equal(second["energy_probs"], [0, 0, 0.25, 0.75])
    np.testing.assert_array_equal(second["energy_bin_centers"], [-5, -4, -3, -2])
    assert "energy_entropy" not in first


def test_designated_uncertainty_and_ood_scores_are_picked_up_when_present():
    out, extras = _pair(with_epistemic=True)
    first, second = structure_results(out, extras, [2, 3])
    assert second["energy_uncertainty"] == pytest.approx(0.4)
    assert second["energy_std"] == pytest.approx(0.2)
    assert first["ood_score"] == 2.0
    np.testing.assert_array_equal(second["atom_ood_score"], [3.0, 4.0, 5.0])


def test_scalar_model_gives_only_energy_and_forces():
    out = {"energy": torch.tensor([0.5]), "forces": torch.zeros(2, 3)}
    (res,) = structure_results(out, {}, torch.tensor([2]))
    assert set(res) == {"energy", "free_energy", "forces"}
    assert implemented(["energy", "free_energy", "forces"], res) == [
        "energy", "free_energy", "forces"]


def test_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 energies for 1 structures"):
        structure_results({"energy": torch.zeros(2)}, {}, [3])


def test_scalars_go_to_every_info_given():
    out, extras = _pair(with_epistemic=True)
    res = structure_results(out, extras, [2, 3])[0]
    a, b = {"sid": 7}, {}
    copy_to_info(res, a, b)
    assert a == {"sid": 7, "energy_uncertainty": pytest.approx(0.3),
                 "energy_std": pytest.approx(0.1), "energy_low90": pytest.approx(1.3),
                 "energy_high90": pytest.approx(1.7), "ood_score": 2.0}
    assert b == {k: v for k, v in a.items() if k != "sid"}
    assert implemented(["energy"], res)[:3] == ["energy", "energy_uncertainty", "energy_std"]


def test_a_non_finite_prediction_is_an_error_naming_it_not_an_assert():
    out, extras = _pair(with_epistemic=False)
    out["energy"] = torch.tensor([1.5, float("nan")], dtype=torch.float64)
    extras["energy_std"] = torch.tensor([0.1, float("inf")])
    with pytest.raises(ValueError) as err:
        structure_results(out, extras, [2, 3])
    assert str(err.value) == ("structure 1 of the batch (3 atoms): the model predicted "
                              "non-finite energy, free_energy, energy_uncertainty, "
                              "energy_std (NaN or inf)")
