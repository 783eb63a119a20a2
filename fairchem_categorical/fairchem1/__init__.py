"""fairchem-core 1.10 adapter: categorical heads, loss and binned LMDB dataset.

Importing the package registers ``categorical_energy_head``,
``categorical_direct_force_head``, ``categorical_cross_entropy`` and
``categorical_lmdb`` with fairchem's registry; the shipped configs name the
classes by full path instead, so fairchem's own ``fairchem --mode train``
imports them without any plugin hook.
"""

from fairchem_categorical.fairchem1.dataset import CategoricalLmdbDataset
from fairchem_categorical.fairchem1.heads import CategoricalDirectForceHead, CategoricalEnergyHead
from fairchem_categorical.fairchem1.losses import CategoricalCrossEntropyLoss

__all__ = [
    "CategoricalCrossEntropyLoss",
    "CategoricalDirectForceHead",
    "CategoricalEnergyHead",
    "CategoricalLmdbDataset",
]
