"""Tests for fairchem_categorical.data: generation, LMDB round trips, conversion, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.db import connect

from fairchem_categorical.data import (
    convert,
    generate_frames,
    make_dataset,
    read_frames,
    write_aselmdb,
)

N_SYSTEMS = 4
FRAMES_PER_SYSTEM = 6


@pytest.fixture(scope="module")
def frames() -> list[Atoms]:
    return generate_frames(n_systems=N_SYSTEMS, seed=0)


def _forces(atoms: Atoms) -> np.ndarray:
    """Stored (unconstrained) forces."""
    return np.asarray(atoms.calc.results["forces"])


def _fixed_indices(atoms: Atoms) -> np.ndarray:
    fix = [c for c in atoms.constraints if isinstance(c, FixAtoms)]
    assert len(fix) == 1
    return np.sort(fix[0].get_indices())


def _assert_same_frames(a: list[Atoms], b: list[Atoms], atol: float = 1e-6) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.get_chemical_symbols() == y.get_chemical_symbols()
        np.testing.assert_allclose(x.positions, y.positions, atol=atol)
        np.testing.assert_allclose(x.cell[:], y.cell[:], atol=atol)
        assert x.get_potential_energy() == pytest.approx(y.get_potential_energy(), abs=atol)
        np.testing.assert_allclose(_forces(x), _forces(y), atol=atol)
        np.testing.assert_array_equal(x.get_tags(), y.get_tags())
        np.testing.assert_array_equal(_fixed_indices(x), _fixed_indices(y))


# ------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------


def test_generated_frames_shapes_tags_constraints(frames: list[Atoms]) -> None:
    assert len(frames) == N_SYSTEMS * FRAMES_PER_SYSTEM
    assert Counter(f.info["sid"] for f in frames) == {s: FRAMES_PER_SYSTEM for s in range(4)}
    for f in frames:
        assert 15 <= len(f) <= 40
        assert np.isfinite(f.get_potential_energy())
        forces = _forces(f)
        assert forces.shape == (len(f), 3)
        assert np.all(np.isfinite(forces))
        assert f.pbc.all()
        assert f.cell.volume > 100.0
        tags = f.get_tags()
        assert set(tags.tolist()) == {0, 1, 2}
        # FixAtoms fixes exactly the tag-0 (bottom) atoms, and they sit below the others.
        np.testing.assert_array_equal(_fixed_indices(f), np.flatnonzero(tags == 0))
        assert f.positions[tags == 0, 2].max() < f.positions[tags == 1, 2].min()
        assert f.positions[tags == 2, 2].min() > f.positions[tags == 1, 2].max()
        assert isinstance(f.info["fid"], int)
        assert f.info["metal"] in ("Cu", "Pt", "Ni", "Pd", "Ag", "Au")
        assert f.info["facet"] in ("fcc111", "fcc100")
        assert f.info["adsorbate"] in ("H", "O", "N", "C", "OH", "CO", "NH", "CH", "NO")
        n_ads = len(f.info["adsorbate"])  # all adsorbate names are one symbol per atom here
        assert int((tags == 2).sum()) == n_ads
        # vacuum of several Å above the highest and below the lowest atom
        assert f.cell[2, 2] - f.positions[:, 2].max() > 5.0
        assert f.positions[:, 2].min() > 5.0
    for sid in range(N_SYSTEMS):
        sys_frames = [f for f in frames if f.info["sid"] == sid]
        assert [f.info["fid"] for f in sys_frames] == list(range(FRAMES_PER_SYSTEM))
        assert {f.info["kind"] for f in sys_frames} == {"relax", "rattle"}
        # all frames of a system share composition, cell and tags
        assert len({f.get_chemical_formula() for f in sys_frames}) == 1
        assert len({f.info["adsorbate"] for f in sys_frames}) == 1
        # frames differ from each other (relax snapshots and rattles)
        energies = [f.get_potential_energy() for f in sys_frames]
        assert len(set(np.round(energies, 8))) == FRAMES_PER_SYSTEM


def test_stored_labels_equal_fresh_emt(frames: list[Atoms]) -> None:
    for f in frames:
        fresh = f.copy()
        fresh.calc = EMT()
        assert fresh.get_potential_energy() == pytest.approx(f.get_potential_energy(), abs=1e-8)
        assert np.allclose(fresh.get_forces(apply_constraint=False), _forces(f), atol=1e-8)


def test_relaxation_lowers_energy_and_forces(frames: list[Atoms]) -> None:
    for sid in range(N_SYSTEMS):
        relax = [f for f in frames if f.info["sid"] == sid and f.info["kind"] == "relax"]
        first, last = relax[0], relax[-1]
        energies = [f.get_potential_energy() for f in relax]
        assert last.get_potential_energy() == min(energies) < first.get_potential_energy()
        assert [f.info["relax_step"] for f in relax] == sorted(f.info["relax_step"] for f in relax)
        free = first.get_tags() != 0
        fmax_first = np.linalg.norm(_forces(first)[free], axis=1).max()
        fmax_last = np.linalg.norm(_forces(last)[free], axis=1).max()
        assert fmax_last < fmax_first
        assert fmax_last < 1.0


def test_generation_is_deterministic(frames: list[Atoms]) -> None:
    again = generate_frames(n_systems=2, seed=0)
    # system `sid` depends only on (seed, sid): a smaller run is a prefix of a larger one
    for a, b in zip(again, frames[: len(again)], strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(_forces(a), _forces(b))
        assert a.info == b.info
    other = generate_frames(n_systems=2, seed=1)
    assert [len(a) for a in other] != [len(a) for a in again] or not all(
        np.allclose(a.positions, b.positions) for a, b in zip(other, again, strict=True)
    )
    e_other = np.array([a.get_potential_energy() for a in other])
    e_again = np.array([a.get_potential_energy() for a in again])
    assert not np.allclose(e_other, e_again)


def test_rattle_scale_makes_hotter_rattles() -> None:
    calls: list[str] = []
    cold = generate_frames(n_systems=2, seed=3, frames_per_system=4, progress=calls.append)
    hot = generate_frames(n_systems=2, seed=3, frames_per_system=4, rattle_scale=5.0)
    assert calls and calls[-1].startswith("generated 2/2")
    assert len(cold) == len(hot) == 8
    for c, h in zip(cold, hot, strict=True):
        assert c.info["kind"] == h.info["kind"]
        if c.info["kind"] == "relax":
            np.testing.assert_array_equal(c.positions, h.positions)
        else:
            assert h.info["rattle_sigma"] == pytest.approx(5.0 * c.info["rattle_sigma"])
            assert 0.02 <= c.info["rattle_sigma"] <= 0.1
    rattled = [i for i, c in enumerate(cold) if c.info["kind"] == "rattle"]
    f_cold = max(np.abs(_forces(cold[i])).max() for i in rattled)
    f_hot = max(np.abs(_forces(hot[i])).max() for i in rattled)
    assert f_hot > f_cold


def test_ood_splits_change_one_thing_each(tmp_path: Path) -> None:
    from fairchem_categorical.data import OOD_SPLITS, make_ood_datasets
    from fairchem_categorical.data.embedded import DEFAULT_ADSORBATES, DEFAULT_METALS

    paths = make_ood_datasets(tmp_path, n_systems=2, seed=7)
    assert set(paths) == set(OOD_SPLITS)
    split = {name: read_frames([p]) for name, p in paths.items()}
    for name, frames in split.items():
        assert paths[name] == tmp_path / name
        for f in frames:
            tags = f.get_tags()
            assert set(tags.tolist()) == {0, 1, 2}, name
            np.testing.assert_array_equal(_fixed_indices(f), np.flatnonzero(tags == 0))
            assert f.positions[tags == 0, 2].max() < f.positions[tags == 1, 2].max()
            assert f.positions[tags == 2, 2].min() > f.positions[tags != 2, 2].max() - 0.5
    metals = lambda fr: {s for f in fr for s in f.get_chemical_symbols()}  # noqa: E731
    assert "Al" in metals(split["metal"]) and "Al" not in metals(split["facet"])
    assert {f.info["adsorbate"] for f in split["adsorbates"]}.isdisjoint(DEFAULT_ADSORBATES)
    assert {f.info["metal"] for f in split["adsorbates"]} <= set(DEFAULT_METALS)
    assert {f.info["facet"] for f in split["facet"]} == {"fcc211"}
    assert {f.info["kind"] for f in split["hot"]} == {"rattle"} and len(split["hot"]) == 6
    assert all(f.info["rattle_sigma"] >= 0.06 for f in split["hot"])  # 3 x (0.02..0.1)
    # steps: the top layer is not flat
    step = split["facet"][0]
    top = step.positions[step.get_tags() == 1, 2]
    assert np.ptp(top) > 0.5


def test_generate_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_systems"):
        generate_frames(n_systems=0)
    with pytest.raises(ValueError, match="EMT"):
        generate_frames(n_systems=1, metals=("Fe",))
    with pytest.raises(ValueError, match="adsorbates"):
        generate_frames(n_systems=1, adsorbates=("CH3OH",))
    with pytest.raises(ValueError, match="facets"):
        generate_frames(n_systems=1, facets=("fcc110",))
    with pytest.raises(ValueError, match="kinds"):
        generate_frames(n_systems=1, kinds=("md",))


# ------------------------------------------------------------------------------------------
# aselmdb round trips
# ------------------------------------------------------------------------------------------


def test_read_frames_reads_aselmdb(frames: list[Atoms], tmp_path: Path) -> None:
    path = write_aselmdb(frames[:7], tmp_path / "a.aselmdb")
    back = read_frames([path])
    _assert_same_frames(back, frames[:7], atol=1e-12)
    assert [b.info["fid"] for b in back] == [f.info["fid"] for f in frames[:7]]


def test_write_aselmdb_overwrite(frames: list[Atoms], tmp_path: Path) -> None:
    path = tmp_path / "o.aselmdb"
    write_aselmdb(frames[:3], path)
    with pytest.raises(FileExistsError, match=r"o\.aselmdb"):
        write_aselmdb(frames[:5], path)
    assert len(read_frames([path])) == 3  # untouched
    write_aselmdb(frames[:5], path, overwrite=True)
    assert len(read_frames([path])) == 5


def test_write_aselmdb_rejects_empty_and_unlabelled(frames: list[Atoms], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no structures"):
        write_aselmdb([], tmp_path / "e.aselmdb")
    with pytest.raises(ValueError, match=r"\.aselmdb"):
        write_aselmdb(frames[:1], tmp_path / "e.lmdb")
    bare = frames[0].copy()  # copy() drops the calculator
    with pytest.raises(ValueError, match=r"frames\[1\]: no energy and no forces"):
        write_aselmdb([frames[0], bare], tmp_path / "e.aselmdb")
    assert not (tmp_path / "e.aselmdb").exists()


# ------------------------------------------------------------------------------------------
# conversion
# ------------------------------------------------------------------------------------------


def test_convert_from_extxyz(frames: list[Atoms], tmp_path: Path) -> None:
    xyz = tmp_path / "in.xyz"
    ase.io.write(xyz, frames[:8], format="extxyz")
    out = tmp_path / "out.aselmdb"
    assert convert([xyz], out) == 8
    back = read_frames([out])
    _assert_same_frames(back, frames[:8], atol=1e-6)  # extxyz stores 8 decimals
    assert [b.info["sid"] for b in back] == [f.info["sid"] for f in frames[:8]]
    with pytest.raises(FileExistsError):
        convert([xyz], out)
    assert convert([xyz, xyz], out, overwrite=True) == 16


def test_convert_from_ase_db_and_traj(frames: list[Atoms], tmp_path: Path) -> None:
    db_path = tmp_path / "in.db"
    with connect(db_path) as db:
        for f in frames[:5]:
            db.write(f, data={"sid": f.info["sid"], "fid": f.info["fid"]})
    traj = tmp_path / "in.traj"
    ase.io.write(traj, frames[5:9])
    out = tmp_path / "out.aselmdb"
    assert convert([db_path, traj], out) == 9
    back = read_frames([out])
    _assert_same_frames(back, frames[:9], atol=1e-12)
    assert [b.info["fid"] for b in back[:5]] == [f.info["fid"] for f in frames[:5]]


# ------------------------------------------------------------------------------------------
# read errors
# ------------------------------------------------------------------------------------------


def _labelled(energy: float, forces: np.ndarray | None, n: int = 2) -> Atoms:
    atoms = Atoms("Cu" * n, positions=[[0, 0, 0], [0, 0, 2.5]][:n], cell=[5, 5, 5], pbc=True)
    kw = {"energy": energy}
    if forces is not None:
        kw["forces"] = forces
    atoms.calc = SinglePointCalculator(atoms, **kw)
    return atoms


def test_missing_forces_names_file_and_index(tmp_path: Path) -> None:
    good = _labelled(1.0, np.zeros((2, 3)))
    path = tmp_path / "partial.xyz"
    ase.io.write(path, [good, good, _labelled(2.0, None), good], format="extxyz")
    with pytest.raises(ValueError, match=r"partial\.xyz\[2\]: no forces"):
        read_frames([path])


def test_missing_energy_and_forces(tmp_path: Path) -> None:
    path = tmp_path / "bare.xyz"
    ase.io.write(path, [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])], format="extxyz")
    with pytest.raises(ValueError, match=r"bare\.xyz\[0\]: no energy and no forces"):
        read_frames([path])


def test_non_finite_labels(tmp_path: Path) -> None:
    good = _labelled(1.0, np.zeros((2, 3)))
    nan_e = tmp_path / "nan_energy.traj"
    ase.io.write(nan_e, [good, _labelled(float("nan"), np.zeros((2, 3)))])
    with pytest.raises(ValueError, match=r"nan_energy\.traj\[1\]: non-finite energy"):
        read_frames([nan_e])
    bad_f = np.zeros((2, 3))
    bad_f[1, 2] = np.inf
    inf_f = tmp_path / "inf_forces.traj"
    ase.io.write(inf_f, [_labelled(1.0, bad_f)])
    with pytest.raises(
        ValueError, match=r"inf_forces\.traj\[0\]: non-finite forces on atoms \[1\]"
    ):
        read_frames([inf_f])


def test_empty_and_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no input files"):
        read_frames([])
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.xyz: no structures"):
        read_frames([empty])
    empty_db = tmp_path / "empty.db"
    with connect(empty_db) as db:
        db.write(_labelled(1.0, np.zeros((2, 3))))
        db.delete([1])
    with pytest.raises(ValueError, match=r"empty\.db: no structures"):
        read_frames([empty_db])
    with pytest.raises(FileNotFoundError, match=r"missing\.xyz"):
        read_frames([tmp_path / "missing.xyz"])
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("not\nan xyz file\n")
    with pytest.raises(ValueError, match=r"garbage\.xyz: could not read"):
        read_frames([garbage])
    with pytest.raises(FileNotFoundError, match=r"missing\.xyz"):
        convert([tmp_path / "missing.xyz"], tmp_path / "x.aselmdb")
    assert not (tmp_path / "x.aselmdb").exists()


# ------------------------------------------------------------------------------------------
# make_dataset
# ------------------------------------------------------------------------------------------


def test_make_dataset_splits_by_system(tmp_path: Path) -> None:
    messages: list[str] = []
    paths = make_dataset(tmp_path / "ds", n_systems=N_SYSTEMS, seed=0, progress=messages.append)
    assert set(paths) == {"train", "val", "test"}
    for name, p in paths.items():
        assert p == tmp_path / "ds" / name
        assert (p / "data.aselmdb").is_file() and (p / "metadata.npz").is_file()
    split_frames = {name: read_frames([p]) for name, p in paths.items()}
    sids = {name: {f.info["sid"] for f in fr} for name, fr in split_frames.items()}
    assert {name: len(s) for name, s in sids.items()} == {"train": 2, "val": 1, "test": 1}
    assert sids["train"].isdisjoint(sids["val"])
    assert sids["train"].isdisjoint(sids["test"])
    assert sids["val"].isdisjoint(sids["test"])
    assert set().union(*sids.values()) == set(range(N_SYSTEMS))
    total = sum(len(fr) for fr in split_frames.values())
    assert total == N_SYSTEMS * FRAMES_PER_SYSTEM
    assert any(m.startswith("wrote") for m in messages)

    # same seed -> same split and same data; existing files are not overwritten
    with pytest.raises(FileExistsError):
        make_dataset(tmp_path / "ds", n_systems=N_SYSTEMS, seed=0)
    again = make_dataset(tmp_path / "ds2", n_systems=N_SYSTEMS, seed=0)
    for name in paths:
        _assert_same_frames(read_frames([again[name]]), split_frames[name], atol=0.0)


def test_make_dataset_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one system"):
        make_dataset(tmp_path, n_systems=2)
    with pytest.raises(ValueError, match="sum to 1"):
        make_dataset(tmp_path, n_systems=4, splits={"train": 0.5, "val": 0.2})
    assert list(tmp_path.iterdir()) == []


def test_second_dataset_in_one_folder_is_refused(frames: list[Atoms], tmp_path: Path) -> None:
    """convert --out DIR/train.aselmdb then DIR/test.aselmdb used to merge both under one
    metadata.npz, and fairchem then failed on the size mismatch at training time."""
    src = tmp_path / "in.extxyz"
    ase.io.write(src, frames[:6], format="extxyz")
    assert convert([src], tmp_path / "out" / "train.aselmdb") == 6
    with pytest.raises(ValueError, match=r"one folder holds one dataset.*--out .*out/test"):
        convert([src], tmp_path / "out" / "test.aselmdb")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metadata.npz",
                                                                    "train.aselmdb"]
    assert np.load(tmp_path / "out" / "metadata.npz")["natoms"].tolist() == [
        len(a) for a in frames[:6]]
    # the folder form works, one dataset per folder
    assert convert([src], tmp_path / "out_test") == 6
    assert len(read_frames([tmp_path / "out_test"])) == 6


def test_a_failed_overwrite_keeps_the_old_dataset(frames: list[Atoms], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The new file is written under a temporary name and moved into place only when whole:
    a write that dies half-way (disk full) leaves the old dataset and its metadata as they
    were, and no partial file."""
    import fairchem_categorical.data.common as common

    folder = tmp_path / "ds"
    write_aselmdb(frames[:3], folder / "data.aselmdb")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_savez = np.savez

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(common.np, "savez", disk_full)  # dies after the data file
    with pytest.raises(OSError, match="No space left"):
        write_aselmdb(frames[:5], folder / "data.aselmdb", overwrite=True)
    monkeypatch.setattr(common.np, "savez", real_savez)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert len(read_frames([folder])) == 3


