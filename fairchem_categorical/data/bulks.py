"""Bulk crystals for the realistic set: elements and ordered intermetallics, built offline.

fairchem-data-oc's bulk database (``bulks.pkl``, OC20's 11k Materials Project bulks) is not
in its wheel; it is downloaded on first use, which this machine cannot do. The realistic set
therefore builds its bulks from ASE: the elements in their reference structures and binary
intermetallics of the prototypes OC20's bulks are rich in (L1_2 A3B, B2 AB, L1_0 AB), each a
compound known in that structure. A compound's starting volume follows Zen's law (the mean
of its elements' atomic volumes); :func:`fit_volume` then scales every bulk to the
labeller's own energy minimum, as OC20's bulks are relaxed with the DFT that labels them.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms
from ase.build import bulk as ase_bulk
from ase.calculators.calculator import Calculator
from ase.spacegroup import crystal

__all__ = ["BULKS", "OOD_BULKS", "UNSEEN_ELEMENTS", "bulk_atoms", "bulk_elements", "fit_volume"]

# name -> prototype ("element" or L1_2 / B2 / L1_0 with the species in formula order)
_PROTOTYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    # elements (ASE's reference structures: fcc, hcp, bcc)
    "Cu": ("element", ("Cu",)), "Ag": ("element", ("Ag",)), "Au": ("element", ("Au",)),
    "Ni": ("element", ("Ni",)), "Pd": ("element", ("Pd",)), "Pt": ("element", ("Pt",)),
    "Rh": ("element", ("Rh",)), "Ir": ("element", ("Ir",)), "Al": ("element", ("Al",)),
    "Co": ("element", ("Co",)), "Zn": ("element", ("Zn",)), "Fe": ("element", ("Fe",)),
    # L1_2 (Cu3Au type): majority A on face centres, B on corners
    "Cu3Au": ("L1_2", ("Cu", "Au")), "Ni3Al": ("L1_2", ("Ni", "Al")),
    "Pd3Fe": ("L1_2", ("Pd", "Fe")), "Pt3Co": ("L1_2", ("Pt", "Co")),
    "Cu3Pt": ("L1_2", ("Cu", "Pt")), "Ni3Fe": ("L1_2", ("Ni", "Fe")),
    # B2 (CsCl type)
    "NiAl": ("B2", ("Ni", "Al")), "CuZn": ("B2", ("Cu", "Zn")), "CoAl": ("B2", ("Co", "Al")),
    "FeAl": ("B2", ("Fe", "Al")), "CuPd": ("B2", ("Cu", "Pd")),
    # L1_0 (CuAu type; c/a of the parent fcc cell kept at 1)
    "CuAu": ("L1_0", ("Cu", "Au")), "FePt": ("L1_0", ("Fe", "Pt")),
    "CoPt": ("L1_0", ("Co", "Pt")), "NiPt": ("L1_0", ("Ni", "Pt")),
    # held out for the unseen-elements split: every one holds Ru, Mo or Ti
    "Ru": ("element", ("Ru",)), "Mo": ("element", ("Mo",)), "RuAl": ("B2", ("Ru", "Al")),
    "NiTi": ("B2", ("Ni", "Ti")), "Pt3Ti": ("L1_2", ("Pt", "Ti")),
    "TiAl": ("L1_0", ("Ti", "Al")),
}

#: Elements that no in-distribution bulk holds.
UNSEEN_ELEMENTS = frozenset({"Ru", "Mo", "Ti"})
#: The in-distribution bulks, and those of the unseen-elements split.
OOD_BULKS = tuple(n for n, (_, el) in _PROTOTYPES.items() if UNSEEN_ELEMENTS & set(el))
BULKS = tuple(n for n in _PROTOTYPES if n not in OOD_BULKS)


def _atomic_volume(symbol: str) -> float:
    """Volume per atom (Å^3) of the element in ASE's reference structure."""
    atoms = ase_bulk(symbol)
    return atoms.get_volume() / len(atoms)


def bulk_atoms(name: str) -> Atoms:
    """The bulk ``name`` of :data:`BULKS` or :data:`OOD_BULKS`, at its Zen's-law volume."""
    if name not in _PROTOTYPES:
        raise ValueError(f"unknown bulk {name!r}; choose from {tuple(_PROTOTYPES)}")
    kind, species = _PROTOTYPES[name]
    if kind == "element":
        return ase_bulk(species[0])
    volumes = {s: _atomic_volume(s) for s in species}
    if kind == "L1_2":
        a = (3 * volumes[species[0]] + volumes[species[1]]) ** (1 / 3)  # 3 A + 1 B per cube
        return crystal([species[1], species[0]], [(0, 0, 0), (0, 0.5, 0.5)], spacegroup=221,
                       cellpar=[a, a, a, 90, 90, 90])
    mean = (volumes[species[0]] + volumes[species[1]]) / 2
    if kind == "B2":
        a = (2 * mean) ** (1 / 3)
        return crystal(list(species), [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=221,
                       cellpar=[a, a, a, 90, 90, 90])
    a = (4 * mean) ** (1 / 3)  # L1_0: the fcc parent's cube; two-atom tetragonal cell
    return crystal(list(species), [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=123,
                   cellpar=[a / math.sqrt(2), a / math.sqrt(2), a, 90, 90, 90])


def bulk_elements(name: str) -> frozenset[str]:
    """The elements of bulk ``name``."""
    return frozenset(_PROTOTYPES[name][1])


def fit_volume(atoms: Atoms, calc: Calculator, strains: tuple[float, ...] = (
        -0.04, -0.02, 0.0, 0.02, 0.04)) -> Atoms:
    """``atoms`` scaled isotropically to the minimum of a parabola through the labeller's
    energies at the given linear strains (five single-point calls on a few atoms)."""
    energies = []
    for eps in strains:
        trial = atoms.copy()
        trial.set_cell(atoms.cell * (1 + eps), scale_atoms=True)
        trial.calc = calc
        energies.append(trial.get_potential_energy())
    c2, c1, _ = np.polyfit(strains, energies, 2)
    best = -c1 / (2 * c2) if c2 > 0 else strains[int(np.argmin(energies))]
    best = float(np.clip(best, min(strains), max(strains)))
    out = atoms.copy()
    out.set_cell(atoms.cell * (1 + best), scale_atoms=True)
    return out
