"""Prediction records: batching, per-structure splits, files, and the ensemble combiner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairchem_categorical.ensemble import combine
from fairchem_categorical.predictions import (
    TEXT_COLUMNS,
    StructurePrediction,
    as_columns,
    load_predictions,
    predict_in_chunks,
    read_predictions,
    seeded,
    split_batch,
    write_predictions,
)
from tests.reference import small_frames


def test_split_batch_cuts_per_atom_arrays_at_the_structure_bounds() -> None:
    frames = small_frames(2)  # 18 and 29 atoms
    natoms = np.array([len(a) for a in frames])
    forces = np.arange(natoms.sum() * 3, dtype=float).reshape(-1, 3)
    outputs = {"energy_std": np.array([0.1, 0.2]), "forces_std": np.arange(natoms.sum()) * 1.0,
               "energy_probs": np.eye(2), "energy_bin_centers": np.ones((2, 2))}
    fixed = np.zeros(natoms.sum(), dtype=int)
    preds = split_batch(frames, 10, natoms, np.array([-1.0, -2.0]), forces, outputs, fixed)
    assert [p.index for p in preds] == [10, 11]
    assert [p.natoms for p in preds] == natoms.tolist()
    np.testing.assert_array_equal(preds[1].forces, forces[natoms[0]:])
    np.testing.assert_array_equal(preds[1].forces_std, np.arange(natoms[0], natoms.sum()))
    assert preds[1].energy_std == 0.2 and preds[0].energy == -1.0
    np.testing.assert_array_equal(preds[1].energy_probs, [0.0, 1.0])
    # targets come from each frame's own labels
    assert preds[0].energy_target == frames[0].calc.results["energy"]
    expected_mae = np.abs(forces[:natoms[0]] - frames[0].calc.results["forces"]).mean()
    assert preds[0].forces_mae == pytest.approx(expected_mae)


def test_forces_mae_counts_free_atoms_only() -> None:
    p = StructurePrediction(index=0, sid="a", natoms=2, energy=0.0,
                            forces=np.array([[1.0, 0, 0], [5.0, 0, 0]]),
                            forces_target=np.zeros((2, 3)), fixed=np.array([0, 1]))
    assert p.forces_mae == pytest.approx(1.0 / 3)


def test_predict_in_chunks_batches_in_order_and_reports_progress() -> None:
    seen, said = [], []

    def chunk(frames: list, start: int) -> list[StructurePrediction]:
        seen.append((start, len(frames)))
        return [StructurePrediction(index=start + i, sid=str(f), natoms=1, energy=float(f),
                                    forces=np.zeros((1, 3))) for i, f in enumerate(frames)]

    preds = predict_in_chunks(list(range(7)), 3, chunk, said.append)
    assert seen == [(0, 3), (3, 3), (6, 1)]
    assert [p.energy for p in preds] == list(map(float, range(7)))
    assert said == ["predicted 3/7", "predicted 6/7", "predicted 7/7"]
    with pytest.raises(ValueError, match="no structures"):
        predict_in_chunks([], 3, chunk)
    with pytest.raises(ValueError, match="batch size"):
        predict_in_chunks([1], 0, chunk)


def test_seeded_repeats_and_leaves_the_callers_stream_alone() -> None:
    torch.manual_seed(123)
    with seeded(7, "cpu"):
        a = torch.rand(3)
    after_first = torch.rand(1)
    torch.manual_seed(123)
    with seeded(7, "cpu"):
        b = torch.rand(3)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.rand(1), after_first)  # as if seeded() never ran


def _records() -> list[StructurePrediction]:
    rng = np.random.default_rng(0)
    out = []
    for i, n in enumerate((3, 5)):
        out.append(StructurePrediction(
            index=i, sid=f"s{i}", natoms=n, energy=float(rng.normal()),
            forces=rng.normal(size=(n, 3)), energy_std=0.1 * (i + 1), energy_target=1.0,
            forces_target=rng.normal(size=(n, 3)), fixed=np.zeros(n, int),
            energy_bin_centers=np.linspace(-1, 1, 4), energy_probs=np.full(4, 0.25)))
    return out


def test_files_round_trip_to_the_same_columns_and_arrays(tmp_path) -> None:
    preds = _records()
    cols, arrays = as_columns(preds)
    csv_path, npz_path = write_predictions(preds, tmp_path / "p.csv")
    back_cols, back_arrays = load_predictions(csv_path)
    assert list(back_cols["sid"]) == ["s0", "s1"]
    for key, value in cols.items():
        if key in TEXT_COLUMNS:
            assert list(back_cols[key]) == list(value), key
            continue
        np.testing.assert_allclose(back_cols[key], value, equal_nan=True, err_msg=key)
    assert set(back_arrays) == set(arrays) == {
        "natoms", "forces", "forces_target", "fixed", "energy_bin_centers", "energy_probs"}
    for key in arrays:
        np.testing.assert_array_equal(back_arrays[key], arrays[key])
    assert math.isnan(read_predictions(csv_path)["energy_entropy"][0])  # empty cell -> NaN
    with pytest.raises(FileNotFoundError, match="arrays not found"):
        load_predictions(csv_path, tmp_path / "missing.npz")


def test_ensemble_combines_mean_and_spread() -> None:
    a, b, c = _records(), _records(), _records()
    for k, member in enumerate((a, b, c)):
        for p in member:
            p.energy = float(k)
            p.forces = p.forces + k
    out = combine([a, b, c])
    assert [p.energy for p in out] == [1.0, 1.0]
    assert [p.energy_std for p in out] == [1.0, 1.0]  # std of 0, 1, 2 with ddof=1
    np.testing.assert_allclose(out[0].forces, a[0].forces + 1)
    np.testing.assert_allclose(out[0].forces_std, np.full(3, np.sqrt(3.0)))  # |(1,1,1)|
    with pytest.raises(ValueError, match="at least 2"):
        combine([a])
    with pytest.raises(ValueError, match="different numbers"):
        combine([a, a[:1]])
    b[1].sid = "other"
    with pytest.raises(ValueError, match="disagree on structure 1"):
        combine([a, b])


def test_a_failed_write_leaves_the_previous_files_whole(tmp_path, monkeypatch) -> None:
    preds = _records()
    csv_path, npz_path = write_predictions(preds, tmp_path / "p.csv")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)  # the CSV is done, the NPZ fails
    changed = _records()
    changed[0].energy = 123.0
    with pytest.raises(OSError, match="No space"):
        write_predictions(changed, csv_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_csv_and_npz_of_different_lengths_are_refused(tmp_path) -> None:
    csv_path, _ = write_predictions(_records(), tmp_path / "p.csv")
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(lines[:-1]))  # cut at a row boundary: 1 row left
    with pytest.raises(ValueError, match=r"p\.csv has 1 rows but .*p\.npz holds 2 structures"):
        load_predictions(csv_path)


def test_flag_unseen_elements_marks_rows_and_says_which() -> None:
    from ase import Atoms

    from fairchem_categorical.predictions import flag_unseen_elements
    from fairchem_categorical.targets import EnergyTransform

    frames = [Atoms("CuO"), Atoms("AuO"), Atoms("H2"), Atoms("AuZn")]
    preds = [StructurePrediction(index=i, sid=str(i), natoms=2, energy=0.0,
                                 forces=np.zeros((2, 3))) for i in range(4)]
    said: list[str] = []
    known = EnergyTransform(elements=[1, 8, 29])
    assert flag_unseen_elements(preds, frames, known, said.append) == [1, 3]
    assert [p.unseen_elements for p in preds] == ["", "Au", "", "Zn Au"]
    assert said == ["warning: 2 of 4 structures hold elements the model never saw in training "
                    "(Zn in 1 (3); Au in 2 (1, 3); indices in input order): their energies "
                    "are unreliable (element reference 0 eV); the CSV marks them in "
                    "'unseen_elements'"]
    assert flag_unseen_elements(preds, frames, None, said.append) == [] and len(said) == 1


def _labelled(frames, forces: bool, stress: np.ndarray | None = None):
    """Copies of ``frames`` labelled with energy, and forces/stress as asked."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for atoms in frames:
        a = atoms.copy()
        results = {"energy": atoms.calc.results["energy"]}
        if forces:
            results["forces"] = atoms.calc.results["forces"]
        if stress is not None:
            results["stress"] = stress
        a.calc = SinglePointCalculator(a, **results)
        out.append(a)
    return out


