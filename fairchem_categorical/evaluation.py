"""``evaluate``: metrics.json, a printed table and the plots, from predict's CSV/NPZ."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fairchem_categorical.predictions import read_predictions
from fairchem_categorical.uncertainty import (
    coverage_curve,
    evaluate_predictions,
    gaussian_interval,
    histogram_interval,
    rejection_curve,
)
from fairchem_categorical.uncertainty_plots import (
    plot_calibration_curve,
    plot_error_vs_uncertainty,
    plot_extreme_histograms,
    plot_rejection_curves,
)


def load(csv_path: str | Path, npz_path: str | Path | None = None
         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"predictions not found: {csv_path}")
    npz = Path(npz_path) if npz_path else csv_path.with_suffix(".npz")
    arrays = dict(np.load(npz)) if npz.is_file() else None
    return read_predictions(csv_path), arrays


def evaluate_files(predictions: str | Path, out: str | Path, npz: str | Path | None = None,
                   ood_predictions: str | Path | None = None) -> dict[str, float]:
    """Every metric of uncertainty.evaluate_predictions, plus the plots, written to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cols, arrays = load(predictions, npz)
    ood = load(ood_predictions)[0] if ood_predictions else None
    metrics = evaluate_predictions(cols, arrays, ood)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    err = np.abs(cols["energy"] - cols["energy_target"])
    std = cols["energy_std"]
    if np.isfinite(std).all():
        plot_error_vs_uncertainty(std, err, out / "error_vs_uncertainty.png")
        plot_rejection_curves({"energy_std": rejection_curve(std, err)},
                              out / "rejection_curve.png")
        if arrays is not None and "energy_probs" in arrays:
            probs, centers = arrays["energy_probs"], arrays["energy_bin_centers"]
            curve = coverage_curve(lambda c: histogram_interval(probs, centers, c),
                                   cols["energy_target"])
            plot_extreme_histograms(probs, centers, cols["energy_target"], std,
                                    out / "extreme_histograms.png")
        else:
            curve = coverage_curve(lambda c: gaussian_interval(cols["energy"], std, c),
                                   cols["energy_target"])
        plot_calibration_curve({"energy": curve}, out / "calibration_curve.png")
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    lines = []
    for key, value in metrics.items():
        text = "n/a" if isinstance(value, float) and math.isnan(value) else (
            f"{value:.4f}" if isinstance(value, float) else str(value))
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)
