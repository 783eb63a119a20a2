"""The realistic dataset: OC20-like systems from fairchem-data-oc's tools, labelled by a
named labeller, cached per system and split by system (fairchem-data-oc is installed beside
both lines; SevenNet only where the ``realistic`` extra is)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from fairchem_categorical import ocdata
from fairchem_categorical.app import cli
from fairchem_categorical.data import labellers, read_frames
from fairchem_categorical.data.bulks import BULKS, OOD_BULKS, UNSEEN_ELEMENTS, bulk_elements
from fairchem_categorical.data.resumable import run_resumable
from fairchem_categorical.realistic import (
    REALISTIC_OOD_SPLITS,
    adsorbate_names,
    generate_realistic_frames,
    make_realistic_dataset,
)

#: Bulks EMT has parameters for: the realistic pipeline without the extra, in seconds.
EMT_BULKS = ("Cu", "Pt", "Cu3Au", "NiAl")
FAST = dict(labeller="emt", bulks=EMT_BULKS, frames_per_system=2, max_steps=4, workers=1)
HAS_SEVENN = labellers.installed("sevenn")


def _same_frames(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_allclose(x.positions, y.positions, atol=1e-10)
        assert x.calc.results["energy"] == pytest.approx(y.calc.results["energy"], abs=1e-8)
        np.testing.assert_allclose(x.calc.results["forces"], y.calc.results["forces"],
                                   atol=1e-8)


def test_labeller_names_are_checked():
    assert labellers.labeller("emt").name == "emt"
    with pytest.raises(ValueError, match="unknown labeller 'dft'; choose one of emt, "
                                         "sevennet:7net-0"):
        labellers.labeller("dft")
    with pytest.raises(ValueError, match="unknown sevennet model 'big'"):
        labellers.labeller("sevennet:big")
    with pytest.raises(ValueError, match="takes no model"):
        labellers.labeller("emt:x")


def test_cli_refuses_the_sevennet_labeller_without_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(labellers, "installed", lambda package: False)
    code = cli.main(["make-dataset", "--labeller", "sevennet:7net-0", "--systems", "2",
                     "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == ("error: the labeller sevennet:7net-0 needs the 'sevenn' package: "
                   "pip install 'fairchem-categorical[realistic]'")
    assert not (tmp_path / "d").exists()


def test_ood_splits_each_change_one_thing():
    seen, unseen = adsorbate_names("seen"), adsorbate_names("unseen")
    db = ocdata.adsorbate_database()
    assert not set(seen) & set(unseen) and len(seen) + len(unseen) == len(db)

    def elements(names):
        return {s for n in names for s in db[n][0].get_chemical_symbols()}

    assert elements(unseen) <= elements(seen)  # unseen adsorbates of seen elements
    seen_elements = set().union(*(bulk_elements(b) for b in BULKS))
    assert not seen_elements & UNSEEN_ELEMENTS
    assert all(bulk_elements(b) & UNSEEN_ELEMENTS for b in OOD_BULKS)
    assert set(REALISTIC_OOD_SPLITS) == {"adsorbates", "elements", "facets", "hot"}
    assert all(len(change) == 1 or set(change) == {"rattle_scale", "kinds"}
               for change in REALISTIC_OOD_SPLITS.values())


def test_placements_carry_oc20_tags_and_constraints_and_labels(tmp_path):
    frames, summary = generate_realistic_frames(2, tmp_path, seed=3, **FAST)
    assert summary["systems"] == 2 and summary["frames"] + summary[
        "dropped_overlapping"] == 4
    db = ocdata.adsorbate_database()
    for frame in frames:
        tags = frame.get_tags()
        assert set(tags) == {0, 1, 2}
        (fix,) = frame.constraints
        assert isinstance(fix, FixAtoms)
        np.testing.assert_array_equal(np.sort(fix.index), np.flatnonzero(tags == 0))
        ads = db[frame.info["adsorbate"]][0]
        assert sorted(frame[tags == 2].get_chemical_symbols()) == sorted(
            ads.get_chemical_symbols())
        assert frame.info["metal"] in EMT_BULKS and max(frame.info["miller"]) <= 1
        # the labels are a direct call of the labeller on the stored atoms
        direct = frame.copy()
        direct.calc = EMT()
        assert frame.calc.results["energy"] == pytest.approx(direct.get_potential_energy(),
                                                             abs=1e-6)
        np.testing.assert_allclose(frame.calc.results["forces"],
                                   direct.get_forces(apply_constraint=False), atol=1e-6)


def test_the_same_seed_gives_the_same_dataset_and_another_seed_another(tmp_path):
    a, _ = generate_realistic_frames(2, tmp_path / "a", seed=5, **FAST)
    b, _ = generate_realistic_frames(2, tmp_path / "b", seed=5, **FAST)  # fresh cache
    _same_frames(a, b)
    c, _ = generate_realistic_frames(2, tmp_path / "c", seed=6, **FAST)
    assert any(len(x) != len(y) or not np.allclose(x.positions, y.positions)
               for x, y in zip(a, c, strict=False))


def test_high_index_facets_and_hot_rattles(tmp_path):
    frames, _ = generate_realistic_frames(1, tmp_path, seed=0, facets="high",
                                          rattle_scale=3.0, kinds=("rattle",), **FAST)
    assert frames and all(max(abs(i) for i in f.info["miller"]) == 2 for f in frames)
    assert all(f.info["kind"] == "rattle" for f in frames)
    with pytest.raises(ValueError, match="facets must be one of"):
        generate_realistic_frames(1, tmp_path, facets="kinked", **FAST)
    with pytest.raises(ValueError, match="the labeller emt has no parameters for the "
                                         "elements of the bulks Rh, Ir, Co, Zn, Fe, "):
        generate_realistic_frames(1, tmp_path, labeller="emt")
    with pytest.raises(ValueError, match="unknown bulk 'Unobtainium'"):
        generate_realistic_frames(1, tmp_path, **{**FAST, "bulks": ("Unobtainium",)})


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    calls: list[int] = []

    def work(key: int) -> int:
        calls.append(key)
        return key * key

    assert run_resumable(work, range(4), tmp_path) == {0: 0, 1: 1, 2: 4, 3: 9}
    (tmp_path / "system_000002.pkl").unlink()   # as if killed before system 2 finished
    (tmp_path / "system_000003.pkl").write_bytes(b"\x80")  # or while writing system 3
    calls.clear()
    assert run_resumable(work, range(5), tmp_path) == {k: k * k for k in range(5)}
    assert calls == [2, 3, 4]


@pytest.mark.slow
def test_workers_run_in_their_own_processes(tmp_path):
    out = run_resumable(math.factorial, range(6), tmp_path, workers=2)
    assert out == {k: math.factorial(k) for k in range(6)}
    assert len(list(tmp_path.glob("system_*.pkl"))) == 6


def test_dataset_folders_are_split_by_system(tmp_path):
    folders = make_realistic_dataset(tmp_path / "d", n_systems=3, seed=1,
                                     splits={"train": 0.34, "val": 0.33, "test": 0.33},
                                     **FAST)
    sids = {name: {f.info["sid"] for f in read_frames([path])}
            for name, path in folders.items()}
    assert all(len(s) == 1 for s in sids.values())
    assert set().union(*sids.values()) == {0, 1, 2}
    assert (tmp_path / "d" / "realistic.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SEVENN, reason="the 'realistic' extra (sevenn) is not installed: "
                                           "pip install 'fairchem-categorical[realistic]'")
def test_tiny_sevennet_set_equals_direct_labeller_calls(tmp_path):
    kw = dict(labeller="sevennet:7net-0", frames_per_system=2, max_steps=3, workers=1, min_ab=5.0,
              splits={"train": 0.5, "test": 0.5})
    folders = make_realistic_dataset(tmp_path / "d", n_systems=2, seed=0, **kw)
    frames = [f for p in folders.values() for f in read_frames([p])]
    assert len(frames) >= 2 and {f.info["labeller"] for f in frames} == {"sevennet:7net-0"}
    calc = labellers.labeller("sevennet:7net-0")()
    for frame in frames:
        tags = frame.get_tags()
        assert set(tags) == {0, 1, 2}
        np.testing.assert_array_equal(np.sort(frame.constraints[0].index),
                                      np.flatnonzero(tags == 0))
        direct = frame.copy()
        direct.calc = calc
        assert frame.calc.results["energy"] == pytest.approx(direct.get_potential_energy(),
                                                             abs=1e-4)
        np.testing.assert_allclose(frame.calc.results["forces"],
                                   direct.get_forces(apply_constraint=False), atol=1e-4)
    # a re-run reads the per-system cache and writes the same dataset
    again = make_realistic_dataset(tmp_path / "d", n_systems=2, seed=0, overwrite=True, **kw)
    _same_frames(frames, [f for p in again.values() for f in read_frames([p])])


def _benchmark(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_uncertainty_benchmark_takes_a_made_dataset(tmp_path):
    bench = _benchmark("uncertainty")
    for name in ("train", "val", "test", "ood/adsorbates", "ood/elements", "ood/facets",
                 "ood/hot"):
        (tmp_path / name).mkdir(parents=True)
    data = bench.given_data(tmp_path)
    assert data["metal"] == tmp_path / "ood" / "elements"
    assert data["facet"] == tmp_path / "ood" / "facets" and data["train"] == tmp_path / "train"
    (tmp_path / "ood" / "hot").rmdir()
    with pytest.raises(SystemExit, match="no ood/hot folder"):
        bench.given_data(tmp_path)


def test_make_dataset_writes_the_ood_splits_too(capsys, tmp_path):
    code = cli.main(["make-dataset", "--systems", "3", "--ood-systems", "1",
                     "--frames-per-system", "2", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    for name in ("train", "val", "test", "ood/adsorbates", "ood/metal", "ood/facet",
                 "ood/hot"):
        assert (tmp_path / name / "data.aselmdb").exists(), name


def test_the_training_split_holds_every_element_of_the_others():
    from ase import Atoms

    from fairchem_categorical.data.embedded import _covering_order

    symbols = {0: "CuO", 1: "Cu", 2: "PtO", 3: "CuH", 4: "Cu", 5: "PtH"}
    frames = [Atoms(s, info={"sid": sid}) for sid, s in symbols.items()]
    perm = [1, 4, 0, 3, 2, 5]  # its first four lack Pt
    order = _covering_order(perm, frames, first=4)
    assert order == [1, 0, 3, 2, 4, 5]  # the systems that bring an element, in perm order
    train = {e for sid in order[:4] for e in Atoms(symbols[sid]).get_chemical_symbols()}
    assert train == {"Cu", "O", "H", "Pt"}
    assert _covering_order(perm, frames, first=3) == perm  # cannot cover: unchanged
