"""``calibrate``: fit the temperature and the epistemic scale on validation data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fairchem_categorical.adapters import Say, UncertaintyAdapter
from fairchem_categorical.app import checks, lines
from fairchem_categorical.app.jobs.predict import predict_files
from fairchem_categorical.predictions import StructurePrediction, as_columns
from fairchem_categorical.readout import EPISTEMIC_POWERS

CALIBRATION_KEYS = ("energy_nll", "miscalibration_area", "energy_mae",
                    "energy_nll_uncertainty", "miscalibration_area_uncertainty")


def calibrate(checkpoint: str | Path, val: Sequence[str | Path], out: str | Path,
              fit_temperature: bool | None = None, progress: Say | None = None,
              device: str = "cpu") -> dict[str, float]:
    """Fit the predictive distribution's scales on ``val``; write; score before/after.

    With a fitted epistemic state (``fit_uncertainty``): for every method, the predictive
    temperature, the shallow ensemble's disagreement weight and the epistemic scale alpha
    jointly, by the likelihood of the validation targets under the predictive distribution
    (``predictive``, ``calibration.fit_predictive``), and the power of the epistemic score
    (U or U^2) by the better likelihood. The predictive temperature acts on that
    distribution only, so the decoded energy and its forces stay as trained (fitting the
    histogram's own temperature freely collapses or flattens it and moves the energies).
    Without a fitted state: the histogram's temperature alone
    (``calibration.fit_from_predictions``; ``fit_temperature=False`` refuses). Both passes
    over ``val`` (before and after) run on ``device``.
    """
    line = lines.for_checkpoint(checkpoint, "calibrate")
    checks.device(device)
    checks.not_the_input(out, checkpoint, "checkpoint to calibrate")
    checks.output_file(out)
    adapter = line.adapter("uncertainty")
    adapter.require_categorical(checkpoint, "calibrate")  # before minutes of prediction
    return calibrate_with(adapter, checkpoint, val, out, fit_temperature, progress, device)


#: validation structures below which no CDF recalibration is fitted: the isotonic map's 5%
#: and 95% levels rest on the few most extreme PIT values, and with a couple of dozen
#: structures it narrows the intervals on noise (measured: 24 realistic validation
#: structures took test coverage of the 90% interval from 0.82 to 0.59; 72 EMT ones from
#: 0.99 to 0.93)
MIN_RECALIBRATION = 50


def best_predictive_fit(probs: np.ndarray, centers: np.ndarray, targets: np.ndarray,
                        preds: Sequence[StructurePrediction], method: str) -> dict[str, float]:
    """The predictive scales of ``method`` by validation NLL, for each way the epistemic
    score U enters the variance (alpha^2 U, or alpha^2 U^2: a std linear in U); the
    better likelihood's, with its ``power`` and the isotonic recalibration of its CDF
    fitted on the same validation targets' PIT values (the shape the scales cannot fix;
    none below ``MIN_RECALIBRATION`` structures)."""
    from fairchem_categorical.calibration import fit_predictive, fit_recalibration

    fits = []
    for power, key in EPISTEMIC_POWERS.items():
        e = [p.extra[f"{key}_{method}"] for p in preds]
        fit = fit_predictive(probs, centers, targets, e)
        fits.append({**fit, "power": power, "epistemic_std": e})
    best = min(fits, key=lambda f: f["nll_after"])
    e = best.pop("epistemic_std")
    if len(targets) < MIN_RECALIBRATION:
        return {**best, "recalibration": None}
    recal = fit_recalibration(probs, centers, targets, best, e)
    return {**best, "recalibration": recal.to_dict()}


def member_force_scale(preds: Sequence[StructurePrediction], current: float) -> float | None:
    """The factor that makes a conservative shallow ensemble's member force spread u the
    root-mean-square size of the force errors e on validation data, sqrt(mean |e|^2 /
    mean u^2) over free atoms with targets (x ``current``, the scale the spreads came
    with); None where there is no member spread (one member, or a direct-force head,
    whose ``forces_std`` is its magnitude histogram's and comes with an entropy)."""
    rows = [p for p in preds if p.energy_member_probs is not None and p.forces_std is not None
            and p.forces_entropy is None and p.forces_target is not None]
    if not rows:
        return None
    err, spread = [], []
    for p in rows:
        free = np.ones(p.natoms, bool) if p.fixed is None else p.fixed == 0
        err.append(np.linalg.norm(p.forces[free] - p.forces_target[free], axis=1))
        spread.append(p.forces_std[free])
    e2, u2 = np.mean(np.concatenate(err) ** 2), np.mean(np.concatenate(spread) ** 2)
    if not (np.isfinite(e2) and np.isfinite(u2) and u2 > 0):
        return None
    return current * float(np.sqrt(e2 / u2))


def stored_params(state: dict, method: str) -> dict[str, float]:
    """A fitted state's stored predictive scales for ``method`` (1 and 0 before any)."""
    p = (state.get("predictive") or {}).get(method) or {}
    return {"temperature": float(p.get("temperature", 1.0)),
            "disagreement": float(p.get("disagreement", 0.0))}


def calibrate_with(adapter: UncertaintyAdapter, checkpoint: str | Path,
                   val: Sequence[str | Path], out: str | Path, fit_temperature: bool | None,
                   progress: Say | None, device: str) -> dict[str, float]:
    """``calibrate`` with the line's uncertainty adapter chosen (``fit_uncertainty``
    calibrates the checkpoint it has just written)."""
    from fairchem_categorical.calibration import fit_from_predictions
    from fairchem_categorical.epistemic import METHODS
    from fairchem_categorical.report.metrics import evaluate_predictions

    def score(ckpt: str | Path) -> tuple[list[StructurePrediction], dict[str, float]]:
        # member_forces: a conservative shallow ensemble's force spread, to size it
        preds = predict_files(ckpt, val, progress=progress, device=device,
                              member_forces=True)
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
        base = stored_params(state, state["method"])["temperature"]
        predictive = {m: {"temperature": base * f["temperature"],
                          "disagreement": f["disagreement"], "power": f["power"],
                          "recalibration": f["recalibration"]}
                      for m, f in fits.items()}
        force_scale = member_force_scale(preds, float(state.get("force_scale", 1.0)))
        temperature = adapter.write(checkpoint, out, alpha={m: f["alpha"]
                                                            for m, f in fits.items()},
                                    predictive=predictive, force_scale=force_scale)
        chosen = fits[state["method"]]
        result = {"method": state["method"], "alpha": chosen["alpha"],
                  "predictive_temperature": predictive[state["method"]]["temperature"],
                  "disagreement": chosen["disagreement"], "power": chosen["power"],
                  "recalibrated": chosen["recalibration"] is not None}
        if force_scale is not None:
            result["force_scale"] = force_scale
    _, after = score(out)
    return {"temperature": temperature, "factor": factor, **result,
            **{f"{k}_before": before[k] for k in CALIBRATION_KEYS},
            **{f"{k}_after": after[k] for k in CALIBRATION_KEYS}}
