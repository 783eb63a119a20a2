"""Tests for fairchem_categorical.report.metrics and uncertainty_plots.

Expected numbers come from hand calculation, closed forms (scipy.stats.norm) or
synthetic data whose calibration is known by construction.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm, spearmanr

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.predictions import (
    StructurePrediction,
    read_predictions,
    write_predictions,
)
from fairchem_categorical.report.metrics import (
    METRIC_KEYS,
    auroc,
    coverage_curve,
    ence,
    evaluate_predictions,
    force_metrics,
    gaussian_interval,
    gaussian_nll,
    histogram_interval,
    histogram_nll,
    histogram_quantile,
    miscalibration_area,
    rejection_curve,
    smoothed_interval,
    spearman,
)
from fairchem_categorical.report.plots import (
    plot_active_learning,
    plot_calibration_curve,
    plot_error_vs_uncertainty,
    plot_extreme_histograms,
    plot_rejection_curves,
    plot_score_distributions,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_modules_import_neither_fairchem_nor_pyplot() -> None:
    # static check of every import statement (a subprocess import costs ~6 s of torch);
    # their package imports (histogram, uncertainty) are covered by test_histogram's check
    import ast

    for name in ("report/metrics", "calibration", "report/plots"):
        tree = ast.parse((REPO_ROOT / "fairchem_categorical" / f"{name}.py").read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert imported, name
        for mod in imported:
            assert mod.split(".")[0] != "fairchem", (name, mod)
            assert mod != "matplotlib.pyplot", (name, mod)


# -- synthetic data with known calibration ----------------------------------------------


def gaussian_data(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means, stds spanning ~2 decades, and targets drawn from N(mean, std): calibrated."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 5.0, n)
    std = rng.uniform(0.05, 2.0, n) * np.exp(rng.normal(0.0, 0.5, n))
    return mean, std, rng.normal(mean, std)


def gaussian_histograms(mean: np.ndarray, std: np.ndarray, seed: int = 1
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The N(mean, std) mass of bins of width std/5 spanning +-8 std (random phase per row)."""
    rng = np.random.default_rng(seed)
    width = std / 5.0
    left = mean - 8.0 * std - rng.uniform(0.0, 1.0, len(mean)) * width
    edges = left[:, None] + width[:, None] * np.arange(81)
    probs = np.diff(norm.cdf(edges, mean[:, None], std[:, None]), axis=1)
    return probs / probs.sum(1, keepdims=True), (edges[:, 1:] + edges[:, :-1]) / 2


@pytest.fixture(scope="module")
def calibrated() -> dict[str, np.ndarray]:
    mean, std, y = gaussian_data()
    probs, centers = gaussian_histograms(mean, std)
    return {"mean": mean, "std": std, "y": y, "probs": probs, "centers": centers}


def test_calibrated_gaussian_has_small_miscalibration_and_ence(calibrated: dict) -> None:
    m, s, y = calibrated["mean"], calibrated["std"], calibrated["y"]
    levels, observed = coverage_curve(lambda c: gaussian_interval(m, s, c), y)
    np.testing.assert_allclose(levels, np.arange(1, 10) / 10)
    assert miscalibration_area(levels, observed) < 0.01
    assert ence(s, y - m) < 0.05
    assert ence(s, np.abs(y - m)) == pytest.approx(ence(s, y - m))


def test_calibrated_histograms_match_the_gaussian(calibrated: dict) -> None:
    m, s, y = calibrated["mean"], calibrated["std"], calibrated["y"]
    p, c = calibrated["probs"], calibrated["centers"]
    levels, observed = coverage_curve(lambda cov: histogram_interval(p, c, cov), y)
    assert miscalibration_area(levels, observed) < 0.02
    h_nll, g_nll = histogram_nll(p, c, y), gaussian_nll(m, s, y)
    assert h_nll.shape == (len(y),)
    assert abs(h_nll.mean() - g_nll.mean()) < 0.05


