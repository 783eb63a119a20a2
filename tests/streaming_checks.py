"""What both lines' streaming tests check: predict, evaluate and fit-uncertainty streamed
from a dataset file give what the in-memory path gives (every structure read first).

Each line's ``test_streaming_predict.py`` calls these with its checkpoint and format
(ASE-LMDB on 2.x, pyg-lmdb on 1.10).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairchem_categorical.app.jobs import evaluate_checkpoint, predict_to_files, stream_files
from fairchem_categorical.data.formats import iter_frames, read_frames, writer
from fairchem_categorical.predictions import as_columns, load_predictions, write_predictions

#: both paths run the same float32 model on the same batches with the same seeds: equal
#: to float64 rounding of the same numbers
RTOL, ATOL = 1e-9, 1e-9


def write_dataset(frames: list, fmt: str, folder: Path) -> Path:
    """``frames`` as a one-file dataset of format ``fmt``; the file's path."""
    suffix = {"aselmdb": ".aselmdb", "pyg-lmdb": ".lmdb"}[fmt]
    return writer(fmt)(frames, folder / f"data{suffix}")


def assert_same_files(a: tuple, b: tuple) -> None:
    """Two (columns, arrays) pairs hold the same keys and numbers."""
    (cols_a, arr_a), (cols_b, arr_b) = a, b
    assert list(cols_a) == list(cols_b) and set(arr_a) == set(arr_b)
    for key in cols_a:
        if cols_a[key].dtype.kind in "US":
            assert list(cols_a[key]) == list(cols_b[key]), key
        else:
            np.testing.assert_allclose(cols_a[key], cols_b[key], rtol=RTOL, atol=ATOL,
                                       equal_nan=True, err_msg=key)
    for key in arr_a:
        assert arr_a[key].shape == arr_b[key].shape, key
        np.testing.assert_allclose(arr_a[key], arr_b[key], rtol=RTOL, atol=ATOL,
                                   equal_nan=True, err_msg=key)


def check_predict(ckpt: Path, predict_atoms: Any, data: Path, tmp: Path) -> None:
    """``predict_to_files`` (streamed, batches of 3) writes what ``predict_atoms`` on every
    frame read first, then ``write_predictions``, writes; unseen elements marked alike."""
    said: list[str] = []
    in_memory = predict_atoms(ckpt, read_frames([data], require_labels=False), batch_size=3,
                              progress=said.append)
    write_predictions(in_memory, tmp / "memory.csv")
    streamed_said: list[str] = []
    written = predict_to_files(ckpt, [data], tmp / "streamed.csv", batch_size=3,
                               progress=streamed_said.append)
    assert written.count == len(in_memory)
    memory, streamed = load_predictions(tmp / "memory.csv"), load_predictions(written.csv_path)
    assert_same_files(memory, streamed)
    assert any(memory[0]["unseen_elements"])  # the check covers a marked structure
    warnings = [s for s in said if s.startswith("warning")]
    assert warnings and warnings == [s for s in streamed_said if s.startswith("warning")]
    # the frames are drawn as the batches go, not read first
    assert isinstance(stream_files(ckpt, [data], batch_size=3), types.GeneratorType)


def check_evaluate(ckpt: Path, predict_atoms: Any, data: Path, tmp: Path) -> None:
    """``evaluate --checkpoint`` (streamed to files, metrics from them) reports what the
    metrics of the in-memory predictions report."""
    from fairchem_categorical.report.evaluate import write_report

    in_memory = predict_atoms(ckpt, read_frames([data], require_labels=False))
    want = write_report(*as_columns(in_memory), tmp / "memory")
    got = evaluate_checkpoint(ckpt, [data], tmp / "streamed")
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float):
            np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12,
                                       equal_nan=True, err_msg=key)
        else:
            assert got[key] == value, key


def check_fit(fit: Any, ckpt: Path, train: Path) -> None:
    """The epistemic fit over a stream equals the fit over every frame read first."""
    want = fit(ckpt, read_frames([train]), batch_size=5)
    stream = iter_frames([train])
    got = fit(ckpt, stream, batch_size=5)
    assert next(stream, None) is None  # consumed
    assert got["num_structures"] == want["num_structures"] == len(read_frames([train]))
    for key, value in want.items():
        if torch.is_tensor(value):
            torch.testing.assert_close(got[key], value, rtol=1e-9, atol=1e-12, msg=key)
        elif isinstance(value, float):
            np.testing.assert_allclose(got[key], value, rtol=1e-9, err_msg=key)
