"""Checkpoints written before the re-layout still load and predict the same numbers.

``tests/data/legacy/fairchem1`` holds tiny EquiformerV2 (categorical energy + direct-force
heads) and eSEN (categorical energy head, gradient forces) checkpoints trained by the
code as it was before the package moved into core/data/report/app, and the predictions
that code wrote for ``frames.extxyz`` (EMA weights, as fairchem 1.10's trainer predicts).
"""

from __future__ import annotations

import pytest

from fairchem_categorical.data import read_frames
from fairchem_categorical.fairchem1.predict import predict_atoms
from tests.reference import LEGACY, assert_predicts_as_recorded

FOLDER = LEGACY / "fairchem1"


@pytest.mark.parametrize("name", ["equiformer_v2_categorical", "esen_categorical_conserving"])
def test_legacy_checkpoint_predicts_as_recorded(name: str) -> None:
    frames = read_frames([FOLDER / "frames.extxyz"])
    preds = predict_atoms(FOLDER / f"{name}.pt", frames)
    assert_predicts_as_recorded(preds, FOLDER / f"{name}.csv")
