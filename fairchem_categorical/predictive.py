"""The one predictive distribution of a categorical energy (pure torch, both lines).

Problem: a categorical head gives, per structure, M member histograms on one row of
equal-width bins (M = 1 for a single output layer, M > 1 for a shallow ensemble). What
a user decides with (an error bar, an interval, a likelihood, P(lowest) in screening)
must come from one distribution, written once, or each use drifts from the others.

The distribution, per structure b (bins of width w with left edges l_k, centers c_k):

    p(y) = (1/M) sum_m sum_k p_mk [Phi((y - l_k)/s) - Phi((y - l_k - w)/s)] / w

the members' mixture, each histogram uniform inside its bins, convolved with N(0, s^2)
where s^2 = kernel^2 + gamma D + alpha^2 U^p: the HL-Gauss smoothing the heads were
trained with (``kernel``), the members' disagreement D (variance of their means) scaled
by gamma, and the feature-distance score U (``epistemic``; p = 1 or 2) scaled by
alpha^2. Members are first re-tempered by a predictive temperature T (``softmax(log p / T)``), which
narrows or widens the histograms for this distribution only: the decoded energy (and
its conservative forces) never see T. ``PredictiveParams`` holds (T, gamma, alpha, p) and
``calibration.fit_predictive`` fits them by the NLL of validation targets; an optional
``Recalibration`` then maps the CDF monotonically (Kuleshov et al. 2018).

Moments: mean = sum_k pbar_k c_k; variance = the mixture's (mean member variance +
variance of member means) + w^2/12 (uniform in a bin) + s^2. Entropy of the histogram
part splits as H(pbar) = mean_m H(p_m) (aleatoric) + mutual information (epistemic).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from fairchem_categorical.histogram import (
    TAIL_KERNEL_BINS,
    bin_geometry,
    entropy,
    moments,
    smoothed_cdf,
    smoothed_log_density,
    smoothed_quantile,
)


@dataclass(frozen=True)
class PredictiveParams:
    """Fitted scales of the predictive distribution (``calibration.fit_predictive``).

    ``temperature`` re-tempers the member histograms (1 = as trained), ``disagreement``
    (gamma) scales the members' variance of means added to the kernel, ``alpha`` scales
    the epistemic variance ``alpha^2 U^power`` (power 1: a std growing like sqrt(U), the
    distance; 2: like U). The defaults are the distribution before fitting.
    """

    temperature: float = 1.0
    disagreement: float = 0.0
    alpha: float = 0.0
    power: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"predictive temperature must be finite and > 0, got "
                             f"{self.temperature}")
        if self.power not in (1.0, 2.0):
            raise ValueError(f"predictive power must be 1 or 2, got {self.power}")
        for name in ("disagreement", "alpha"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"predictive {name} must be finite and >= 0, got {v}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def smoothing_variance(width: torch.Tensor | float, disagreement_var: torch.Tensor,
                       epistemic_var: torch.Tensor | None,
                       disagreement: float | torch.Tensor = 0.0,
                       alpha: float | torch.Tensor = 0.0) -> torch.Tensor:
    """s^2 = (TAIL_KERNEL_BINS w)^2 + gamma D + alpha^2 E, in the histogram's units (E the
    epistemic variance at alpha = 1). The scales may be tensors that require grad (the
    calibration fit's)."""
    var = (TAIL_KERNEL_BINS * torch.as_tensor(width, dtype=torch.float64)) ** 2 \
        + disagreement * disagreement_var.double()
    if epistemic_var is not None:
        var = var + alpha**2 * epistemic_var.double()
    return var


def kernel_variance(width: torch.Tensor | float, disagreement_var: torch.Tensor,
                    epistemic_score: torch.Tensor | None, params: PredictiveParams
                    ) -> torch.Tensor:
    """``smoothing_variance`` with E = U^power (U the epistemic score) and ``params``."""
    e = None if epistemic_score is None or not params.alpha else \
        epistemic_score.double().clamp_min(0.0) ** params.power
    return smoothing_variance(width, disagreement_var, e, params.disagreement, params.alpha)


class Recalibration:
    """A monotone map R of CDF levels, [0, 1] -> [0, 1], piecewise linear between knots.

    Fitted by isotonic regression of the empirical frequency of PIT values on the PIT
    values of validation targets (Kuleshov et al. 2018): a calibrated CDF is R(F(y)), a
    calibrated quantile F^-1(R^-1(q)). The knots are stored in checkpoints.
    """

    def __init__(self, levels: np.ndarray | list[float], values: np.ndarray | list[float]
                 ) -> None:
        x = np.asarray(levels, dtype=np.float64).reshape(-1)
        y = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.shape != y.shape or len(x) < 2:
            raise ValueError("a recalibration needs >= 2 (level, value) knots of equal length")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("recalibration knots must be finite")
        if (np.diff(x) <= 0).any() or (np.diff(y) < 0).any():
            raise ValueError("recalibration knots must increase (levels strictly, values "
                             "weakly)")
        if x[0] != 0.0 or x[-1] != 1.0 or y[0] != 0.0 or y[-1] != 1.0:
            raise ValueError("a recalibration maps [0, 1] onto [0, 1]: knots must start at "
                             "(0, 0) and end at (1, 1)")
        self.levels, self.values = x, y

    @classmethod
    def fit(cls, pit: np.ndarray, max_knots: int = 64) -> Recalibration:
        """Isotonic fit of R(F) = fraction of PIT values <= F, from validation PITs."""
        from sklearn.isotonic import IsotonicRegression

        u = np.sort(np.asarray(pit, dtype=np.float64).reshape(-1))
        if len(u) < 2 or not np.isfinite(u).all():
            raise ValueError("recalibration needs >= 2 finite PIT values")
        freq = np.arange(1, len(u) + 1) / len(u)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True,
                                 out_of_bounds="clip").fit(u, freq)
        grid = np.unique(np.clip(np.concatenate(
            [[0.0, 1.0], np.quantile(u, np.linspace(0, 1, max_knots))]), 0.0, 1.0))
        values = np.maximum.accumulate(iso.predict(grid))
        values[0], values[-1] = 0.0, 1.0
        # strictly increasing values keep R invertible (flat stretches -> tiny slope)
        values = np.maximum(values, np.linspace(0.0, 1e-9, len(values)))
        values = np.maximum.accumulate(values)
        values[-1] = 1.0
        return cls(grid, values)

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return _interp(level, self.levels, self.values)

    def inverse(self, level: torch.Tensor) -> torch.Tensor:
        return _interp(level, self.values, self.levels)

    def to_dict(self) -> dict[str, list[float]]:
        return {"levels": self.levels.tolist(), "values": self.values.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Recalibration | None:
        return None if not d else cls(d["levels"], d["values"])


def _interp(x: torch.Tensor, xp: np.ndarray, fp: np.ndarray) -> torch.Tensor:
    """Piecewise-linear interpolation (np.interp) on a tensor's device and dtype."""
    xt = torch.as_tensor(xp, dtype=x.dtype, device=x.device)
    ft = torch.as_tensor(fp, dtype=x.dtype, device=x.device)
    i = torch.searchsorted(xt, x.contiguous().clamp(float(xp[0]), float(xp[-1]))).clamp(
        1, len(xp) - 1)
    x0, x1, f0, f1 = xt[i - 1], xt[i], ft[i - 1], ft[i]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-300)).clamp(0.0, 1.0)
    return f0 + t * (f1 - f0)