def test_over_confident_gaussian_is_flagged(calibrated: dict) -> None:
    m, s, y = calibrated["mean"], calibrated["std"], calibrated["y"]
    levels, observed = coverage_curve(lambda c: gaussian_interval(m, s / 2, c), y)
    assert miscalibration_area(levels, observed) > 0.1
    # +-1.645 (std/2) covers 2 Phi(0.822) - 1 = 0.589 of N(0, std)
    assert observed[-1] < 0.9
    assert observed[-1] == pytest.approx(2 * norm.cdf(norm.ppf(0.95) / 2) - 1, abs=0.01)


# -- ranking -----------------------------------------------------------------------------


def test_uncertainty_equal_to_error_is_the_oracle() -> None:
    e = np.abs(np.random.default_rng(2).normal(size=5000))
    assert spearman(e, e) == pytest.approx(1.0)
    curve = rejection_curve(e, e)
    assert curve["auc_ratio"] == pytest.approx(1.0)
    np.testing.assert_allclose(curve["mae"], curve["oracle_mae"])
    assert curve["random_auc"] == pytest.approx(e.mean() * 0.9)


def test_random_uncertainty_is_no_better_than_random() -> None:
    rng = np.random.default_rng(3)
    e, u = np.abs(rng.normal(size=5000)), rng.uniform(size=5000)
    assert abs(rejection_curve(u, e)["auc_ratio"]) < 0.15
    assert abs(spearman(u, e)) < 0.05


def test_rejection_curve_by_hand() -> None:
    # errors 1..4 ranked exactly backwards; reject 0 or half:
    # kept mean |err| 2.5 then (4 + 3)/2 = 3.5; oracle 2.5 then 1.5
    curve = rejection_curve([4, 3, 2, 1], [1, 2, 3, 4], fractions=[0.0, 0.5])
    np.testing.assert_allclose(curve["mae"], [2.5, 3.5])
    np.testing.assert_allclose(curve["oracle_mae"], [2.5, 1.5])
    assert curve["auc"] == pytest.approx(0.5 * (2.5 + 3.5) / 2)  # 1.5
    assert curve["oracle_auc"] == pytest.approx(0.5 * (2.5 + 1.5) / 2)  # 1.0
    assert curve["random_auc"] == pytest.approx(2.5 * 0.5)
    assert curve["auc_ratio"] == pytest.approx((1.25 - 1.5) / (1.25 - 1.0))  # -1


def test_rejection_curve_ties_count_as_random() -> None:
    e = np.abs(np.random.default_rng(7).normal(size=101))
    curve = rejection_curve(np.ones(101), e)
    np.testing.assert_allclose(curve["mae"], e.mean())
    assert curve["auc_ratio"] == pytest.approx(0.0, abs=1e-12)
    # two tie groups {0: errors 1, 3} and {1: errors 5, 7}; keeping 3 takes half of the
    # second group's mean: (1 + 3 + 6) / 3
    curve = rejection_curve([0, 1, 0, 1], [1, 5, 3, 7], fractions=[0.0, 0.25, 0.5])
    np.testing.assert_allclose(curve["mae"], [4.0, 10 / 3, 2.0])


def test_spearman_degenerate_inputs_are_nan() -> None:
    assert math.isnan(spearman([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]))
    assert math.isnan(spearman([1.0, 2.0], [1.0, 2.0]))
    assert math.isnan(spearman([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, np.nan]))
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_auroc() -> None:
    rng = np.random.default_rng(4)
    assert auroc(rng.normal(size=5000), rng.normal(size=5000)) == pytest.approx(0.5, abs=0.03)
    assert auroc(rng.uniform(0, 1, 500), rng.uniform(2, 3, 500)) == 1.0
    assert auroc([1.0, 2.0], [0.5, 0.7]) == 0.0
    assert math.isnan(auroc([1.0, 2.0], [np.nan]))


# -- likelihoods and intervals by hand ----------------------------------------------------


