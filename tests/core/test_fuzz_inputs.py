"""Property-based tests (hypothesis) over what users feed in: structure files, datasets,
prediction files.

Random structures with NaN or infinite labels, zero atoms, missing cells, mixed labelled
and unlabelled frames; truncated and corrupt LMDB files; damaged prediction CSVs. Each
gets an error that names the file and the structure's index (or the CSV line), and
nothing already written is lost or left half-written. The expected outcome of each frame
is worked out here, independently of the reader.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path

import ase.io
import lmdb
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairchem_categorical.data import convert, read_frames
from fairchem_categorical.data.common import METADATA
from fairchem_categorical.predictions import (
    CSV_COLUMNS,
    TEXT_COLUMNS,
    StructurePrediction,
    load_predictions,
    write_predictions,
)


def _has_torch_geometric() -> bool:
    try:
        import torch_geometric  # noqa: F401
    except ImportError:
        return False
    return True


# the dataset format of the line installed here (both write LMDB files)
FMT, SUFFIX = ("pyg-lmdb", ".lmdb") if _has_torch_geometric() else ("aselmdb", ".aselmdb")
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

ENERGIES = st.one_of(st.floats(-50, 50, allow_nan=False), st.sampled_from(
    [math.nan, math.inf, -math.inf]))


@st.composite
def frame_specs(draw) -> dict:
    n = draw(st.integers(0, 3))
    return {
        "n": n,
        "numbers": draw(st.lists(st.sampled_from([1, 6, 8, 29]), min_size=n, max_size=n)),
        "positions": draw(st.lists(st.tuples(*[st.floats(0.1, 4.9)] * 3), min_size=n,
                                   max_size=n)),
        "cell": draw(st.sampled_from(["cell", "molecule", "pbc-without-cell"])),
        "labels": draw(st.sampled_from(["full", "full", "full", "energy", "forces", "none"])),
        "energy": draw(st.one_of(st.floats(-50, 50, allow_nan=False), ENERGIES)),
        "bad_force": draw(st.sampled_from([None, None, None, math.nan, math.inf])),
    }


def build(spec: dict) -> Atoms:
    n = spec["n"]
    kw: dict = {}
    if spec["cell"] == "cell":
        kw = {"cell": [5.0, 5.0, 5.0], "pbc": True}
    elif spec["cell"] == "pbc-without-cell":
        kw = {"pbc": True}
    atoms = Atoms(numbers=spec["numbers"], positions=np.array(spec["positions"]).reshape(n, 3),
                  **kw)
    forces = np.linspace(-1, 1, 3 * n).reshape(n, 3)
    if spec["bad_force"] is not None and n:
        forces[n - 1, 1] = spec["bad_force"]
    results = {}
    if spec["labels"] in ("full", "energy"):
        results["energy"] = spec["energy"]
    if spec["labels"] in ("full", "forces"):
        results["forces"] = forces
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def problem(spec: dict, need_labels: bool) -> str | None:
    """What the reader must say about this frame (None: fine), worked out by hand in the
    documented order: the structure first, then the energy, then the forces."""
    if spec["n"] == 0:
        return "no atoms"
    if spec["cell"] == "pbc-without-cell":
        return "no cell vector"
    labels = spec["labels"]
    if labels == "none":
        return "no energy and no forces" if need_labels else None
    if labels in ("full", "energy") and not math.isfinite(spec["energy"]):
        return "non-finite energy"
    if labels == "forces" and need_labels:
        return "no energy"
    if labels == "energy":
        return "no forces" if need_labels else None
    if spec["bad_force"] is not None:
        return "non-finite forces"
    return None


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@FUZZ
@given(specs=st.lists(frame_specs(), min_size=1, max_size=4),
       fmt=st.sampled_from(["extxyz", "traj"]))
def test_convert_names_the_first_bad_frame_and_keeps_the_old_dataset(specs, fmt) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / f"in.{fmt}"
        ase.io.write(src, [build(s) for s in specs], format=fmt)
        out = tmp / "dataset"
        good = [build({**specs[0], "n": 2, "numbers": [8, 1], "positions": [(1, 1, 1),
                                                                           (1, 1, 2)],
                       "cell": "cell", "labels": "full", "energy": -3.0, "bad_force": None})]
        ase.io.write(tmp / "old.traj", good)
        convert([tmp / "old.traj"], out, fmt=FMT)  # a dataset already there
        before = _listing(out)

        problems = [problem(s, need_labels=True) for s in specs]
        bad = next((i for i, p in enumerate(problems) if p), None)
        if bad is None:
            assert convert([src], out, overwrite=True, fmt=FMT) == len(specs)
            back = read_frames([out])
            assert len(back) == len(specs)
            for atoms, spec in zip(back, specs, strict=True):
                assert list(atoms.numbers) == spec["numbers"]
                assert atoms.calc.results["energy"] == pytest.approx(spec["energy"])
            assert set(_listing(out)) == {f"data{SUFFIX}", METADATA}
        else:
            with pytest.raises(ValueError) as err:
                convert([src], out, overwrite=True, fmt=FMT)
            assert str(err.value).startswith(f"{src}[{bad}]: ")
            assert problems[bad] in str(err.value)
            assert _listing(out) == before  # the old dataset, untouched; no partial file

        # prediction takes what training refuses: unlabelled frames, energies only
        lenient = [problem(s, need_labels=False) for s in specs]
        first = next((i for i, p in enumerate(lenient) if p), None)
        if first is None:
            frames = read_frames([src], require_labels=False)
            assert [("energy" in (a.calc.results if a.calc else {})) for a in frames] == [
                s["labels"] in ("full", "energy") for s in specs]
        else:
            with pytest.raises(ValueError) as err:
                read_frames([src], require_labels=False)
            assert str(err.value).startswith(f"{src}[{first}]: ")
            assert lenient[first] in str(err.value)


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory) -> Path:
    frames = []
    for i in range(6):
        atoms = Atoms("CuOH", positions=[[0, 0, 0], [0, 0, 1.8], [0, 0.9, 2.3]],
                      cell=[6, 6, 6], pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 - i,
                                           forces=np.full((3, 3), 0.1 * i))
        frames.append(atoms)
    src = tmp_path_factory.mktemp("src") / "in.traj"
    ase.io.write(src, frames)
    out = tmp_path_factory.mktemp("ds") / "d"
    convert([src], out, fmt=FMT)
    return out / f"data{SUFFIX}"


@FUZZ
@given(fraction=st.floats(0.0, 0.999))
def test_a_truncated_lmdb_is_an_error_naming_the_file(dataset_file, fraction) -> None:
    """A cut-short LMDB (an interrupted copy) would crash LMDB itself (SIGBUS); the reader
    refuses it first."""
    data = dataset_file.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / dataset_file.name
        cut.write_bytes(data[:int(fraction * len(data))])
        with pytest.raises(ValueError) as err:
            read_frames([cut])
        assert str(err.value).startswith(str(cut))


@FUZZ
@given(index=st.integers(0, 5), junk=st.binary(min_size=0, max_size=64))
def test_a_corrupt_entry_is_an_error_naming_file_and_index(dataset_file, index, junk) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / dataset_file.name
        bad.write_bytes(dataset_file.read_bytes())
        key = str(index if FMT == "pyg-lmdb" else index + 1).encode()  # ASE rows count from 1
        env = lmdb.open(str(bad), subdir=False, lock=False)
        with env.begin(write=True) as txn:
            txn.put(key, b"\x00garbage" + junk)
        env.close()
        with pytest.raises(ValueError) as err:
            read_frames([bad])
        assert str(err.value).startswith(f"{bad}[{index}]: ")


# -- prediction files ------------------------------------------------------------------

SID_CHARS = st.sampled_from(list("ab7 ,;\"'\nZé-"))  # CSV's special characters too
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.just(math.nan))


@st.composite
def predictions(draw) -> list[StructurePrediction]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 3))
        forces = np.array(draw(st.lists(FLOATS, min_size=3 * n, max_size=3 * n))).reshape(n, 3)
        out.append(StructurePrediction(
            index=i, sid=draw(st.text(alphabet=SID_CHARS, max_size=8)), natoms=n,
            energy=draw(FLOATS), forces=forces, energy_std=draw(FLOATS),
            energy_target=draw(FLOATS),
            unseen_elements=draw(st.sampled_from(["", "Zn", "Au Pd"]))))
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


@FUZZ
@given(preds=predictions())
def test_prediction_files_round_trip_nan_inf_and_odd_text(preds) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, npz_path = write_predictions(preds, Path(tmp) / "p.csv")
        cols, arrays = load_predictions(csv_path)
        for name in ("energy", "energy_std", "energy_target", "natoms"):
            assert _same(cols[name], np.array([getattr(p, name) for p in preds], float)), name
        assert list(cols["unseen_elements"]) == [p.unseen_elements for p in preds]
        assert list(cols["sid"]) == [p.sid for p in preds]
        assert _same(arrays["forces"], np.concatenate([p.forces for p in preds]))
        assert sorted(os.listdir(tmp)) == ["p.csv", "p.npz"]  # no partial files left


@FUZZ
@given(preds=predictions(), line=st.integers(0, 3), column=st.sampled_from(
    ["energy", "energy_std", "natoms"]), junk=st.sampled_from(["abc", "1.2.3", "--", "e5x"]))
def test_a_damaged_prediction_csv_names_file_line_and_column(preds, line, column, junk
                                                             ) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, _ = write_predictions(preds, Path(tmp) / "p.csv")
        row = min(line, len(preds) - 1)
        with csv_path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        rows[row + 1][list(CSV_COLUMNS).index(column)] = junk
        with csv_path.open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
        with pytest.raises(ValueError, match=rf"{csv_path}, line {row + 2}, column "
                                             rf"'{column}': not a number"):
            load_predictions(csv_path)


@FUZZ
@given(preds=predictions(), fraction=st.floats(0.0, 0.999))
def test_a_cut_short_prediction_csv_is_caught(preds, fraction) -> None:
    """Cut anywhere: an error naming the file, or (cut inside the very last value) every
    row back with the last row's trailing text shortened."""
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, _ = write_predictions(preds, Path(tmp) / "p.csv")
        whole = load_predictions(csv_path)[0]
        data = csv_path.read_bytes()
        csv_path.write_bytes(data[:int(fraction * len(data))])
        try:
            cols, _ = load_predictions(csv_path)
        except ValueError as err:
            assert str(csv_path) in str(err)
            return
        # no error: the cut fell inside the last row's last field (text), nothing else
        assert list(cols) == list(whole)
        for key, values in whole.items():
            if key == CSV_COLUMNS[-1]:
                assert list(cols[key][:-1]) == list(values[:-1])
                assert str(values[-1]).startswith(str(cols[key][-1]))
            elif key in TEXT_COLUMNS:
                assert list(cols[key]) == list(values), key
            else:
                assert _same(cols[key], values), key
