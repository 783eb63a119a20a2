"""The energy transform (targets.py) and the fit of references and supports (bins.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairchem_categorical.bins import fit_bins, fit_element_references
from fairchem_categorical.histogram import HistogramSupport, SupportSpec
from fairchem_categorical.targets import MAX_Z, EnergyTransform, element_symbols

TRUE_REFS = {1: -3.4, 6: -7.9, 8: -4.95, 26: -8.3, 79: -3.2}


def refs_array() -> np.ndarray:
    refs = np.zeros(MAX_Z)
    for z, e in TRUE_REFS.items():
        refs[z] = e
    return refs


def random_compositions(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    elements = np.array(sorted(TRUE_REFS))
    comps = []
    for _ in range(n):
        counts = rng.integers(0, 7, size=len(elements))
        if counts.sum() == 0:
            counts[rng.integers(len(elements))] = 1
        z = np.repeat(elements, counts)
        comps.append(rng.permutation(z))
    return comps


def synthetic_structures(n: int = 120, seed: int = 0):
    """(Z, E, F) with E = sum refs + N * per-atom offset, forces with known magnitudes."""
    rng = np.random.default_rng(seed)
    refs = refs_array()
    out = []
    for z in random_compositions(n, seed + 1):
        per_atom = rng.normal(0.2, 0.05)
        energy = float(refs[z].sum() + per_atom * len(z))
        forces = rng.normal(0.0, 0.7, size=(len(z), 3))
        out.append((z, energy, forces))
    return out


# -- EnergyTransform ------------------------------------------------------------------


@pytest.mark.parametrize("level", ["per_atom", "total"])
def test_energy_transform_round_trip(level: str) -> None:
    refs = refs_array().tolist()
    t = EnergyTransform(element_references=refs, mean=0.15, std=0.4, level=level)
    z = torch.tensor([8, 1, 1, 6, 26])
    energy = -28.7
    ref_sum = -4.95 - 3.4 - 3.4 - 7.9 - 8.3
    assert float(t.reference(z)) == pytest.approx(ref_sum, abs=1e-12)
    y = t.to_target(energy, z)
    assert y.shape == () and y.dtype == torch.float32
    referenced = energy - ref_sum
    if level == "per_atom":
        expected = (referenced / 5 - 0.15) / 0.4
    else:
        expected = (referenced - 0.15) / 0.4
    assert float(y) == pytest.approx(expected, abs=1e-5)
    back = t.to_energy(y.reshape(1), torch.tensor([5]))
    assert float(back[0]) + ref_sum == pytest.approx(energy, abs=1e-5)
    # Batched inverse over several structures of different sizes.
    values = torch.tensor([-1.0, 0.0, 2.5])
    natoms = torch.tensor([3, 10, 1])
    e = t.to_energy(values, natoms)
    if level == "per_atom":
        expected_e = (values.double() * 0.4 + 0.15) * natoms.double()
    else:
        expected_e = values.double() * 0.4 + 0.15
    torch.testing.assert_close(e.double(), expected_e, atol=1e-5, rtol=0)


@pytest.mark.parametrize("level, factor", [("per_atom", 7.0), ("total", 1.0)])
def test_spread_to_energy(level: str, factor: float) -> None:
    t = EnergyTransform(mean=3.0, std=0.5, level=level)
    out = t.spread_to_energy(torch.tensor([0.2]), torch.tensor([7]))
    assert float(out[0]) == pytest.approx(0.2 * 0.5 * factor)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"level": "per_structure"}, "level"),
        ({"std": 0.0}, "std"),
        ({"std": -1.0}, "std"),
        ({"std": float("nan")}, "std"),
        ({"mean": float("inf")}, "mean"),
        ({"element_references": [0.0] * 10}, "element_references"),
    ],
)
def test_energy_transform_invalid(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        EnergyTransform(**kwargs)


def test_to_target_rejects_non_finite_energy() -> None:
    t = EnergyTransform()
    with pytest.raises(ValueError, match="not finite"):
        t.to_target(float("nan"), torch.tensor([1, 1]))


# -- fit_element_references -----------------------------------------------------------


def test_fit_element_references_recovers_known_energies() -> None:
    refs = refs_array()
    comps = random_compositions(200, seed=3)
    noise = np.random.default_rng(4).normal(0.0, 1e-9, size=len(comps))
    energies = np.array([refs[z].sum() for z in comps]) + noise
    fitted = fit_element_references(comps, energies)
    assert fitted.shape == (MAX_Z,)
    np.testing.assert_allclose(fitted, refs, rtol=0, atol=1e-6)
    absent = [i for i in range(MAX_Z) if i not in TRUE_REFS]
    assert np.all(fitted[absent] == 0.0)


# -- fit_bins -------------------------------------------------------------------------


def test_fit_bins_refuses_the_total_level() -> None:
    """The heads take per-atom bins only (a total-energy histogram is not extensive), so
    fit-bins refuses to write a file they would refuse."""
    with pytest.raises(ValueError, match="fit-bins does not support energy level 'total'"):
        fit_bins(iter(synthetic_structures()), level="total")


@pytest.mark.parametrize("level", ["per_atom"])
def test_fit_bins_on_synthetic_data(level: str) -> None:
    data = synthetic_structures()
    margin = 0.25
    fit = fit_bins(iter(data), num_bins=64, level=level, margin=margin)
    assert fit.num_structures == len(data)
    t = fit.energy
    assert t.level == level
    y = np.array([float(t.to_target(e, torch.as_tensor(z))) for z, e, _ in data])
    assert abs(y.mean()) < 1e-5
    assert abs(y.std() - 1.0) < 1e-4
    lo, hi = y.min(), y.max()
    assert fit.target_range[0] == pytest.approx(lo, abs=1e-5)
    assert fit.target_range[1] == pytest.approx(hi, abs=1e-5)
    span = max(hi - lo, 1.0)
    s = fit.support
    assert isinstance(s, SupportSpec) and s.num_bins == 64
    assert s.low <= lo - margin * span + 1e-5
    assert s.high >= hi + margin * span - 1e-5
    assert s.low < lo and s.high > hi
    # Force support: from zero up past the largest per-atom force magnitude.
    fmax = max(float(np.sqrt((f**2).sum(-1)).max()) for _, _, f in data)
    assert fit.force_max == pytest.approx(fmax, rel=1e-12)
    assert fit.force_support.low == -fit.force_support.high  # signed amplitude
    assert fit.force_support.high >= fmax
    assert fit.force_support.high == pytest.approx(fmax * (1 + margin), rel=1e-12)
    # Every training target lands inside the support (no clipping).
    support = HistogramSupport.from_spec(fit.to_dict()["support"])
    assert support.count_outside(torch.tensor(y, dtype=torch.float32)) == 0


def test_fit_bins_references_are_fitted_or_zero() -> None:
    refs = refs_array()
    comps = random_compositions(80, seed=5)
    data = [(z, float(refs[z].sum()), None) for z in comps]
    fit = fit_bins(data)
    np.testing.assert_allclose(fit.energy.element_references, refs, atol=1e-6)
    assert fit.force_max == 0.0
    fit0 = fit_bins(data, fit_references=False)
    assert fit0.energy.element_references == [0.0] * MAX_Z


def test_fit_bins_single_structure() -> None:
    fit = fit_bins([(np.array([1, 8]), -10.0, np.zeros((2, 3)))], fit_references=False,
                   margin=0.25)
    # one structure: mean is its per-atom energy, std falls back to 1, span to 1
    assert fit.energy.mean == pytest.approx(-5.0)
    assert fit.energy.std == pytest.approx(1.0)
    assert fit.support.low == pytest.approx(-0.25)
    assert fit.support.high == pytest.approx(0.25)


def test_fit_bins_empty_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        fit_bins([])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_fit_bins_non_finite_energy_names_structure(bad: float) -> None:
    data = synthetic_structures(5)
    z, _, f = data[2]
    data[2] = (z, bad, f)
    with pytest.raises(ValueError, match=r"structure 2\b"):
        fit_bins(data)


def test_fit_bins_non_finite_forces_name_structure() -> None:
    data = synthetic_structures(4)
    z, e, f = data[1]
    f = f.copy()
    f[0, 1] = math.nan
    data[1] = (z, e, f)
    with pytest.raises(ValueError, match=r"structure 1\b"):
        fit_bins(data)


def test_fit_bins_negative_margin_raises() -> None:
    with pytest.raises(ValueError, match="margin"):
        fit_bins(synthetic_structures(4), margin=-0.1)


def test_fit_bins_unknown_level_raises() -> None:
    with pytest.raises(ValueError, match="level"):
        fit_bins(synthetic_structures(4), level="per_electron")


def test_bins_fit_to_dict_round_trips_into_supports() -> None:
    fit = fit_bins(synthetic_structures(10), num_bins=32, sigma_ratio=1.25)
    d = fit.to_dict()
    assert SupportSpec(**d["support"]) == fit.support
    assert SupportSpec(**d["force_support"]) == fit.force_support
    assert d["support"]["sigma_ratio"] == 1.25
    assert d["stats"]["num_structures"] == 10
    assert EnergyTransform(**d["energy"]).to_dict() == d["energy"]


# -- the elements the bins were fitted on --------------------------------------------


def test_fit_bins_records_the_elements_and_the_transform_flags_others() -> None:
    data = synthetic_structures()
    fit = fit_bins(iter(data))
    present = sorted({int(z) for zs, _, _ in data for z in zs})
    assert fit.energy.elements == present == sorted(TRUE_REFS)
    assert fit.to_dict()["energy"]["elements"] == present
    again = EnergyTransform(**fit.to_dict()["energy"])  # what a bins file / config gives
    assert again.elements == present
    assert again.unseen_elements(torch.tensor([1, 8, 8])) == []
    assert again.unseen_elements(torch.tensor([8, 29, 1, 78, 29])) == [29, 78]


def test_without_recorded_elements_the_non_zero_references_stand_in() -> None:
    """Bins files and checkpoints written before elements were recorded still say what
    they can: an element with a fitted (non-zero) reference was seen; with no references
    at all nothing is known and nothing is flagged."""
    refs = [0.0] * MAX_Z
    refs[1], refs[29] = -1.0, -3.0
    legacy = EnergyTransform(element_references=refs)
    assert legacy.elements is None and "elements" not in legacy.to_dict()
    assert legacy.known_elements() == {1, 29}
    assert legacy.unseen_elements(torch.tensor([1, 29, 46])) == [46]
    assert EnergyTransform().unseen_elements(torch.tensor([46])) == []


def test_element_symbols_and_bad_elements() -> None:
    assert element_symbols([79, 46, 1]) == "Au Pd H"
    with pytest.raises(ValueError, match="atomic numbers in 1..99"):
        EnergyTransform(elements=[0, 8])
    assert EnergyTransform(elements=[8, 1, 8]).elements == [1, 8]
