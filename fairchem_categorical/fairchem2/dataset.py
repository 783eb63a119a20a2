"""ASE-LMDB dataset that adds binning-space targets to each item as it loads.

Use it as the dataset ``format`` (``categorical_ase_db`` once the plugin is
imported, or the full class path) with a ``categorical:`` block holding the
same energy transform (references, mean, std, level) that the heads carry.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from fairchem.core.common.registry import registry
from fairchem.core.datasets.ase_datasets import AseDBDataset

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.targets import EnergyTransform


@registry.register_dataset("categorical_ase_db")
class CategoricalAseDBDataset(AseDBDataset):
    """AseDBDataset + ``energy_categorical`` (and ``force_magnitude``) targets.

    ``categorical`` config keys: ``energy`` (EnergyTransform fields), optional
    ``support`` (to also attach the encoded histogram under
    ``<target_key>_histogram`` and count targets outside the support),
    ``energy_key`` / ``forces_key`` (names after key_mapping),
    ``target_key`` / ``force_magnitude_key`` (names of the added fields).
    """

    def __init__(self, config: dict[str, Any], atoms_transform=None) -> None:
        super().__init__(config, atoms_transform=atoms_transform)
        cat = dict(config.get("categorical") or {})
        if "energy" not in cat:
            raise ValueError(
                "categorical_ase_db needs a 'categorical: {energy: {...}}' block with the "
                "element references, mean, std and level that fit-bins wrote"
            )
        self.energy_transform = EnergyTransform(**dict(cat["energy"]))
        self.energy_key = cat.get("energy_key", "energy")
        self.forces_key = cat.get("forces_key", "forces")
        self.target_key = cat.get("target_key", "energy_categorical")
        self.force_magnitude_key = cat.get("force_magnitude_key", "force_magnitude")
        support = cat.get("support")
        self.support = HistogramSupport.from_spec(dict(support)) if support else None
        self._warned_clipped = False

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return [self[i] for i in range(*idx.indices(len(self)))]
        data = super().__getitem__(idx)
        if self.energy_key not in data:
            raise ValueError(
                f"item {idx} has no '{self.energy_key}': set a2g_args r_energy: True "
                "(and check key_mapping)"
            )
        y = self.energy_transform.to_target(data[self.energy_key], data["atomic_numbers"])
        data[self.target_key] = y.reshape(1)
        if self.forces_key in data:
            data[self.force_magnitude_key] = data[self.forces_key].norm(dim=-1).float()
        if self.support is not None:
            before = self.support.num_clipped
            data[f"{self.target_key}_histogram"] = self.support.encode(y.reshape(1))
            if self.support.num_clipped > before and not self._warned_clipped:
                logging.warning(
                    "energy target %.3f of item %d lies outside the support [%.3f, %.3f]; "
                    "it is clamped to the edge (see fit-bins)", float(y), idx,
                    self.support.low, self.support.high,
                )
                self._warned_clipped = True
        return data

    @property
    def num_clipped(self) -> int:
        return 0 if self.support is None else self.support.num_clipped


def as_tensor_targets(dataset: CategoricalAseDBDataset, key: str) -> torch.Tensor:
    """Every item's added target, stacked (for fit checks and tests)."""
    return torch.cat([dataset[i][key].reshape(-1) for i in range(len(dataset))])
