"""fairchem-core 1.10 adapter: categorical heads, loss and binned LMDB dataset.

Importing the package registers ``categorical_energy_head``,
``categorical_direct_force_head``, ``categorical_cross_entropy`` and
``categorical_lmdb`` with fairchem's registry; the shipped configs name the
classes by full path instead, so fairchem's own ``fairchem --mode train``
imports them without any plugin hook.
"""

import warnings

# fairchem 1.10 loads its own bundled Wigner tables with torch.load; torch 2.4 warns about
# every such call. The warning is about fairchem's files, not the user's, so keep it quiet.
warnings.filterwarnings("ignore", message="You are using `torch.load`", category=FutureWarning)

from fairchem_categorical.fairchem1.dataset import CategoricalLmdbDataset  # noqa: E402
from fairchem_categorical.fairchem1.heads import (  # noqa: E402
    CategoricalDirectForceHead,
    CategoricalEnergyHead,
)
from fairchem_categorical.fairchem1.losses import CategoricalCrossEntropyLoss  # noqa: E402

__all__ = [
    "CategoricalCrossEntropyLoss",
    "CategoricalDirectForceHead",
    "CategoricalEnergyHead",
    "CategoricalLmdbDataset",
]
