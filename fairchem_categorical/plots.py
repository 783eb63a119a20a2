"""Plots a person would rather look at than read (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_energy_distributions(npz_path: str | Path, predictions: dict[str, np.ndarray],
                              out_png: str | Path, k: int = 6,
                              model_name: str = "Categorical model") -> Path:
    """Predicted energy histograms of ``k`` structures with the DFT/EMT target marked.

    Picks structures spread over the range of predicted std, so both confident and
    unsure predictions show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = np.load(npz_path)
    if "energy_probs" not in arrays:
        raise ValueError(f"{npz_path} has no energy histograms (not a categorical model?)")
    centers, probs = arrays["energy_bin_centers"], arrays["energy_probs"]
    order = np.argsort(predictions["energy_std"])
    picks = order[np.linspace(0, len(order) - 1, min(k, len(order))).round().astype(int)]
    cols = 3
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, i in zip(axes.ravel(), picks, strict=False):
        c, p = centers[i], probs[i]
        mean, std = predictions["energy"][i], predictions["energy_std"][i]
        lo, hi = mean - 6 * max(std, 1e-3), mean + 6 * max(std, 1e-3)
        target = predictions.get("energy_target", np.full(len(centers), np.nan))[i]
        if np.isfinite(target):
            lo, hi = min(lo, target - std), max(hi, target + std)
        keep = (c >= lo) & (c <= hi)
        width = c[1] - c[0] if len(c) > 1 else 1.0
        ax.bar(c[keep], p[keep], width=width, color="tab:blue", alpha=0.7, label="predicted")
        ax.axvline(mean, color="tab:blue", ls="--", lw=1, label="expected value")
        if np.isfinite(target):
            ax.axvline(target, color="tab:red", lw=2, label="target")
        ax.set_title(f"#{int(predictions['index'][i])}  N={int(predictions['natoms'][i])}  "
                     f"std={std:.3f} eV", fontsize=9)
        ax.set_xlabel("total energy (eV)")
        ax.set_ylabel("probability")
    for ax in axes.ravel()[len(picks):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(f"{model_name}: predicted energy distributions on test structures")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
