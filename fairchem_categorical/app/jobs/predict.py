"""``predict``: a checkpoint's energies, forces and uncertainties for data files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from fairchem_categorical.adapters import Say
from fairchem_categorical.app import checks, lines
from fairchem_categorical.predictions import StructurePrediction


def predict_files(checkpoint: str | Path, paths: Sequence[str | Path], batch_size: int = 8,
                  device: str = "cpu", progress: Say | None = None,
                  inference_settings: str | None = None, task: str | None = None
                  ) -> list[StructurePrediction]:
    """Predict the structures of data files with the installed fairchem line's model.

    The checkpoint's line must be the installed one, the device must exist; structures
    may carry no labels, energies only, or energies and forces. ``inference_settings``:
    a fairchem 2.x preset name (default: the adapter's, "batch"); ``task``: which of a
    fairchem 2.x checkpoint's tasks to predict (e.g. ``oc20`` or ``omat``; default: the
    first).
    """
    from fairchem_categorical.data.formats import read_frames

    settings = {}
    if inference_settings is not None:
        installed = lines.current("predict")
        if installed.no_inference_settings:  # refused before any file is read
            raise ValueError(f"--inference-settings {inference_settings}: "
                             f"{installed.no_inference_settings}")
        settings["inference_settings"] = inference_settings
    if task is not None:
        installed = lines.current("predict")
        if installed.no_tasks:
            raise ValueError(f"--task {task}: {installed.no_tasks}")
        settings["task"] = task
    line = lines.for_checkpoint(checkpoint, "predict")
    checks.device(device)
    frames = read_frames(paths, require_labels=False)
    logging.info("predicting %d structures from %s", len(frames), [str(p) for p in paths])
    return line.adapter("predict").predict_atoms(checkpoint, frames, batch_size=batch_size,
                                                 device=device, progress=progress, **settings)
