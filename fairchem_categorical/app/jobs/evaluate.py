"""``evaluate --checkpoint``: predict, keep the prediction files, write the report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fairchem_categorical.adapters import Say
from fairchem_categorical.app import checks
from fairchem_categorical.app.jobs.predict import predict_to_files
from fairchem_categorical.predictions import load_predictions


def evaluate_checkpoint(checkpoint: str | Path, data: Sequence[str | Path], out: str | Path,
                        ood_data: Sequence[str | Path] | None = None,
                        progress: Say | None = None, device: str = "cpu"
                        ) -> dict[str, float]:
    """Predict ``data`` (and ``ood_data``) on ``device``, keep the prediction files, write
    the report.

    The structures stream through the model into the prediction files (one batch of Atoms
    in memory); the metrics then read those files back, so they hold the CSV's columns
    and the NPZ's arrays (a few numbers per structure and per atom, not Atoms) at once.
    """
    from fairchem_categorical.report.evaluate import write_report

    checks.device(device)
    out = checks.output_folder(out)
    written = predict_to_files(checkpoint, data, out / "predictions.csv", progress=progress,
                               device=device)
    ood = None
    if ood_data:
        ood_written = predict_to_files(checkpoint, ood_data, out / "ood_predictions.csv",
                                       progress=progress, device=device)
        ood = load_predictions(ood_written.csv_path)[0]
    return write_report(*load_predictions(written.csv_path), out, ood)
