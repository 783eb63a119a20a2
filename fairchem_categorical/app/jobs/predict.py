"""``predict``: a checkpoint's energies, forces and uncertainties for data files.

The data stream through the line's predict adapter ``batch_size`` structures at a time
(``data.formats.open_frames``), so no command holds the dataset as ASE Atoms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from fairchem_categorical.adapters import Say
from fairchem_categorical.app import checks, lines
from fairchem_categorical.prediction_stream import PredictionWriter
from fairchem_categorical.predictions import StructurePrediction


def _settings(inference_settings: str | None, task: str | None) -> dict[str, str]:
    """The line-specific keywords, refused before any file is read where the installed
    line has no such thing."""
    settings = {}
    if inference_settings is not None:
        installed = lines.current("predict")
        if installed.no_inference_settings:
            raise ValueError(f"--inference-settings {inference_settings}: "
                             f"{installed.no_inference_settings}")
        settings["inference_settings"] = inference_settings
    if task is not None:
        installed = lines.current("predict")
        if installed.no_tasks:
            raise ValueError(f"--task {task}: {installed.no_tasks}")
        settings["task"] = task
    return settings


def stream_files(checkpoint: str | Path, paths: Sequence[str | Path], batch_size: int = 8,
                 device: str = "cpu", progress: Say | None = None,
                 inference_settings: str | None = None, task: str | None = None,
                 member_forces: bool = False) -> Iterator[list[StructurePrediction]]:
    """Predict the structures of data files, one batch's records at a time.

    The checkpoint's line must be the installed one, the device must exist; structures
    may carry no labels, energies only, or energies and forces. ``inference_settings``:
    a fairchem 2.x preset name (default: the adapter's, "batch"); ``task``: which of a
    fairchem 2.x checkpoint's tasks to predict (e.g. ``oc20`` or ``omat``; default: the
    first). Memory holds one batch of structures at any dataset size. ``member_forces``:
    a conservative shallow ensemble's per-atom ``forces_std`` (its members' spread).
    """
    from fairchem_categorical.data.formats import open_frames

    settings = _settings(inference_settings, task)
    line = lines.for_checkpoint(checkpoint, "predict")
    checks.device(device)
    frames = open_frames(paths, require_labels=False)
    logging.info("predicting the structures of %s", [str(p) for p in paths])
    if member_forces:
        settings["member_forces"] = True
    return line.adapter("predict").predict_stream(checkpoint, frames, batch_size=batch_size,
                                                  device=device, progress=progress,
                                                  **settings)


def predict_files(checkpoint: str | Path, paths: Sequence[str | Path], batch_size: int = 8,
                  device: str = "cpu", progress: Say | None = None,
                  inference_settings: str | None = None, task: str | None = None,
                  member_forces: bool = False) -> list[StructurePrediction]:
    """``stream_files`` gathered: every structure's record in memory (numbers and small
    arrays, not Atoms; calibration needs them all). To write files, ``predict_to_files``."""
    return [p for chunk in stream_files(checkpoint, paths, batch_size, device, progress,
                                        inference_settings, task, member_forces)
            for p in chunk]


def predict_to_files(checkpoint: str | Path, paths: Sequence[str | Path],
                     out_csv: str | Path, batch_size: int = 8, device: str = "cpu",
                     progress: Say | None = None, inference_settings: str | None = None,
                     task: str | None = None, member_forces: bool = False
                     ) -> PredictionWriter:
    """Predict and write the CSV and the NPZ beside it as the batches come
    (``PredictionWriter``): memory holds one batch whatever the dataset's size. The
    finished writer says where (``paths``), how many (``count``) and what (``first``)."""
    chunks = stream_files(checkpoint, paths, batch_size, device, progress,
                          inference_settings, task, member_forces)
    with PredictionWriter(out_csv) as writer:
        for chunk in chunks:
            writer.add(chunk)
    return writer
