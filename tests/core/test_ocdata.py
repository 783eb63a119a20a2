"""fairchem-data-oc's adsorbate set, placements and anomaly check, as screen uses them on
either line (fairchem-data-oc is installed beside both)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import add_adsorbate

from fairchem_categorical import ocdata
from fairchem_categorical.screening import adsorbate_spec, build_slab


@pytest.fixture(scope="module")
def slab():
    return build_slab("Cu/fcc111")


def test_adsorbate_database_ships_in_the_wheel():
    db = ocdata.adsorbate_database()
    assert len(db) >= 80 and {"*O", "*OH", "*CO", "*H"} <= set(db)
    atoms, binding = db["*OH"]
    assert atoms.get_chemical_formula() == "HO" and atoms[binding[0]].symbol == "O"


def test_placements_are_tagged_and_sit_above_the_surface(slab):
    spec = adsorbate_spec("*CO", ocdata.adsorbate_database())
    placed = ocdata.place(slab, spec, 3, "heuristic", seed=0)
    assert len(placed) == 3  # the 3 asked for: this slab has more heuristic sites
    for atoms in placed:
        tags = atoms.get_tags()
        assert (tags == 2).sum() == 2 and len(atoms) == len(slab) + 2
        assert atoms.positions[tags == 2, 2].min() > slab.positions[:, 2].max() + 0.5
    again = ocdata.place(slab, spec, 3, "heuristic", seed=0)
    np.testing.assert_array_equal(placed[0].positions, again[0].positions)  # seeded
    with pytest.raises(ValueError, match="placement mode"):
        ocdata.place(slab, spec, 3, "everywhere", seed=0)


def desorbed_case(slab):
    """(initial, final, slab): an O placed on the surface, then 4 A above where it was."""
    initial = slab.copy()
    add_adsorbate(initial, "O", 1.2, "fcc")
    initial.set_tags([*slab.get_tags(), 2])
    final = initial.copy()
    final.positions[-1, 2] += 4.0
    return initial, final, slab


def test_desorbed_adsorbate_is_flagged(slab):
    initial, final, slab = desorbed_case(slab)
    assert ocdata.detect_anomaly(initial, initial.copy(), slab) == []
    assert ocdata.detect_anomaly(initial, final, slab) == ["adsorbate_desorbed"]


def test_placing_leaves_the_callers_random_stream_alone(slab):
    """fairchem-data-oc draws from numpy's global RNG; ``place`` seeds it for repeatable
    placements and then hands the caller's stream back where it was."""
    spec = adsorbate_spec("*O", ocdata.adsorbate_database())
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    ocdata.place(slab, spec, 2, "random", seed=7)
    np.testing.assert_array_equal(np.random.random(3), expected)
