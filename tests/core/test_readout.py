"""The readouts both lines' heads subclass: pooling, decoding to eV, force magnitudes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairchem_categorical.readout import (
    CategoricalEnergyReadout,
    EnergyTransformState,
    ForceMagnitudeReadout,
    mean_pool,
)
from tests.reference import ENERGY, FORCE_SUPPORT, SUPPORT, np_centers, np_probs


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_mean_pool_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    out = mean_pool(x, torch.tensor([0, 0, 1]), torch.tensor([2, 1]))
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.0], [10.0, 0.0]]))


def test_energy_readout_decodes_to_referenced_total_energy() -> None:
    energy = {**ENERGY, "mean": 0.1, "std": 0.05}
    readout = CategoricalEnergyReadout(4, 8, SUPPORT, energy)
    _randomise(readout)
    x = torch.randn(5, 4)
    batch, natoms = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([3, 2])
    logits = readout.system_logits(x, batch, natoms)
    out = readout.decode(logits, natoms)
    p, c = np_probs(logits), np_centers(SUPPORT)
    mean = (p * c).sum(-1)
    std = np.sqrt((p * (c - mean[:, None]) ** 2).sum(-1))
    n = natoms.numpy()
    # per-atom level: E = N (mean * std_E + mean_E); the spread scales by N std_E
    np.testing.assert_allclose(out["energy"].detach().numpy(), n * (mean * 0.05 + 0.1),
                               rtol=1e-5)
    np.testing.assert_allclose(out["energy_std"].numpy(), n * std * 0.05, rtol=1e-5)
    np.testing.assert_allclose(out["energy_entropy"].numpy(),
                               -(p * np.log(p)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(out["energy_edge_mass"].numpy(), p[:, 0] + p[:, -1], rtol=1e-5)
    assert out["energy"].requires_grad and not out["energy_std"].requires_grad


def test_energy_histogram_in_ev_holds_the_decoded_energy() -> None:
    readout = CategoricalEnergyReadout(4, 8, SUPPORT, ENERGY)
    _randomise(readout, 1)
    natoms, refs = torch.tensor([3, 5]), torch.tensor([-10.0, 2.5], dtype=torch.float64)
    logits = readout.system_logits(torch.randn(8, 4), torch.tensor([0] * 3 + [1] * 5), natoms)
    hist = readout.histogram_in_ev(logits, natoms, refs)
    decoded = readout.decode(logits, natoms)["energy"].double() + refs
    total = (hist["energy_probs"].double() * hist["energy_bin_centers"]).sum(-1)
    torch.testing.assert_close(total, decoded.detach(), rtol=1e-5, atol=1e-5)
    assert bool((hist["energy_low90"] < decoded).all() & (decoded < hist["energy_high90"]).all())


def test_force_readout_magnitude_times_unit_direction() -> None:
    readout = ForceMagnitudeReadout(4, 8, FORCE_SUPPORT, prior_mean=0.5)
    _randomise(readout, 2)
    scalars, vector = torch.randn(6, 4), torch.randn(6, 3)
    out = readout.readout(scalars, vector)
    p, c = np_probs(out["logits"]), np_centers(FORCE_SUPPORT)
    magnitude = (p * c).sum(-1)
    unit = vector.numpy() / np.linalg.norm(vector.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(out["forces"].detach().numpy(), magnitude[:, None] * unit,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["forces"].detach().numpy(), axis=1),
                               magnitude, rtol=1e-5)
    assert out["forces_std"].shape == out["forces_entropy"].shape == (6,)
    # rotating the direction rotates the force and leaves the magnitude histogram alone
    rot = torch.linalg.qr(torch.randn(3, 3))[0]
    rotated = readout.readout(scalars, vector @ rot.T)
    torch.testing.assert_close(rotated["forces"], out["forces"] @ rot.T, rtol=1e-5, atol=1e-5)


def test_force_support_must_start_at_zero_or_above() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        ForceMagnitudeReadout(4, 8, {"low": -1.0, "high": 5.0, "num_bins": 8})


def test_energy_transform_state_refuses_another_transform() -> None:
    state = EnergyTransformState(ENERGY)
    saved = state.state_dict()
    EnergyTransformState(ENERGY).load_state_dict(saved)  # the same transform loads
    other = EnergyTransformState({**ENERGY, "std": 0.07})
    with pytest.raises(ValueError, match="std: checkpoint 0.05 vs config 0.07"):
        other.load_state_dict(saved)
    with pytest.raises(ValueError, match="level"):
        EnergyTransformState({**ENERGY, "level": "total"}).load_state_dict(saved)


def test_energy_transform_state_carries_the_fitted_elements() -> None:
    """New checkpoints store the elements; a head built without them (an older config)
    takes them from the checkpoint; a checkpoint without them (written before they were
    recorded) loads as before; different elements are refused."""
    fitted = {**ENERGY, "elements": [1, 8, 29]}
    saved = EnergyTransformState(fitted).state_dict()
    assert saved["_extra_state"]["elements"] == [1, 8, 29]
    bare = EnergyTransformState(ENERGY)
    bare.load_state_dict(saved)
    assert bare.spec.elements == [1, 8, 29]
    legacy = {"_extra_state": {k: v for k, v in saved["_extra_state"].items()
                               if k != "elements"}}
    kept = EnergyTransformState(fitted)
    kept.load_state_dict(legacy)
    assert kept.spec.elements == [1, 8, 29]
    with pytest.raises(ValueError, match="elements: checkpoint"):
        EnergyTransformState({**ENERGY, "elements": [1, 8]}).load_state_dict(saved)


def test_energy_readout_refuses_the_total_level() -> None:
    with pytest.raises(ValueError, match="not size-extensive"):
        CategoricalEnergyReadout(4, 8, SUPPORT, {**ENERGY, "level": "total"})
