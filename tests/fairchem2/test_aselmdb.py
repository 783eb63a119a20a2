"""ASE-LMDB files the plugin writes, read back by fairchem-core 2.x's own AseDBDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.constraints import FixAtoms

from fairchem_categorical.data import generate_frames, write_aselmdb


@pytest.fixture(scope="module")
def frames() -> list[Atoms]:
    return generate_frames(n_systems=4, seed=0)  # 24 frames


def _forces(atoms: Atoms) -> np.ndarray:
    return np.asarray(atoms.calc.results["forces"])


def _fixed_indices(atoms: Atoms) -> np.ndarray:
    idx = [c.index for c in atoms.constraints if isinstance(c, FixAtoms)]
    return np.sort(np.concatenate(idx)) if idx else np.array([], dtype=int)


def test_write_aselmdb_read_back_with_fairchem(frames: list[Atoms], tmp_path: Path) -> None:
    from fairchem.core.datasets import AseDBDataset

    path = write_aselmdb(frames, tmp_path / "sub" / "data.aselmdb")
    assert path == tmp_path / "sub" / "data.aselmdb"
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.aselmdb", "metadata.npz"]
    natoms = np.load(path.parent / "metadata.npz")["natoms"]
    assert natoms.tolist() == [len(f) for f in frames]

    # AseDBDataset needs src as str: a Path makes its connect_db fail ("aselmdb" in Path).
    dataset = AseDBDataset(
        config={"src": str(path), "a2g_args": {"r_energy": True, "r_forces": True}}
    )
    assert len(dataset) == len(frames) == 24
    for i, ref in enumerate(frames):
        atoms = dataset.get_atoms(i)
        np.testing.assert_allclose(atoms.positions, ref.positions, atol=1e-10)
        np.testing.assert_allclose(atoms.cell[:], ref.cell[:], atol=1e-10)
        assert atoms.pbc.all()
        assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy())
        np.testing.assert_allclose(_forces(atoms), _forces(ref), atol=1e-10)
        np.testing.assert_array_equal(atoms.get_tags(), ref.get_tags())
        np.testing.assert_array_equal(_fixed_indices(atoms), _fixed_indices(ref))
        for key in ("sid", "fid", "metal", "facet", "adsorbate"):
            assert atoms.info[key] == ref.info[key]

        data = dataset[i]  # fairchem 2.x AtomicData
        assert data.energy.shape == (1,)
        assert data.energy.item() == pytest.approx(ref.get_potential_energy(), rel=1e-6)
        assert tuple(data.forces.shape) == (len(ref), 3)
        np.testing.assert_allclose(data.forces.numpy(), _forces(ref), atol=1e-4)
        np.testing.assert_allclose(data.pos.numpy(), ref.positions, atol=1e-4)
        np.testing.assert_array_equal(data.tags.numpy(), ref.get_tags())
        np.testing.assert_array_equal(data.fixed.numpy(), (ref.get_tags() == 0).astype(int))
        np.testing.assert_array_equal(data.atomic_numbers.numpy(), ref.numbers)
        assert data.natoms.item() == len(ref)
        # fairchem builds the sample id from info["sid"] and info["fid"]
        assert data.sid == [f"{ref.info['sid']}-frame-{ref.info['fid']}"]

    # key-value pairs are queryable through select_args
    metal = frames[0].info["metal"]
    subset = AseDBDataset(config={"src": str(path), "select_args": {"selection": f"metal={metal}"}})
    assert len(subset) == sum(f.info["metal"] == metal for f in frames)

