"""What the commands do, once the line is chosen: train, predict, evaluate, calibrate,
fit-uncertainty.

The CLI only turns arguments into these calls; the demo, the benchmarks and the tests
call them too. Each picks its fairchem line through ``lines`` and hands the line's work
to its adapter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from fairchem_categorical.app import checks, lines
from fairchem_categorical.bins import read_bins
from fairchem_categorical.predictions import StructurePrediction, as_columns, write_predictions
from fairchem_categorical.readout import EPISTEMIC_POWERS

Say = Callable[[str], None]


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


CALIBRATION_KEYS = ("energy_nll", "miscalibration_area", "energy_mae",
                    "energy_nll_uncertainty", "miscalibration_area_uncertainty")


def calibrate(checkpoint: str | Path, val: Sequence[str | Path], out: str | Path,
              fit_temperature: bool | None = None, progress: Say | None = None,
              device: str = "cpu") -> dict[str, float]:
    """Fit the epistemic scale (and/or the temperature) on ``val``; write; score before/after.

    With a fitted epistemic state (``fit_uncertainty``), every method's scale alpha is
    fitted by the likelihood of the validation targets under the calibrated predictive
    distribution (``calibration.fit_predictive``), the temperature held where it is
    unless ``fit_temperature``: then both at once. Held by default because a free joint
    fit is degenerate (collapsing the histogram to its mode, T -> 0, which snaps the
    decoded energy to bin centres and breaks conservative forces; or flattening it,
    T >> 1, which drags the energy towards the support's centre), while the epistemic
    term widens the distribution where the features say so. Without a fitted state, the
    temperature alone (``calibration.fit_from_predictions``). Both passes over ``val``
    (before and after) run on ``device``.
    """
    line = lines.for_checkpoint(checkpoint, "calibrate")
    checks.device(device)
    checks.not_the_input(out, checkpoint, "checkpoint to calibrate")
    checks.output_file(out)
    adapter = line.adapter("uncertainty")
    adapter.require_categorical(checkpoint, "calibrate")  # before minutes of prediction
    return _calibrate(adapter, checkpoint, val, out, fit_temperature, progress, device)


def _calibrate(adapter: ModuleType, checkpoint: str | Path, val: Sequence[str | Path],
               out: str | Path, fit_temperature: bool | None, progress: Say | None,
               device: str) -> dict[str, float]:
    from fairchem_categorical.calibration import fit_from_predictions
    from fairchem_categorical.epistemic import METHODS
    from fairchem_categorical.report.metrics import evaluate_predictions

    def score(ckpt: str | Path) -> tuple[list[StructurePrediction], dict[str, float]]:
        preds = predict_files(ckpt, val, progress=progress, device=device)
        return preds, evaluate_predictions(*as_columns(preds))

    preds, before = score(checkpoint)
    if any(p.energy_probs is None for p in preds):
        raise ValueError(f"{checkpoint} predicts no energy histograms (not a categorical "
                         "model?); nothing to calibrate")
    state = adapter.read_state(checkpoint)
    result: dict[str, float] = {}
    if state is None:
        if fit_temperature is False:
            raise ValueError(f"{checkpoint} has no fitted epistemic state, so the temperature "
                             "is all there is to calibrate (run fit-uncertainty first)")
        factor = fit_from_predictions(preds)
        temperature = adapter.write(checkpoint, out, temperature_factor=factor)
    else:
        # the predictive distribution's own scales (the decoded energy never sees them):
        # temperature, the members' disagreement weight and alpha, jointly by the NLL
        probs = np.stack([p.energy_probs if p.energy_member_probs is None
                          else p.energy_member_probs for p in preds])
        centers = np.stack([p.energy_bin_centers for p in preds])
        targets = np.array([p.energy_target for p in preds])
        fits = {m: best_predictive_fit(probs, centers, targets, preds, m) for m in METHODS}
        factor = 1.0
        # the predictions came re-tempered by the designated method's temperature
        base = adapter_params(state, state["method"])["temperature"]
        predictive = {m: {"temperature": base * f["temperature"],
                          "disagreement": f["disagreement"], "power": f["power"]}
                      for m, f in fits.items()}
        temperature = adapter.write(checkpoint, out, alpha={m: f["alpha"]
                                                            for m, f in fits.items()},
                                    predictive=predictive)
        chosen = fits[state["method"]]
        result = {"method": state["method"], "alpha": chosen["alpha"],
                  "predictive_temperature": predictive[state["method"]]["temperature"],
                  "disagreement": chosen["disagreement"], "power": chosen["power"]}
    _, after = score(out)
    return {"temperature": temperature, "factor": factor, **result,
            **{f"{k}_before": before[k] for k in CALIBRATION_KEYS},
            **{f"{k}_after": after[k] for k in CALIBRATION_KEYS}}


def best_predictive_fit(probs: np.ndarray, centers: np.ndarray, targets: np.ndarray,
                        preds: Sequence[StructurePrediction], method: str) -> dict[str, float]:
    """The predictive scales of ``method`` by validation NLL, for each way the epistemic
    score U enters the variance (alpha^2 U, or alpha^2 U^2: a std linear in U); the
    better likelihood's, with its ``power``."""
    from fairchem_categorical.calibration import fit_predictive

    fits = []
    for power, key in EPISTEMIC_POWERS.items():
        fit = fit_predictive(probs, centers, targets,
                             [p.extra[f"{key}_{method}"] for p in preds])
        fits.append({**fit, "power": power})
    return min(fits, key=lambda f: f["nll_after"])


def adapter_params(state: dict, method: str) -> dict[str, float]:
    """A fitted state's stored predictive scales for ``method`` (1 and 0 before any)."""
    p = (state.get("predictive") or {}).get(method) or {}
    return {"temperature": float(p.get("temperature", 1.0)),
            "disagreement": float(p.get("disagreement", 0.0))}


def fit_uncertainty(checkpoint: str | Path, train: Sequence[str | Path],
                    val: Sequence[str | Path] | None, out: str | Path,
                    method: str | None = None, batch_size: int = 8, device: str = "cpu",
                    fit_temperature: bool = False, progress: Say | None = None
                    ) -> dict[str, float]:
    """Fit the epistemic state on ``train`` (one pass), then calibrate on ``val``.

    Writes ``out``, a copy of ``checkpoint`` whose energy head carries the fitted state:
    every loader of the model (predict, evaluate, calculators) applies it. Without
    ``val`` the scales stay at 1 (uncalibrated) and ``energy_uncertainty`` is not yet
    meaningful in eV; run ``calibrate`` later. The fit and both calibration passes run on
    ``device``.
    """
    from fairchem_categorical.data.formats import read_frames
    from fairchem_categorical.epistemic import DEFAULT_METHOD

    line = lines.for_checkpoint(checkpoint, "fit-uncertainty")
    checks.device(device)
    checks.output_file(out)
    adapter = line.adapter("uncertainty")
    adapter.require_categorical(checkpoint, "fit-uncertainty")
    frames = read_frames(train, require_labels=False)
    t = time.time()
    if progress:
        progress(f"fitting the feature statistics on {len(frames)} training structures")
    state = adapter.fit(checkpoint, frames, method or DEFAULT_METHOD, batch_size=batch_size,
                        device=device, progress=progress)
    fit_seconds = time.time() - t
    if progress:
        elements = ", ".join(f"Z={int(z)}: {int(n)}" for z, n in
                             zip(state["elements"], state["element_counts"], strict=True))
        progress(f"fitted {state['method']} on {state['num_structures']} structures "
                 f"({elements} atoms) in {fit_seconds:.0f} s")
    adapter.write(checkpoint, out, epistemic=state)
    result = {"fit_seconds": fit_seconds}
    if val:
        result.update(_calibrate(adapter, out, val, out, fit_temperature, progress, device))
    return result
