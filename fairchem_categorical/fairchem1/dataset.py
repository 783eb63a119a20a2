"""fairchem 1.10's LmdbDataset with the targets binned on load.

Use it as the dataset ``format`` (``categorical_lmdb`` once the plugin is
imported, or the full class path) with a ``categorical:`` block holding the
bins fit-bins wrote (``energy``, ``support``, optional ``force_support``).
Each item gains ``energy_categorical`` (1, K) and, with a force support,
``force_magnitude`` (N, K_f): the histograms the cross-entropy loss trains on.
"""

from __future__ import annotations

from typing import Any

from fairchem.core.common.registry import registry
from fairchem.core.datasets.lmdb_dataset import LmdbDataset

from fairchem_categorical.binner import TargetBinner


@registry.register_dataset("categorical_lmdb")
class CategoricalLmdbDataset(LmdbDataset):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        # per-item clamp counts travel with the batch to CategoricalTrainer
        self.binner = TargetBinner(config.get("categorical"), histograms=True,
                                   owner="categorical_lmdb", tally_fields=True)

    def __getitem__(self, idx: int):
        return self.binner(super().__getitem__(idx), idx)

    @property
    def num_clipped(self) -> int:
        return self.binner.num_clipped