def member_probs(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0
                 ) -> torch.Tensor:
    """(B, K) or (B, M, K) logits -> (B, M, K) member probabilities at ``temperature``."""
    x = logits.double()
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if x.dim() != 3:
        raise ValueError(f"logits must be (B, K) or (B, M, K), got {tuple(logits.shape)}")
    return torch.softmax(x / temperature, dim=-1)


class PredictiveDistribution:
    """Mixture of M histograms per row on a common row of bins, smoothed and recalibrated.

    ``probs`` (B, M, K) or (B, K) (M = 1), ``centers`` (B, K) or (K,) bin centers on the
    value axis (eV), ``kernel_std`` (B,) or a number (same units), ``recalibration``
    optional. All math in float64 on the inputs' device.
    """

    def __init__(self, probs: torch.Tensor | np.ndarray, centers: torch.Tensor | np.ndarray,
                 kernel_std: torch.Tensor | np.ndarray | float,
                 recalibration: Recalibration | None = None) -> None:
        p = torch.as_tensor(probs).double()
        if p.dim() == 2:
            p = p.unsqueeze(1)
        if p.dim() != 3:
            raise ValueError(f"probs must be (B, K) or (B, M, K), got {tuple(p.shape)}")
        c = torch.as_tensor(centers, device=p.device).double()
        c = c.expand(p.shape[0], p.shape[-1]) if c.dim() == 1 else c
        if c.shape != (p.shape[0], p.shape[-1]):
            raise ValueError(f"centers {tuple(c.shape)} do not match probs {tuple(p.shape)}")
        s = torch.as_tensor(kernel_std, device=p.device).double().expand(p.shape[0])
        if bool((~torch.isfinite(s) | (s <= 0)).any()):
            raise ValueError("kernel_std must be finite and > 0 for every row")
        self.members, self.centers, self.kernel_std = p, c, s
        self.left, self.width = bin_geometry(c)
        self.recalibration = recalibration

    @classmethod
    def from_logits(cls, logits: torch.Tensor, centers: torch.Tensor, kernel_std: Any,
                    temperature: float = 1.0, recalibration: Recalibration | None = None
                    ) -> PredictiveDistribution:
        return cls(member_probs(logits, temperature), centers, kernel_std, recalibration)

    # -- the histogram part ------------------------------------------------------------
    @property
    def num_members(self) -> int:
        return self.members.shape[1]

    @property
    def probs(self) -> torch.Tensor:
        """(B, K) the members' mixture."""
        return self.members.mean(1)

    def member_means(self) -> torch.Tensor:
        """(B, M) each member's mean."""
        return (self.members * self.centers.unsqueeze(1)).sum(-1)

    def disagreement_variance(self) -> torch.Tensor:
        """(B,) variance of the member means (0 for one member)."""
        return self.member_means().var(1, unbiased=False)

    def entropy_terms(self) -> dict[str, torch.Tensor]:
        """Histogram entropy (nats, over bins): total = aleatoric + epistemic (mutual info)."""
        total = entropy(self.probs)
        aleatoric = entropy(self.members).mean(1)
        return {"total": total, "aleatoric": aleatoric,
                "epistemic": (total - aleatoric).clamp_min(0.0)}

    # -- moments -----------------------------------------------------------------------
    def mean(self) -> torch.Tensor:
        return (self.probs * self.centers).sum(-1)

    def variance(self) -> torch.Tensor:
        """(B,) of the smoothed mixture (before recalibration)."""
        _, std = moments(self.probs, self.centers)
        return std**2 + self.width**2 / 12 + self.kernel_std**2

    def std(self) -> torch.Tensor:
        return self.variance().sqrt()

    # -- distribution ------------------------------------------------------------------
    def _y(self, y: torch.Tensor | np.ndarray | float) -> torch.Tensor:
        return torch.as_tensor(y, device=self.members.device).double().expand(
            self.members.shape[0])

    def raw_cdf(self, y: torch.Tensor | np.ndarray | float) -> torch.Tensor:
        """CDF before recalibration (the PIT values a recalibration is fitted on)."""
        return smoothed_cdf(self.probs, self.left, self.width, self.kernel_std, self._y(y))

    def cdf(self, y: torch.Tensor | np.ndarray | float) -> torch.Tensor:
        f = self.raw_cdf(y)
        return f if self.recalibration is None else self.recalibration.forward(f)

    def log_pdf(self, y: torch.Tensor | np.ndarray | float) -> torch.Tensor:
        """log density (before recalibration: the likelihood the scales are fitted by)."""
        return smoothed_log_density(self.probs, self.left, self.width, self.kernel_std,
                                    self._y(y))

    def nll(self, y: torch.Tensor | np.ndarray | float) -> torch.Tensor:
        return -self.log_pdf(y)

    def quantile(self, q: float) -> torch.Tensor:
        """(B,) quantile ``q`` of the (recalibrated) distribution."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {q}")
        level = q
        if self.recalibration is not None:
            level = float(self.recalibration.inverse(torch.tensor(q, dtype=torch.float64)))
            level = min(max(level, 1e-9), 1 - 1e-9)
        return smoothed_quantile(self.probs, self.left, self.width, self.kernel_std, level)

    def interval(self, coverage: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Central interval holding ``coverage`` of the (recalibrated) distribution."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        tail = (1.0 - coverage) / 2
        return self.quantile(tail), self.quantile(1.0 - tail)

    def crps(self, y: torch.Tensor | np.ndarray | float, points: int = 512) -> torch.Tensor:
        """(B,) continuous ranked probability score, int (F(x) - 1[x >= y])^2 dx, by the
        trapezoid rule on a grid spanning the distribution and the target."""
        yy = self._y(y)
        reach = 8.0 * self.kernel_std + self.width
        lo = torch.minimum(self.left - reach, yy - reach)
        hi = torch.maximum(self.left + self.width * self.members.shape[-1] + reach, yy + reach)
        t = torch.linspace(0.0, 1.0, points, dtype=torch.float64, device=yy.device)
        grid = lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * t  # (B, P)
        f = torch.stack([self.cdf(grid[:, j]) for j in range(points)], dim=-1)
        step = (grid >= yy.unsqueeze(-1)).double()
        return torch.trapezoid((f - step) ** 2, grid, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None,
               joint: bool = False) -> torch.Tensor:
        """(n, B) samples (before recalibration).

        ``joint``: each draw picks one member for every row, so rows whose errors come
        from the same members (structures sharing a slab) are correlated through them;
        the bin, the place in it and the kernel noise are drawn per row.
        """
        b, m, k = self.members.shape
        dev = self.members.device
        if joint:
            member = torch.randint(m, (n, 1), generator=generator, device=dev).expand(n, b)
        else:
            member = torch.randint(m, (n, b), generator=generator, device=dev)
        rows = torch.arange(b, device=dev).expand(n, b)
        probs = self.members[rows, member]  # (n, B, K)
        bins = torch.multinomial(probs.reshape(-1, k), 1, generator=generator).reshape(n, b)
        u = torch.rand((n, b), generator=generator, dtype=torch.float64, device=dev)
        z = torch.randn((n, b), generator=generator, dtype=torch.float64, device=dev)
        return self.left + (bins + u) * self.width + z * self.kernel_std