def _np_smoothed_nll(probs, centers, targets, kernel):
    """-log sum_k p_k [Phi((t - l_k)/s) - Phi((t - r_k)/s)] / w, with scipy, row by row."""
    from scipy.stats import norm

    out = []
    for p, c, t, s in zip(probs, centers, targets, kernel, strict=True):
        c = np.asarray(c, dtype=float)
        w = c[1] - c[0]
        left = c - w / 2
        # Phi(a) - Phi(b) as sf(b) - sf(a) in the upper tail, where cdf rounds to 1
        mass = [norm.sf((t - lk - w) / s) - norm.sf((t - lk) / s) if t - lk - w > 0 else
                norm.cdf((t - lk) / s) - norm.cdf((t - lk - w) / s) for lk in left]
        out.append(-math.log(sum(pk * m for pk, m in zip(p, mass, strict=True)) / w))
    return np.array(out)


def test_histogram_nll_by_hand() -> None:
    probs = np.array([[0.2, 0.5, 0.3]] * 5)
    centers = np.array([[0.0, 1.0, 2.0]] * 4 + [[0.0, 0.5, 1.0]])  # last row: width 0.5
    targets = np.array([1.2, -0.4, 2.49, 7.0, 0.6])
    width = np.array([1.0] * 4 + [0.5])
    # the default kernel: 0.75 bin widths (the HL-Gauss sigma)
    expected = _np_smoothed_nll(probs, centers, targets, 0.75 * width)
    np.testing.assert_allclose(histogram_nll(probs, centers, targets), expected, rtol=1e-9)
    # a wider kernel where given; never narrower than the default
    kernel = np.array([2.0, 0.1, np.nan, 3.0, 0.5])
    expected = _np_smoothed_nll(probs, centers, targets, [2.0, 0.75, 0.75, 3.0, 0.5])
    np.testing.assert_allclose(histogram_nll(probs, centers, targets, kernel), expected,
                               rtol=1e-9)
    # an empty bin is finite: its neighbours' mass reaches it through the kernel
    nll = histogram_nll([[0.0, 1.0, 0.0]], [[0.0, 1.0, 2.0]], [0.0])
    assert nll[0] == pytest.approx(_np_smoothed_nll([[0.0, 1.0, 0.0]], [[0.0, 1.0, 2.0]],
                                                    [0.0], [0.75])[0])


def test_histogram_nll_penalises_targets_beyond_the_support() -> None:
    probs, centers = np.array([[0.2, 0.5, 0.3]]), np.array([[0.0, 1.0, 2.0]])
    edge = histogram_nll(probs, centers, [2.4])[0]
    nll = [histogram_nll(probs, centers, [2.5 + d])[0] for d in (1.0, 10.0, 1000.0)]
    assert edge < nll[0] < nll[1] < nll[2]
    # far out the density is the edge bin's mass under a Gaussian tail of s = 0.75:
    # -log(0.3 * Phi(-d / s) / w) ~ d^2 / (2 s^2) + log(d / s) + ...
    d = 1000.0
    assert nll[2] == pytest.approx(d**2 / (2 * 0.75**2), rel=1e-4)
    # symmetric on the low side, and a target 1000 eV out is no longer scored as the edge
    assert histogram_nll(probs, centers, [-0.5 - d])[0] == pytest.approx(
        d**2 / (2 * 0.75**2), rel=1e-4)
    assert nll[2] - edge > 1e5


def test_gaussian_nll_by_hand() -> None:
    nll = gaussian_nll([0.0, 1.0], [1.0, 2.0], [0.0, 3.0])
    np.testing.assert_allclose(nll, [0.5 * math.log(2 * math.pi),
                                     0.5 * math.log(2 * math.pi * 4) + 4 / 8])
    np.testing.assert_allclose(nll, -norm.logpdf([0.0, 3.0], [0.0, 1.0], [1.0, 2.0]))


