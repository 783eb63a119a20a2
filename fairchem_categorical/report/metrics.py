"""Uncertainty-evaluation metrics on what ``predict`` writes (numpy/scipy/sklearn only).

Every function takes plain arrays, so a categorical model (histograms), a deep ensemble
or any Gaussian predictor (mean and std) is scored by the same code and the numbers
compare. Conventions: ``abs_error = |prediction - target|``; energies in eV, entropies
in nats, negative log-likelihoods in nats of a density per eV.

Histogram inputs are the NPZ's ``energy_bin_centers`` (B, K) and ``energy_probs``
(B, K): equal-width bins per row (width ``centers[:, 1] - centers[:, 0]``, which may
differ between rows because the bins are scaled per atom), with the density taken
uniform inside each bin. The histogram math itself is the core's
(``fairchem_categorical.histogram``), run here in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from scipy import stats

from fairchem_categorical import histogram
from fairchem_categorical.predictions import predictive_from_files

DEFAULT_FRACTIONS = np.linspace(0.0, 0.9, 10)
DEFAULT_LEVELS = np.arange(0.1, 1.0, 0.1)

ArrayLike = np.ndarray | list[float] | tuple[float, ...]

# numpy 2 renamed trapz; the fairchem 1.10 environment pins numpy<2
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def _flat(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _finite_pairs(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = _flat(a), _flat(b)
    if a.shape != b.shape:
        raise ValueError(f"arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


# -- ranking ----------------------------------------------------------------------------


def spearman(uncertainty: ArrayLike, abs_error: ArrayLike) -> float:
    """Spearman rank correlation rho = Pearson(rank(u), rank(|err|)).

    Asks only whether larger uncertainty goes with larger error, independent of scale,
    so it compares std, entropy and ensemble spread alike. Non-finite pairs are
    dropped; NaN when fewer than 3 pairs remain or either input is constant.
    """
    u, e = _finite_pairs(uncertainty, abs_error)
    if len(u) < 3 or np.ptp(u) == 0 or np.ptp(e) == 0:
        return math.nan
    return float(stats.spearmanr(u, e).statistic)


def rejection_curve(uncertainty: ArrayLike, abs_error: ArrayLike,
                    fractions: ArrayLike = DEFAULT_FRACTIONS) -> dict[str, np.ndarray | float]:
    """Mean |error| of the structures kept after rejecting the most uncertain fraction.

    What a user gets by trusting the model only where it is confident. For each
    rejected fraction f the ``n_keep = max(1, round((1 - f) n))`` least uncertain
    structures are kept (``mae``; ties at the cut count at their mean error, the
    expectation over tie-breaking); ``oracle_mae`` keeps the smallest true errors.
    Areas use the trapezoid rule over ``fractions``: ``auc``, ``oracle_auc`` and
    ``random_auc = mean|err| * (f_max - f_min)`` (random rejection keeps the mean
    error in expectation). ``auc_ratio = (random_auc - auc) / (random_auc - oracle_auc)``
    is 1 for the oracle ranking and about 0 for a random one (NaN if the oracle
    cannot beat random, e.g. constant errors). Non-finite pairs are dropped.
    """
    u, e = _finite_pairs(uncertainty, abs_error)
    f = _flat(fractions)
    if len(u) == 0:
        nan = np.full_like(f, np.nan)
        return {"fractions": f, "mae": nan, "oracle_mae": nan.copy(), "auc": math.nan,
                "oracle_auc": math.nan, "random_auc": math.nan, "auc_ratio": math.nan}
    if np.any((f < 0) | (f >= 1)):
        raise ValueError(f"rejected fractions must lie in [0, 1), got {f}")
    n = len(e)
    n_keep = np.maximum(1, np.round((1.0 - f) * n).astype(int))
    order = np.argsort(u, kind="stable")
    u_s, cum = u[order], np.concatenate([[0.0], np.cumsum(e[order])])
    # Tied uncertainties are broken at random in expectation: the kept part of the tie
    # group at the cut contributes its mean error, so a constant uncertainty is "random".
    a = np.searchsorted(u_s, u_s[n_keep - 1], side="left")
    b = np.searchsorted(u_s, u_s[n_keep - 1], side="right")
    group_mean = (cum[b] - cum[a]) / (b - a)
    mae = (cum[a] + (n_keep - a) * group_mean) / n_keep
    by_e = np.cumsum(np.sort(e))
    oracle = by_e[n_keep - 1] / n_keep
    auc = float(_trapezoid(mae, f))
    oracle_auc = float(_trapezoid(oracle, f))
    random_auc = float(e.mean() * (f[-1] - f[0]))
    denom = random_auc - oracle_auc
    ratio = (random_auc - auc) / denom if denom > 0 else math.nan
    return {"fractions": f, "mae": mae, "oracle_mae": oracle, "auc": auc,
            "oracle_auc": oracle_auc, "random_auc": random_auc, "auc_ratio": float(ratio)}


def auroc(u_in: ArrayLike, u_ood: ArrayLike) -> float:
    """Area under the ROC curve separating OOD (positive) from in-distribution by uncertainty.

    P(u_ood > u_in) for a random pair: 0.5 means the uncertainty cannot tell the
    two sets apart, 1 that every OOD structure is more uncertain. Non-finite values
    are dropped; NaN if either set is empty.
    """
    a, b = _flat(u_in), _flat(u_ood)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return math.nan
    from sklearn.metrics import roc_auc_score

    labels = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    return float(roc_auc_score(labels, np.concatenate([a, b])))


# -- likelihoods -------------------------------------------------------------------------


def _histogram_rows(probs: ArrayLike, centers: ArrayLike
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of probabilities (renormalised), left edges and widths, as float64 tensors."""
    p = torch.as_tensor(np.atleast_2d(np.asarray(probs, dtype=np.float64)))
    c = torch.as_tensor(np.atleast_2d(np.asarray(centers, dtype=np.float64)))
    if p.shape != c.shape:
        raise ValueError(f"probs {tuple(p.shape)} and centers {tuple(c.shape)} must have the "
                         "same shape")
    left, width = histogram.bin_geometry(c)
    # the NPZ stores float32 probabilities; renormalise so the CDF ends at 1
    p = p.clamp_min(0.0)
    return p / p.sum(-1, keepdim=True), left, width