@pytest.mark.parametrize("make, message", [
    (lambda: Atoms(), "no atoms"),
    (lambda: Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], pbc=True),
     "periodic along a, b, c but no cell vector there"),
    (lambda: Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], cell=[5, 5, 0], pbc=[1, 1, 0]),
     None),  # a slab without a vacuum vector: fine, not periodic along c
    (lambda: Atoms("H2", positions=[[0, 0, 0], [0, 0, np.nan]], cell=[5, 5, 5], pbc=True),
     "non-finite positions"),
    (lambda: Atoms("XH", positions=[[0, 0, 0], [0, 0, 0.7]], cell=[5, 5, 5], pbc=True),
     "atomic numbers must lie in 1..118, found [0]"),
])
def test_structures_a_model_cannot_take(tmp_path: Path, make, message) -> None:
    atoms = make()
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    path = tmp_path / "s.traj"
    ase.io.write(path, [atoms])
    if message is None:
        assert len(read_frames([path])) == 1
    else:
        with pytest.raises(ValueError, match=rf"s\.traj\[0\]: {message.replace('[', '.')}"):
            read_frames([path])


def test_non_finite_stress_is_an_error(tmp_path: Path) -> None:
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], cell=[5, 5, 5], pbc=True)
    atoms.calc = SinglePointCalculator(atoms, energy=1.0, forces=np.zeros((2, 3)),
                                       stress=np.array([0, 0, np.nan, 0, 0, 0.0]))
    ase.io.write(tmp_path / "st.traj", [atoms])
    with pytest.raises(ValueError, match=r"st\.traj\[0\]: non-finite stress"):
        read_frames([tmp_path / "st.traj"])


