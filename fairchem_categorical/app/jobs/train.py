"""``train``: fairchem's own training entry point with the plugin's heads."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fairchem_categorical.adapters import Say
from fairchem_categorical.app import checks, lines
from fairchem_categorical.app.jobs.fit_uncertainty import fit_uncertainty
from fairchem_categorical.bins import read_bins


def _check_data(path: str, flag: str) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    return str(p.resolve())


def train(config: str | Path, train_data: str | None = None, val_data: str | None = None,
          bins: str | Path | None = None, max_epochs: int | None = None,
          seed: int | None = None, run_dir: str | Path | None = None,
          overrides: Sequence[str] | None = None, say: Say | None = None,
          fit: bool = False, device: str | None = None) -> Path:
    """Train through fairchem's own entry point; returns the final checkpoint.

    fairchem 2.x configs run as ``fairchem -c CONFIG`` (Hydra overrides), fairchem 1.10
    configs as ``fairchem --mode train --config-yml CONFIG`` (``--a.b=c`` overrides).
    With ``fit``, ``fit_uncertainty`` follows on the same train/val data and the fitted
    copy (``<checkpoint>_fitted.pt`` beside it) is returned instead. ``device`` (cpu, cuda,
    cuda:N) runs training and the fit there; None: the config's choice (the fit on the CPU).
    """
    config = Path(config).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config not found: {config}")
    if fit and not (train_data and val_data):
        raise ValueError("--fit-uncertainty needs --train-data and --val-data (it fits on the "
                         "first and calibrates on the second)")
    major = lines.config_line(config)
    line = lines.require(major, f"{config.name} (a {lines.LINES[major].label} config)")
    if device is not None:
        checks.device(device)
    if bins is not None:
        read_bins(bins)  # a clear error before fairchem starts or a run folder is made
    run_dir = Path(run_dir or f"runs/fairchem{major}").resolve()
    train_data = _check_data(train_data, "--train-data") if train_data else None
    val_data = _check_data(val_data, "--val-data") if val_data else None
    ckpt = line.adapter("train").run(
        config, run_dir, time.strftime("%Y%m%d-%H%M%S"), train_data, val_data, bins,
        max_epochs, seed, list(overrides or []), say, device=device)
    if not fit:
        return ckpt
    fitted = ckpt.with_name(f"{ckpt.stem}_fitted{ckpt.suffix}")
    fit_uncertainty(ckpt, [train_data], [val_data], fitted, progress=say,
                    device=device or "cpu")
    return fitted
