"""Post-hoc temperature scaling of histogram logits (torch + scipy, no fairchem).

Cross-entropy training tends to leave a categorical head too sharp or too broad on
unseen data; one scalar T, fitted on held-out structures, rescales every histogram
as softmax(logits / T) without touching the mean ranking or the model. T > 1 widens
(the model was over-confident), T < 1 sharpens. ``HistogramSupport.temperature``
holds the value a checkpoint then decodes with.

Without the checkpoint, a ``predict`` NPZ is enough: log-probabilities are logits
up to a per-row constant, which softmax ignores (``logits_from_probs``), and the
target's bin index follows from each row's bin centers (``bin_index_from_centers``).

With a fitted epistemic state (``epistemic.py``) the predictive distribution is the
tempered histogram convolved with a Gaussian of variance
``(TAIL_KERNEL_BINS * width)^2 + alpha^2 e^2`` (e: the epistemic std at alpha = 1);
``fit_predictive`` fits T and alpha together by the likelihood of validation targets
under exactly that density (``histogram.smoothed_log_density``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from fairchem_categorical.histogram import (
    TAIL_KERNEL_BINS,
    HistogramSupport,
    bin_geometry,
    bin_index,
    entropy,
    moments,
    smoothed_log_density,
)
from fairchem_categorical.predictions import StructurePrediction
from fairchem_categorical.predictive import (
    PredictiveDistribution,
    Recalibration,
    smoothing_variance,
)

# Below float32's normal range starts (1.2e-38) nothing is resolved anyway; 1e-12 would
# be too high: at T = 3 a floored bin regains (1e-12)^(1/3) = 1e-4 of the peak's weight,
# which biased the fitted T of an over-confident model by 0.5 % in our tests.
LOG_PROB_FLOOR = 1e-30


def logits_from_probs(probs: torch.Tensor | np.ndarray,
                      floor: float = LOG_PROB_FLOOR) -> torch.Tensor:
    """log(max(p, floor)) in float64: logits whose softmax is ``probs``.

    softmax(log p / T) = p^(1/T) / sum p^(1/T), the same as tempering the original
    logits, so T fitted on these equals T fitted on the logits up to the floor on
    (numerically) empty bins, which keeps a target landing there at a finite NLL.
    If the probabilities were already decoded with a temperature T0, the fitted T
    is relative: the total is T0 * T.
    """
    if not floor > 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    p = probs if torch.is_tensor(probs) else torch.as_tensor(np.asarray(probs))
    return torch.log(p.double().clamp_min(floor))


def bin_index_from_centers(centers: np.ndarray | torch.Tensor,
                           targets: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Index of the bin holding each target, from per-row equal-width bin centers (B, K).

    Rows may have their own widths (per-atom scaled bins in a predict NPZ); targets
    beyond the support go to the edge bin, as ``HistogramSupport.encode`` clamps them.
    """
    c = torch.as_tensor(np.asarray(centers, dtype=np.float64))
    t = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(-1)
    if c.ndim != 2 or c.shape[0] != t.shape[0] or c.shape[1] < 2:
        raise ValueError(f"need centers (B, K>=2) and B targets, got {tuple(c.shape)} and "
                         f"{tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("targets must be finite to locate their bins")
    left, width = bin_geometry(c)
    return bin_index(t, left, width, c.shape[1])


def retemper(probs: np.ndarray | torch.Tensor, centers: np.ndarray | torch.Tensor,
             temperature: float) -> dict[str, np.ndarray]:
    """Histograms re-decoded at ``temperature``: probs, mean, std and entropy per row.

    What a checkpoint calibrated to T predicts, from the histograms of the uncalibrated
    one (``logits_from_probs``), without running the model again.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    q = torch.softmax(logits_from_probs(probs) / temperature, dim=-1)
    c = torch.as_tensor(np.asarray(centers, dtype=np.float64))
    mean, std = moments(q, c)
    return {"energy_probs": q.numpy(), "energy": mean.numpy(), "energy_std": std.numpy(),
            "energy_entropy": entropy(q).numpy()}


def _target_probs(logits: torch.Tensor, targets: torch.Tensor | np.ndarray,
                  support: HistogramSupport | None) -> torch.Tensor:
    """Targets as (B, K) float64 distributions, whatever form they came in."""
    t = torch.as_tensor(targets)
    num_bins = logits.shape[-1]
    if t.shape == logits.shape:
        return t.double()
    if t.ndim == logits.ndim - 1 and t.shape == logits.shape[:-1]:
        if not torch.is_floating_point(t):  # bin indices
            if bool(((t < 0) | (t >= num_bins)).any()):
                raise ValueError(f"bin indices must lie in [0, {num_bins})")
            return torch.nn.functional.one_hot(t.long(), num_bins).double()
        if support is None:
            raise ValueError("scalar targets need the support to locate their bins; pass "
                             "support=..., or bin indices, or (B, K) target histograms")
        if support.num_bins != num_bins:
            raise ValueError(f"logits have {num_bins} bins, the support {support.num_bins}")
        return support.encode(t, encoding="one_hot").double().to(logits.device)
    raise ValueError(f"targets of shape {tuple(t.shape)} fit neither logits "
                     f"{tuple(logits.shape)} (histograms) nor {tuple(logits.shape[:-1])} "
                     "(scalars or bin indices)")


def _nll(logits: np.ndarray, target: np.ndarray, temperature: float) -> float:
    # numpy: the optimiser calls this ~30 times, and small torch ops pay thread overhead
    x = logits / temperature
    logp = x - logsumexp(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):  # 0 * (-inf) in a bin without target mass counts 0
        terms = np.where(target > 0, target * logp, 0.0)
    return float(-terms.sum(-1).mean())


def _as_numpy(logits: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    k = logits.shape[-1]
    return (logits.detach().cpu().double().reshape(-1, k).numpy(),
            target.detach().cpu().double().reshape(-1, k).numpy())


def nll_at_temperature(logits: torch.Tensor, targets: torch.Tensor | np.ndarray,
                       temperature: float = 1.0, support: HistogramSupport | None = None
                       ) -> float:
    """Mean cross-entropy -sum_k y_k log softmax(logits / T)_k over rows.

    ``targets`` as in ``fit_temperature``. For one-hot targets this is the discrete
    NLL of the observed bin, which differs from the density NLL
    (``uncertainty.histogram_nll``) by log(bin width), a constant in T.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = torch.as_tensor(logits).detach().double()
    return _nll(*_as_numpy(logits, _target_probs(logits, targets, support)), float(temperature))


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor | np.ndarray,
                    support: HistogramSupport | None = None,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in ``bounds`` minimising ``nll_at_temperature`` on held-out data.

    ``targets`` is one of: target histograms (B, K), e.g. HL-Gauss encodings (then
    the cross-entropy training used); integer bin indices (B,); or scalar targets (B,)
    with ``support``, encoded one-hot. One-hot is the default for scalars because
    calibration is judged by the likelihood of the observed value: smoothed targets
    would reward a histogram at least as wide as the smoothing kernel, not one as
    wide as the actual errors. ``logits`` are the raw head outputs (before
    ``support.temperature``). Optimises log T with bounded Brent search; the
    objective is convex in 1/T, so there is a single minimum.
    """
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    logits = torch.as_tensor(logits).detach().double()
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits need a bin dimension of size >= 2, got {tuple(logits.shape)}")
    target = _target_probs(logits, targets, support)
    if bool(torch.isnan(logits).any() | torch.isposinf(logits).any()):
        raise ValueError("logits hold NaN or +inf")
    if not bool(torch.isfinite(target).all()):
        raise ValueError("targets hold NaN or inf")
    x, y = _as_numpy(logits, target)
    res = minimize_scalar(lambda log_t: _nll(x, y, math.exp(log_t)),
                          bounds=(math.log(lo), math.log(hi)), method="bounded",
                          options={"xatol": 1e-7})
    t = float(math.exp(res.x))
    if min(t / lo, hi / t) < 1.001:
        warnings.warn(f"fitted temperature {t:.4g} sits at the bound {bounds}; the optimum "
                      "may lie outside it", stacklevel=2)
    return t


def apply_temperature(support: HistogramSupport, temperature: float) -> HistogramSupport:
    """Store a fitted T in the support's buffer, so decoding (and the checkpoint) uses it."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    with torch.no_grad():
        support.temperature.fill_(float(temperature))
    return support


def fit_from_predictions(preds: list[StructurePrediction]) -> float:
    """The temperature (relative to the one the predictions used) minimising target NLL."""
    if any(p.energy_probs is None for p in preds):
        raise ValueError("predictions carry no energy histograms (not a categorical model?)")
    targets = np.array([p.energy_target for p in preds])
    if not np.isfinite(targets).all():
        raise ValueError("calibration needs energy targets for every validation structure")
    probs = np.stack([p.energy_probs for p in preds])
    centers = np.stack([p.energy_bin_centers for p in preds])
    return fit_temperature(logits_from_probs(probs), bin_index_from_centers(centers, targets))


def predictive_nll(probs: np.ndarray | torch.Tensor, centers: np.ndarray | torch.Tensor,
                   targets: np.ndarray | torch.Tensor, temperature: float = 1.0,
                   alpha: float = 0.0, epistemic_std: np.ndarray | torch.Tensor | None = None
                   ) -> np.ndarray:
    """Per-structure -log density of the targets under the calibrated predictive distribution.

    The histogram re-tempered by ``temperature`` (relative to the one ``probs`` came
    with), convolved with N(0, (TAIL_KERNEL_BINS * width)^2 + (alpha * epistemic_std)^2);
    nats of a density per eV when centers and targets are in eV.
    """
    logits = logits_from_probs(probs)
    c = torch.as_tensor(np.asarray(centers, dtype=np.float64))
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(-1)
    left, width = bin_geometry(c)
    var = (TAIL_KERNEL_BINS * width) ** 2
    if epistemic_std is not None and alpha:
        e = torch.as_tensor(np.asarray(epistemic_std, dtype=np.float64)).reshape(-1)
        var = var + (alpha * e) ** 2
    q = torch.softmax(logits / temperature, dim=-1)
    return (-smoothed_log_density(q, left, width, var.sqrt(), y)).numpy()


def fit_predictive(probs: np.ndarray | torch.Tensor, centers: np.ndarray | torch.Tensor,
                   targets: np.ndarray | torch.Tensor,
                   epistemic_std: np.ndarray | torch.Tensor | None = None,
                   temperature: float | None = None,
                   temperature_bounds: tuple[float, float] = (0.05, 20.0),
                   alpha_bounds: tuple[float, float] = (1e-6, 1e3),
                   disagreement: float | None = None,
                   disagreement_bounds: tuple[float, float] = (1e-6, 1e3)) -> dict[str, float]:
    """The predictive distribution's scales minimising its NLL on held-out targets.

    ``probs`` (B, K) or a shallow ensemble's (B, M, K) on ``centers`` (B, K), eV. The
    distribution is ``predictive.PredictiveDistribution``: members re-tempered by T
    (relative to the temperature ``probs`` came with), mixed, convolved with N(0, s^2),
    s^2 = (TAIL_KERNEL_BINS w)^2 + gamma D + (alpha e)^2 (D the variance of the member
    means at T, e ``epistemic_std``). Free: T unless ``temperature`` fixes it; gamma with
    M > 1 members unless ``disagreement`` fixes it; alpha with ``epistemic_std``.
    Returns ``temperature``, ``disagreement``, ``alpha`` and the mean NLL before (T = 1,
    gamma = alpha = 0) and after. Bounded L-BFGS on the logs, from a few starting scales
    so the result does not hang on one start.
    """
    from scipy.optimize import minimize

    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    if not np.isfinite(y).all():
        raise ValueError("calibration needs a finite energy target for every structure")
    if len(y) < 2:
        raise ValueError(f"calibration needs at least 2 structures, got {len(y)}")
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64))
    p = p.unsqueeze(1) if p.dim() == 2 else p
    c = torch.as_tensor(np.asarray(centers, dtype=np.float64))
    if p.dim() != 3 or (p.shape[0], p.shape[-1]) != tuple(c.shape) or p.shape[0] != len(y):
        raise ValueError(f"probs {tuple(p.shape)}, centers {tuple(c.shape)} and {len(y)} "
                         "targets disagree")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    _, width = bin_geometry(c)
    yt = torch.as_tensor(y)
    e2 = torch.zeros_like(yt)
    if epistemic_std is not None:
        e = np.asarray(epistemic_std, dtype=np.float64).reshape(-1)
        if e.shape != y.shape or not np.isfinite(e).all() or (e < 0).any():
            raise ValueError("epistemic_std must hold one finite value >= 0 per structure")
        e2 = torch.as_tensor(e) ** 2
    fit_t = temperature is None
    fit_g = p.shape[1] > 1 and disagreement is None
    fit_a = epistemic_std is not None
    if not (fit_t or fit_g or fit_a):
        raise ValueError("nothing to fit: a fixed temperature, one member and no "
                         "epistemic_std")
    fixed_g = 0.0 if disagreement is None else float(disagreement)
    e = e2.sqrt()

    def parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log T, gamma, alpha) from the free parameters."""
        i = 0
        lt = x[i] if fit_t else torch.tensor(math.log(temperature or 1.0), dtype=x.dtype)
        i += fit_t
        g = x[i].exp() if fit_g else torch.tensor(fixed_g, dtype=x.dtype)
        i += fit_g
        a = x[i].exp() if fit_a else torch.tensor(0.0, dtype=x.dtype)
        return lt, g, a

    def nll(lt: torch.Tensor, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return predictive_from_scales(p, c, e, lt.exp(), g, a).nll(yt).mean()

    def nll_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        loss = nll(*parts(xt))
        loss.backward()
        return float(loss.detach()), xt.grad.numpy()

    bounds = ([(math.log(temperature_bounds[0]), math.log(temperature_bounds[1]))] * fit_t
              + [tuple(math.log(b) for b in disagreement_bounds)] * fit_g
              + [tuple(math.log(b) for b in alpha_bounds)] * fit_a)
    # starts where each added std is 1e-3, 1e-1 and 10 times the histogram's width
    w = width.numpy()
    starts = []
    for f in (1e-3, 1e-1, 10.0):
        x0 = [0.0] * fit_t
        if fit_g:
            d = (p * c.unsqueeze(1)).sum(-1).var(1, unbiased=False).numpy()
            x0.append(math.log(max(f**2 / max(float(np.median(d / w**2)), 1e-12), 1e-6)))
        if fit_a:
            typical = float(np.median(np.sqrt(e2.numpy()) / w).clip(1e-12))
            x0.append(math.log(f / typical))
        starts.append(np.clip(np.array(x0), [b[0] for b in bounds], [b[1] for b in bounds]))
    best = min((minimize(nll_and_grad, x0, jac=True, method="L-BFGS-B", bounds=bounds)
                for x0 in starts), key=lambda r: r.fun)
    lt, g, a = parts(torch.tensor(best.x, dtype=torch.float64))
    zero = torch.tensor(0.0, dtype=torch.float64)
    before = float(nll(zero, zero, zero))
    return {"temperature": float(lt.exp()), "disagreement": float(g),
            "alpha": float(a), "nll_before": before, "nll_after": float(best.fun)}


def predictive_from_scales(probs: np.ndarray | torch.Tensor, centers: np.ndarray | torch.Tensor,
                           epistemic_std: np.ndarray | torch.Tensor | None = None,
                           temperature: float | torch.Tensor = 1.0,
                           disagreement: float | torch.Tensor = 0.0,
                           alpha: float | torch.Tensor = 0.0,
                           recalibration: Recalibration | None = None
                           ) -> PredictiveDistribution:
    """The predictive distribution of eV histograms (a prediction file's) at given scales.

    What ``fit_predictive`` scores, and what a checkpoint calibrated with these scales
    predicts: ``probs`` (B, K) or (B, M, K) re-tempered by ``temperature`` (relative to
    the temperature they came with), mixed, convolved with N(0, s^2), s^2 = (TAIL_KERNEL_BINS
    w)^2 + gamma D + (alpha e)^2 (D the variance of the members' means, e
    ``epistemic_std``). The scales may be tensors that require grad (the fit's).
    """
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64)) if not torch.is_tensor(probs) \
        else probs.double()
    p = p.unsqueeze(1) if p.dim() == 2 else p
    c = torch.as_tensor(np.asarray(centers, dtype=np.float64)) if not torch.is_tensor(
        centers) else centers.double()
    members = torch.softmax(torch.log(p.clamp_min(1e-300)) / temperature, dim=-1)
    _, width = bin_geometry(c)
    e = None
    if epistemic_std is not None:
        e = torch.as_tensor(np.asarray(epistemic_std, dtype=np.float64)).reshape(-1) \
            if not torch.is_tensor(epistemic_std) else epistemic_std.double().reshape(-1)
    d = PredictiveDistribution(members, c, 1.0).disagreement_variance()
    var = smoothing_variance(width, d, None if e is None else e**2, disagreement, alpha)
    return PredictiveDistribution(members, c, var.sqrt(), recalibration)


def fit_recalibration(probs: np.ndarray | torch.Tensor, centers: np.ndarray | torch.Tensor,
                      targets: np.ndarray | torch.Tensor, fit: dict[str, float],
                      epistemic_std: np.ndarray | torch.Tensor | None = None
                      ) -> Recalibration:
    """The isotonic map of the CDF (``predictive.Recalibration``) fitted on the PIT values of
    held-out targets under the distribution ``fit`` (``fit_predictive``'s scales) gives."""
    dist = predictive_from_scales(probs, centers, epistemic_std, fit["temperature"],
                                  fit["disagreement"], fit["alpha"])
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(-1)
    return Recalibration.fit(dist.raw_cdf(y).numpy())
