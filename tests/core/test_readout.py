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


def test_softened_direction_takes_the_force_to_zero_where_the_direction_flips() -> None:
    """With v / |v| the force jumps from -m u to +m u as v passes through 0 (a relaxation
    stalls at |F| = m there); with v / sqrt(|v|^2 + s^2) it passes through 0 continuously,
    and far from the flip it is the unit direction's force."""
    s = 0.1
    hard = ForceMagnitudeReadout(4, 8, FORCE_SUPPORT, prior_mean=0.5)
    soft = ForceMagnitudeReadout(4, 8, FORCE_SUPPORT, prior_mean=0.5, direction_softening=s)
    _randomise(hard, 3)
    soft.load_state_dict(hard.state_dict())
    scalars = torch.randn(1, 4).expand(200, 4)
    t = torch.linspace(-1.0, 1.0, 200).unsqueeze(-1)
    vector = t * torch.tensor([[0.0, 0.0, 1.0]])  # v crosses 0 between t[99] and t[100]
    m = float(hard.readout(scalars[:1], vector[-1:])["forces"].detach().norm())
    assert m > 0.05  # a magnitude a relaxation to fmax 0.05 cannot pass
    fz_hard = hard.readout(scalars, vector)["forces"][:, 2].detach()
    fz_soft = soft.readout(scalars, vector)["forces"][:, 2].detach()
    assert float(fz_hard.diff().abs().max()) == pytest.approx(2 * m, rel=1e-5)  # the jump
    step = float(t[1] - t[0])
    assert float(fz_soft.abs().min()) <= m * (step / 2) / s * (1 + 1e-5)  # |F| <= m |v| / s
    assert float(fz_soft.diff().abs().max()) <= m * step / s * (1 + 1e-5)  # Lipschitz m/s
    np.testing.assert_allclose(float(fz_soft[-1]), m / np.sqrt(1 + s**2), rtol=1e-5)
    out = soft.readout(scalars[:2], torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    hist = hard.readout(scalars[:2], torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    # the std scales with the force: none where the force is softened away
    np.testing.assert_allclose(out["forces_std"].detach(),
                               hist["forces_std"].detach() * torch.tensor([1 / np.sqrt(1 + s**2),
                                                                           0.0]), rtol=1e-5)
    with pytest.raises(ValueError, match="direction_softening"):
        ForceMagnitudeReadout(4, 8, FORCE_SUPPORT, direction_softening=-0.1)


def test_energy_transform_state_refuses_another_transform() -> None:
    state = EnergyTransformState(ENERGY)
    saved = state.state_dict()
    EnergyTransformState(ENERGY).load_state_dict(saved)  # the same transform loads
    other = EnergyTransformState({**ENERGY, "std": 0.07})
    with pytest.raises(ValueError, match="std: checkpoint 0.05 vs config 0.07"):
        other.load_state_dict(saved)
    with pytest.raises(ValueError, match="level"):
        EnergyTransformState({**ENERGY, "level": "total"}).load_state_dict(saved)


# -- small forces: the signed (symmetric) force-magnitude support --------------------------
F_MAX = 21.5707202679217  # the embedded bins' force_support


def _fit_magnitude(support: dict, steps: int = 300):
    """Train the readout by cross-entropy on Gaussian-RBF features of y: 20% of targets are
    exactly 0, the rest exponential (mean 0.4 eV/A), like forces near a minimum."""
    from fairchem_categorical.losses import soft_cross_entropy

    def feats(y: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((y.unsqueeze(-1) - torch.linspace(0, 3, 32)) / 0.1) ** 2)

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    readout = ForceMagnitudeReadout(32, 64, support, prior_mean=0.4)
    opt = torch.optim.Adam(readout.parameters(), lr=3e-3)
    for _ in range(steps):
        y = torch.empty(256).exponential_(1 / 0.4, generator=gen).clamp(max=3.0)
        y[torch.rand(256, generator=gen) < 0.2] = 0.0
        loss = soft_cross_entropy(readout.magnitude_block(feats(y)),
                                  readout.support.encode(y)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return readout, feats


def _decoded_force(readout: ForceMagnitudeReadout, feats, y: float) -> torch.Tensor:
    with torch.no_grad():
        return readout.readout(feats(torch.tensor([y])), torch.tensor([[0.6, 0.0, 0.8]]))[
            "forces"][0]


def test_fitted_zero_force_decodes_below_0_01_on_the_symmetric_support():
    readout, feats = _fit_magnitude({"low": -F_MAX, "high": F_MAX, "num_bins": 128})
    assert float(_decoded_force(readout, feats, 0.0).norm()) < 0.01
    # and a typical force is still decoded, along the direction (0.6, 0, 0.8)
    f = _decoded_force(readout, feats, 0.5)
    assert float(f.norm()) == pytest.approx(0.5, abs=0.03)
    assert float(f[0] / f[2]) == pytest.approx(0.75, rel=1e-5)


def test_old_support_keeps_its_small_force_bias():
    """[0, F_max] (checkpoints before the symmetric support) decodes |F| = 0 to at least
    half a bin, more once the truncated HL-Gauss target is fitted: ~0.12 eV/A here."""
    spec = {"low": 0.0, "high": F_MAX, "num_bins": 128}
    readout, feats = _fit_magnitude(spec)
    assert float(_decoded_force(readout, feats, 0.0).norm()) > 0.5 * F_MAX / 128


def test_symmetric_support_round_trip_is_unbiased_near_zero():
    readout = ForceMagnitudeReadout(8, 8, {"low": -F_MAX, "high": F_MAX, "num_bins": 128})
    y = torch.tensor([0.0, 0.02, 0.05, 0.1])
    probs = readout.support.encode(y).double()
    centers = readout.support.centers.double()
    np.testing.assert_allclose((probs * centers).sum(-1).numpy(), y.numpy(), atol=1e-4)


def test_force_support_must_start_at_zero_or_be_symmetric():
    with pytest.raises(ValueError, match="symmetric"):
        ForceMagnitudeReadout(8, 8, {"low": -1.0, "high": 5.0, "num_bins": 16})


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


def test_energy_outputs_add_the_epistemic_terms_once_fitted() -> None:
    from fairchem_categorical.epistemic import FeatureStatistics, fit_state

    energy = {**ENERGY, "mean": 0.1, "std": 0.05}
    readout = CategoricalEnergyReadout(4, 8, SUPPORT, energy).eval()
    _randomise(readout, 2)
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(60, 4, generator=g), torch.tensor([1, 8, 29] * 20)
    batch, natoms = torch.arange(60) // 6, torch.full((10,), 6)
    logits, out = readout.energy_outputs(x, batch, natoms, z)
    assert set(out) == {"energy", "energy_std", "energy_entropy", "energy_edge_mass"}
    with readout.epistemic.collecting(FeatureStatistics()) as stats:
        readout.energy_outputs(x, batch, natoms, z)  # the fitting pass
    readout.epistemic.load(fit_state(stats))
    readout.epistemic.set_alpha(0.7)
    xt, bt, nt = x[:9] * 3, torch.tensor([0] * 4 + [1] * 5), torch.tensor([4, 5])
    logits, out = readout.energy_outputs(xt, bt, nt, z[:9])
    s = readout.epistemic.scores(readout.node_block(xt), mean_pool(readout.node_block(xt), bt,
                                                                   nt), z[:9], bt)
    u = s["mahalanobis_tied"]["structure"].numpy()  # the default method
    p, c = np_probs(logits), np_centers(SUPPORT)
    mean = (p * c).sum(-1)
    var = (p * (c - mean[:, None]) ** 2).sum(-1)
    width = (SUPPORT["high"] - SUPPORT["low"]) / SUPPORT["num_bins"]
    # the histogram uniform inside its bins adds w^2 / 12 to the variance of its centers
    want = nt.numpy() * 0.05 * np.sqrt(var + width**2 / 12 + (0.75 * width) ** 2 + 0.7**2 * u)
    np.testing.assert_allclose(out["energy_uncertainty"].numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(out["ood_score"].numpy(), u)
    assert out["atom_ood_score"].shape == (9,)
    np.testing.assert_allclose(out["epistemic_std_llpr"].numpy(),
                               nt.numpy() * 0.05 * np.sqrt(s["llpr"]["structure"].numpy()))
    # the decoded energy does not change, and training mode adds nothing
    readout.train()
    _, train_out = readout.energy_outputs(xt, bt, nt, z[:9])
    assert "energy_uncertainty" not in train_out
    torch.testing.assert_close(train_out["energy"], out["energy"])


def test_a_training_step_drops_the_fitted_state(caplog) -> None:
    """Fine-tuning a fitted checkpoint moves the features: its statistics must not survive
    into the new checkpoint (a stale state would score against the old features)."""
    from tests.reference import fitted_energy_readout

    readout, inputs = fitted_energy_readout(SUPPORT)
    readout.energy_outputs(*inputs)  # eval: kept
    assert readout.epistemic.fitted
    readout.train()
    with caplog.at_level("WARNING"):
        readout.energy_outputs(*inputs)
    assert not readout.epistemic.fitted
    assert readout.state_dict()["epistemic._extra_state"] is None
    assert "fitted epistemic state is dropped" in caplog.text



def test_energy_transform_state_carries_and_checks_the_element_references() -> None:
    refs = [0.0] * 100
    refs[29], refs[8] = -3.5, -1.25
    saved = EnergyTransformState({**ENERGY, "element_references": refs}).state_dict()
    assert saved["_extra_state"]["element_references"][29] == -3.5
    EnergyTransformState({**ENERGY, "element_references": refs}).load_state_dict(saved)
    other = list(refs)
    other[29] = -3.0
    with pytest.raises(ValueError) as err:
        EnergyTransformState({**ENERGY, "element_references": other}).load_state_dict(saved)
    assert str(err.value) == (
        "energy transform in the checkpoint disagrees with the config (element references of "
        "1 element(s) (Cu checkpoint -3.5 vs config -3)). Use the checkpoint's bins block or "
        "train new heads.")
    older = dict(saved)
    older["_extra_state"] = {k: v for k, v in saved["_extra_state"].items()
                             if k != "element_references"}  # checkpoints before they were kept
    EnergyTransformState({**ENERGY, "element_references": other}).load_state_dict(older)


def test_check_head_matches_names_both_supports_and_the_transform() -> None:
    from fairchem_categorical.histogram import SupportSpec
    from fairchem_categorical.readout import HeadsMismatchError, check_head_matches
    from fairchem_categorical.targets import EnergyTransform

    head, bins = SupportSpec(-1.0, 1.0, 8), SupportSpec(-2.0, 1.0, 8)
    check_head_matches("energy head", head, SupportSpec(-1.0, 1.0, 8),
                       EnergyTransform(**ENERGY), EnergyTransform(**ENERGY))
    with pytest.raises(HeadsMismatchError) as err:
        check_head_matches("energy head", head, bins, EnergyTransform(**ENERGY),
                           EnergyTransform(**{**ENERGY, "std": 0.5}))
    assert ("(support: head [-1, 1] in 8 bins, hl_gauss sigma 0.1875 vs bins [-2, 1] in 8 "
            "bins, hl_gauss sigma 0.2812; std: head 0.05 vs bins 0.5)") in str(err.value)


def test_shallow_ensemble_decodes_the_mixture_and_keeps_member_zero_names() -> None:
    from fairchem_categorical.losses import HistogramLoss

    energy = {**ENERGY, "mean": 0.1, "std": 0.05}
    torch.manual_seed(0)
    single = CategoricalEnergyReadout(4, 8, SUPPORT, energy)
    ensemble = CategoricalEnergyReadout(4, 8, SUPPORT, energy, num_members=3)
    # member 0 has the single head's names: a one-member checkpoint loads into it
    missing = ensemble.load_state_dict(single.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("members.") for k in missing)
    _randomise(ensemble, 1)
    x = torch.randn(5, 4, requires_grad=True)
    batch, natoms = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([3, 2])
    logits = ensemble.system_logits(x, batch, natoms)
    assert logits.shape == (2, 3, SUPPORT["num_bins"])
    out = ensemble.decode(logits, natoms)
    p, c = np_probs(logits), np_centers(SUPPORT)
    member_means = (p * c).sum(-1)  # (B, M)
    n = natoms.numpy()
    np.testing.assert_allclose(out["energy"].detach().numpy(),
                               n * (member_means.mean(1) * 0.05 + 0.1), rtol=1e-5)
    mix = p.mean(1)
    mix_mean = (mix * c).sum(-1)
    var = (mix * (c - mix_mean[:, None]) ** 2).sum(-1)
    # the mixture's variance = mean member variance + variance of the member means
    within = (p * (c - member_means[..., None]) ** 2).sum(-1).mean(1)
    np.testing.assert_allclose(var, within + member_means.var(1), rtol=1e-6)
    np.testing.assert_allclose(out["energy_std"].numpy(), n * np.sqrt(var) * 0.05, rtol=1e-5)
    np.testing.assert_allclose(out["energy_disagreement"].numpy(),
                               n * member_means.std(1) * 0.05, rtol=1e-5)
    assert float(out["energy_disagreement"].min()) > 0  # members differ
    # conservative forces stay one backward pass of the mean
    (grad,) = torch.autograd.grad(out["energy"].sum(), x)
    assert grad.shape == x.shape and bool(torch.isfinite(grad).all())
    # the loss is the mean of the members' own cross-entropies
    loss_fn = HistogramLoss(ensemble.support)
    target = torch.tensor([0.3, -0.2])
    each = [loss_fn(logits[:, m], target) for m in range(3)]
    torch.testing.assert_close(loss_fn(logits, target), torch.stack(each).mean(0))


def test_shallow_ensemble_histogram_in_ev_is_the_mixture() -> None:
    energy = {**ENERGY, "mean": 0.1, "std": 0.05}
    ensemble = CategoricalEnergyReadout(4, 8, SUPPORT, energy, num_members=2)
    _randomise(ensemble, 2)
    x = torch.randn(5, 4)
    batch, natoms = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([3, 2])
    logits = ensemble.system_logits(x, batch, natoms)
    hist = ensemble.histogram_in_ev(logits, natoms, torch.tensor([1.0, 2.0]))
    p = np_probs(logits)
    np.testing.assert_allclose(hist["energy_probs"].numpy(), p.mean(1), rtol=1e-5)
    np.testing.assert_allclose(hist["energy_member_probs"].numpy(), p, rtol=1e-5)
    decoded = ensemble.decode(logits, natoms)["energy"].detach().double() + torch.tensor(
        [1.0, 2.0], dtype=torch.float64)
    mean = (hist["energy_probs"].double() * hist["energy_bin_centers"]).sum(-1)
    torch.testing.assert_close(mean, decoded, rtol=1e-5, atol=1e-6)


def test_num_members_must_be_a_positive_integer() -> None:
    with pytest.raises(ValueError, match="num_members"):
        CategoricalEnergyReadout(4, 8, SUPPORT, ENERGY, num_members=0)
