"""Histogram support: binning scalars into distributions and decoding logits back.

Pure torch, no fairchem import, so both fairchem lines share the exact same math.

Two levels. The module functions (``bin_geometry``, ``bin_index``, ``moments``,
``entropy``, ``quantile``, and the smoothed density ``smoothed_log_density``,
``smoothed_cdf``, ``smoothed_quantile``) work on probabilities over equal-width bins given per row
(batched over leading dimensions): a prediction file's histograms are on the eV axis
of each structure, whose bin width scales with its atom count. ``HistogramSupport``
is one fixed support (edges in buffers, an encoding, a temperature) whose decoders
call those functions, so the metrics, calibration and the heads decode alike.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

ENCODINGS = ("hl_gauss", "two_hot", "one_hot")
DEFAULT_NUM_BINS = 128
DEFAULT_SIGMA_RATIO = 0.75
#: Width, in bin widths, of the Gaussian a histogram is smoothed with to give it tails
#: beyond its support (``smoothed_log_density``): the default HL-Gauss sigma, the label
#: smoothing the model was trained with.
TAIL_KERNEL_BINS = DEFAULT_SIGMA_RATIO


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 if it already is: histograms never decode in half precision
    (bf16 autocast), and a float64 model (fairchem's ``base_precision_dtype``) keeps float64."""
    return x if x.dtype == torch.float64 else x.float()


def has_values(x: torch.Tensor) -> bool:
    """False for tensors without data (the ``meta`` device: shapes and devices only), whose
    value checks (clamp counts, NaN checks) cannot run and are skipped."""
    return x.device.type != "meta"


def without_autocast(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off for ``x``'s device (a no-op where the device has no autocast: meta)."""
    if not torch.amp.is_autocast_available(x.device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


def bin_geometry(centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left edge and width (...,) of equal-width bins from their centers (..., K), K >= 2."""
    if centers.shape[-1] < 2:
        raise ValueError("a histogram needs at least 2 bins to define its width")
    width = centers[..., 1] - centers[..., 0]
    if has_values(width) and not bool((width > 0).all()):
        raise ValueError("histogram bin centers must increase (width > 0) in every row")
    return centers[..., 0] - width / 2, width


def bin_index(y: torch.Tensor, left: torch.Tensor | float, width: torch.Tensor | float,
              num_bins: int) -> torch.Tensor:
    """Index of the bin holding each ``y``; values beyond the support go to the edge bin."""
    return torch.floor((y - left) / width).long().clamp(0, num_bins - 1)


def moments(probs: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean sum_k p_k c_k and standard deviation sqrt(sum_k p_k (c_k - mean)^2)."""
    mean = (probs * centers).sum(-1)
    var = (probs * (centers - mean.unsqueeze(-1)) ** 2).sum(-1)
    return mean, var.clamp_min(0.0).sqrt()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -sum_k p_k log p_k in nats (0 log 0 = 0)."""
    return torch.special.entr(probs).sum(-1)


def quantile(probs: torch.Tensor, left: torch.Tensor | float, width: torch.Tensor | float,
             q: float | torch.Tensor) -> torch.Tensor:
    """Quantile ``q`` of each histogram, its density uniform inside each bin.

    k is the first bin whose cumulative mass reaches q; the quantile lies the fraction
    ``(q - F(left edge of k)) / p_k`` into it: ``left + (k + fraction) * width``.
    """
    cdf = torch.cumsum(probs, dim=-1)
    q = torch.as_tensor(q, dtype=probs.dtype, device=probs.device).expand(probs.shape[:-1])
    k = torch.searchsorted(cdf.contiguous(), q.unsqueeze(-1).contiguous()).clamp(
        max=probs.shape[-1] - 1)
    p_k = probs.gather(-1, k).squeeze(-1)
    below = cdf.gather(-1, k).squeeze(-1) - p_k
    frac = ((q - below) / p_k.clamp_min(1e-12)).clamp(0.0, 1.0)
    return left + (k.squeeze(-1) + frac) * width


def _log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(a) - Phi(b)) for a > b, accurate in both tails."""
    upper = b > 0  # both in the upper tail: Phi(a) - Phi(b) = Phi(-b) - Phi(-a)
    hi = torch.where(upper, -b, a)
    lo = torch.where(upper, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    d = (log_lo - log_hi).clamp_max(0.0)
    # log(1 - exp(d)): expm1 near 0, log1p far from it
    log1mexp = torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)),
                           torch.log1p(-torch.exp(d)))
    return log_hi + log1mexp


def smoothed_log_density(probs: torch.Tensor, left: torch.Tensor | float,
                         width: torch.Tensor | float, kernel_std: torch.Tensor | float,
                         y: torch.Tensor) -> torch.Tensor:
    """log density at ``y`` of the histogram (uniform in each bin) convolved with N(0, s^2).

    ``sum_k p_k [Phi((y - l_k) / s) - Phi((y - l_k - w) / s)] / w`` with l_k the bins' left
    edges and s = ``kernel_std`` (per row or one value): a proper density on the whole
    line, whose tails beyond the support fall off as a Gaussian from the edge bins, so a
    target d beyond the support costs about (d / s)^2 / 2 nats. Computed in log space.
    """
    k = probs.shape[-1]
    left = torch.as_tensor(left, dtype=probs.dtype, device=probs.device)
    width = torch.as_tensor(width, dtype=probs.dtype, device=probs.device)
    s = torch.as_tensor(kernel_std, dtype=probs.dtype, device=probs.device)
    if not bool((s > 0).all()):
        raise ValueError("kernel_std must be > 0")
    edges = left.unsqueeze(-1) + width.unsqueeze(-1) * torch.arange(
        k, dtype=probs.dtype, device=probs.device)
    yy, ss = y.unsqueeze(-1), s.unsqueeze(-1) if s.ndim else s
    log_mass = _log_ndtr_diff((yy - edges) / ss, (yy - edges - width.unsqueeze(-1)) / ss)
    logp = torch.log(probs.clamp_min(0.0))
    return torch.logsumexp(logp + log_mass, dim=-1) - torch.log(width)


def _integrated_ndtr(z: torch.Tensor) -> torch.Tensor:
    """int_{-inf}^z Phi(t) dt = z Phi(z) + phi(z)."""
    return z * torch.special.ndtr(z) + torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)