def _kernel(width: torch.Tensor, kernel_std: ArrayLike | None) -> torch.Tensor:
    """Per-row smoothing std: ``kernel_std`` where given and finite, else the default tail."""
    default = histogram.TAIL_KERNEL_BINS * width
    if kernel_std is None:
        return default
    k = torch.as_tensor(_flat(kernel_std)).expand_as(width)
    return torch.where(torch.isfinite(k) & (k > 0), torch.maximum(k, default), default)


def histogram_nll(probs: ArrayLike, centers: ArrayLike, targets: ArrayLike,
                  kernel_std: ArrayLike | None = None) -> np.ndarray:
    """Per-structure -log density of the target under the smoothed histogram, in nats.

    The predicted density is the histogram (uniform inside each bin) convolved with a
    Gaussian of std ``kernel_std`` (per row; by default, and never less than,
    ``TAIL_KERNEL_BINS`` = 0.75 bin widths, the HL-Gauss smoothing the model was trained
    with): ``sum_k p_k [Phi((t - l_k) / s) - Phi((t - l_k - w) / s)] / w``. Inside the
    support this differs little from the histogram's own density; beyond it the density
    falls off as a Gaussian from the edge bin, so a target d outside the support costs
    about (d / s)^2 / 2 nats more than one at the edge: a model whose support misses
    the target is penalised in proportion to how far it misses. Pass the calibrated
    predictive's kernel (``sqrt(energy_uncertainty^2 - energy_std^2)``) to score
    ``energy_uncertainty``'s distribution.
    """
    p, left, width = _histogram_rows(probs, centers)
    t = torch.as_tensor(_flat(targets))
    if len(t) != len(p):
        raise ValueError(f"{len(t)} targets for {len(p)} histograms")
    out = (-histogram.smoothed_log_density(p, left, width, _kernel(width, kernel_std),
                                           torch.nan_to_num(t, nan=0.0))).numpy()
    out[~np.isfinite(t.numpy())] = np.nan
    return out


