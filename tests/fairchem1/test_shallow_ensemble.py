"""A shallow ensemble checkpoint (K histogram output layers) on the fairchem-core 1.10 line.

Made from the committed one-member eSEN checkpoint by adding members: K copies of member 0
must predict exactly what the one-member model does (the mixture of equal histograms is
that histogram), and perturbed members give their mixture and a positive disagreement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fairchem_categorical.fairchem1.predict import predict_atoms
from tests.reference import LEGACY, epistemic_frames, single_torch_thread  # noqa: F401

SINGLE = LEGACY / "fairchem1" / "esen_categorical_conserving.pt"
HEAD = "module.output_heads.energy."
MEMBERS = 3


def with_members(path: Path, noise: float, seed: int = 0, members: int = MEMBERS) -> Path:
    """The single checkpoint's raw weights (no EMA: its parameter list is the one-member
    model's) with ``members`` output layers: member 0's weights (+ noise)."""
    ckpt = torch.load(SINGLE, map_location="cpu", weights_only=False)
    ckpt["ema"] = None
    if members > 1:
        ckpt["config"]["model"]["heads"]["energy"]["num_members"] = members
    state = ckpt["state_dict"]
    g = torch.Generator().manual_seed(seed)
    blocks = [k for k in state if k.startswith((HEAD + "node_block.",
                                                HEAD + "logits_block."))]
    for m in range(members - 1):
        for key in blocks:
            value = state[key]
            value = value.clone() if torch.is_tensor(value) else value  # extra states
            if torch.is_tensor(value) and value.is_floating_point() and not key.endswith(
                    ("edges", "centers", "temperature")):
                value += noise * torch.randn(value.shape, generator=g, dtype=value.dtype)
            state[key.replace(HEAD, f"{HEAD}members.{m}.")] = value
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def frames() -> list:
    return epistemic_frames()["held_out"][:6]


def test_identical_members_predict_what_the_single_model_does(frames, tmp_path) -> None:
    single = predict_atoms(with_members(tmp_path / "single.pt", 0.0, members=1), frames)
    copies = predict_atoms(with_members(tmp_path / "copies.pt", noise=0.0), frames)
    for p, q in zip(single, copies, strict=True):
        assert q.energy_member_probs.shape == (MEMBERS, len(p.energy_probs))
        assert q.energy == pytest.approx(p.energy, rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(q.energy_probs, p.energy_probs, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(q.forces, p.forces, rtol=1e-4, atol=1e-5)
        assert q.energy_disagreement == pytest.approx(0.0, abs=1e-6)


def test_perturbed_members_predict_their_mixture(frames, tmp_path) -> None:
    preds = predict_atoms(with_members(tmp_path / "k3.pt", noise=0.3), frames)
    for p in preds:
        means = p.energy_member_probs @ p.energy_bin_centers
        np.testing.assert_allclose(p.energy_member_probs.mean(0), p.energy_probs, rtol=1e-5,
                                   atol=1e-8)
        assert p.energy == pytest.approx(means.mean(), rel=1e-6, abs=1e-5)
        assert p.energy_disagreement == pytest.approx(means.std(), rel=1e-4, abs=1e-7)
        assert p.energy_disagreement > 1e-4
        assert np.isfinite(p.forces).all()


def test_member_logits_train_with_the_mean_of_their_own_cross_entropies() -> None:
    """Flattened (n, M K) members and tiled targets under fairchem's DDPLoss, as
    CategoricalTrainer hands them over, give the mean of the members' losses."""
    from fairchem.core.modules.loss import DDPLoss

    from fairchem_categorical.losses import soft_cross_entropy

    k, members = 8, 3
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, members, k, generator=g)
    target = torch.softmax(torch.randn(5, k, generator=g), -1)
    loss = DDPLoss("fairchem_categorical.fairchem1.losses.CategoricalCrossEntropyLoss",
                   reduction="mean")
    loss.loss_fn.num_bins = k
    got = loss(logits.reshape(5, -1), target.repeat(1, members), natoms=torch.ones(5))
    each = torch.stack([soft_cross_entropy(logits[:, m], target) for m in range(members)])
    assert float(got) == pytest.approx(float(each.mean()), rel=1e-6)
    with pytest.raises(ValueError, match="do not split"):
        loss.loss_fn(torch.zeros(5, 2 * k + 1), torch.zeros(5, 2 * k + 1), torch.ones(5))


def test_calculator_gives_the_members_force_spread(frames, tmp_path) -> None:
    from fairchem_categorical.fairchem1.calculator import CategoricalCalculator

    spreads = {}
    for name, noise in (("copies", 0.0), ("k3", 0.3)):
        calc = CategoricalCalculator(checkpoint_path=str(with_members(tmp_path / f"{name}.pt",
                                                                      noise)), cpu=True)
        atoms = frames[0].copy()
        atoms.calc = calc
        atoms.get_forces()
        spreads[name] = calc.results["forces_uncertainty"]
        assert spreads[name].shape == (len(atoms),)
    assert np.abs(spreads["copies"]).max() < 1e-7  # identical members agree exactly
    # perturbed output layers: every atom's members disagree (1e-4 eV/A on this tiny model)
    assert spreads["k3"].min() > 1e-6
