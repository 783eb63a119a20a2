"""fairchem-core 2.x adapter; importing it registers the heads, loss and dataset."""

from fairchem_categorical.fairchem2.dataset import CategoricalAseDBDataset
from fairchem_categorical.fairchem2.heads import CategoricalDirectForceHead, CategoricalEnergyHead
from fairchem_categorical.fairchem2.tasks import CategoricalLoss, HistogramDecoder

__all__ = [
    "CategoricalAseDBDataset",
    "CategoricalDirectForceHead",
    "CategoricalEnergyHead",
    "CategoricalLoss",
    "HistogramDecoder",
]