def test_histogram_interval_of_uniform_histograms_is_analytic() -> None:
    # 4 equal bins on [0, 2] and 10 on [-5, 5]: the central c interval of U(a, b)
    # is [a + (1 - c)/2 (b - a), b - (1 - c)/2 (b - a)]
    c1 = np.linspace(0.25, 1.75, 4)
    c2 = np.linspace(-4.5, 4.5, 10)
    for centers, a, b in ((c1, 0.0, 2.0), (c2, -5.0, 5.0)):
        probs = np.full(len(centers), 1.0 / len(centers))
        for cov in (0.3, 0.5, 0.9):
            lo, hi = histogram_interval(probs, centers, cov)
            tail = (1 - cov) / 2 * (b - a)
            assert lo[0] == pytest.approx(a + tail)
            assert hi[0] == pytest.approx(b - tail)


def test_histogram_quantile_by_hand_and_against_support() -> None:
    # cdf 0.2, 0.7, 1.0 on edges -0.5, 0.5, 1.5, 2.5: median 0.6 into the middle bin
    assert histogram_quantile([0.2, 0.5, 0.3], [0.0, 1.0, 2.0], 0.5)[0] == pytest.approx(1.1)
    sup = HistogramSupport(-2.0, 3.0, 16)
    logits = torch.randn(6, 16, generator=torch.Generator().manual_seed(0)) * 2
    probs = sup.probs(logits).double().numpy()
    centers = np.tile(sup.centers.double().numpy(), (6, 1))
    for q in (0.05, 0.5, 0.95):
        np.testing.assert_allclose(histogram_quantile(probs, centers, q),
                                   sup.quantile(logits, q).numpy(), atol=1e-5)
    # per-row widths: the same histogram scaled by 3 and shifted by 10 maps its quantiles
    np.testing.assert_allclose(histogram_quantile(probs, 3 * centers + 10, 0.3),
                               3 * histogram_quantile(probs, centers, 0.3) + 10)


def test_gaussian_interval_matches_scipy() -> None:
    mean, std = np.array([0.0, 2.0, -1.0]), np.array([1.0, 0.5, 3.0])
    for cov in (0.1, 0.68, 0.9):
        lo, hi = gaussian_interval(mean, std, cov)
        ref_lo, ref_hi = norm.interval(cov, loc=mean, scale=std)
        np.testing.assert_allclose(lo, ref_lo)
        np.testing.assert_allclose(hi, ref_hi)


def test_miscalibration_area_by_hand() -> None:
    assert miscalibration_area([0.1, 0.5, 0.9], [0.2, 0.5, 0.6]) == pytest.approx(0.4 / 3)


def test_ence_by_hand() -> None:
    # sorted by std: bin 1 = {1, 1} with errors {1, 1}: RMV 1, RMSE 1 -> 0
    # bin 2 = {2, 2} with errors {1, 3}: RMV 2, RMSE sqrt(5) -> |2 - sqrt 5| / 2
    std = np.array([2.0, 1.0, 2.0, 1.0])
    err = np.array([-1.0, 1.0, 3.0, -1.0])
    assert ence(std, err, n_bins=2) == pytest.approx((math.sqrt(5) - 2) / 2 / 2)


# -- forces ---------------------------------------------------------------------------------


def test_force_metrics_by_hand() -> None:
    forces = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [5.0, 5.0, 5.0]])
    target = np.array([[2.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    m = force_metrics(forces, target, fixed=np.array([0, 0, 1]))
    assert m["forces_mae"] == pytest.approx((1.0 + 3.0) / 6)  # free atoms 0, 1 only
    assert m["forces_cosine"] == pytest.approx(0.0)  # +1 (parallel) and -1 (opposite)
    assert m["n_free_atoms"] == 2
    assert force_metrics(forces[:1], 3 * forces[:1])["forces_cosine"] == pytest.approx(1.0)
    assert force_metrics(forces[:2], -0.5 * forces[:2])["forces_cosine"] == pytest.approx(-1.0)
    # no fixed mask: all atoms; the zero-target atom counts in the MAE, not in the cosine
    m = force_metrics(forces, target)
    assert m["forces_mae"] == pytest.approx((1.0 + 3.0 + 15.0) / 9)
    assert m["forces_cosine"] == pytest.approx(0.0)


def test_force_metrics_all_fixed_structure_counts_all_atoms() -> None:
    forces = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 4.0]])
    target = np.zeros((3, 3)) + [[0.0, 0.0, 1.0]]
    m = force_metrics(forces, target, fixed=[1, 1, 0], natoms=[2, 1])
    # structure 0 has no free atom, so (like StructurePrediction.forces_mae) uses both
    assert m["forces_mae"] == pytest.approx((2.0 + 2.0 + 3.0) / 9)
    assert m["forces_mae_structure_mean"] == pytest.approx((4.0 / 6 + 3.0 / 3) / 2)


