"""Screening tools for fairchem-core 2.x: the calculator, fairchem-data-oc placements, and
the anomaly check of fairchem's own AdsorbML recipe (``recipes.adsorbml.detect_anomaly``).

The screening logic is the core's (``fairchem_categorical.screening``); this module only
hands it what fairchem provides.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from ase import Atoms
from fairchem.core.components.calculate.recipes.adsorbml import detect_anomaly
from fairchem.data.oc.core.adsorbate import Adsorbate
from fairchem.data.oc.core.adsorbate_slab_config import AdsorbateSlabConfig
from fairchem.data.oc.core.slab import Slab
from fairchem.data.oc.databases.pkls import ADSORBATE_PKL_PATH
from fairchem.data.oc.utils.vasp import write_vasp_input_files

from fairchem_categorical.fairchem2.calculator import CategoricalCalculator
from fairchem_categorical.screening import AdsorbateSpec, ScreeningTools

MODES = ("heuristic", "random", "random_site_heuristic_placement")


def adsorbate_database() -> dict[str, tuple[Atoms, list[int]]]:
    """fairchem-data-oc's adsorbates (shipped in its wheel) by SMILES: (atoms, binding)."""
    with open(ADSORBATE_PKL_PATH, "rb") as fh:
        db = pickle.load(fh)
    return {entry[1]: (entry[0], list(np.atleast_1d(entry[2]))) for entry in db.values()}


def place(slab: Atoms, adsorbate: AdsorbateSpec, num: int, mode: str, seed: int
          ) -> list[Atoms]:
    """``num`` placements by fairchem-data-oc's ``AdsorbateSlabConfig`` (tag 2 = adsorbate)."""
    if mode not in MODES:
        raise ValueError(f"unknown placement mode {mode!r}; choose one of {MODES}")
    np.random.seed(seed)  # fairchem-data-oc draws sites and rotations from numpy's global RNG
    config = AdsorbateSlabConfig(
        Slab(slab_atoms=slab.copy(), min_ab=0.0),
        Adsorbate(adsorbate_atoms=adsorbate.atoms.copy(),
                  adsorbate_binding_indices=list(adsorbate.binding_indices)),
        num_sites=num, mode=mode)
    placements = config.atoms_list[:num]
    for atoms in placements:
        atoms.pbc = True
    return placements


def tools(checkpoint: str | Path, device: str = "cpu", task_name: str | None = None,
          seed: int = 41) -> ScreeningTools:
    """The calculator and fairchem's placement and anomaly check, for ``screen``."""
    calc = CategoricalCalculator.from_model_checkpoint(checkpoint, task_name=task_name,
                                                       device=device, seed=seed)
    return ScreeningTools(calculator=calc, place=place, anomalies=detect_anomaly)


def write_vasp_inputs(atoms: Atoms, folder: Path) -> None:
    """VASP input files (OC20's settings) by fairchem-data-oc's writer."""
    write_vasp_input_files(atoms, outdir=str(folder))
