"""Categorical heads on fairchem-core 2.x backbones (eSEN ``escn_md`` and UMA ``escn_moe``).

Expected numbers are recomputed independently (numpy softmax over bin centres, finite
differences, rotated inputs) rather than read back from the heads.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from fairchem_categorical.histogram import HistogramSupport, SupportMismatchError
from tests.fairchem2.helpers import (
    ENERGY,
    FORCE_SUPPORT,
    SUPPORT,
    build_model,
    np_centers,
    np_probs,
    rotated,
    run,
    single_torch_thread,  # noqa: F401  (autouse fixture)
    small_frames,
    to_batch,
)
from tests.reference import assert_within, energy_float32_atol

K = SUPPORT["num_bins"]
# No neighbour-list truncation: the graph (and so the energy) is then a smooth function
# of the positions and does not change under rotation.
ALL_NEIGHBORS = 300


@pytest.fixture(scope="module")
def frames():
    return small_frames()


@pytest.fixture(scope="module")
def conservative_out(frames):
    """Conservative model with trained-like head weights (eval mode), batch, outputs."""
    model = build_model(direct_forces=False, max_neighbors=ALL_NEIGHBORS).eval()
    batch = to_batch(frames)
    return model, batch, run(model, batch)


# -- 1. conservative energy head ------------------------------------------------------


def test_energy_head_output_layout(conservative_out, frames) -> None:
    _, batch, out = conservative_out
    n_sys, n_atoms = len(frames), sum(len(a) for a in frames)
    assert set(out) == {"energy", "energy_categorical", "forces"}
    assert set(out["energy"]) == {"energy", "energy_std", "energy_entropy", "energy_edge_mass"}
    assert set(out["energy_categorical"]) == {"logits"}
    assert set(out["forces"]) == {"forces"}
    assert out["energy_categorical"]["logits"].shape == (n_sys, K)
    for key in ("energy", "energy_std", "energy_entropy", "energy_edge_mass"):
        assert out["energy"][key].shape == (n_sys,), key
        assert torch.isfinite(out["energy"][key]).all(), key
    assert out["forces"]["forces"].shape == (n_atoms, 3)
    assert torch.isfinite(out["forces"]["forces"]).all()
    assert batch.natoms.tolist() == [len(a) for a in frames]


def test_energy_head_decodes_logits_by_hand(conservative_out) -> None:
    _, batch, out = conservative_out
    logits = out["energy_categorical"]["logits"]
    p = np_probs(logits)
    c = np_centers(SUPPORT)
    natoms = batch.natoms.numpy().astype(np.float64)
    mu = p @ c
    sd = np.sqrt(p @ c**2 - mu**2)
    expected_energy = natoms * (mu * ENERGY["std"] + ENERGY["mean"])
    expected_std = natoms * ENERGY["std"] * sd
    got = {k: v.detach().double().numpy() for k, v in out["energy"].items()}
    bound = energy_float32_atol(natoms, {"support": SUPPORT, "energy": ENERGY})
    assert_within(got["energy"], expected_energy, bound / 2, "energy")  # one float32 path
    np.testing.assert_allclose(got["energy_std"], expected_std, rtol=1e-5)
    entropy = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(got["energy_entropy"], entropy, rtol=1e-5)
    assert np.all(got["energy_entropy"] >= 0) and np.all(got["energy_entropy"] <= math.log(K))
    np.testing.assert_allclose(got["energy_edge_mass"], p[:, 0] + p[:, -1], rtol=1e-5,
                               atol=1e-9)
    # The histogram is not flat: decoding is not trivially the support's midpoint.
    assert np.all(sd < 0.9 * np.sqrt(((c - c.mean()) ** 2).mean()))


def test_energy_head_refuses_the_total_level() -> None:
    """A histogram over the total energy on a fixed support cannot be size-extensive: the
    head refuses the level instead of giving a 2x supercell the energy of its cell."""
    with pytest.raises(ValueError, match="not size-extensive"):
        build_model(energy={**ENERGY, "level": "total", "mean": -1.5, "std": 2.0})


def test_per_atom_energy_of_a_2x_supercell_is_twice_the_cell(frames) -> None:
    """Per-atom bins decode to an intensive value times N: repeating the periodic cell
    doubles the energy (the level the heads take is extensive)."""
    model = build_model(direct_forces=False, max_neighbors=ALL_NEIGHBORS).eval()
    cell = frames[0]
    big = cell.repeat((2, 1, 1))
    e_cell = float(run(model, to_batch([cell]))["energy"]["energy"].detach())
    e_big = float(run(model, to_batch([big]))["energy"]["energy"].detach())
    n = len(cell)
    # the per-atom decoded value is not trivially the support's midpoint
    assert abs(e_cell / n - ENERGY["mean"]) > 1e-3
    assert e_big == pytest.approx(2.0 * e_cell, rel=1e-5)


def _energy(model, frames, shift: torch.Tensor | None = None) -> float:
    batch = to_batch(frames)
    if shift is not None:
        batch.pos += shift
    return float(run(model, batch)["energy"]["energy"].detach().sum())


def test_energy_head_forces_are_minus_energy_gradient(conservative_out, frames) -> None:
    # The head decodes in float32, so the energy is resolved to ~1e-7 relative; a 1e-2 A
    # step keeps that noise (and the O(h^2) truncation error) near 1e-4 of the force.
    model, _, out = conservative_out
    forces = out["forces"]["forces"].detach()
    atom = int(forces.norm(dim=1).argmax())
    axis = int(forces[atom].abs().argmax())
    assert abs(float(forces[atom, axis])) > 1e-3  # well above the energy's resolution
    h = 1e-2
    step = torch.zeros_like(forces)
    step[atom, axis] = h
    fd = -(_energy(model, frames, step) - _energy(model, frames, -step)) / (2 * h)
    assert fd == pytest.approx(float(forces[atom, axis]), rel=1e-2)
    # Directional derivative along the force field itself: dE/ds = -|F|.
    direction = forces / forces.norm()
    slope = (_energy(model, frames, h * direction) - _energy(model, frames, -h * direction)) / (
        2 * h)
    assert slope == pytest.approx(-float(forces.norm()), rel=1e-2)


# -- 2. rotation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "direct_forces, ff_type, dtype, tol",
    [
        # A spectral feed-forward is exactly equivariant, so in float64 only rounding is left.
        (False, "spectral", torch.float64, 1e-9),
        (True, "spectral", torch.float64, 1e-9),
        # The shipped configs' "grid" feed-forward samples S2 on a finite grid, which is
        # equivariant only to ~1e-5 - 5e-5 (also in float64).
        (False, "grid", torch.float32, 5e-4),
        (True, "grid", torch.float32, 5e-4),
    ],
    ids=["conservative-f64", "direct-f64", "conservative-f32-grid", "direct-f32-grid"],
)
def test_rotation_invariant_energy_equivariant_forces(direct_forces, ff_type, dtype, tol,
                                                      frames) -> None:
    model = build_model(direct_forces=direct_forces, max_neighbors=ALL_NEIGHBORS,
                        ff_type=ff_type).to(dtype).eval()
    rot = Rotation.random(random_state=0).as_matrix()
    assert np.linalg.det(rot) == pytest.approx(1.0)
    batch, batch_rot = to_batch(frames, dtype), to_batch([rotated(a, rot) for a in frames], dtype)
    assert batch.pos.dtype == dtype
    # Same seed -> same random edge-frame roll angles in both passes.
    out, out_rot = run(model, batch), run(model, batch_rot)
    e, e_rot = (o["energy"]["energy"].detach().double() for o in (out, out_rot))
    f, f_rot = (o["forces"]["forces"].detach().double() for o in (out, out_rot))
    r = torch.as_tensor(rot, dtype=torch.float64)
    assert float(f.norm()) > 1e-3
    assert float(((e_rot - e).abs() / e.abs()).max()) < tol
    assert float((f_rot - f @ r.T).norm() / f.norm()) < tol
    # Not trivially satisfied: the forces do change direction with the structure.
    assert float((f_rot - f).norm() / f.norm()) > 0.1


def test_direct_force_head_magnitude_is_decoded_histogram(frames) -> None:
    model = build_model(direct_forces=True).eval()
    out = run(model, to_batch(frames))
    n_atoms = sum(len(a) for a in frames)
    assert set(out) == {"energy", "energy_categorical", "forces", "force_magnitude"}
    head_out = out["forces"]
    assert set(head_out) == {"forces", "forces_std", "forces_entropy"}
    f = head_out["forces"].detach().double()
    logits = out["force_magnitude"]["logits"]
    assert f.shape == (n_atoms, 3)
    assert logits.shape == (n_atoms, FORCE_SUPPORT["num_bins"])
    p = np_probs(logits)
    c = np_centers(FORCE_SUPPORT)
    magnitude = p @ c
    np.testing.assert_allclose(f.norm(dim=1).numpy(), magnitude, rtol=1e-6)
    support = HistogramSupport.from_spec(FORCE_SUPPORT)
    np.testing.assert_allclose(f.norm(dim=1).numpy(),
                               support.mean(logits).detach().double().numpy(), rtol=1e-6)
    # Magnitudes differ between atoms (the histogram depends on the atom's features).
    assert float(magnitude.std()) > 1e-3
    entropy = head_out["forces_entropy"].detach().double().numpy()
    np.testing.assert_allclose(entropy, -(p * np.log(p)).sum(-1), rtol=1e-5)
    assert np.all(entropy >= 0) and np.all(entropy <= math.log(FORCE_SUPPORT["num_bins"]))
    std = head_out["forces_std"].detach().double().numpy()
    np.testing.assert_allclose(std, np.sqrt(p @ c**2 - magnitude**2), rtol=1e-4)


# -- 3. UMA mixture-of-linear-experts backbone ----------------------------------------


@pytest.mark.parametrize("direct_forces", [False, True], ids=["conservative", "direct"])
def test_heads_train_on_uma_moe_backbone(direct_forces: bool, frames) -> None:
    model = build_model(direct_forces=direct_forces, moe=True).train()
    assert type(model.backbone).__name__ == "eSCNMDMoeBackbone"
    assert model.backbone.num_experts == 2
    out = run(model, to_batch(frames))
    energy, forces = out["energy"]["energy"], out["forces"]["forces"]
    assert energy.shape == (2,) and forces.shape == (sum(len(a) for a in frames), 3)
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
    loss = energy.sum() + forces.pow(2).sum()
    if direct_forces:
        loss = loss + out["force_magnitude"]["logits"].logsumexp(-1).sum()
    loss.backward()
    grads = {n: p.grad for n, p in model.backbone.named_parameters() if p.requires_grad}
    nonzero = [n for n, g in grads.items() if g is not None and bool((g != 0).any())]
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    # Gradients reach the message-passing blocks, every expert of the mixture-of-linear-
    # experts layers, and the router that mixes them from the composition.
    assert any(n.startswith("blocks.") for n in nonzero), nonzero
    experts = {n: g for n, g in grads.items() if n.endswith(".weights") and g is not None}
    assert experts
    for name, g in experts.items():
        assert g.shape[0] == 2, name
        assert all(bool((g[k] != 0).any()) for k in range(2)), name
    assert any(n.startswith("routing_mlp.") for n in nonzero), nonzero
    head_grads = [p.grad for p in model.output_heads.parameters() if p.grad is not None]
    assert head_grads and any(bool((g != 0).any()) for g in head_grads)


# -- 4. checkpoints -------------------------------------------------------------------


def test_state_dict_round_trip_reproduces_outputs(frames) -> None:
    source = build_model(seed=0).eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as a checkpoint on disk
    assert state["output_heads.energy.support._extra_state"]["high"] == SUPPORT["high"]
    assert state["output_heads.energy.energy_transform._extra_state"]["std"] == ENERGY["std"]
    # A freshly built identical model (other random weights) takes it all.
    target = build_model(seed=1).eval()
    before = run(target, to_batch(frames))["energy"]["energy"].detach()
    target.load_state_dict(state)
    out_a, out_b = run(source, to_batch(frames)), run(target, to_batch(frames))
    assert not torch.equal(before, out_a["energy"]["energy"].detach())
    for task, prop in [("energy", "energy"), ("energy", "energy_std"),
                       ("energy_categorical", "logits"), ("forces", "forces")]:
        torch.testing.assert_close(out_b[task][prop], out_a[task][prop], rtol=0, atol=0)


def test_state_dict_with_other_energy_std_is_refused(frames) -> None:
    state = build_model(seed=0).state_dict()
    other = build_model(seed=1, energy={**ENERGY, "std": 2 * ENERGY["std"]})
    with pytest.raises(ValueError, match="std"):
        other.load_state_dict(state)


def test_state_dict_into_other_support_raises_naming_field(frames) -> None:
    state = build_model(seed=0).state_dict()
    other = build_model(seed=1, support={**SUPPORT, "high": 7.0})
    with pytest.raises(SupportMismatchError, match="high") as info:
        other.load_state_dict(state)
    msg = str(info.value)
    assert "6.0" in msg and "7.0" in msg
    assert "low:" not in msg and "num_bins:" not in msg


def _force_loss(model, batch, seed: int = 0) -> torch.Tensor:
    """A loss on the conservative forces alone (no energy term)."""
    return (run(model, batch, seed)["forces"]["forces"] ** 2).sum()


def test_force_only_loss_reaches_the_backbone_through_second_derivatives(frames) -> None:
    """Training forces are -dE/dx built with create_graph, so a loss on forces alone trains
    the backbone and the head: its gradient equals a finite difference of that loss along
    the gradient's direction. In eval mode the forces carry no graph (inference)."""
    model = build_model(direct_forces=False, max_neighbors=ALL_NEIGHBORS).train()
    batch = to_batch(frames[:2])
    params = list(model.backbone.parameters()) + list(
        model.output_heads["energy"].logits_block.parameters())
    model.zero_grad()
    _force_loss(model, batch).backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    backbone_norm = math.sqrt(sum(float((g**2).sum()) for g in
                                  grads[:len(list(model.backbone.parameters()))]))
    assert backbone_norm > 1e-6
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
    # d loss / d t along the unit gradient direction = |gradient|
    assert (up - down) / (2 * h) == pytest.approx(norm, rel=0.05)
    model.eval()
    assert not run(model, batch)["forces"]["forces"].requires_grad
