"""What the commands do, once the line is chosen: train, predict, evaluate, calibrate.

The CLI only turns arguments into these calls; the demo, the benchmarks and the tests
call them too. Each picks its fairchem line through ``lines`` and hands the line's work
to its adapter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fairchem_categorical.app import checks, lines
from fairchem_categorical.bins import read_bins
from fairchem_categorical.predictions import StructurePrediction, as_columns, write_predictions

Say = Callable[[str], None]


def _check_data(path: str, flag: str) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    return str(p.resolve())


def train(config: str | Path, train_data: str | None = None, val_data: str | None = None,
          bins: str | Path | None = None, max_epochs: int | None = None,
          seed: int | None = None, run_dir: str | Path | None = None,
          overrides: Sequence[str] | None = None, say: Say | None = None) -> Path:
    """Train through fairchem's own entry point; returns the final checkpoint.

    fairchem 2.x configs run as ``fairchem -c CONFIG`` (Hydra overrides), fairchem 1.10
    configs as ``fairchem --mode train --config-yml CONFIG`` (``--a.b=c`` overrides).
    """
    config = Path(config).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config not found: {config}")
    major = lines.config_line(config)
    line = lines.require(major, f"{config.name} (a {lines.LINES[major].label} config)")
    if bins is not None:
        read_bins(bins)  # a clear error before fairchem starts or a run folder is made
    run_dir = Path(run_dir or f"runs/fairchem{major}").resolve()
    train_data = _check_data(train_data, "--train-data") if train_data else None
    val_data = _check_data(val_data, "--val-data") if val_data else None
    return line.adapter("train").run(
        config, run_dir, time.strftime("%Y%m%d-%H%M%S"), train_data, val_data, bins,
        max_epochs, seed, list(overrides or []), say)


def predict_files(checkpoint: str | Path, paths: Sequence[str | Path], batch_size: int = 8,
                  device: str = "cpu", progress: Say | None = None,
                  inference_settings: str | None = None) -> list[StructurePrediction]:
    """Predict the structures of data files with the installed fairchem line's model.

    The checkpoint's line must be the installed one, the device must exist; structures
    may carry no labels, energies only, or energies and forces. ``inference_settings``:
    a fairchem 2.x preset name (default: the adapter's, "batch").
    """
    from fairchem_categorical.data.formats import read_frames

    settings = {}
    if inference_settings is not None:
        installed = lines.current("predict")
        if installed.no_inference_settings:  # refused before any file is read
            raise ValueError(f"--inference-settings {inference_settings}: "
                             f"{installed.no_inference_settings}")
        settings["inference_settings"] = inference_settings
    line = lines.for_checkpoint(checkpoint, "predict")
    checks.device(device)
    frames = read_frames(paths, require_labels=False)
    logging.info("predicting %d structures from %s", len(frames), [str(p) for p in paths])
    return line.adapter("predict").predict_atoms(checkpoint, frames, batch_size=batch_size,
                                                 device=device, progress=progress, **settings)


def evaluate_checkpoint(checkpoint: str | Path, data: Sequence[str | Path], out: str | Path,
                        ood_data: Sequence[str | Path] | None = None,
                        progress: Say | None = None) -> dict[str, float]:
    """Predict ``data`` (and ``ood_data``), keep the prediction files, write the report."""
    from fairchem_categorical.report.evaluate import write_report

    out = checks.output_folder(out)
    preds = predict_files(checkpoint, data, progress=progress)
    write_predictions(preds, out / "predictions.csv")
    ood = None
    if ood_data:
        ood_preds = predict_files(checkpoint, ood_data, progress=progress)
        write_predictions(ood_preds, out / "ood_predictions.csv")
        ood = as_columns(ood_preds)[0]
    return write_report(*as_columns(preds), out, ood)


def calibrate(checkpoint: str | Path, val: Sequence[str | Path], out: str | Path
              ) -> dict[str, float]:
    """Fit the temperature on ``val``, write the calibrated checkpoint, score before/after."""
    from fairchem_categorical.calibration import fit_from_predictions
    from fairchem_categorical.report.metrics import evaluate_predictions

    line = lines.for_checkpoint(checkpoint, "calibrate")
    adapter = line.adapter("calibrate")
    checks.not_the_input(out, checkpoint, "checkpoint to calibrate")
    checks.output_file(out)
    adapter.require_categorical(checkpoint)  # before minutes of prediction

    def score(ckpt: str | Path) -> tuple[list[StructurePrediction], dict[str, float]]:
        preds = predict_files(ckpt, val)
        return preds, evaluate_predictions(*as_columns(preds))

    preds, before = score(checkpoint)
    factor = fit_from_predictions(preds)
    temperature = adapter.write_temperature(checkpoint, out, factor)
    _, after = score(out)
    return {"temperature": temperature, "factor": factor,
            **{f"{k}_before": before[k] for k in ("energy_nll", "miscalibration_area",
                                                  "energy_mae")},
            **{f"{k}_after": after[k] for k in ("energy_nll", "miscalibration_area",
                                                "energy_mae")}}
