"""fairchem 1.10's LmdbDataset for the categorical configs: items load as fairchem's do.

Use it as the dataset ``format`` (``categorical_lmdb`` once the plugin is imported, or
the full class path) with a ``categorical:`` block holding the bins fit-bins wrote
(``energy``, ``support``, optional ``force_support``). The block is checked here, when
the run starts; the targets are binned per batch in the loss path
(``CategoricalTrainer``, ``binner.BatchBinner``), as the fairchem 2.x loss encodes them,
not per item: HL-Gauss over every |F_i| of every item cost more than the item load
itself, and even the per-item scalars cost 9% of it.
"""

from __future__ import annotations

from typing import Any

from fairchem.core.common.registry import registry
from fairchem.core.datasets.lmdb_dataset import LmdbDataset

from fairchem_categorical.binner import BatchBinner


@registry.register_dataset("categorical_lmdb")
class CategoricalLmdbDataset(LmdbDataset):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        # what the trainer will bin with: a bad block is an error now, not at the first step
        self.binner = BatchBinner(config.get("categorical"), owner="categorical_lmdb")
