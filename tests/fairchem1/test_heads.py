"""Categorical heads on fairchem-core 1.10 backbones (EquiformerV2 and eSEN).

Expected numbers are recomputed independently (numpy softmax over bin centres, finite
differences, rotated inputs) rather than read back from the heads.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from fairchem_categorical.histogram import SupportMismatchError
from tests.fairchem1.helpers import (
    ENERGY,
    FORCE_SUPPORT,
    SUPPORT,
    batch_of,
    categorical_model,
    eqv2_backbone,
    esen_backbone,
    np_centers,
    np_hl_gauss,
    np_probs,
    rotated,
    run,
    single_torch_thread,  # noqa: F401  (autouse fixture)
    small_frames,
)

ALL_NEIGHBORS = 300
BACKBONES = {"eqv2": (eqv2_backbone, True), "esen": (esen_backbone, False)}


@pytest.fixture(scope="module")
def frames():
    return small_frames()


@pytest.fixture(scope="module", params=list(BACKBONES))
def model_out(request, frames):
    make, direct = BACKBONES[request.param]
    model = categorical_model(make(ALL_NEIGHBORS), direct).eval()
    batch = batch_of(frames)
    return request.param, model, batch, run(model, batch)


def test_outputs_layout(model_out, frames) -> None:
    name, _, batch, out = model_out
    n, b = int(batch.natoms.sum()), len(frames)
    assert out["energy"].shape == (b,) and out["energy_categorical"].shape == (b, 32)
    assert out["forces"].shape == (n, 3)
    for key in ("energy_std", "energy_entropy", "energy_edge_mass"):
        assert out[key].shape == (b,) and bool(torch.all(out[key] > 0))
    if name == "eqv2":  # the direct force head's magnitude histograms
        assert out["force_magnitude"].shape == (n, FORCE_SUPPORT["num_bins"])
        assert out["forces_std"].shape == (n,) and bool(torch.all(out["forces_std"] > 0))


def test_energy_decodes_logits_by_hand(model_out) -> None:
    """Total energy = natoms * (E_p[c] * std + mean) + sum of element references."""
    _, _, batch, out = model_out
    p = np_probs(out["energy_categorical"])
    c = np_centers(SUPPORT)
    natoms = batch.natoms.numpy().astype(np.float64)
    mu = p @ c
    sd = np.sqrt(p @ c**2 - mu**2)
    np.testing.assert_allclose(out["energy"].detach().double().numpy(),
                               natoms * (mu * ENERGY["std"] + ENERGY["mean"]), rtol=1e-5)
    np.testing.assert_allclose(out["energy_std"].double().numpy(), natoms * ENERGY["std"] * sd,
                               rtol=1e-5)
    np.testing.assert_allclose(out["energy_entropy"].double().numpy(),
                               -(p * np.log(p)).sum(-1), rtol=1e-5)
    assert np.all(out["energy_entropy"].numpy() <= math.log(SUPPORT["num_bins"]))


def test_element_references_are_added_per_atom(frames) -> None:
    refs = [0.0] * 100
    refs[1], refs[8], refs[29] = -1.5, -4.0, 0.25  # H, O, Cu
    base = categorical_model(esen_backbone(), direct=False).eval()
    shifted = categorical_model(esen_backbone(), direct=False,
                                energy={**ENERGY, "element_references": refs}).eval()
    batch = batch_of(frames)
    e0, e1 = (run(m, batch)["energy"].detach().double() for m in (base, shifted))
    expected = [sum(refs[z] for z in a.numbers) for a in frames]
    assert any(abs(x) > 1 for x in expected)
    np.testing.assert_allclose((e1 - e0).numpy(), expected, atol=1e-4)


def _esen_energy(model, frames, step: torch.Tensor) -> float:
    batch = batch_of(frames)
    batch.pos = batch.pos + step
    return float(run(model, batch)["energy"].double().sum())


def test_esen_forces_are_minus_energy_gradient(frames) -> None:
    # fairchem 1.10 builds graphs in float32 only; a 1e-2 A step keeps float32 noise and
    # the O(h^2) truncation error near 1e-4 of the force.
    model = categorical_model(esen_backbone(ALL_NEIGHBORS), direct=False).eval()
    forces = run(model, batch_of(frames))["forces"].detach()
    atom = int(forces.norm(dim=1).argmax())
    axis = int(forces[atom].abs().argmax())
    assert abs(float(forces[atom, axis])) > 1e-3
    h = 1e-2
    step = torch.zeros_like(forces)
    step[atom, axis] = h
    fd = -(_esen_energy(model, frames, step) - _esen_energy(model, frames, -step)) / (2 * h)
    assert fd == pytest.approx(float(forces[atom, axis]), rel=1e-2)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_rotation_invariant_energy_equivariant_forces(name, frames) -> None:
    make, direct = BACKBONES[name]
    model = categorical_model(make(ALL_NEIGHBORS), direct).eval()
    rot = Rotation.random(random_state=0).as_matrix()
    batch, batch_rot = batch_of(frames), batch_of([rotated(a, rot) for a in frames])
    out, out_rot = run(model, batch), run(model, batch_rot)
    e, e_rot = (o["energy"].detach().double() for o in (out, out_rot))
    f, f_rot = (o["forces"].detach().double() for o in (out, out_rot))
    r = torch.as_tensor(rot, dtype=torch.float64)
    # float32 and the S2-grid activations: equivariant to ~1e-5 relative
    assert float(((e_rot - e).abs() / e.abs()).max()) < 1e-4
    assert float((f_rot - f @ r.T).norm() / f.norm()) < 5e-4
    # not trivially satisfied: forces turn with the structure, energy depends on geometry
    assert float((f_rot - f).norm() / f.norm()) > 0.1
    moved = batch_of(frames)
    moved.pos = moved.pos + 0.05 * torch.randn(moved.pos.shape, generator=torch.Generator()
                                               .manual_seed(0))
    assert float((run(model, moved)["energy"].detach().double() - e).abs().max()) > 1e-4


def test_direct_force_is_decoded_magnitude_times_unit_vector(frames) -> None:
    model = categorical_model(eqv2_backbone(), direct=True).eval()
    out = run(model, batch_of(frames))
    p = np_probs(out["force_magnitude"])
    magnitude = p @ np_centers(FORCE_SUPPORT)
    np.testing.assert_allclose(out["forces"].detach().norm(dim=-1).double().numpy(), magnitude,
                               rtol=1e-4)
    assert magnitude.std() > 1e-3  # per-atom magnitudes, not one constant


def test_gradient_forces_on_equiformer_v2_is_refused() -> None:
    with pytest.raises(ValueError, match="categorical_direct_force_head"):
        categorical_model(eqv2_backbone(), direct=False)


def test_cross_entropy_loss_matches_numpy_under_fairchem_ddp_reduction() -> None:
    from fairchem.core.modules.loss import DDPLoss

    logits = torch.randn(5, SUPPORT["num_bins"], generator=torch.Generator().manual_seed(0))
    y = np.array([-1.0, 0.0, 0.3, 2.0, 5.9])
    target = torch.as_tensor(np_hl_gauss(SUPPORT, y), dtype=torch.float32)
    loss = DDPLoss("fairchem_categorical.fairchem1.losses.CategoricalCrossEntropyLoss",
                   reduction="mean")
    got = float(loss(logits, target, natoms=torch.ones(5)))
    z = logits.double().numpy()
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = float(-(target.double().numpy() * logp).sum(-1).mean())
    assert got == pytest.approx(expected, rel=1e-5)


def test_state_dict_round_trip_and_support_mismatch(frames) -> None:
    source = categorical_model(eqv2_backbone(), direct=True, seed=0).eval()
    copy = categorical_model(eqv2_backbone(), direct=True, seed=5).eval()
    batch = batch_of(frames)
    assert not torch.equal(run(source, batch)["energy"], run(copy, batch)["energy"])
    copy.load_state_dict(source.state_dict())
    for key in ("energy", "energy_categorical", "forces", "force_magnitude"):
        torch.testing.assert_close(run(copy, batch)[key], run(source, batch)[key], rtol=0, atol=0)
    other = categorical_model(eqv2_backbone(), direct=True,
                              support={**SUPPORT, "num_bins": 40})
    with pytest.raises(SupportMismatchError, match="num_bins"):
        other.load_state_dict(source.state_dict())
    other_std = categorical_model(eqv2_backbone(), direct=True,
                                  energy={**ENERGY, "std": 2 * ENERGY["std"]})
    with pytest.raises(ValueError, match="std"):
        other_std.load_state_dict(source.state_dict())


def _force_loss(model, batch, seed: int = 0) -> torch.Tensor:
    """A loss on the conservative forces alone (no energy term)."""
    return (run(model, batch, seed)["forces"] ** 2).sum()


def test_esen_force_only_loss_reaches_the_backbone_through_second_derivatives(frames) -> None:
    """In training the gradient forces are built with create_graph, so a loss on forces alone
    trains the backbone and the head: its gradient equals a finite difference of that loss
    along the gradient's direction. In eval mode the forces carry no graph."""
    model = categorical_model(esen_backbone(ALL_NEIGHBORS), direct=False).train()
    batch = batch_of(frames[:2])
    backbone = list(model.backbone.parameters())
    params = backbone + list(model.output_heads["energy"].logits_block.parameters())
    model.zero_grad()
    _force_loss(model, batch).backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    assert math.sqrt(sum(float((g**2).sum()) for g in grads[:len(backbone)])) > 1e-6
    norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
    h = 1e-3
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(h * g / norm)
        up = float(_force_loss(model, batch))
        for p, g in zip(params, grads, strict=True):
            p.sub_(2 * h * g / norm)
        down = float(_force_loss(model, batch))
        for p, g in zip(params, grads, strict=True):
            p.add_(h * g / norm)
    assert (up - down) / (2 * h) == pytest.approx(norm, rel=0.05)
    model.eval()
    assert not run(model, batch)["forces"].requires_grad
