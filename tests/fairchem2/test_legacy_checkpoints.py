"""Checkpoints written before the re-layout still load and predict the same numbers.

``tests/data/legacy/fairchem2`` holds tiny eSEN checkpoints (categorical energy head with
gradient forces; categorical energy + direct-force heads) trained by the code as it was
before the package moved into core/data/report/app, and the predictions that code wrote
for ``frames.extxyz`` (``*.raw.*``: the raw weights its ``predict`` used).
"""

from __future__ import annotations

import pytest

from fairchem_categorical.data import read_frames
from fairchem_categorical.fairchem2.predict import predict_atoms
from tests.reference import LEGACY, assert_predicts_as_recorded

FOLDER = LEGACY / "fairchem2"


@pytest.mark.parametrize("name", ["esen_categorical_conserving", "esen_categorical_direct"])
def test_legacy_checkpoint_predicts_as_recorded(name: str) -> None:
    frames = read_frames([FOLDER / "frames.extxyz"])
    preds = predict_atoms(FOLDER / f"{name}.pt", frames)
    assert_predicts_as_recorded(preds, FOLDER / f"{name}.ema.csv")
