"""Figures a person would rather look at than read: predicted distributions, and whether
an uncertainty ranks errors and is calibrated.

Every figure is drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through
pyplot, so nothing switches the caller's backend and the functions run headless.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fairchem_categorical.report.metrics import histogram_quantile, miscalibration_area


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1
            ) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def plot_error_vs_uncertainty(u: np.ndarray, abs_err: np.ndarray, out_png: str | Path,
                              n_bins: int = 10, label: str = "predicted std (eV)",
                              same_units: bool = True, log: bool = True) -> Path:
    """|error| against uncertainty per structure, with equal-count binned summaries.

    Binned points are RMSE against RMV = sqrt(mean u^2) (the quantities ENCE compares),
    so with ``same_units`` (u a std in the error's units) a calibrated model lies on
    y = x; binned mean |error| is shown too (about 0.8 u for Gaussian errors). A rising
    cloud means the uncertainty ranks errors.
    """
    u, e = np.asarray(u, float).reshape(-1), np.abs(np.asarray(abs_err, float).reshape(-1))
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    fig, axes = _figure(5.5, 4.5)
    ax = axes[0, 0]
    use_log = log and len(u) > 0 and bool(np.all(u > 0))
    shown = np.maximum(e, e[e > 0].min() / 2) if use_log and np.any(e > 0) else e
    ax.scatter(u, shown, s=6, alpha=0.3, color="tab:gray", lw=0, label="structures")
    if len(u) > 0:
        order = np.argsort(u, kind="stable")
        bins = [b for b in np.array_split(order, min(n_bins, len(u))) if len(b)]
        rmv = np.array([np.sqrt(np.mean(u[b] ** 2)) for b in bins])
        rmse = np.array([np.sqrt(np.mean(e[b] ** 2)) for b in bins])
        mean_u = np.array([u[b].mean() for b in bins])
        mae = np.array([e[b].mean() for b in bins])
        ax.plot(rmv, rmse, "o-", color="tab:blue", label="binned RMSE vs RMV")
        ax.plot(mean_u, mae, "s--", color="tab:orange", ms=4, label="binned mean |error|")
        if same_units:
            lo = min(rmv.min(), rmse[rmse > 0].min() if np.any(rmse > 0) else rmv.min())
            hi = max(rmv.max(), rmse.max())
            ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="y = x (calibrated)")
    if use_log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("|error| (eV)" if same_units else "|error|")
    ax.set_title("error vs uncertainty")
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_calibration_curve(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                           out_png: str | Path) -> Path:
    """Observed against nominal coverage of central intervals, one line per model.

    Below the diagonal: intervals too narrow (over-confident). The legend carries each
    model's miscalibration area.
    """
    fig, axes = _figure(4.8, 4.5)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="k", lw=1, ls="--", label="ideal")
    for name, (levels, observed) in curves.items():
        area = miscalibration_area(levels, observed)
        ax.plot(levels, observed, "o-", ms=4, label=f"{name} (area {area:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("expected coverage")
    ax.set_ylabel("observed coverage")
    ax.set_title("interval calibration")
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_extreme_histograms(probs: np.ndarray, centers: np.ndarray, targets: np.ndarray,
                            uncertainty: np.ndarray, out_png: str | Path, k: int = 3) -> Path:
    """Predicted histograms of the k least (top row) and k most (bottom row) uncertain structures.

    Shows whether confidence looks earned: sharp histograms should sit on their target
    and broad ones should be broad for a reason. Each panel zooms on the central 99.8 %
    of the mass plus the target.
    """
    p = np.atleast_2d(np.asarray(probs, float))
    c = np.atleast_2d(np.asarray(centers, float))
    t = np.asarray(targets, float).reshape(-1)
    u = np.asarray(uncertainty, float).reshape(-1)
    order = np.argsort(np.where(np.isfinite(u), u, np.inf), kind="stable")
    k = max(1, min(k, len(order)))
    rows = [("least uncertain", order[:k]), ("most uncertain", order[::-1][:k])]
    fig, axes = _figure(3.6 * k, 5.6, nrows=2, ncols=k)
    for r, (title, picks) in enumerate(rows):
        for j, i in enumerate(picks):
            ax = axes[r, j]
            width = c[i, 1] - c[i, 0]
            lo = float(histogram_quantile(p[i], c[i], 0.001)[0])
            hi = float(histogram_quantile(p[i], c[i], 0.999)[0])
            if np.isfinite(t[i]):
                lo, hi = min(lo, t[i]), max(hi, t[i])
            pad = max(0.1 * (hi - lo), 2 * abs(width))
            keep = (c[i] >= lo - pad) & (c[i] <= hi + pad)
            ax.bar(c[i][keep], p[i][keep] / abs(width), width=width, color="tab:blue",
                   alpha=0.7, label="predicted")
            if np.isfinite(t[i]):
                ax.axvline(t[i], color="tab:red", lw=2, label="target")
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_title(f"{title}: #{i}, u={u[i]:.3g}", fontsize=8)
            ax.set_xlabel("energy (eV)", fontsize=8)
            ax.set_ylabel("density (1/eV)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(5))
    axes[0, 0].legend(fontsize=7)
    return _save(fig, out_png)


def plot_rejection_curves(curves: Mapping[str, Mapping[str, object]], out_png: str | Path
                          ) -> Path:
    """Mean |error| of retained structures against the rejected fraction, per model.

    Dashed: the oracle (reject by true error), drawn once for models scored on the
    same errors (e.g. std and entropy of one run); dotted: random rejection. The
    legend gives each model's AUC ratio (1 oracle, 0 random).
    """
    fig, axes = _figure(5.5, 4.5)
    ax = axes[0, 0]
    oracles: list[tuple[np.ndarray, np.ndarray, str, list[str]]] = []
    for idx, (name, curve) in enumerate(curves.items()):
        color = f"C{idx % 10}"
        f = np.asarray(curve["fractions"], float)
        ratio = float(np.asarray(curve["auc_ratio"]))
        ax.plot(f, np.asarray(curve["mae"], float), "o-", ms=3, color=color,
                label=f"{name} (AUC ratio {ratio:.2f})")
        oracle = np.asarray(curve["oracle_mae"], float)
        same = [o for o in oracles if o[0].shape == f.shape and np.allclose(o[0], f)
                and np.allclose(o[1], oracle, equal_nan=True)]
        if same:
            same[0][3].append(name)
        else:
            oracles.append((f, oracle, color, [name]))
        span = f[-1] - f[0]
        random_level = float(np.asarray(curve["random_auc"])) / span if span > 0 else np.nan
        ax.axhline(random_level, color=color, ls=":", lw=1)
    for f, oracle, color, names in oracles:
        ax.plot(f, oracle, "--", color=color, lw=1, label=f"oracle ({', '.join(names)})")
    ax.plot([], [], "k:", lw=1, label="random (mean |error|)")
    ax.set_xlabel("fraction rejected (most uncertain first)")
    ax.set_ylabel("mean |error| of retained (eV)")
    ax.set_title("rejection curves")
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_energy_distributions(arrays: Mapping[str, np.ndarray],
                              columns: Mapping[str, np.ndarray], out_png: str | Path,
                              k: int = 6, model_name: str = "Categorical model") -> Path:
    """Predicted energy histograms of ``k`` structures with the DFT/EMT target marked.

    ``arrays``/``columns`` are a prediction's NPZ arrays and CSV columns. Picks structures
    spread over the range of predicted std, so both confident and unsure predictions show.
    """
    if "energy_probs" not in arrays:
        raise ValueError("the predictions have no energy histograms (not a categorical model?)")
    centers, probs = arrays["energy_bin_centers"], arrays["energy_probs"]
    order = np.argsort(columns["energy_std"])
    picks = order[np.linspace(0, len(order) - 1, min(k, len(order))).round().astype(int)]
    ncols = 3
    nrows = int(np.ceil(len(picks) / ncols))
    fig, axes = _figure(4.2 * ncols, 3.0 * nrows, nrows=nrows, ncols=ncols)
    targets = columns.get("energy_target", np.full(len(centers), np.nan))
    for ax, i in zip(axes.ravel(), picks, strict=False):
        c, p = centers[i], probs[i]
        mean, std = columns["energy"][i], columns["energy_std"][i]
        lo, hi = mean - 6 * max(std, 1e-3), mean + 6 * max(std, 1e-3)
        target = targets[i]
        if np.isfinite(target):
            lo, hi = min(lo, target - std), max(hi, target + std)
        keep = (c >= lo) & (c <= hi)
        width = c[1] - c[0] if len(c) > 1 else 1.0
        ax.bar(c[keep], p[keep], width=width, color="tab:blue", alpha=0.7, label="predicted")
        ax.axvline(mean, color="tab:blue", ls="--", lw=1, label="expected value")
        if np.isfinite(target):
            ax.axvline(target, color="tab:red", lw=2, label="target")
        ax.set_title(f"#{int(columns['index'][i])}  N={int(columns['natoms'][i])}  "
                     f"std={std:.3f} eV", fontsize=9)
        ax.set_xlabel("total energy (eV)")
        ax.set_ylabel("probability")
    for ax in axes.ravel()[len(picks):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(f"{model_name}: predicted energy distributions on test structures")
    return _save(fig, out_png)


def plot_screening(rows: list[Mapping[str, object]], out_png: str | Path) -> Path:
    """Adsorption energies per system, ranked, with 90% intervals as error bars.

    ``rows``: ``screening.rows``. Configurations recommended for DFT are filled, the others
    hollow; anomalous ones are grey crosses at their (unreliable) energy; the bar beside
    each marker is the predicted 90% interval, the text its P(lowest).
    """
    systems = list(dict.fromkeys(str(r["system"]) for r in rows))
    fig, axes = _figure(max(4.0, 3.2 * len(systems)), 4.0, 1, len(systems))
    for ax, system in zip(axes[0], systems, strict=True):
        mine = [r for r in rows if r["system"] == system]
        valid = sorted((r for r in mine if not r["anomaly"]),
                       key=lambda r: float(r["adsorption_energy"]))
        bad = [r for r in mine if r["anomaly"]]
        for x, r in enumerate(valid):
            e = float(r["adsorption_energy"])
            lo, hi = float(r["adsorption_energy_low90"]), float(r["adsorption_energy_high90"])
            yerr = None if np.isnan(lo) else [[e - lo], [hi - e]]
            color = "C3" if r["send_to_dft"] else "C0"
            ax.errorbar([x], [e], yerr=yerr, fmt="o", color=color, capsize=3,
                        mfc=color if r["send_to_dft"] else "white")
            ax.annotate(f"{float(r['p_lowest']):.2f}", (x, e), textcoords="offset points",
                        xytext=(6, -3), fontsize=7)
        if bad:
            xs = np.arange(len(valid), len(valid) + len(bad))
            ax.plot(xs, [float(r["adsorption_energy"]) for r in bad], "x", color="0.6",
                    label="anomaly")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(system, fontsize=9)
        ax.set_xlabel("configuration, ranked by predicted energy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("adsorption energy (eV), 90% interval")
    fig.suptitle("red: send to DFT; numbers: P(lowest)", fontsize=9)
    return _save(fig, out_png)


def plot_active_learning(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                         out_png: str | Path, ylabel: str = "held-out energy MAE (meV/atom)",
                         spreads: Mapping[str, np.ndarray] | None = None) -> Path:
    """Held-out error against reference calls, one line per selection strategy
    (``spreads``: error bars, e.g. the std over seeds)."""
    fig, axes = _figure(5.0, 3.6)
    ax = axes[0][0]
    for i, (name, (calls, err)) in enumerate(curves.items()):
        spread = None if spreads is None else spreads.get(name)
        ax.errorbar(calls, err, yerr=spread, fmt="o-", color=f"C{i}", label=name, capsize=3)
    ax.set_xlabel("reference (EMT) calls beyond the starting set")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_score_distributions(scores: Mapping[str, np.ndarray], out_png: str | Path,
                             label: str = "ood_score") -> Path:
    """Histograms of a score per set (test vs out-of-distribution), on a log axis if positive.

    Two sets an OOD score tells apart barely overlap; the legend gives each set's median.
    """
    fig, axes = _figure(5.5, 4.0)
    ax = axes[0, 0]
    values = {k: np.asarray(v, float)[np.isfinite(np.asarray(v, float))]
              for k, v in scores.items()}
    pooled = np.concatenate([v for v in values.values() if len(v)] or [np.zeros(1)])
    use_log = bool(np.all(pooled > 0)) and pooled.max() / max(pooled.min(), 1e-300) > 20
    edges = (np.geomspace(pooled.min(), pooled.max(), 40) if use_log
             else np.linspace(pooled.min(), pooled.max() + 1e-12, 40))
    for idx, (name, v) in enumerate(values.items()):
        if len(v):
            ax.hist(v, bins=edges, alpha=0.5, color=f"C{idx % 10}",
                    label=f"{name} (n={len(v)}, median {np.median(v):.3g})")
    if use_log:
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("structures")
    ax.set_title(f"{label}: in vs out of distribution")
    ax.legend(fontsize=7)
    return _save(fig, out_png)
