"""Datasets: the embedded EMT set, reading labelled files, writing either line's format.

``embedded`` generates the default data, ``formats`` reads anything ASE reads and converts
it, ``aselmdb`` and ``pyg_lmdb`` are the two fairchem lines' file formats, ``common`` holds
the label checks and the one safe writer they share.
"""

from fairchem_categorical.data.aselmdb import write_aselmdb
from fairchem_categorical.data.common import FORMATS
from fairchem_categorical.data.embedded import (
    ADSORBATES,
    DEFAULT_SPLITS,
    EMT_METALS,
    OOD_SPLITS,
    generate_frames,
    make_dataset,
    make_ood_datasets,
)
from fairchem_categorical.data.formats import convert, read_frames

__all__ = [
    "ADSORBATES",
    "DEFAULT_SPLITS",
    "EMT_METALS",
    "FORMATS",
    "convert",
    "generate_frames",
    "OOD_SPLITS",
    "make_dataset",
    "make_ood_datasets",
    "read_frames",
    "write_aselmdb",
]
