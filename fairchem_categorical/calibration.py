"""Post-hoc temperature scaling of histogram logits (torch + scipy, no fairchem).

Cross-entropy training tends to leave a categorical head too sharp or too broad on
unseen data; one scalar T, fitted on held-out structures, rescales every histogram
as softmax(logits / T) without touching the mean ranking or the model. T > 1 widens
(the model was over-confident), T < 1 sharpens. ``HistogramSupport.temperature``
holds the value a checkpoint then decodes with.

Without the checkpoint, a ``predict`` NPZ is enough: log-probabilities are logits
up to a per-row constant, which softmax ignores (``logits_from_probs``), and the
target's bin index follows from each row's bin centers (``bin_index_from_centers``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from fairchem_categorical.histogram import (
    HistogramSupport,
    bin_geometry,
    bin_index,
    entropy,
    moments,
)
from fairchem_categorical.predictions import StructurePrediction

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