def test_mixed_force_labels_keep_the_labelled_structures_force_metrics() -> None:
    """One structure without forces must not drop every structure's force target."""
    from fairchem_categorical.report.metrics import evaluate_predictions

    frames = small_frames(2)
    mixed = _labelled(frames[:1], forces=True) + _labelled(frames[1:], forces=False)
    natoms = np.array([len(a) for a in frames])
    forces = np.ones((natoms.sum(), 3))
    preds = split_batch(mixed, 0, natoms, np.array([-1.0, -2.0]), forces,
                        {"energy_std": np.array([0.1, 0.2])})
    assert preds[1].forces_target is None
    columns, arrays = as_columns(preds)
    target = arrays["forces_target"]
    np.testing.assert_array_equal(target[:natoms[0]], frames[0].calc.results["forces"])
    assert np.isnan(target[natoms[0]:]).all()
    metrics = evaluate_predictions(columns, arrays)
    want = np.abs(1.0 - frames[0].calc.results["forces"]).mean()  # the labelled one alone
    assert metrics["forces_mae"] == pytest.approx(want)
    assert metrics["forces_mae"] == pytest.approx(preds[0].forces_mae)


def test_stress_is_kept_where_predicted_and_where_labelled(tmp_path) -> None:
    frames = small_frames(2)
    voigt = np.array([0.1, 0.2, 0.3, 0.04, 0.05, 0.06])
    labelled = _labelled(frames, forces=True, stress=voigt)
    natoms = np.array([len(a) for a in frames])
    full = np.array([[[1.0, 6, 5], [6, 2, 4], [5, 4, 3]], [[7.0, 0, 0], [0, 8, 0], [0, 0, 9]]])
    preds = split_batch(labelled, 0, natoms, np.array([-1.0, -2.0]),
                        np.zeros((natoms.sum(), 3)), {}, stress=full.reshape(2, 9))
    np.testing.assert_array_equal(preds[0].stress, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(preds[1].stress_target, voigt)
    csv_path, _ = write_predictions(preds, tmp_path / "p.csv")
    _, arrays = load_predictions(csv_path)
    np.testing.assert_array_equal(arrays["stress"], [[1, 2, 3, 4, 5, 6], [7, 8, 9, 0, 0, 0]])
    np.testing.assert_array_equal(arrays["stress_target"], [voigt, voigt])
    # no stress predicted, none labelled: no arrays
    _, arrays = as_columns(split_batch(frames, 0, natoms, np.zeros(2),
                                       np.zeros((natoms.sum(), 3)), {}))
    assert "stress" not in arrays and "stress_target" not in arrays