def gaussian_nll(mean: ArrayLike, std: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """Per-structure -log N(target; mean, std^2) = log(std sqrt(2 pi)) + (t - mean)^2 / (2 std^2).

    The yardstick for ensembles and other mean/std predictors; a categorical model's
    histogram NLL is in the same units (nats of a density per eV), so they compare.
    """
    m, s, t = _flat(mean), _flat(std), _flat(targets)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * np.log(2.0 * np.pi * s**2) + (t - m) ** 2 / (2.0 * s**2)


# -- intervals and coverage ----------------------------------------------------------------


def histogram_quantile(probs: ArrayLike, centers: ArrayLike, q: float) -> np.ndarray:
    """Quantile q of each row's histogram (``histogram.quantile`` over per-row bins)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    p, left, width = _histogram_rows(probs, centers)
    return histogram.quantile(p, left, width, q).numpy()


def histogram_interval(probs: ArrayLike, centers: ArrayLike, coverage: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Central interval [Q((1 - c)/2), Q((1 + c)/2)] holding ``coverage`` of each histogram."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    tail = (1.0 - coverage) / 2.0
    return (histogram_quantile(probs, centers, tail),
            histogram_quantile(probs, centers, 1.0 - tail))


def smoothed_interval(probs: ArrayLike, centers: ArrayLike, kernel_std: ArrayLike | None,
                      coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """Central interval of the smoothed histogram of ``histogram_nll`` (same kernel)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    p, left, width = _histogram_rows(probs, centers)
    s = _kernel(width, kernel_std)
    tail = (1.0 - coverage) / 2.0
    return (histogram.smoothed_quantile(p, left, width, s, tail).numpy(),
            histogram.smoothed_quantile(p, left, width, s, 1.0 - tail).numpy())


def gaussian_interval(mean: ArrayLike, std: ArrayLike, coverage: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Central interval mean -/+ z std with z = Phi^-1((1 + coverage) / 2)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    z = stats.norm.ppf(0.5 + coverage / 2.0)
    m, s = _flat(mean), _flat(std)
    return m - z * s, m + z * s


def coverage_curve(lo_hi_fn: Callable[[float], tuple[np.ndarray, np.ndarray]],
                   targets: ArrayLike, levels: ArrayLike = DEFAULT_LEVELS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Observed fraction of targets inside the predicted central interval, per nominal level.

    ``lo_hi_fn(level) -> (lo, hi)``, e.g. ``lambda c: histogram_interval(p, x, c)``.
    A calibrated model's observed coverage equals the level; below it means
    over-confident (intervals too narrow). Non-finite targets are ignored.
    """
    t = _flat(targets)
    ok = np.isfinite(t)
    lv = _flat(levels)
    observed = np.empty_like(lv)
    for i, level in enumerate(lv):
        lo, hi = lo_hi_fn(float(level))
        inside = (t >= _flat(lo)) & (t <= _flat(hi))
        observed[i] = inside[ok].mean() if ok.any() else np.nan
    return lv, observed


def miscalibration_area(levels: ArrayLike, observed: ArrayLike) -> float:
    """Mean |observed - expected| coverage over ``levels``.

    The area between the calibration curve and the diagonal (Tran et al. 2020),
    approximated by the average gap on these levels rather than integrated on [0, 1].
    0 is perfect; over- and under-confidence both count.
    """
    lv, ob = _flat(levels), _flat(observed)
    if len(lv) != len(ob) or len(lv) == 0:
        raise ValueError("levels and observed must be non-empty and of equal length")
    return float(np.mean(np.abs(ob - lv)))


def ence(std: ArrayLike, error: ArrayLike, n_bins: int = 10) -> float:
    """Expected normalised calibration error (Levi et al. 2022).

    Sort by std and split into ``n_bins`` equal-count bins; per bin
    RMV_j = sqrt(mean std^2) and RMSE_j = sqrt(mean err^2) (signed or absolute errors
    give the same value); ``ENCE = mean_j |RMV_j - RMSE_j| / RMV_j``. Asks whether a
    predicted std is the error one should expect at that std, bin by bin. Non-finite
    pairs are dropped; fewer points than bins use one point per bin; NaN if empty
    or a bin has RMV 0.
    """
    s, e = _finite_pairs(std, error)
    if len(s) == 0 or n_bins < 1:
        return math.nan
    order = np.argsort(s, kind="stable")
    bins = np.array_split(order, min(n_bins, len(s)))
    rmv = np.array([np.sqrt(np.mean(s[b] ** 2)) for b in bins])
    rmse = np.array([np.sqrt(np.mean(e[b] ** 2)) for b in bins])
    if np.any(rmv <= 0):
        return math.nan
    return float(np.mean(np.abs(rmv - rmse) / rmv))


# -- forces --------------------------------------------------------------------------------


def _free_mask(fixed: ArrayLike | None, n_atoms: int, natoms: ArrayLike | None) -> np.ndarray:
    """Atoms fairchem scores: fixed == 0; a structure with no free atom counts all of its atoms."""
    if fixed is None:
        return np.ones(n_atoms, bool)
    free = np.asarray(fixed).reshape(-1) == 0
    if len(free) != n_atoms:
        raise ValueError(f"fixed has {len(free)} entries for {n_atoms} atoms")
    if natoms is not None:
        bounds = np.concatenate([[0], np.cumsum(np.asarray(natoms, dtype=int))])
        if bounds[-1] != n_atoms:
            raise ValueError(f"natoms sum to {bounds[-1]}, forces have {n_atoms} atoms")
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if not free[a:b].any():
                free[a:b] = True
    return free


def force_labelled(forces_target: ArrayLike) -> np.ndarray:
    """Atoms with a force target: rows not all NaN (NaN rows stand for structures without
    force labels). Any other non-finite value is an error naming how many."""
    t = np.asarray(forces_target, dtype=np.float64).reshape(-1, 3)
    labelled = ~np.isnan(t).all(axis=1)
    bad = int((~np.isfinite(t[labelled])).sum())
    if bad:
        raise ValueError(f"array 'forces_target' has {bad} non-finite value(s) (NaN or inf) "
                         "in atoms with force labels")
    return labelled


def force_metrics(forces: ArrayLike, forces_target: ArrayLike, fixed: ArrayLike | None = None,
                  natoms: ArrayLike | None = None) -> dict[str, float]:
    """Force MAE and cosine similarity over free atoms.

    ``forces_mae`` = mean |F - F_target| over all components of free atoms (fixed == 0),
    fairchem's force metric. ``forces_cosine`` = mean over free atoms of
    F . F_t / (|F| |F_t|), atoms with zero target norm excluded (no direction to
    match); a zero predicted force counts as cosine 0. With ``natoms`` a structure
    with no free atom is scored on all its atoms (as ``StructurePrediction.forces_mae``
    does) and ``forces_mae_structure_mean`` averages the per-structure MAEs. Atoms whose
    target row is all NaN (structures without force labels, in mixed data) are left out.
    """
    f = np.asarray(forces, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(forces_target, dtype=np.float64).reshape(-1, 3)
    if f.shape != t.shape:
        raise ValueError(f"forces {f.shape} and forces_target {t.shape} differ in shape")
    free = _free_mask(fixed, len(f), natoms) & force_labelled(t)
    out = {"forces_mae": math.nan, "forces_cosine": math.nan,
           "forces_mae_structure_mean": math.nan, "n_free_atoms": float(free.sum())}
    if not free.any():
        return out
    diff = np.abs(f - t)
    out["forces_mae"] = float(diff[free].mean())
    tn, fn = np.linalg.norm(t, axis=1), np.linalg.norm(f, axis=1)
    use = free & (tn > 0)
    if use.any():
        cos = (f[use] * t[use]).sum(1) / np.maximum(fn[use] * tn[use], np.finfo(float).tiny)
        out["forces_cosine"] = float(np.mean(cos))
    if natoms is not None:
        bounds = np.concatenate([[0], np.cumsum(np.asarray(natoms, dtype=int))])
        per = [diff[a:b][free[a:b]].mean() for a, b in zip(bounds[:-1], bounds[1:], strict=True)
               if free[a:b].any()]
        out["forces_mae_structure_mean"] = float(np.mean(per)) if per else math.nan
    return out


# -- everything at once ----------------------------------------------------------------------

METRIC_KEYS = (
    "n", "energy_mae", "energy_rmse", "energy_mae_per_atom", "energy_rmse_per_atom",
    "forces_mae", "forces_cosine",
    "spearman_energy_std", "spearman_energy_entropy",
    "spearman_energy_std_per_atom", "spearman_energy_entropy_per_atom",
    "spearman_energy_disagreement_per_atom",
    "spearman_forces_std", "spearman_forces_entropy",
    "rejection_auc_ratio_energy_std", "rejection_auc_ratio_energy_std_per_atom",
    "energy_nll", "energy_nll_gaussian", "energy_nll_is_histogram",
    "miscalibration_area", "miscalibration_area_gaussian", "energy_coverage90",
    "ence_energy",
    "auroc_energy_std", "auroc_energy_entropy", "auroc_energy_std_per_atom",
    "auroc_energy_edge_mass",
    # the trivial ranking: bigger structures, bigger errors
    "spearman_natoms", "spearman_natoms_per_atom",
    # the designated outputs: energy_uncertainty (eV, calibrated) and ood_score
    "spearman_energy_uncertainty", "spearman_energy_uncertainty_per_atom",
    "rejection_auc_ratio_energy_uncertainty", "rejection_auc_ratio_energy_uncertainty_per_atom",
    "spearman_ood_score_per_atom",
    "energy_nll_uncertainty", "miscalibration_area_uncertainty", "energy_coverage90_uncertainty",
    "ence_energy_uncertainty", "energy_crps_uncertainty",
    "auroc_ood_score", "auroc_energy_uncertainty", "auroc_energy_uncertainty_per_atom",
)
# rows the ranking metrics (Spearman, rejection, AUROC) leave out, counted, never silent
METRIC_KEYS = (*METRIC_KEYS, "n_nonfinite_energy", "n_nonfinite_uncertainty",
               "n_ood_nonfinite_uncertainty")


def _nonfinite_rows(columns: Mapping[str, ArrayLike] | None, names: tuple[str, ...]) -> float:
    """Rows where any present uncertainty column (one with some finite value) is not finite;
    NaN if no such column is present (nothing is ranked)."""
    bad = None
    for name in names:
        x = _column(columns, name)
        if x is not None:
            bad = ~np.isfinite(x) if bad is None else bad | ~np.isfinite(x)
    return float(bad.sum()) if bad is not None else math.nan


UNCERTAINTY_COLUMNS = ("energy_std", "energy_entropy", "energy_edge_mass")


def _column(columns: Mapping[str, ArrayLike] | None, name: str) -> np.ndarray | None:
    """A column as float64, or None if absent or holding no finite value (e.g. ensemble entropy)."""
    if columns is None or name not in columns or columns[name] is None:
        return None
    x = _flat(columns[name])
    return x if np.isfinite(x).any() else None


def evaluate_predictions(columns: Mapping[str, ArrayLike],
                         arrays: Mapping[str, ArrayLike] | None = None,
                         ood_columns: Mapping[str, ArrayLike] | None = None) -> dict[str, float]:
    """Every accuracy and uncertainty metric of one ``predict`` run, as a flat dict.

    ``columns`` is the CSV (``read_predictions``), ``arrays`` the NPZ (``np.load``),
    ``ood_columns`` the CSV of a run on out-of-distribution structures. Keys are
    ``METRIC_KEYS``; a metric whose inputs are missing (no std for a scalar model,
    no entropy for an ensemble, no histograms, no OOD set) is NaN, so one table
    holds categorical models and ensembles alike. Per-atom variants divide error and
    std by natoms (entropy is unchanged by that rescaling of the bins, so it is ranked
    as is). NLL and miscalibration use the histogram when ``energy_probs`` is present
    and a Gaussian(energy, energy_std) otherwise; the ``_gaussian`` keys always use the
    Gaussian, for a like-for-like comparison with an ensemble.
    The ``_uncertainty`` keys score ``energy_uncertainty``: its predictive distribution is
    the histogram smoothed with a Gaussian of std ``sqrt(energy_uncertainty^2 -
    energy_std^2)`` (what the model's calibration fitted), or Gaussian(energy,
    energy_uncertainty) without histograms (an ensemble). ``auroc_ood_score`` ranks the
    OOD set against this one by ``ood_score``.
    Raises ValueError if energy targets (or force targets, when given) are not finite.
    """
    out = dict.fromkeys(METRIC_KEYS, math.nan)
    if "energy_target" not in columns:
        raise ValueError("columns lack 'energy_target'; cannot score predictions without it")
    target = _flat(columns["energy_target"])
    if not np.isfinite(target).all():
        bad = int((~np.isfinite(target)).sum())
        raise ValueError(f"column 'energy_target' has {bad} non-finite value(s) (NaN or inf)")
    if "energy" not in columns:
        raise ValueError("columns lack 'energy' (the predicted value)")
    energy = _flat(columns["energy"])
    if len(energy) != len(target):
        raise ValueError(f"'energy' has {len(energy)} rows, 'energy_target' {len(target)}")
    arrays = {} if arrays is None else arrays
    err = energy - target
    abs_err = np.abs(err)
    n = len(target)
    natoms = _column(columns, "natoms")
    if natoms is None and "natoms" in arrays:
        natoms = _flat(arrays["natoms"])
    out["n"] = float(n)
    out["n_nonfinite_energy"] = float((~np.isfinite(energy)).sum())
    out["n_nonfinite_uncertainty"] = _nonfinite_rows(columns, UNCERTAINTY_COLUMNS)
    out["energy_mae"] = float(np.mean(abs_err))
    out["energy_rmse"] = float(np.sqrt(np.mean(err**2)))
    if natoms is not None:
        out["energy_mae_per_atom"] = float(np.mean(abs_err / natoms))
        out["energy_rmse_per_atom"] = float(np.sqrt(np.mean((err / natoms) ** 2)))

    std = _column(columns, "energy_std")
    entropy = _column(columns, "energy_entropy")
    if std is not None:
        out["spearman_energy_std"] = spearman(std, abs_err)
        out["rejection_auc_ratio_energy_std"] = rejection_curve(std, abs_err)["auc_ratio"]
        out["ence_energy"] = ence(std, err)
        g = np.isfinite(std)  # Gaussian scores on the rows that have a std
        out["energy_nll_gaussian"] = float(np.mean(gaussian_nll(energy[g], std[g], target[g])))
        levels, observed = coverage_curve(
            lambda c: gaussian_interval(energy[g], std[g], c), target[g])
        out["miscalibration_area_gaussian"] = miscalibration_area(levels, observed)
        if natoms is not None:
            out["spearman_energy_std_per_atom"] = spearman(std / natoms, abs_err / natoms)
            out["rejection_auc_ratio_energy_std_per_atom"] = rejection_curve(
                std / natoms, abs_err / natoms)["auc_ratio"]
    disagreement = _column(columns, "energy_disagreement")
    if disagreement is not None and natoms is not None and np.isfinite(disagreement).any():
        out["spearman_energy_disagreement_per_atom"] = spearman(disagreement / natoms,
                                                                abs_err / natoms)
    if entropy is not None:
        out["spearman_energy_entropy"] = spearman(entropy, abs_err)
        if natoms is not None:
            out["spearman_energy_entropy_per_atom"] = spearman(entropy, abs_err / natoms)

    if "energy_probs" in arrays and "energy_bin_centers" in arrays:
        probs = np.asarray(arrays["energy_probs"])
        centers = np.asarray(arrays["energy_bin_centers"])
        if len(probs) != n:
            raise ValueError(f"NPZ holds {len(probs)} histograms for {n} CSV rows")
        out["energy_nll"] = float(np.mean(histogram_nll(probs, centers, target)))
        out["energy_nll_is_histogram"] = 1.0
        levels, observed = coverage_curve(lambda c: histogram_interval(probs, centers, c), target)
        out["miscalibration_area"] = miscalibration_area(levels, observed)
        lo, hi = histogram_interval(probs, centers, 0.9)
        out["energy_coverage90"] = float(np.mean((target >= lo) & (target <= hi)))
    elif std is not None:
        out["energy_nll"] = out["energy_nll_gaussian"]
        out["energy_nll_is_histogram"] = 0.0
        out["miscalibration_area"] = out["miscalibration_area_gaussian"]
        lo, hi = gaussian_interval(energy[g], std[g], 0.9)
        out["energy_coverage90"] = float(np.mean((target[g] >= lo) & (target[g] <= hi)))

    if "forces" in arrays and "forces_target" in arrays:
        f_t = np.asarray(arrays["forces_target"], dtype=np.float64)
        labelled = force_labelled(f_t)
        f = np.asarray(arrays["forces"], dtype=np.float64)
        fixed = arrays.get("fixed")
        atom_counts = arrays.get("natoms", natoms)
        fm = force_metrics(f, f_t, fixed, atom_counts)
        out["forces_mae"], out["forces_cosine"] = fm["forces_mae"], fm["forces_cosine"]
        free = _free_mask(fixed, len(f), atom_counts) & labelled.reshape(-1)
        atom_err = np.linalg.norm(f - f_t, axis=1)[free]
        for name in ("forces_std", "forces_entropy"):
            if name in arrays:
                u = _flat(arrays[name])
                if len(u) == len(free):
                    out[f"spearman_{name}"] = spearman(u[free], atom_err)

    if natoms is not None:
        out["spearman_natoms"] = spearman(natoms, abs_err)
        out["spearman_natoms_per_atom"] = spearman(natoms, abs_err / natoms)
    out.update(_designated_metrics(columns, arrays, ood_columns, energy, target, natoms))

    if ood_columns is not None:
        out["n_ood_nonfinite_uncertainty"] = _nonfinite_rows(ood_columns, UNCERTAINTY_COLUMNS)
        # edge mass: probability in the outermost bins, where a target beyond the
        # support piles up; a categorical model's sign that it is extrapolating
        for name in ("energy_std", "energy_entropy", "energy_edge_mass"):
            u_in, u_ood = _column(columns, name), _column(ood_columns, name)
            if u_in is not None and u_ood is not None:
                out[f"auroc_{name}"] = auroc(u_in, u_ood)
        ood_std, ood_natoms = _column(ood_columns, "energy_std"), _column(ood_columns, "natoms")
        if std is not None and natoms is not None and ood_std is not None and \
                ood_natoms is not None:
            out["auroc_energy_std_per_atom"] = auroc(std / natoms, ood_std / ood_natoms)
    return out


def _designated_metrics(columns: Mapping[str, ArrayLike], arrays: Mapping[str, ArrayLike],
                        ood_columns: Mapping[str, ArrayLike] | None, energy: np.ndarray,
                        target: np.ndarray, natoms: np.ndarray | None) -> dict[str, float]:
    """Ranking, calibration and OOD metrics of ``energy_uncertainty`` and ``ood_score``."""
    out: dict[str, float] = {}
    err = energy - target
    abs_err = np.abs(err)
    eu = _column(columns, "energy_uncertainty")
    ood = _column(columns, "ood_score")
    if ood is not None and natoms is not None:
        out["spearman_ood_score_per_atom"] = spearman(ood, abs_err / natoms)
    if ood is not None and ood_columns is not None:
        ood_other = _column(ood_columns, "ood_score")
        if ood_other is not None:
            out["auroc_ood_score"] = auroc(ood, ood_other)
    if eu is None:
        return out
    out["spearman_energy_uncertainty"] = spearman(eu, abs_err)
    out["rejection_auc_ratio_energy_uncertainty"] = rejection_curve(eu, abs_err)["auc_ratio"]
    out["ence_energy_uncertainty"] = ence(eu, err)
    if natoms is not None:
        out["spearman_energy_uncertainty_per_atom"] = spearman(eu / natoms, abs_err / natoms)
        out["rejection_auc_ratio_energy_uncertainty_per_atom"] = rejection_curve(
            eu / natoms, abs_err / natoms)["auc_ratio"]
    g = np.isfinite(eu)
    std = _column(columns, "energy_std")
    kernel_col = _column(columns, "energy_kernel_std")
    dist = predictive_from_files(columns, arrays) if kernel_col is not None and bool(
        np.isfinite(kernel_col).all()) else None
    if dist is not None and g.all():
        # the distribution the model predicted with, rebuilt exactly from the files
        t = torch.as_tensor(target, dtype=torch.float64)
        out["energy_nll_uncertainty"] = float(dist.nll(t).mean())
        out["energy_crps_uncertainty"] = float(dist.crps(t).mean())

        def interval(c: float) -> tuple[np.ndarray, np.ndarray]:
            lo, hi = dist.interval(c)
            return lo.numpy(), hi.numpy()

        levels, observed = coverage_curve(interval, target)
        lo, hi = interval(0.9)
    elif "energy_probs" in arrays and "energy_bin_centers" in arrays and std is not None \
            and g.all():
        probs = np.asarray(arrays["energy_probs"])
        centers = np.asarray(arrays["energy_bin_centers"])
        kernel = np.sqrt(np.clip(eu**2 - std**2, 0.0, None))
        out["energy_nll_uncertainty"] = float(np.mean(histogram_nll(probs, centers, target,
                                                                    kernel)))
        levels, observed = coverage_curve(
            lambda c: smoothed_interval(probs, centers, kernel, c), target)
        lo, hi = smoothed_interval(probs, centers, kernel, 0.9)
    else:
        out["energy_nll_uncertainty"] = float(np.mean(gaussian_nll(energy[g], eu[g],
                                                                   target[g])))
        levels, observed = coverage_curve(
            lambda c: gaussian_interval(energy[g], eu[g], c), target[g])
        lo, hi = gaussian_interval(energy[g], eu[g], 0.9)
        target = target[g]
    out["miscalibration_area_uncertainty"] = miscalibration_area(levels, observed)
    out["energy_coverage90_uncertainty"] = float(np.mean((target >= lo) & (target <= hi)))
    if ood_columns is not None:
        eu_ood = _column(ood_columns, "energy_uncertainty")
        if eu_ood is not None:
            out["auroc_energy_uncertainty"] = auroc(eu, eu_ood)
            n_ood = _column(ood_columns, "natoms")
            if natoms is not None and n_ood is not None:
                out["auroc_energy_uncertainty_per_atom"] = auroc(eu / natoms, eu_ood / n_ood)
    return out
