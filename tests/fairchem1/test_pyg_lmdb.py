"""Tests for the pyg-lmdb format (fairchem-core 1.10's LmdbDataset files)."""

from __future__ import annotations

import pickle
from pathlib import Path

import ase.io
import lmdb
import numpy as np
import pytest
from ase import Atoms
from ase.constraints import FixAtoms

from fairchem_categorical.app.cli import main
from fairchem_categorical.data import (
    convert,
    generate_frames,
    make_dataset,
    read_frames,
)
from fairchem_categorical.data.pyg_lmdb import read_pyg_lmdb, write_pyg_lmdb


@pytest.fixture(scope="module")
def frames() -> list[Atoms]:
    return generate_frames(n_systems=2, frames_per_system=2, seed=0)


def _fixed(atoms: Atoms) -> np.ndarray:
    out = np.zeros(len(atoms), dtype=int)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            out[c.index] = 1
    return out


def _assert_same(got: list[Atoms], want: list[Atoms]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.numbers.tolist() == b.numbers.tolist()
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)
        np.testing.assert_allclose(a.cell[:], b.cell[:], atol=1e-5)
        assert a.pbc.tolist() == b.pbc.tolist()
        assert a.get_tags().tolist() == b.get_tags().tolist()
        assert _fixed(a).tolist() == _fixed(b).tolist()
        assert a.calc.results["energy"] == pytest.approx(b.calc.results["energy"], abs=1e-9)
        np.testing.assert_allclose(a.calc.results["forces"], b.calc.results["forces"], atol=1e-5)
        assert (a.info["sid"], a.info["fid"]) == (b.info["sid"], b.info["fid"])


def test_round_trip(frames: list[Atoms], tmp_path: Path) -> None:
    path = write_pyg_lmdb(frames, tmp_path / "d" / "data.lmdb")
    assert path == tmp_path / "d" / "data.lmdb"
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.lmdb", "metadata.npz"]
    back = read_pyg_lmdb(path)
    _assert_same(back, frames)
    assert isinstance(back[0].info["sid"], int)
    # read_frames takes the file and the folder, labels checked
    _assert_same(read_frames([path]), frames)
    _assert_same(read_frames([path.parent]), frames)


def test_stored_fields_match_atoms_to_graphs(frames: list[Atoms], tmp_path: Path) -> None:
    import torch

    path = write_pyg_lmdb(frames, tmp_path / "data.lmdb")
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        assert pickle.loads(txn.get(b"length")) == len(frames)
        data = pickle.loads(txn.get(b"1"))
    env.close()
    n = len(frames[1])
    assert data.natoms == n and isinstance(data.natoms, int)
    assert isinstance(data.energy, float)
    expected = {"pos": (torch.float32, (n, 3)), "forces": (torch.float32, (n, 3)),
                "cell": (torch.float32, (1, 3, 3)), "atomic_numbers": (torch.uint8, (n,)),
                "tags": (torch.int64, (n,)), "fixed": (torch.int32, (n,)),
                "pbc": (torch.bool, (3,))}
    for key, (dtype, shape) in expected.items():
        assert (data[key].dtype, tuple(data[key].shape)) == (dtype, shape), key
    assert data.fixed.tolist() == _fixed(frames[1]).tolist()
    assert (data.sid, data.fid) == (frames[1].info["sid"], frames[1].info["fid"])


def test_sid_fid_defaults(frames: list[Atoms], tmp_path: Path) -> None:
    bare = [f.copy() for f in frames[:2]]
    for src, f in zip(frames, bare, strict=False):
        f.info = {}
        f.calc = src.calc
    back = read_pyg_lmdb(write_pyg_lmdb(bare, tmp_path / "data.lmdb"))
    assert [(a.info["sid"], a.info["fid"]) for a in back] == [(0, 0), (1, 0)]


def test_metadata_natoms_and_one_dataset_per_folder(frames: list[Atoms], tmp_path: Path
                                                    ) -> None:
    write_pyg_lmdb(frames[2:], tmp_path / "b.lmdb")
    natoms = np.load(tmp_path / "metadata.npz")["natoms"]
    assert natoms.tolist() == [len(f) for f in frames[2:]]
    # a second file would merge two datasets under one metadata.npz: refused, nothing lost
    with pytest.raises(ValueError, match=r"one folder holds one dataset.*--out .*/a"):
        write_pyg_lmdb(frames[:2], tmp_path / "a.lmdb")
    assert not (tmp_path / "a.lmdb").exists()
    assert np.load(tmp_path / "metadata.npz")["natoms"].tolist() == natoms.tolist()
    assert len(read_pyg_lmdb(tmp_path / "b.lmdb")) == len(frames) - 2


def test_write_errors(frames: list[Atoms], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"empty\.lmdb: no structures"):
        write_pyg_lmdb([], tmp_path / "empty.lmdb")
    with pytest.raises(ValueError, match=r"must end in \.lmdb"):
        write_pyg_lmdb(frames, tmp_path / "data.aselmdb")
    path = write_pyg_lmdb(frames[:1], tmp_path / "data.lmdb")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_pyg_lmdb(frames, path)
    assert len(read_pyg_lmdb(path)) == 1
    write_pyg_lmdb(frames, path, overwrite=True)
    assert len(read_pyg_lmdb(path)) == len(frames)