# -- evaluate_predictions -----------------------------------------------------------------


def _synthetic_run(n: int = 40, seed: int = 5, categorical: bool = True
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    natoms = rng.integers(2, 6, n)
    std = rng.uniform(0.1, 1.0, n) * natoms
    mean = rng.normal(-3.0, 1.0, n) * natoms
    target = rng.normal(mean, std)
    cols = {"index": np.arange(n, dtype=float), "natoms": natoms.astype(float),
            "energy": mean, "energy_std": std, "energy_target": target,
            "energy_entropy": np.log(std) + 3.0 if categorical else np.full(n, np.nan)}
    n_at = int(natoms.sum())
    f_t = rng.normal(size=(n_at, 3))
    f_std = rng.uniform(0.05, 0.5, n_at)
    arrays = {"natoms": natoms, "forces_target": f_t,
              "forces": f_t + f_std[:, None] * rng.normal(size=(n_at, 3)),
              "fixed": (rng.uniform(size=n_at) < 0.2).astype(int), "forces_std": f_std}
    if categorical:
        arrays["energy_probs"], arrays["energy_bin_centers"] = gaussian_histograms(mean, std)
        cols["energy_uncertainty"] = std * 1.1
        cols["ood_score"] = rng.uniform(0.5, 1.5, n)
    return cols, arrays


def test_evaluate_predictions_categorical() -> None:
    cols, arrays = _synthetic_run()
    ood, _ = _synthetic_run(seed=6)
    ood["energy_std"] = ood["energy_std"] * 10
    ood["energy_entropy"] = ood["energy_entropy"] + 10
    rng = np.random.default_rng(7)
    cols["energy_edge_mass"] = rng.uniform(0.0, 0.01, len(cols["energy"]))
    ood["energy_edge_mass"] = rng.uniform(0.2, 0.5, len(ood["energy"]))
    ood["energy_uncertainty"] = ood["energy_uncertainty"] * 10
    ood["ood_score"] = ood["ood_score"] + 1.0
    out = evaluate_predictions(cols, arrays, ood)
    assert tuple(out) == METRIC_KEYS
    assert all(isinstance(v, float) for v in out.values())
    err = np.abs(cols["energy"] - cols["energy_target"])
    assert out["n"] == 40
    assert out["energy_mae"] == pytest.approx(err.mean())
    assert out["energy_mae_per_atom"] == pytest.approx((err / cols["natoms"]).mean())
    assert out["energy_nll_is_histogram"] == 1.0
    assert out["energy_nll"] == pytest.approx(out["energy_nll_gaussian"], abs=0.05)
    assert out["auroc_energy_std"] == 1.0
    assert out["auroc_energy_entropy"] == 1.0
    assert out["auroc_energy_edge_mass"] == 1.0
    assert out["auroc_ood_score"] == 1.0 and out["auroc_energy_uncertainty"] == 1.0
    assert out["spearman_natoms"] == pytest.approx(spearmanr(cols["natoms"], err).statistic)
    assert out["spearman_natoms_per_atom"] == pytest.approx(
        spearmanr(cols["natoms"], err / cols["natoms"]).statistic)
    # energy_uncertainty = 1.1 std: a uniformly wider version of the same ranking
    assert out["spearman_energy_uncertainty"] == pytest.approx(out["spearman_energy_std"])
    assert 0.0 <= out["miscalibration_area"] <= 1.0
    assert out["spearman_forces_std"] > 0.3  # force errors scale with forces_std
    assert math.isnan(out["spearman_forces_entropy"])  # no forces_entropy given
    # a one-member model without a stored kernel: no disagreement, no rebuilt predictive
    absent = ("spearman_forces_entropy", "spearman_energy_disagreement_per_atom",
              "energy_crps_uncertainty")
    for key in METRIC_KEYS:
        if key not in absent:
            assert math.isfinite(out[key]), key
    assert all(math.isnan(out[key]) for key in absent)


def test_evaluate_predictions_missing_pieces_are_nan() -> None:
    cols, arrays = _synthetic_run(categorical=False)  # ensemble-like: mean and std only
    out = evaluate_predictions(cols, arrays)
    assert tuple(out) == METRIC_KEYS
    assert out["energy_nll_is_histogram"] == 0.0
    assert out["energy_nll"] == out["energy_nll_gaussian"]
    assert out["miscalibration_area"] == out["miscalibration_area_gaussian"]
    for key in ("spearman_energy_entropy", "spearman_energy_entropy_per_atom",
                "auroc_energy_std", "auroc_energy_entropy", "auroc_energy_std_per_atom",
                "auroc_energy_edge_mass"):
        assert math.isnan(out[key]), key
    # a scalar model without std and without an NPZ: accuracy only
    bare = {k: cols[k] for k in ("energy", "energy_target")}
    out = evaluate_predictions(bare, None)
    assert out["energy_mae"] == pytest.approx(np.abs(cols["energy"] - cols["energy_target"]).mean())
    assert out["n_nonfinite_energy"] == 0  # a count, known without any uncertainty
    for key in METRIC_KEYS:
        if key not in ("n", "energy_mae", "energy_rmse", "n_nonfinite_energy"):
            assert math.isnan(out[key]), key


def test_evaluate_predictions_rejects_non_finite_targets() -> None:
    cols, arrays = _synthetic_run()
    cols["energy_target"] = cols["energy_target"].copy()
    cols["energy_target"][3] = np.nan
    with pytest.raises(ValueError, match="energy_target"):
        evaluate_predictions(cols, arrays)
    cols, arrays = _synthetic_run()
    arrays["forces_target"] = arrays["forces_target"].copy()
    arrays["forces_target"][0, 0] = np.inf
    with pytest.raises(ValueError, match="forces_target"):
        evaluate_predictions(cols, arrays)


def test_evaluate_predictions_on_written_files(tmp_path: Path) -> None:
    cols, arrays = _synthetic_run(n=6)
    offsets = np.concatenate([[0], np.cumsum(arrays["natoms"])])
    preds = [StructurePrediction(
        index=i, sid=str(i), natoms=int(cols["natoms"][i]), energy=float(cols["energy"][i]),
        forces=arrays["forces"][offsets[i]:offsets[i + 1]],
        energy_std=float(cols["energy_std"][i]),
        energy_entropy=float(cols["energy_entropy"][i]),
        energy_target=float(cols["energy_target"][i]),
        forces_target=arrays["forces_target"][offsets[i]:offsets[i + 1]],
        fixed=arrays["fixed"][offsets[i]:offsets[i + 1]],
        energy_bin_centers=arrays["energy_bin_centers"][i],
        energy_probs=arrays["energy_probs"][i].astype(np.float32),
        energy_uncertainty=float(cols["energy_uncertainty"][i]),
        ood_score=float(cols["ood_score"][i]),
    ) for i in range(6)]
    out_csv, out_npz = write_predictions(preds, tmp_path / "pred.csv")
    with np.load(out_npz) as npz:
        out = evaluate_predictions(read_predictions(out_csv), npz)
    ref = evaluate_predictions(cols, {k: v for k, v in arrays.items() if k != "forces_std"})
    for key in METRIC_KEYS:
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-5, err_msg=key)


