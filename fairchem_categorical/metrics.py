"""Accuracy and uncertainty-ranking metrics on prediction columns (numpy/scipy)."""

from __future__ import annotations

import math

import numpy as np


def energy_metrics(pred: dict[str, np.ndarray]) -> dict[str, float]:
    """MAE of total and per-atom energy, mean force MAE, and uncertainty rank correlations."""
    from scipy.stats import spearmanr

    err = np.abs(pred["energy"] - pred["energy_target"])
    if not np.isfinite(err).all():
        raise ValueError("predictions lack finite energy targets; cannot score them")
    out = {
        "n": float(len(err)),
        "energy_mae": float(err.mean()),
        "energy_mae_per_atom": float((err / pred["natoms"]).mean()),
        "forces_mae": float(np.nanmean(pred["forces_mae"])),
    }
    for name in ("energy_std", "energy_entropy"):
        u = pred.get(name)
        ok = u is not None and np.isfinite(u).all() and len(u) > 2 and np.ptp(u) > 0
        out[f"spearman_{name}"] = float(spearmanr(u, err).statistic) if ok else math.nan
    return out
