"""fairchem-data-oc for screening: its adsorbate set, placements and VASP inputs.

fairchem-data-oc is one package installed beside either fairchem-core line, so what
``screen`` takes from it lives here once; each line's ``screening`` adapter adds only its
calculator and anomaly check. Nothing here imports ``fairchem.core``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from ase import Atoms
from fairchem.data.oc.core.adsorbate import Adsorbate
from fairchem.data.oc.core.adsorbate_slab_config import AdsorbateSlabConfig
from fairchem.data.oc.core.slab import Slab
from fairchem.data.oc.databases.pkls import ADSORBATE_PKL_PATH
from fairchem.data.oc.utils import DetectTrajAnomaly
from fairchem.data.oc.utils.vasp import write_vasp_input_files

from fairchem_categorical.screening import AdsorbateSpec

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
    # fairchem-data-oc draws sites and rotations from numpy's global RNG: seed it for
    # repeatable placements, then give the caller's stream back as it was
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        config = AdsorbateSlabConfig(
            Slab(slab_atoms=slab.copy(), min_ab=0.0),
            Adsorbate(adsorbate_atoms=adsorbate.atoms.copy(),
                      adsorbate_binding_indices=list(adsorbate.binding_indices)),
            num_sites=num, mode=mode)
    finally:
        np.random.set_state(state)
    placements = config.atoms_list[:num]
    for atoms in placements:
        atoms.pbc = True
    return placements


def detect_anomaly(initial: Atoms, final: Atoms, final_slab: Atoms) -> list[str]:
    """The anomalies fairchem-data-oc's ``DetectTrajAnomaly`` finds between a placement and
    its relaxation: the four checks fairchem 2.x's AdsorbML recipe runs (1.10 has no
    recipe, so its adapter uses this)."""
    detector = DetectTrajAnomaly(initial, final, atoms_tag=initial.get_tags(),
                                 final_slab_atoms=final_slab)
    checks = (("adsorbate_dissociated", detector.is_adsorbate_dissociated),
              ("adsorbate_desorbed", detector.is_adsorbate_desorbed),
              ("surface_changed", detector.has_surface_changed),
              ("adsorbate_intercalated", detector.is_adsorbate_intercalated))
    return [name for name, check in checks if check()]


def write_vasp_inputs(atoms: Atoms, folder: Path) -> None:
    """VASP input files (OC20's settings) by fairchem-data-oc's writer."""
    write_vasp_input_files(atoms, outdir=str(folder))