def test_convert_keeps_stress_where_a_frame_has_it(tmp_path: Path) -> None:
    """Energy, forces and stress in; all three back out of the ASE-LMDB (as fairchem reads
    it); a frame without stress stays without."""
    voigt = np.array([0.01, -0.02, 0.03, 0.004, -0.005, 0.006])
    with_stress = _labelled(1.0, np.full((2, 3), 0.1))
    with_stress.calc = SinglePointCalculator(with_stress, energy=1.0,
                                             forces=np.full((2, 3), 0.1), stress=voigt)
    without = _labelled(2.0, np.zeros((2, 3)))
    ase.io.write(tmp_path / "in.traj", [with_stress, without])
    out = tmp_path / "out.aselmdb"
    assert convert([tmp_path / "in.traj"], out) == 2
    first, second = read_frames([out])
    np.testing.assert_allclose(first.calc.results["stress"], voigt, atol=1e-12)
    assert "stress" not in second.calc.results
    assert second.calc.results["energy"] == 2.0


def test_a_3x3_stress_is_kept_as_voigt(tmp_path: Path) -> None:
    from fairchem_categorical.data.common import label_stress

    atoms = _labelled(1.0, np.zeros((2, 3)))
    atoms.calc.results["stress"] = np.array([[1.0, 6, 5], [6, 2, 4], [5, 4, 3]])
    np.testing.assert_array_equal(label_stress(atoms, "x[0]"), [1, 2, 3, 4, 5, 6])
    atoms.calc.results["stress"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"x\[0\]: stress has shape \(4,\)"):
        label_stress(atoms, "x[0]")
