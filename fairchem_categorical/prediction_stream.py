"""Predictions written as they come: predict's CSV + NPZ from a stream of batches.

``write_predictions`` needs every record at once; at the size of OC20 the records alone
outgrow memory. ``PredictionWriter`` appends each batch's CSV rows at once and each NPZ
array's rows to a raw file of its own, then builds the NPZ from those files at the end
(the same ``.npy`` members ``np.savez`` writes, copied through in blocks), so memory holds
one batch whatever the dataset's size. The files are exactly ``write_predictions``'s: an
array goes in only where ``as_columns`` over all records would put it (force targets
NaN-filled where some structures lack them), and both files appear, complete, only when
the writer closes without an error.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from fairchem_categorical.predictions import (
    CSV_COLUMNS,
    RUN_ARRAYS,
    StructurePrediction,
    as_columns,
    csv_row,
)

#: the one array kept when only some structures have it (NaN rows for the others)
NAN_FILLED = "forces_target"
#: rows of NaN written at a time when back-filling force targets
_FILL_ROWS = 1 << 16


class _ArrayPart:
    """One NPZ array's rows so far, as raw bytes in a file of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: BinaryIO = path.open("wb")
        self.dtype: np.dtype | None = None
        self.tail: tuple[int, ...] = ()
        self.rows = 0

    def append(self, array: np.ndarray, key: str) -> None:
        array = np.ascontiguousarray(array)
        if self.dtype is None:
            self.dtype, self.tail = array.dtype, array.shape[1:]
        elif array.dtype != self.dtype or array.shape[1:] != self.tail:
            raise ValueError(f"prediction array {key!r} changed between batches: "
                             f"{self.dtype}{self.tail} then {array.dtype}{array.shape[1:]}")
        self.fh.write(array.tobytes())
        self.rows += len(array)

    def copy_into(self, zf: zipfile.ZipFile, key: str) -> None:
        """This array as ``key.npy`` in the NPZ, as ``np.savez`` stores it."""
        self.fh.close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, *self.tail)}
        with zf.open(f"{key}.npy", "w", force_zip64=True) as out, self.path.open("rb") as src:
            try:
                np.lib.format.write_array_header_1_0(out, header)
            except ValueError:  # a header too long for format 1.0, as np.save falls back
                np.lib.format.write_array_header_2_0(out, header)
            shutil.copyfileobj(src, out, 1 << 20)


class PredictionWriter:
    """Write predictions to ``out_csv`` and the NPZ beside it, one batch at a time.

    ``with PredictionWriter(path) as writer: writer.add(batch_predictions)`` per batch;
    afterwards ``writer.paths`` are the CSV and the NPZ and ``writer.count`` the
    structures written. An error inside the block leaves no file behind and files already
    there as they were (the writer works under temporary names beside the output).
    """

    def __init__(self, out_csv: str | Path) -> None:
        self.csv_path = Path(out_csv)
        self.npz_path = self.csv_path.with_suffix(".npz")
        self.count = 0
        #: the first record written (what kind of model predicted: histogram, epistemic)
        self.first: StructurePrediction | None = None
        self._parts: dict[str, _ArrayPart] = {}
        #: arrays of the whole file (``RUN_ARRAYS``): the first batch's, while all agree
        self._run: dict[str, np.ndarray] = {}
        self._dropped: set[str] = set()
        self._unfilled_atoms = 0  # atoms before the first force target, NaN-filled later

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.csv_path, self.npz_path

    def __enter__(self) -> PredictionWriter:
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_csv, self._tmp_npz = (p.with_name(f".{p.name}.partial-{os.getpid()}")
                                        for p in self.paths)
        self._work = Path(tempfile.mkdtemp(prefix=f".{self.csv_path.name}.parts-",
                                           dir=self.csv_path.parent))
        self._csv_fh = self._tmp_csv.open("w", newline="")
        self._rows = csv.DictWriter(self._csv_fh, fieldnames=CSV_COLUMNS)
        self._rows.writeheader()
        return self

    def add(self, preds: list[StructurePrediction]) -> None:
        """Append one batch's records (CSV rows now, NPZ rows to the arrays' files)."""
        if not preds:
            return
        _, arrays = as_columns(preds)
        self._rows.writerows(csv_row(p) for p in preds)
        atoms = int(arrays["natoms"].sum())
        first_batch = self.count == 0
        for key in RUN_ARRAYS:
            if key in self._dropped:
                continue
            if key in arrays and (first_batch or np.array_equal(self._run.get(key),
                                                                arrays[key])):
                self._run[key] = arrays.pop(key)
            else:  # as as_columns over all records: kept only where every batch agrees
                self._dropped.add(key)
                self._run.pop(key, None)
                arrays.pop(key, None)
        for key, array in arrays.items():
            if key in self._dropped:
                continue
            if key not in self._parts:
                if not first_batch and key != NAN_FILLED:
                    self._dropped.add(key)  # earlier structures lack it: as_columns drops it
                    continue
                self._parts[key] = _ArrayPart(self._work / f"{key}.raw")
                if key == NAN_FILLED:
                    self._fill(self._unfilled_atoms)
            self._parts[key].append(array, key)
        for key in [k for k in self._parts if k not in arrays]:
            if key == NAN_FILLED:
                self._fill(atoms)
            else:
                self._dropped.add(key)
                self._parts.pop(key).fh.close()
        if NAN_FILLED not in self._parts:
            self._unfilled_atoms += atoms
        self.first = self.first or preds[0]
        self.count += len(preds)

    def _fill(self, atoms: int) -> None:
        part = self._parts[NAN_FILLED]
        for start in range(0, atoms, _FILL_ROWS):
            part.append(np.full((min(_FILL_ROWS, atoms - start), 3), np.nan), NAN_FILLED)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._csv_fh.close()
            if exc_type is None:
                if not self.count:
                    raise ValueError("no predictions to write (empty dataset?)")
                with zipfile.ZipFile(self._tmp_npz, "w", zipfile.ZIP_STORED,
                                     allowZip64=True) as zf:
                    for key, part in self._parts.items():
                        part.copy_into(zf, key)
                    for key, array in self._run.items():
                        with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                            np.lib.format.write_array(fh, array, allow_pickle=False)
                os.replace(self._tmp_csv, self.csv_path)
                os.replace(self._tmp_npz, self.npz_path)
        finally:
            for part in self._parts.values():
                part.fh.close()
            shutil.rmtree(self._work, ignore_errors=True)
            self._tmp_csv.unlink(missing_ok=True)
            self._tmp_npz.unlink(missing_ok=True)
