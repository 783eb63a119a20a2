"""fairchem-data-oc for screening and the realistic dataset: its adsorbate set, slab
enumeration, placements and VASP inputs.

fairchem-data-oc is one package installed beside either fairchem-core line, so what
``screen`` and ``realistic`` take from it lives here once; each line's ``screening``
adapter adds only its calculator and anomaly check. Nothing here imports ``fairchem.core``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from ase import Atoms
from fairchem.data.oc.core.adsorbate import Adsorbate
from fairchem.data.oc.core.adsorbate_slab_config import AdsorbateSlabConfig
from fairchem.data.oc.core.slab import (
    Slab,
    compute_slabs,
    set_fixed_atom_constraints,
    standardize_bulk,
    tile_and_tag_atoms,
)
from fairchem.data.oc.databases.pkls import ADSORBATE_PKL_PATH
from fairchem.data.oc.utils import DetectTrajAnomaly
from fairchem.data.oc.utils.vasp import write_vasp_input_files
from pymatgen.core.surface import get_symmetrically_distinct_miller_indices

from fairchem_categorical.screening import AdsorbateSpec

MODES = ("heuristic", "random", "random_site_heuristic_placement")


def adsorbate_database() -> dict[str, tuple[Atoms, list[int]]]:
    """fairchem-data-oc's adsorbates (shipped in its wheel) by SMILES: (atoms, binding)."""
    with open(ADSORBATE_PKL_PATH, "rb") as fh:
        db = pickle.load(fh)
    return {entry[1]: (entry[0], list(np.atleast_1d(entry[2]))) for entry in db.values()}


def distinct_millers(bulk: Atoms, max_miller: int) -> list[tuple[int, int, int]]:
    """The symmetrically distinct Miller indices up to ``max_miller`` of a bulk, as
    fairchem-data-oc's slab enumeration sees it (its standardised conventional cell)."""
    struct = standardize_bulk(bulk)
    return [tuple(int(i) for i in m)
            for m in get_symmetrically_distinct_miller_indices(struct, max_miller)]


def slabs(bulk: Atoms, miller: tuple[int, int, int], min_ab: float = 8.0) -> list[Atoms]:
    """Every termination of the ``miller`` surface of ``bulk``, by fairchem-data-oc's
    ``compute_slabs`` (OC20's 7 Å slabs, 20 Å vacuum), tiled to ``min_ab`` Å and tagged
    (1 surface, 0 below) with the tag-0 atoms fixed, as OC20's slabs are."""
    out = []
    for struct, millers, shift, top, oriented in compute_slabs(bulk,
                                                                specific_millers=[miller]):
        atoms = tile_and_tag_atoms(struct, bulk, min_ab=min_ab)
        slab = Slab(None, atoms, millers, shift, top, oriented, min_ab=min_ab)
        slab.atoms.info.update(miller=tuple(int(i) for i in millers), shift=float(shift),
                               top=bool(top))
        out.append(slab.atoms)
    return out


def fix_subsurface(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` with exactly the tag-0 atoms fixed (fairchem-data-oc's rule)."""
    bare = atoms.copy()
    bare.set_constraint()
    return set_fixed_atom_constraints(bare)


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
