"""``calibrate``: fit the temperature and the epistemic scale on validation data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fairchem_categorical.adapters import Say, UncertaintyAdapter
from fairchem_categorical.app import checks, lines
from fairchem_categorical.app.jobs.predict import predict_files
from fairchem_categorical.predictions import StructurePrediction, as_columns

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
    return calibrate_with(adapter, checkpoint, val, out, fit_temperature, progress, device)


def calibrate_with(adapter: UncertaintyAdapter, checkpoint: str | Path,
                   val: Sequence[str | Path], out: str | Path, fit_temperature: bool | None,
                   progress: Say | None, device: str) -> dict[str, float]:
    """``calibrate`` with the line's uncertainty adapter chosen (``fit_uncertainty``
    calibrates the checkpoint it has just written)."""
    from fairchem_categorical.calibration import fit_from_predictions, fit_predictive
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
        probs = np.stack([p.energy_probs for p in preds])
        centers = np.stack([p.energy_bin_centers for p in preds])
        targets = np.array([p.energy_target for p in preds])
        held = None if fit_temperature else 1.0
        fits = {m: fit_predictive(probs, centers, targets,
                                  [p.extra[f"epistemic_std_{m}"] for p in preds],
                                  temperature=held)
                for m in METHODS}
        factor = fits[state["method"]]["temperature"]
        temperature = adapter.write(checkpoint, out, temperature_factor=factor,
                                    alpha={m: f["alpha"] for m, f in fits.items()})
        result = {"method": state["method"], "alpha": fits[state["method"]]["alpha"]}
    _, after = score(out)
    return {"temperature": temperature, "factor": factor, **result,
            **{f"{k}_before": before[k] for k in CALIBRATION_KEYS},
            **{f"{k}_after": after[k] for k in CALIBRATION_KEYS}}