# -- plots ----------------------------------------------------------------------------------


def _check_png(path: Path) -> None:
    import matplotlib.image

    assert path.exists() and path.stat().st_size > 0
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_plots_write_images(tmp_path: Path, calibrated: dict) -> None:
    m, s, y = calibrated["mean"][:500], calibrated["std"][:500], calibrated["y"][:500]
    p, c = calibrated["probs"][:500], calibrated["centers"][:500]
    err = np.abs(y - m)
    path = plot_error_vs_uncertainty(s, err, tmp_path / "err.png")
    assert path == tmp_path / "err.png"
    _check_png(path)
    curves = {"gaussian": coverage_curve(lambda cov: gaussian_interval(m, s, cov), y),
              "halved": coverage_curve(lambda cov: gaussian_interval(m, s / 2, cov), y)}
    _check_png(plot_calibration_curve(curves, tmp_path / "cal.png"))
    _check_png(plot_extreme_histograms(p, c, y, s, tmp_path / "sub" / "hist.png", k=3))
    rng = np.random.default_rng(0)
    _check_png(plot_rejection_curves({"std": rejection_curve(s, err),
                                      "random": rejection_curve(rng.uniform(size=500), err)},
                                     tmp_path / "rej.png"))
    _check_png(plot_score_distributions({"test": rng.lognormal(0, 0.3, 100),
                                         "OOD": rng.lognormal(3, 1, 40)}, tmp_path / "ood.png"))
    calls = np.array([0, 8, 16])
    _check_png(plot_active_learning({"a": (calls, np.array([40.0, 35, 30])),
                                     "b": (calls, np.array([40.0, 36, 33]))},
                                    tmp_path / "al.png", spreads={"a": np.array([0, 1.0, 2])}))


