"""TargetBinner: the per-item targets both lines' datasets add, and what it clips."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fairchem_categorical.binner import TargetBinner
from tests.reference import FORCE_SUPPORT, SUPPORT, np_hl_gauss

REFS = [0.0] * 100
REFS[1], REFS[29] = -1.0, -3.0
ENERGY = {"element_references": REFS, "mean": 0.1, "std": 0.5, "level": "per_atom"}


def _item(energy: float, z: list[int], forces: np.ndarray | None = None) -> dict:
    item = {"energy": torch.tensor(energy, dtype=torch.float64),
            "atomic_numbers": torch.tensor(z)}
    if forces is not None:
        item["forces"] = torch.as_tensor(forces, dtype=torch.float32)
    return item


def test_scalar_targets_are_the_binning_space_energy() -> None:
    binner = TargetBinner({"energy": ENERGY})
    item = binner(_item(-6.0, [29, 29, 1]), 0)
    # ((E - sum refs) / N - mean) / std = ((-6 + 7) / 3 - 0.1) / 0.5
    assert float(item["energy_categorical"]) == pytest.approx(((1.0 / 3) - 0.1) / 0.5)
    assert item["energy_categorical"].shape == (1,)


def test_histogram_targets_and_force_magnitudes() -> None:
    forces = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.0, 0.8]])
    binner = TargetBinner({"energy": ENERGY, "support": SUPPORT, "force_support": FORCE_SUPPORT},
                          histograms=True)
    item = binner(_item(-6.0, [29, 29, 1], forces), 0)
    y = ((1.0 / 3) - 0.1) / 0.5
    np.testing.assert_allclose(item["energy_categorical"].numpy(), np_hl_gauss(SUPPORT, [y]),
                               atol=1e-6)
    np.testing.assert_allclose(item["force_magnitude"].numpy(),
                               np_hl_gauss(FORCE_SUPPORT, [5.0, 1.0, 1.0]), atol=1e-6)
    assert binner.num_clipped == 0


def test_clipped_targets_are_counted_per_kind_and_warned_once(caplog) -> None:
    binner = TargetBinner({"energy": ENERGY, "support": SUPPORT, "force_support": FORCE_SUPPORT},
                          histograms=True)
    big = np.array([[9.0, 0.0, 0.0], [0.0, 0.0, 0.1], [0.0, 7.0, 0.0]])  # two beyond 5 eV/A
    with caplog.at_level(logging.WARNING):
        binner(_item(60.0, [29, 29, 1], big), 0)  # y = 41.6: beyond the support's high 6
        binner(_item(-6.0, [29, 29, 1], big), 1)
    assert binner.clipped == {"energy": 1, "force magnitude": 4}
    assert binner.num_clipped == 5
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "item 0" in warned[0] and "clamped" in warned[0]


def test_items_without_energy_or_a_block_without_energy_are_errors() -> None:
    with pytest.raises(ValueError, match="categorical: {energy"):
        TargetBinner({}, owner="my_dataset")
    with pytest.raises(ValueError, match="categorical.support"):
        TargetBinner({"energy": ENERGY}, histograms=True)
    with pytest.raises(ValueError, match="item 4 has no 'energy'"):
        TargetBinner({"energy": ENERGY})({"atomic_numbers": torch.tensor([1])}, 4)


def test_tally_fields_mark_each_clamped_target_of_the_item() -> None:
    """fairchem 1.10's trainer sums these in the main process: counts made in a
    dataloader worker would otherwise stay there."""
    binner = TargetBinner({"energy": ENERGY, "support": SUPPORT, "force_support": FORCE_SUPPORT},
                          histograms=True, tally_fields=True)
    big = np.array([[9.0, 0.0, 0.0], [0.0, 0.0, 0.1], [0.0, 7.0, 0.0]])
    outside = binner(_item(60.0, [29, 29, 1], big), 0)
    assert outside["energy_categorical_outside"].tolist() == [1]
    assert outside["force_magnitude_outside"].tolist() == [1, 0, 1]  # |F| 9 and 7 > 5
    inside = binner(_item(-6.0, [29, 29, 1], big / 10), 1)
    assert inside["energy_categorical_outside"].tolist() == [0]
    assert inside["force_magnitude_outside"].tolist() == [0, 0, 0]
    assert "energy_categorical_outside" not in TargetBinner({"energy": ENERGY})(
        _item(-6.0, [29, 29, 1]), 0)


def test_elements_the_bins_never_saw_are_warned_once_each(caplog) -> None:
    binner = TargetBinner({"energy": {**ENERGY, "elements": [1, 29]}})
    with caplog.at_level(logging.WARNING):
        binner(_item(-6.0, [29, 29, 1]), 0)
        binner(_item(-6.0, [79, 29, 8]), 1)  # Au and O: unseen
        binner(_item(-6.0, [79, 8]), 2)  # nothing new
        binner(_item(-6.0, [78]), 3)  # Pt: new
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert "item 1 holds O Au" in warned[0] and "never fitted on" in warned[0]
    assert "item 3 holds Pt" in warned[1]
    assert binner.unseen == {8, 78, 79}