def smoothed_cdf(probs: torch.Tensor, left: torch.Tensor | float, width: torch.Tensor | float,
                 kernel_std: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
    """CDF at ``y`` of the smoothed histogram of ``smoothed_log_density``."""
    k = probs.shape[-1]
    left = torch.as_tensor(left, dtype=probs.dtype, device=probs.device)
    width = torch.as_tensor(width, dtype=probs.dtype, device=probs.device)
    s = torch.as_tensor(kernel_std, dtype=probs.dtype, device=probs.device)
    edges = left.unsqueeze(-1) + width.unsqueeze(-1) * torch.arange(
        k, dtype=probs.dtype, device=probs.device)
    yy, ss = y.unsqueeze(-1), s.unsqueeze(-1) if s.ndim else s
    w = width.unsqueeze(-1)
    per_bin = ss / w * (_integrated_ndtr((yy - edges) / ss)
                        - _integrated_ndtr((yy - edges - w) / ss))
    return (probs * per_bin).sum(-1).clamp(0.0, 1.0)


def smoothed_quantile(probs: torch.Tensor, left: torch.Tensor | float,
                      width: torch.Tensor | float, kernel_std: torch.Tensor | float,
                      q: float, iterations: int = 60) -> torch.Tensor:
    """Quantile ``q`` of the smoothed histogram, by bisection on ``smoothed_cdf``."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    k = probs.shape[-1]
    left = torch.as_tensor(left, dtype=probs.dtype, device=probs.device).expand(
        probs.shape[:-1])
    width = torch.as_tensor(width, dtype=probs.dtype, device=probs.device).expand(
        probs.shape[:-1])
    s = torch.as_tensor(kernel_std, dtype=probs.dtype, device=probs.device).expand(
        probs.shape[:-1])
    reach = 10.0 * s + width
    lo, hi = left - reach, left + k * width + reach
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = smoothed_cdf(probs, left, width, s, mid) < q
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class SupportSpec:
    """The numbers that define a support; what configs and checkpoints carry."""

    low: float
    high: float
    num_bins: int = DEFAULT_NUM_BINS
    encoding: str = "hl_gauss"
    sigma: float | None = None
    sigma_ratio: float = DEFAULT_SIGMA_RATIO

    def __post_init__(self) -> None:
        for name in ("low", "high", "sigma_ratio", "num_bins"):
            value = getattr(self, name)
            if not math.isfinite(float(value)):
                raise ValueError(f"support {name} must be finite, got {value}")
        if self.sigma is not None and not math.isfinite(float(self.sigma)):
            raise ValueError(f"support sigma must be finite, got {self.sigma}")
        if not self.low < self.high:
            raise ValueError(f"support needs low < high, got low={self.low}, high={self.high}")
        if int(self.num_bins) != self.num_bins or self.num_bins < 2:
            raise ValueError(f"support needs num_bins >= 2 (an integer), got {self.num_bins}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose one of {ENCODINGS}")
        if self.sigma is not None and self.sigma <= 0:
            raise ValueError(f"support needs sigma > 0, got sigma={self.sigma}")
        if self.sigma is None and self.sigma_ratio <= 0:
            raise ValueError(f"support needs sigma_ratio > 0, got {self.sigma_ratio}")

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.num_bins

    @property
    def sigma_abs(self) -> float:
        return float(self.sigma) if self.sigma is not None else self.sigma_ratio * self.width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HistogramSupport(nn.Module):
    """K equal bins on [low, high] with an encoding (scalar -> probs) and decoders.

    The edges live in buffers so a checkpoint carries its support; loading a state
    dict whose support differs from this one is an error, never a silent swap.
    """

    def __init__(
        self,
        low: float,
        high: float,
        num_bins: int = DEFAULT_NUM_BINS,
        encoding: str = "hl_gauss",
        sigma: float | None = None,
        sigma_ratio: float = DEFAULT_SIGMA_RATIO,
    ) -> None:
        super().__init__()
        self.spec = SupportSpec(
            low=float(low),
            high=float(high),
            num_bins=num_bins,
            encoding=encoding,
            sigma=None if sigma is None else float(sigma),
            sigma_ratio=float(sigma_ratio),
        )
        self.spec = SupportSpec(**{**self.spec.to_dict(), "num_bins": int(self.spec.num_bins)})
        edges = torch.linspace(self.spec.low, self.spec.high, self.spec.num_bins + 1,
                               dtype=torch.float64)
        self.register_buffer("edges", edges.float())
        self.register_buffer("centers", ((edges[1:] + edges[:-1]) / 2).float())
        # temperature divides logits before decoding; post-hoc calibration sets it.
        self.register_buffer("temperature", torch.ones(()))

    @classmethod
    def from_spec(cls, spec: SupportSpec | dict[str, Any]) -> HistogramSupport:
        if isinstance(spec, dict):
            spec = SupportSpec(**spec)
        return cls(**spec.to_dict())

    # -- geometry ---------------------------------------------------------------
    @property
    def num_bins(self) -> int:
        return self.spec.num_bins

    @property
    def low(self) -> float:
        return self.spec.low

    @property
    def high(self) -> float:
        return self.spec.high

    @property
    def width(self) -> float:
        return self.spec.width

    @property
    def sigma(self) -> float:
        return self.spec.sigma_abs

    # -- the buffers on an input's device -------------------------------------------
    # fairchem moves a model to the GPU but not a task's loss or normalizer, so a support
    # may sit on the CPU while its inputs are on CUDA: every use moves the (tiny) buffers
    # to the input, never the input to the buffers.
    def centers_like(self, x: torch.Tensor) -> torch.Tensor:
        """Bin centers on ``x``'s device, in ``x``'s dtype (float32 or better)."""
        return self.centers.to(device=x.device, dtype=at_least_float32(x).dtype)

    def edges_like(self, x: torch.Tensor) -> torch.Tensor:
        """Bin edges on ``x``'s device, in ``x``'s dtype (float32 or better)."""
        return self.edges.to(device=x.device, dtype=at_least_float32(x).dtype)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"low={s.low:.4g}, high={s.high:.4g}, num_bins={s.num_bins}, "
                f"encoding={s.encoding}, sigma={self.sigma:.4g}")

    # -- encoding ---------------------------------------------------------------
    def outside(self, y: torch.Tensor) -> torch.Tensor:
        """Which targets fall outside [low, high] (bool, the shape of ``y``)."""
        return (y < self.low) | (y > self.high)

    def count_outside(self, y: torch.Tensor) -> int:
        """Number of finite targets that fall outside [low, high] (0 for meta tensors)."""
        return int(self.outside(y).sum()) if has_values(y) else 0

    def encode(self, y: torch.Tensor, encoding: str | None = None) -> torch.Tensor:
        """Scalars of any shape (...) -> probabilities (..., K) in float32.

        Targets outside the support are clamped to its edge (``count_outside`` says
        how many a batch holds, for callers that report them); NaN or inf targets are
        an error.
        """
        return self.encode_counting(y, encoding)[0]

    def encode_counting(self, y: torch.Tensor, encoding: str | None = None
                        ) -> tuple[torch.Tensor, int]:
        """``encode`` and ``count_outside`` in one pass over the targets.

        Datasets encode every item they load, where the checks' tiny tensor ops would
        cost more than the encoding: one min/max answers both checks when all targets
        are finite and inside the support (clamping is then a no-op and skipped).
        """
        y = torch.as_tensor(y)
        if not torch.is_floating_point(y):
            y = y.float()
        outside, clamp = 0, not has_values(y)
        if y.numel() and has_values(y):
            lo, hi = (float(v) for v in torch.aminmax(y.detach()))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                bad = int((~torch.isfinite(y)).sum())
                raise ValueError(f"cannot encode {bad} non-finite target value(s) (NaN or "
                                 "inf)")
            if lo < self.low or hi > self.high:
                outside = self.count_outside(y)
            # clamping the float32 targets changes one iff its extreme lies beyond the
            # float32 bound (rounding to float32 keeps the order)
            f32 = np.float32
            clamp = f32(lo) < f32(self.low) or f32(hi) > f32(self.high)
        encoding = encoding or self.spec.encoding
        y = y.detach().to(torch.float32)
        if clamp:
            y = y.clamp(self.low, self.high)
        if encoding == "hl_gauss":
            return self._hl_gauss(y), outside
        if encoding == "two_hot":
            return self._two_hot(y), outside
        if encoding == "one_hot":
            idx = self._bin_index(y)
            return nn.functional.one_hot(idx, self.num_bins).to(torch.float32), outside
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")

    def _bin_index(self, y: torch.Tensor) -> torch.Tensor:
        return bin_index(y, self.low, self.width, self.num_bins)

    def _hl_gauss(self, y: torch.Tensor) -> torch.Tensor:
        z = (self.edges_like(y) - y.unsqueeze(-1)) / (self.sigma * math.sqrt(2.0))
        cdf = torch.special.erf(z.double())
        mass = torch.diff(cdf, dim=-1)  # cdf[..., 1:] - cdf[..., :-1]
        total = cdf[..., -1:] - cdf[..., :1]
        return (mass / total).float()

    def _two_hot(self, y: torch.Tensor) -> torch.Tensor:
        first = self.low + self.width / 2  # the centers, from the spec: no device sync
        y = y.clamp(first, self.high - self.width / 2)
        pos = (y - first) / self.width
        lower = torch.floor(pos).long().clamp(0, self.num_bins - 2)
        frac = (pos - lower).clamp(0.0, 1.0).unsqueeze(-1)
        probs = torch.zeros(*y.shape, self.num_bins, dtype=torch.float32, device=y.device)
        probs.scatter_(-1, lower.unsqueeze(-1), 1.0 - frac)
        probs.scatter_add_(-1, (lower + 1).unsqueeze(-1), frac)
        return probs

    # -- decoding ---------------------------------------------------------------
    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        self._check_logits(logits)
        x = at_least_float32(logits)
        return torch.softmax(x / self.temperature.to(device=x.device, dtype=x.dtype), dim=-1)

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        self._check_logits(logits)
        x = at_least_float32(logits)
        return torch.log_softmax(x / self.temperature.to(device=x.device, dtype=x.dtype),
                                 dim=-1)

    def _check_logits(self, logits: torch.Tensor) -> None:
        if logits.shape[-1] != self.num_bins:
            raise ValueError(
                f"logits have {logits.shape[-1]} bins in their last dimension, "
                f"the support has {self.num_bins}"
            )

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected value; differentiable, the default decoded value."""
        p = self.probs(logits)
        return moments(p, self.centers_like(p))[0]

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return self.centers_like(logits)[logits.argmax(-1)]

    def std(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.probs(logits)
        return moments(p, self.centers_like(p))[1]

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """Shannon entropy in nats."""
        return entropy(self.probs(logits))

    def normalized_entropy(self, logits: torch.Tensor) -> torch.Tensor:
        return self.entropy(logits) / math.log(self.num_bins)

    def edge_mass(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability in the first and last bin: the target may lie beyond the support."""
        p = self.probs(logits)
        return p[..., 0] + p[..., -1]

    def quantile(self, logits: torch.Tensor, q: float | torch.Tensor) -> torch.Tensor:
        """Quantile of the histogram density (uniform within each bin)."""
        return quantile(self.probs(logits), self.low, self.width, q)

    def median(self, logits: torch.Tensor) -> torch.Tensor:
        return self.quantile(logits, 0.5)

    def interval(self, logits: torch.Tensor, coverage: float = 0.9) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
        """Central interval holding ``coverage`` of the predicted mass."""
        return self.interval_of_probs(self.probs(logits), coverage)

    def interval_of_probs(self, probs: torch.Tensor, coverage: float = 0.9
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """``interval`` of probabilities already decoded (``probs``) from this support."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        tail = (1.0 - coverage) / 2.0
        return (quantile(probs, self.low, self.width, tail),
                quantile(probs, self.low, self.width, 1.0 - tail))

    def decode(self, logits: torch.Tensor, value: str = "mean") -> torch.Tensor:
        decoders = {"mean": self.mean, "mode": self.mode, "median": self.median}
        if value not in decoders:
            raise ValueError(f"unknown decoded value {value!r}; choose one of {list(decoders)}")
        return decoders[value](logits)

    def decode_with_uncertainty(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """One softmax for what a head returns: the mean (differentiable: forces and
        losses flow through it) and, without gradients, std, entropy and edge mass."""
        probs = self.probs(logits)
        centers = self.centers_like(probs)
        mean = (probs * centers).sum(-1)
        with torch.no_grad():
            p = probs.detach()
            return {"mean": mean, "std": moments(p, centers)[1], "entropy": entropy(p),
                    "edge_mass": p[..., 0] + p[..., -1]}

    def summarize(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every uncertainty field a prediction carries, in support units."""
        return {
            "mean": self.mean(logits),
            "std": self.std(logits),
            "entropy": self.entropy(logits),
            "edge_mass": self.edge_mass(logits),
        }

    # -- checkpoints ------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._check_stored(state)

    def _check_stored(self, state: dict[str, Any]) -> None:
        stored = SupportSpec(**state)
        if not same_support(stored, self.spec):
            raise SupportMismatchError(stored, self.spec)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # Check before torch copies the buffers, so a refused load changes nothing.
        stored = state_dict.get(prefix + "_extra_state")
        if stored is not None:
            self._check_stored(stored)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SupportMismatchError(ValueError):
    """A checkpoint's support differs from the one the config builds."""

    def __init__(self, stored: SupportSpec, configured: SupportSpec) -> None:
        diffs = [
            f"{k}: checkpoint {getattr(stored, k)!r} vs config {getattr(configured, k)!r}"
            for k in stored.to_dict()
            if getattr(stored, k) != getattr(configured, k)
        ]
        super().__init__(
            "histogram support in the checkpoint disagrees with the config ("
            + "; ".join(diffs)
            + "). Use the checkpoint's support (its bins block) or train new heads."
        )


def same_support(a: SupportSpec, b: SupportSpec, rtol: float = 1e-6) -> bool:
    return (
        a.num_bins == b.num_bins
        and a.encoding == b.encoding
        and math.isclose(a.low, b.low, rel_tol=rtol, abs_tol=1e-9)
        and math.isclose(a.high, b.high, rel_tol=rtol, abs_tol=1e-9)
        and math.isclose(a.sigma_abs, b.sigma_abs, rel_tol=rtol, abs_tol=1e-12)
    )
