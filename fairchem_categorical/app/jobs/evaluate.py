"""``evaluate --checkpoint``: predict, keep the prediction files, write the report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fairchem_categorical.adapters import Say
from fairchem_categorical.app import checks
from fairchem_categorical.app.jobs.predict import predict_files
from fairchem_categorical.predictions import as_columns, write_predictions


def evaluate_checkpoint(checkpoint: str | Path, data: Sequence[str | Path], out: str | Path,
                        ood_data: Sequence[str | Path] | None = None,
                        progress: Say | None = None, device: str = "cpu"
                        ) -> dict[str, float]:
    """Predict ``data`` (and ``ood_data``) on ``device``, keep the prediction files, write
    the report."""
    from fairchem_categorical.report.evaluate import write_report

    checks.device(device)
    out = checks.output_folder(out)
    preds = predict_files(checkpoint, data, progress=progress, device=device)
    write_predictions(preds, out / "predictions.csv")
    ood = None
    if ood_data:
        ood_preds = predict_files(checkpoint, ood_data, progress=progress, device=device)
        write_predictions(ood_preds, out / "ood_predictions.csv")
        ood = as_columns(ood_preds)[0]
    return write_report(*as_columns(preds), out, ood)
