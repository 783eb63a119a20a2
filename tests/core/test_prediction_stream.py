"""The streaming prediction writer writes exactly what ``write_predictions`` writes, from
batches, whatever mix of labels and outputs the batches hold."""

from __future__ import annotations

import filecmp
import itertools

import numpy as np
import pytest

from fairchem_categorical.prediction_stream import PredictionWriter
from fairchem_categorical.predictions import (
    StructurePrediction,
    load_predictions,
    write_predictions,
)


def _record(i: int, rng: np.random.Generator, forces_target: bool = True,
            histogram: bool = True, stress: bool = True) -> StructurePrediction:
    n = int(rng.integers(1, 6))
    return StructurePrediction(
        index=i, sid=f"s{i}" * (1 + i % 3), natoms=n, energy=float(rng.normal()),
        forces=rng.normal(size=(n, 3)), energy_std=float(rng.random()),
        energy_target=float(rng.normal()) if i % 4 else float("nan"),
        forces_target=rng.normal(size=(n, 3)) if forces_target else None,
        fixed=rng.integers(0, 2, n), forces_entropy=rng.random(n),
        energy_bin_centers=np.linspace(-1, 1, 5) + i if histogram else None,
        energy_probs=rng.dirichlet(np.ones(5)) if histogram else None,
        stress=rng.normal(size=6) if stress else None,
        unseen_elements="Au" if i == 3 else "")


def _streamed(preds: list[StructurePrediction], batch: int, path) -> tuple:
    with PredictionWriter(path) as writer:
        for start in range(0, len(preds), batch):
            writer.add(preds[start:start + batch])
    assert writer.count == len(preds)
    return writer.paths


def _same(a: tuple, b: tuple) -> None:
    (cols_a, arr_a), (cols_b, arr_b) = a, b
    assert list(cols_a) == list(cols_b)
    for key in cols_a:
        if cols_a[key].dtype.kind in "US":
            assert list(cols_a[key]) == list(cols_b[key]), key
        else:
            np.testing.assert_array_equal(cols_a[key], cols_b[key], err_msg=key)
    assert set(arr_a) == set(arr_b)
    for key in arr_a:
        assert arr_a[key].dtype == arr_b[key].dtype and arr_a[key].shape == arr_b[key].shape
        np.testing.assert_array_equal(arr_a[key], arr_b[key], err_msg=key)


# which structures lack force targets / histograms / stress: none, the first batch only,
# a later batch only, scattered
LACKING = {"none": set(), "first": {0, 1}, "later": {5, 6}, "scattered": {2, 7}}


@pytest.mark.parametrize(("lacking", "what"), list(itertools.product(
    LACKING, ("forces_target", "histogram", "stress"))))
def test_streamed_files_equal_the_in_memory_writers(tmp_path, lacking: str, what: str) -> None:
    rng = np.random.default_rng(len(lacking) + len(what))
    preds = [_record(i, rng, **{what: i not in LACKING[lacking]}) for i in range(8)]
    whole = write_predictions(preds, tmp_path / "whole.csv")
    for batch in (1, 3, 8):
        streamed = _streamed(preds, batch, tmp_path / f"b{batch}.csv")
        assert filecmp.cmp(whole[0], streamed[0], shallow=False)
        _same(load_predictions(whole[0]), load_predictions(streamed[0]))
    arrays = load_predictions(streamed[0])[1]
    if what == "forces_target":  # kept, NaN rows where a structure has none
        assert ("forces_target" in arrays) and (np.isnan(arrays["forces_target"]).any()
                                                == bool(LACKING[lacking]))
    else:
        key = "energy_probs" if what == "histogram" else "stress"
        assert (key in arrays) == (not LACKING[lacking])


def test_an_error_midway_leaves_no_file_and_keeps_the_old_ones(tmp_path) -> None:
    rng = np.random.default_rng(0)
    old = write_predictions([_record(0, rng)], tmp_path / "p.csv")
    before = [p.read_bytes() for p in old]
    with pytest.raises(RuntimeError, match="stop"), PredictionWriter(tmp_path / "p.csv") as w:
        w.add([_record(1, rng)])
        raise RuntimeError("stop")
    assert [p.read_bytes() for p in old] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.npz"]
    with pytest.raises(ValueError, match="no predictions"), PredictionWriter(tmp_path / "q.csv"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.npz"]


def test_a_batch_whose_arrays_change_shape_is_refused(tmp_path) -> None:
    rng = np.random.default_rng(1)
    a, b = _record(0, rng), _record(1, rng)
    b.energy_probs, b.energy_bin_centers = np.full(3, 1 / 3), np.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="energy_bin_centers.*changed between batches"), \
            PredictionWriter(tmp_path / "p.csv") as writer:
        writer.add([a])
        writer.add([b])
    assert not (tmp_path / "p.csv").exists()