def test_evaluate_report_plots_the_designated_columns(tmp_path: Path) -> None:
    from fairchem_categorical.report.evaluate import write_report

    cols, arrays = _synthetic_run(n=40, seed=12)
    ood, _ = _synthetic_run(n=20, seed=13)
    ood["ood_score"] = ood["ood_score"] * 10
    metrics = write_report(cols, arrays, tmp_path, ood)
    assert metrics["auroc_ood_score"] == 1.0
    for png in ("error_vs_energy_uncertainty.png", "rejection_curve.png", "ood_score.png",
                "calibration_curve.png"):
        _check_png(tmp_path / png)


def test_energy_uncertainty_scores_the_smoothed_predictive() -> None:
    """energy_uncertainty^2 = std^2 + s^2: NLL and coverage of the histogram smoothed by s."""
    cols, arrays = _synthetic_run(n=60, seed=11)
    probs, centers = arrays["energy_probs"], arrays["energy_bin_centers"]
    target, std = cols["energy_target"], cols["energy_std"]
    width = centers[:, 1] - centers[:, 0]
    kernel = np.where(np.arange(60) % 2 == 0, 0.75 * width, 3.0 * std)
    cols["energy_uncertainty"] = np.sqrt(std**2 + kernel**2)
    out = evaluate_predictions(cols, arrays)
    want = _np_smoothed_nll(probs, centers, target, kernel).mean()
    assert out["energy_nll_uncertainty"] == pytest.approx(want, rel=1e-6)
    lo, hi = smoothed_interval(probs, centers, kernel, 0.9)
    assert out["energy_coverage90_uncertainty"] == pytest.approx(
        np.mean((target >= lo) & (target <= hi)))
    # the smoothed interval holds 90% of the smoothed density: check one row by quadrature
    from scipy.integrate import quad

    i = 1

    def dens(t: float) -> float:
        return math.exp(-_np_smoothed_nll(probs[i:i + 1], centers[i:i + 1], [t],
                                          [kernel[i]])[0])

    assert quad(dens, lo[i], hi[i], limit=200)[0] == pytest.approx(0.9, abs=1e-4)
    # without histograms (an ensemble): a Gaussian of that std
    bare = {k: v for k, v in cols.items()}
    out = evaluate_predictions(bare, {"natoms": arrays["natoms"]})
    assert out["energy_nll_uncertainty"] == pytest.approx(
        gaussian_nll(cols["energy"], cols["energy_uncertainty"], target).mean())
