"""predict, evaluate and fit-uncertainty stream an pyg-lmdb dataset through the 1.10
predict unit and give what the in-memory path gives (``tests/streaming_checks.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairchem_categorical.fairchem1 import uncertainty
from fairchem_categorical.fairchem1.predict import predict_atoms
from tests import streaming_checks
from tests.reference import LEGACY, epistemic_frames, single_torch_thread  # noqa: F401

CKPT = LEGACY / "fairchem1" / "equiformer_v2_categorical.pt"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    frames = epistemic_frames()
    folder = tmp_path_factory.mktemp("data")
    (folder / "test").mkdir()
    (folder / "train").mkdir()
    # 7 held-out structures and 2 of an element the bins never saw: batches of 3 cut both
    test = frames["held_out"][:7] + frames["unseen_element"][:2]
    return {"test": streaming_checks.write_dataset(test, "pyg-lmdb", folder / "test"),
            "train": streaming_checks.write_dataset(frames["train"][:20], "pyg-lmdb",
                                                    folder / "train")}


def test_streamed_predict_equals_in_memory(data, tmp_path) -> None:
    streaming_checks.check_predict(CKPT, predict_atoms, data["test"], tmp_path)


def test_streamed_evaluate_equals_in_memory(data, tmp_path) -> None:
    streaming_checks.check_evaluate(CKPT, predict_atoms, data["test"], tmp_path)


def test_streamed_fit_equals_in_memory(data) -> None:
    streaming_checks.check_fit(uncertainty.fit, CKPT, data["train"])
