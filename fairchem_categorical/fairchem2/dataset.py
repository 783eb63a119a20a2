"""ASE-LMDB dataset that adds binning-space targets to each item as it loads.

Use it as the dataset ``format`` (``categorical_ase_db`` once the plugin is
imported, or the full class path) with a ``categorical:`` block holding the
same energy transform (references, mean, std, level) that the heads carry.
"""

from __future__ import annotations

from typing import Any

import torch
from fairchem.core.common.registry import registry
from fairchem.core.datasets.ase_datasets import AseDBDataset

from fairchem_categorical.binner import TargetBinner


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
        self.binner = TargetBinner(config.get("categorical"), owner="categorical_ase_db")

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return [self[i] for i in range(*idx.indices(len(self)))]
        return self.binner(super().__getitem__(idx), idx)

    @property
    def num_clipped(self) -> int:
        return self.binner.num_clipped


def as_tensor_targets(dataset: CategoricalAseDBDataset, key: str) -> torch.Tensor:
    """Every item's added target, stacked (for fit checks and tests)."""
    return torch.cat([dataset[i][key].reshape(-1) for i in range(len(dataset))])
