"""A shallow ensemble (K histogram output layers on one eSEN backbone) on the 2.x line.

Built from the shipped conserving config with ``num_members``, through fairchem's predict
unit: the members' mixture is what predict writes, fit-uncertainty and calibrate fit the
predictive distribution's scales, and metrics from the written files equal metrics from
the predictions in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import write

from fairchem_categorical.app.jobs import fit_uncertainty
from fairchem_categorical.fairchem2 import uncertainty
from fairchem_categorical.fairchem2.heads import CategoricalEnergyHead
from fairchem_categorical.fairchem2.predict import load_unit, predict_atoms
from fairchem_categorical.predictions import (
    as_columns,
    load_predictions,
    predictive_from_files,
    write_predictions,
)
from fairchem_categorical.report.metrics import evaluate_predictions
from tests.fairchem2.helpers import config_checkpoint
from tests.reference import epistemic_frames, single_torch_thread  # noqa: F401

MEMBERS = 3


@pytest.fixture(scope="module")
def frames() -> dict[str, list]:
    return epistemic_frames()


@pytest.fixture(scope="module")
def ensemble_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shallow") / "k3.pt"
    config_checkpoint("esen_categorical_conserving.yaml", path,
                      overrides=[f"+heads.energy.num_members={MEMBERS}"])
    return path


@pytest.fixture(scope="module")
def calibrated(ensemble_ckpt, frames, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("calibrated")
    write(root / "train.extxyz", frames["train"])
    write(root / "val.extxyz", frames["held_out"])
    out = root / "fitted.pt"
    result = fit_uncertainty(ensemble_ckpt, [root / "train.extxyz"], [root / "val.extxyz"],
                             out)
    return out, result


def test_members_are_the_heads_outputs_and_energy_is_their_mean(ensemble_ckpt, frames) -> None:
    unit = load_unit(ensemble_ckpt)
    head = unit.head(CategoricalEnergyHead)
    assert head.num_members == MEMBERS
    preds = predict_atoms(ensemble_ckpt, frames["held_out"][:6])
    for p in preds:
        members = p.energy_member_probs
        assert members.shape == (MEMBERS, p.energy_probs.shape[-1])
        np.testing.assert_allclose(members.mean(0), p.energy_probs, rtol=1e-6, atol=1e-9)
        means = members @ p.energy_bin_centers
        # the decoded energy (with the references) is the mixture's mean
        assert p.energy == pytest.approx(means.mean(), rel=1e-6, abs=1e-5)
        assert p.energy_disagreement == pytest.approx(means.std(), rel=1e-4, abs=1e-7)
        assert p.energy_disagreement > 0  # randomly initialised members differ
        assert np.isfinite(p.forces).all()


def test_calibrate_fits_the_predictive_scales_and_files_rebuild_it(calibrated,
                                                                    frames) -> None:
    path, result = calibrated
    state = uncertainty.read_state(path)
    method = state["method"]
    stored = state["predictive"][method]
    assert stored["temperature"] == pytest.approx(result["predictive_temperature"])
    assert stored["disagreement"] == pytest.approx(result["disagreement"])
    # every method carries its own scales, not only the designated one
    assert set(state["predictive"]) == set(state["alpha"])
    preds = predict_atoms(path, frames["held_out"])
    for p in preds:
        assert np.isfinite(p.energy_uncertainty) and p.energy_kernel_std > 0
        assert p.energy_low90 < p.energy < p.energy_high90
    cols, arrays = as_columns(preds)
    dist = predictive_from_files(cols, arrays)
    np.testing.assert_allclose(dist.std().numpy(), cols["energy_uncertainty"], rtol=1e-6)
    lo, hi = dist.interval(0.9)
    np.testing.assert_allclose(lo.numpy(), cols["energy_low90"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(hi.numpy(), cols["energy_high90"], rtol=0, atol=1e-6)


def test_metrics_from_files_equal_metrics_in_memory(calibrated, frames, tmp_path) -> None:
    preds = predict_atoms(calibrated[0], frames["held_out"])
    in_memory = evaluate_predictions(*as_columns(preds))
    csv, _ = write_predictions(preds, tmp_path / "preds.csv")
    from_files = evaluate_predictions(*load_predictions(csv))
    for key in ("energy_nll_uncertainty", "energy_crps_uncertainty",
                "miscalibration_area_uncertainty", "energy_coverage90_uncertainty",
                "spearman_energy_disagreement_per_atom"):
        assert np.isfinite(in_memory[key]), key
        assert from_files[key] == pytest.approx(in_memory[key], rel=1e-9, abs=1e-12), key


def test_a_one_member_checkpoint_loads_into_member_zero(ensemble_ckpt, tmp_path) -> None:
    """The single head's parameter names are member 0's: its weights are a K=1 model's."""
    ckpt = torch.load(ensemble_ckpt, map_location="cpu", weights_only=False)
    keys = [k for k in ckpt.model_state_dict if ".members." in k]
    assert keys and all(k.startswith("output_heads.energy.members.") for k in keys)
    assert "output_heads.energy.logits_block.residual.weight" in ckpt.model_state_dict