def test_invalid_frame_leaves_file_untouched(frames: list[Atoms], tmp_path: Path) -> None:
    path = write_pyg_lmdb(frames[:1], tmp_path / "data.lmdb")
    unlabelled = frames[1].copy()
    with pytest.raises(ValueError, match=r"frames\[1\]: no energy"):
        write_pyg_lmdb([frames[0], unlabelled], path, overwrite=True)
    assert len(read_pyg_lmdb(path)) == 1
    with pytest.raises(ValueError, match=r"frames\[0\]"):
        write_pyg_lmdb([unlabelled], tmp_path / "new.lmdb")
    assert not (tmp_path / "new.lmdb").exists()


def test_partial_file_removed(frames: list[Atoms], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    import fairchem_categorical.data.pyg_lmdb as mod

    def boom(path: Path, values: list[bytes]) -> None:
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(mod, "_put_all", boom)
    with pytest.raises(OSError, match="disk full"):
        write_pyg_lmdb(frames, tmp_path / "data.lmdb")
    assert not (tmp_path / "data.lmdb").exists()


def test_make_dataset_pyg(tmp_path: Path) -> None:
    paths = make_dataset(tmp_path, n_systems=3, seed=1, frames_per_system=2, fmt="pyg-lmdb",
                         splits={"train": 0.34, "val": 0.33, "test": 0.33})
    assert set(paths) == {"train", "val", "test"}
    total = 0
    for name, folder in paths.items():
        assert folder == tmp_path / name
        assert sorted(p.name for p in folder.iterdir()) == ["data.lmdb", "metadata.npz"]
        back = read_frames([folder])
        assert np.load(folder / "metadata.npz")["natoms"].tolist() == [len(a) for a in back]
        total += len(back)
    assert total == 6


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aselmdb, pyg-lmdb"):
        make_dataset(tmp_path, n_systems=3, fmt="xyz")
    with pytest.raises(ValueError, match="aselmdb, pyg-lmdb"):
        convert([tmp_path / "x.extxyz"], tmp_path / "out", fmt="pyg")


def test_convert_cli(frames: list[Atoms], tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.extxyz"
    ase.io.write(src, frames)
    assert main(["convert", str(src), "--out", str(tmp_path / "out"),
                 "--format", "pyg-lmdb"]) == 0
    assert "wrote 4 structures" in capsys.readouterr().out
    back = read_pyg_lmdb(tmp_path / "out" / "data.lmdb")
    assert [a.get_potential_energy() for a in back] == pytest.approx(
        [f.get_potential_energy() for f in frames])
    assert (tmp_path / "out" / "metadata.npz").exists()
    # a pyg folder converts back (input from .lmdb); mixing formats in one folder is refused
    assert convert([tmp_path / "out"], tmp_path / "again.lmdb", fmt="pyg-lmdb") == 4
    with pytest.raises(ValueError, match="one folder holds one dataset"):
        convert([src], tmp_path / "out" / "data.aselmdb")
    with pytest.raises(SystemExit):
        main(["convert", str(src), "--out", str(tmp_path / "x"), "--format", "npz"])


def test_lmdb_dataset_reads_it(frames: list[Atoms], tmp_path: Path) -> None:
    """fairchem 1.10's own LmdbDataset and collater take the folder."""
    from fairchem.core import datasets

    folder = tmp_path / "train"
    write_pyg_lmdb(frames, folder / "data.lmdb")
    ds = datasets.LmdbDataset({"src": str(folder)})
    assert len(ds) == len(frames)
    for i, atoms in enumerate(frames):
        item = ds[i]
        assert item.natoms == len(atoms)
        assert item.energy == pytest.approx(atoms.get_potential_energy())
        np.testing.assert_allclose(item.forces.numpy(), atoms.calc.results["forces"], atol=1e-5)
    batch = datasets.data_list_collater([ds[0], ds[3]], otf_graph=True)
    assert batch.natoms.tolist() == [len(frames[0]), len(frames[3])]
    assert batch.pos.shape == (len(frames[0]) + len(frames[3]), 3)
    assert batch.energy.shape == (2,)
    assert batch.forces.shape == batch.pos.shape


def test_stress_is_kept_as_atoms_to_graphs_stores_it(frames: list[Atoms], tmp_path: Path
                                                      ) -> None:
    """A frame's stress goes in as AtomsToGraphs(r_stress) stores it, (3, 3), and comes
    back as ASE's Voigt stress; a frame without stays without."""
    import torch
    from ase.calculators.singlepoint import SinglePointCalculator
    from fairchem.core.common.data_parallel import data_list_collater
    from fairchem.core.preprocessing import AtomsToGraphs

    voigt = np.array([0.01, -0.02, 0.03, 0.004, -0.005, 0.006])
    with_stress = frames[0].copy()
    with_stress.calc = SinglePointCalculator(
        with_stress, energy=frames[0].calc.results["energy"],
        forces=frames[0].calc.results["forces"], stress=voigt)
    path = write_pyg_lmdb([with_stress, frames[1]], tmp_path / "data.lmdb")
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        stored = pickle.loads(txn.get(b"0"))
        plain = pickle.loads(txn.get(b"1"))
    env.close()
    a2g = AtomsToGraphs(r_energy=True, r_forces=True, r_stress=True, r_edges=False)
    want = a2g.convert(with_stress).stress
    assert stored.stress.shape == want.shape == (3, 3)
    torch.testing.assert_close(stored.stress, want.float())
    # the frame without: a NaN stress, so that fairchem's collater takes the two together
    assert torch.isnan(plain.stress).all()
    batch = data_list_collater([stored, plain], otf_graph=True)
    assert batch.stress.shape == (6, 3)
    first, second = read_pyg_lmdb(path)
    np.testing.assert_allclose(first.calc.results["stress"], voigt, atol=1e-7)
    assert "stress" not in second.calc.results
