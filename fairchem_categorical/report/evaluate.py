"""``evaluate``: metrics.json, a printed table and the plots, from predict's CSV/NPZ."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from fairchem_categorical.predictions import load_predictions
from fairchem_categorical.report.metrics import (
    coverage_curve,
    evaluate_predictions,
    gaussian_interval,
    histogram_interval,
    rejection_curve,
    smoothed_interval,
)
from fairchem_categorical.report.plots import (
    plot_calibration_curve,
    plot_error_vs_uncertainty,
    plot_extreme_histograms,
    plot_rejection_curves,
    plot_score_distributions,
)


def evaluate_files(predictions: str | Path, out: str | Path, npz: str | Path | None = None,
                   ood_predictions: str | Path | None = None,
                   say: Callable[[str], None] | None = None) -> dict[str, float]:
    """``write_report`` for a predict CSV (its NPZ beside it, or ``npz``).

    Without histograms (no NPZ found) the NLL and calibration are a Gaussian's of
    (energy, energy_std); ``say`` is told so, and ``energy_nll_is_histogram`` is 0.
    """
    cols, arrays = load_predictions(predictions, npz)
    if "energy_probs" not in arrays and say is not None:
        npz_path = Path(npz) if npz else Path(predictions).with_suffix(".npz")
        why = "has no energy histograms" if npz_path.is_file() else "was not found"
        say(f"note: {npz_path} {why}, so energy_nll and miscalibration_area use a "
            "Gaussian(energy, energy_std), not the predicted histograms (pass --npz PATH if "
            "the histograms are elsewhere)")
    ood = load_predictions(ood_predictions)[0] if ood_predictions else None
    return write_report(cols, arrays, out, ood)


def write_report(cols: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray],
                 out: str | Path, ood_columns: Mapping[str, np.ndarray] | None = None
                 ) -> dict[str, float]:
    """Every metric of ``evaluate_predictions`` in ``out/metrics.json``, plus the plots.

    ``cols``/``arrays`` as ``predictions.as_columns`` or ``load_predictions`` give them.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_predictions(cols, arrays, ood_columns)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    err = np.abs(cols["energy"] - cols["energy_target"])
    # an external CSV (an ensemble's, say) may have no std column: then no uncertainty plots
    std = np.asarray(cols.get("energy_std", np.full(len(err), np.nan)), dtype=float)
    if np.isfinite(std).all():
        plot_error_vs_uncertainty(std, err, out / "error_vs_uncertainty.png")
        plot_rejection_curves({"energy_std": rejection_curve(std, err)},
                              out / "rejection_curve.png")
        if "energy_probs" in arrays:
            probs, centers = arrays["energy_probs"], arrays["energy_bin_centers"]
            curve = coverage_curve(lambda c: histogram_interval(probs, centers, c),
                                   cols["energy_target"])
            plot_extreme_histograms(probs, centers, cols["energy_target"], std,
                                    out / "extreme_histograms.png")
        else:
            curve = coverage_curve(lambda c: gaussian_interval(cols["energy"], std, c),
                                   cols["energy_target"])
        plot_calibration_curve({"energy": curve}, out / "calibration_curve.png")
    eu = np.asarray(cols.get("energy_uncertainty", np.full(len(err), np.nan)), float)
    if np.isfinite(eu).all():  # a checkpoint with a fitted epistemic state
        plot_error_vs_uncertainty(eu, err, out / "error_vs_energy_uncertainty.png",
                                  label="energy_uncertainty (eV)")
        curves = {"energy_uncertainty": rejection_curve(eu, err),
                  "natoms (trivial)": rejection_curve(cols["natoms"], err)}
        if np.isfinite(std).all():
            curves["energy_std"] = rejection_curve(std, err)
        plot_rejection_curves(curves, out / "rejection_curve.png")
        if "energy_probs" in arrays and np.isfinite(std).all():
            kernel = np.sqrt(np.clip(eu**2 - std**2, 0.0, None))
            curve_u = coverage_curve(
                lambda c: smoothed_interval(arrays["energy_probs"], arrays["energy_bin_centers"],
                                            kernel, c), cols["energy_target"])
            plot_calibration_curve({"histogram (energy_std)": curve,
                                    "energy_uncertainty": curve_u},
                                   out / "calibration_curve.png")
        if ood_columns is not None and "ood_score" in ood_columns:
            plot_score_distributions({"test": cols["ood_score"], "OOD": ood_columns["ood_score"]},
                                     out / "ood_score.png")
    return metrics


def notes(metrics: Mapping[str, float]) -> list[str]:
    """What a person must know to read the metrics: rows left out of the rankings."""
    out = []
    for key, what in (("n_nonfinite_energy", "a non-finite predicted energy"),
                      ("n_nonfinite_uncertainty", "a non-finite uncertainty"),
                      ("n_ood_nonfinite_uncertainty", "a non-finite uncertainty (OOD set)")):
        n = metrics.get(key, 0)
        if isinstance(n, float) and math.isfinite(n) and n > 0:
            out.append(f"{int(n)} structure(s) with {what} were left out of the Spearman, "
                       "rejection and AUROC scores")
    return out


def format_metrics(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    lines = []
    for key, value in metrics.items():
        counted = key == "n" or key.startswith("n_")
        text = "n/a" if isinstance(value, float) and math.isnan(value) else (
            f"{int(value)}" if counted else
            f"{value:.4f}" if isinstance(value, float) else str(value))
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)