def test_member_forces_give_a_per_atom_force_uncertainty(ensemble_ckpt, frames) -> None:
    """forces_std = sqrt(mean_m |F_m - mean F|^2), each member's forces -dE_m/dx: checked
    against central differences of the members' energies, and through the calculator."""
    from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
    from fairchem_categorical.fairchem2.predict import predict_unit

    atoms = frames["held_out"][0]
    unit = load_unit(ensemble_ckpt)
    assert predict_unit(unit, [atoms])[0].forces_std is None  # off unless asked for
    unit.head(CategoricalEnergyHead).member_forces = True
    pred = predict_unit(unit, [atoms])[0]
    assert pred.forces_std.shape == (len(atoms),) and (pred.forces_std > 0).all()
    # central differences of each member's energy for the atom with the largest spread
    i, h = int(np.argmax(pred.forces_std)), 1e-3
    shifted = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            copy = atoms.copy()
            copy.positions[i, axis] += sign * h
            shifted.append(copy)
    member_e = np.array([p.energy_member_probs @ p.energy_bin_centers
                         for p in predict_unit(unit, shifted)])  # (6, M)
    forces = -(member_e[0::2] - member_e[1::2]) / (2 * h)  # (3, M)
    spread = np.sqrt(((forces - forces.mean(1, keepdims=True)) ** 2).sum(0).mean())
    assert pred.forces_std[i] == pytest.approx(spread, rel=0.05)
    calc = CategoricalCalculator(load_unit(ensemble_ckpt))
    copy = atoms.copy()
    copy.calc = calc
    copy.get_potential_energy()
    np.testing.assert_allclose(calc.results["forces_uncertainty"], pred.forces_std,
                               rtol=1e-5, atol=1e-7)


def test_calibrate_sizes_the_member_force_spread_to_the_force_errors(ensemble_ckpt, calibrated,
                                                                     frames) -> None:
    """force_scale = sqrt(mean |F - F_ref|^2 / mean spread^2) on the validation frames, and
    the calibrated checkpoint's spread is the raw one times it."""
    path, result = calibrated
    scale = uncertainty.read_state(path)["force_scale"]
    assert scale == pytest.approx(result["force_scale"]) and scale > 0
    val = frames["held_out"]
    raw = predict_atoms(ensemble_ckpt, val, member_forces=True)
    err = np.concatenate([np.linalg.norm((p.forces - p.forces_target)[p.fixed == 0], axis=1)
                          for p in raw])
    spread = np.concatenate([p.forces_std[p.fixed == 0] for p in raw])
    assert scale == pytest.approx(np.sqrt(np.mean(err**2) / np.mean(spread**2)), rel=1e-4)
    sized = predict_atoms(path, val[:3], member_forces=True)
    for p, q in zip(raw[:3], sized, strict=True):
        # the spread differences float32 forces: ~1e-4 relative round-off between two runs
        np.testing.assert_allclose(q.forces_std, p.forces_std * scale, rtol=1e-3, atol=1e-6)
