"""fit-uncertainty on the fairchem-core 2.x line, on a real (tiny, trained) checkpoint.

The fitted state goes into the checkpoint, loads back through fairchem's predict unit with
the same numbers, leaves energies and forces alone, and scores an unseen element and
hot-rattled structures above in-distribution ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fairchem_categorical.fairchem2 import uncertainty
from fairchem_categorical.fairchem2.heads import CategoricalEnergyHead
from fairchem_categorical.fairchem2.predict import load_unit, predict_atoms, predict_unit
from tests.reference import (
    LEGACY,
    assert_epistemic_outputs,
    epistemic_frames,
    single_torch_thread,  # noqa: F401
)

CKPT = LEGACY / "fairchem2" / "esen_categorical_conserving.pt"


@pytest.fixture(scope="module")
def frames() -> dict[str, list]:
    return epistemic_frames()


@pytest.fixture(scope="module")
def fitted(frames, tmp_path_factory) -> tuple[dict, Path]:
    state = uncertainty.fit(CKPT, frames["train"], batch_size=5)
    out = tmp_path_factory.mktemp("fit") / "fitted.pt"
    uncertainty.write(CKPT, out, epistemic=state)
    return state, out


def test_fitted_state_round_trips_through_the_checkpoint(fitted, frames) -> None:
    state, path = fitted
    assert uncertainty.read_state(CKPT) is None
    stored = uncertainty.read_state(path)
    assert stored["method"] == "mahalanobis_tied" and stored["num_structures"] == 48
    assert torch.equal(stored["precisions"], state["precisions"])
    # the raw and the EMA weights both carry it
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    key = "output_heads.energy.epistemic._extra_state"
    assert ckpt.model_state_dict[key] is not None
    assert ckpt.ema_state_dict["module." + key] is not None
    # the same numbers from the file as from the state set on the loaded model
    test = frames["held_out"]
    from_file = predict_atoms(path, test)
    unit = load_unit(CKPT)
    unit.head(CategoricalEnergyHead).epistemic.load(state)
    in_memory = predict_unit(unit, test)
    for p, q in zip(from_file, in_memory, strict=True):
        assert p.ood_score == q.ood_score and p.energy_uncertainty == q.energy_uncertainty
        assert np.array_equal(p.atom_ood_score, q.atom_ood_score)
    assert_epistemic_outputs(from_file, alpha=1.0)


def test_fitting_leaves_energies_and_forces_alone(fitted, frames) -> None:
    test = frames["held_out"]
    before, after = predict_atoms(CKPT, test), predict_atoms(fitted[1], test)
    for p, q in zip(before, after, strict=True):
        assert p.energy == q.energy and np.array_equal(p.forces, q.forces)
        assert p.energy_std == q.energy_std
        assert np.isnan(p.energy_uncertainty) and p.atom_ood_score is None


def test_unseen_element_and_hot_rattles_score_above_in_distribution(fitted, frames) -> None:
    score = {name: np.array([p.ood_score for p in predict_atoms(fitted[1], frames[name])])
             for name in ("held_out", "hot", "unseen_element")}
    assert score["unseen_element"].min() > score["held_out"].max()
    assert (score["hot"] > score["held_out"]).all()  # each structure against itself, rattled


def test_write_scales_the_temperature_and_the_epistemic_term(fitted, frames, tmp_path) -> None:
    out = tmp_path / "calibrated.pt"
    assert uncertainty.write(fitted[1], out, temperature_factor=2.0,
                             alpha={"mahalanobis_tied": 0.3}) == pytest.approx(2.0)
    assert uncertainty.read_state(out)["alpha"]["mahalanobis_tied"] == 0.3
    preds = predict_atoms(out, frames["held_out"])
    assert_epistemic_outputs(preds, alpha=0.3)


def test_scalar_checkpoints_are_refused(tmp_path) -> None:
    ckpt = torch.load(CKPT, map_location="cpu", weights_only=False)
    ckpt.model_config["heads"] = {"efs": {"module": "fairchem.core.models.uma.escn_md."
                                                    "MLP_EFS_Head"}}
    torch.save(ckpt, tmp_path / "scalar.pt")
    with pytest.raises(ValueError, match="no categorical energy head"):
        uncertainty.read_state(tmp_path / "scalar.pt")
