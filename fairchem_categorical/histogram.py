"""Histogram support: binning scalars into distributions and decoding logits back.

Pure torch, no fairchem import, so both fairchem lines share the exact same math.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

ENCODINGS = ("hl_gauss", "two_hot", "one_hot")
DEFAULT_NUM_BINS = 128
DEFAULT_SIGMA_RATIO = 0.75


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
        # Count of targets clamped to the edge since construction (not saved).
        self.num_clipped = 0

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

    def extra_repr(self) -> str:
        s = self.spec
        return (f"low={s.low:.4g}, high={s.high:.4g}, num_bins={s.num_bins}, "
                f"encoding={s.encoding}, sigma={self.sigma:.4g}")

    # -- encoding ---------------------------------------------------------------
    def count_outside(self, y: torch.Tensor) -> int:
        """Number of finite targets that fall outside [low, high]."""
        return int(((y < self.low) | (y > self.high)).sum())

    def encode(self, y: torch.Tensor, encoding: str | None = None) -> torch.Tensor:
        """Scalars of any shape (...) -> probabilities (..., K) in float32.

        Targets outside the support are clamped to its edge and counted in
        ``num_clipped``; NaN or inf targets are an error.
        """
        y = torch.as_tensor(y)
        if not torch.is_floating_point(y):
            y = y.float()
        if not bool(torch.isfinite(y).all()):
            bad = int((~torch.isfinite(y)).sum())
            raise ValueError(f"cannot encode {bad} non-finite target value(s) (NaN or inf)")
        encoding = encoding or self.spec.encoding
        y = y.detach().to(self.edges.device, torch.float32)
        self.num_clipped += self.count_outside(y)
        y = y.clamp(self.low, self.high)
        if encoding == "hl_gauss":
            return self._hl_gauss(y)
        if encoding == "two_hot":
            return self._two_hot(y)
        if encoding == "one_hot":
            idx = self._bin_index(y)
            return nn.functional.one_hot(idx, self.num_bins).to(torch.float32)
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")

    def _bin_index(self, y: torch.Tensor) -> torch.Tensor:
        idx = torch.floor((y - self.low) / self.width).long()
        return idx.clamp(0, self.num_bins - 1)

    def _hl_gauss(self, y: torch.Tensor) -> torch.Tensor:
        z = (self.edges - y.unsqueeze(-1)) / (self.sigma * math.sqrt(2.0))
        cdf = torch.special.erf(z.double())
        mass = cdf[..., 1:] - cdf[..., :-1]
        total = cdf[..., -1:] - cdf[..., :1]
        return (mass / total).float()

    def _two_hot(self, y: torch.Tensor) -> torch.Tensor:
        c = self.centers
        y = y.clamp(float(c[0]), float(c[-1]))
        pos = (y - float(c[0])) / self.width
        lower = torch.floor(pos).long().clamp(0, self.num_bins - 2)
        frac = (pos - lower).clamp(0.0, 1.0).unsqueeze(-1)
        probs = torch.zeros(*y.shape, self.num_bins, dtype=torch.float32, device=y.device)
        probs.scatter_(-1, lower.unsqueeze(-1), 1.0 - frac)
        probs.scatter_add_(-1, (lower + 1).unsqueeze(-1), frac)
        return probs

    # -- decoding ---------------------------------------------------------------
    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        self._check_logits(logits)
        return torch.softmax(logits.float() / self.temperature, dim=-1)

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        self._check_logits(logits)
        return torch.log_softmax(logits.float() / self.temperature, dim=-1)

    def _check_logits(self, logits: torch.Tensor) -> None:
        if logits.shape[-1] != self.num_bins:
            raise ValueError(
                f"logits have {logits.shape[-1]} bins in their last dimension, "
                f"the support has {self.num_bins}"
            )

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected value; differentiable, the default decoded value."""
        return (self.probs(logits) * self.centers).sum(-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return self.centers[logits.argmax(-1)]

    def std(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.probs(logits)
        mu = (p * self.centers).sum(-1, keepdim=True)
        var = (p * (self.centers - mu) ** 2).sum(-1)
        return var.clamp_min(0.0).sqrt()

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """Shannon entropy in nats."""
        return torch.special.entr(self.probs(logits)).sum(-1)

    def normalized_entropy(self, logits: torch.Tensor) -> torch.Tensor:
        return self.entropy(logits) / math.log(self.num_bins)

    def edge_mass(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability in the first and last bin: the target may lie beyond the support."""
        p = self.probs(logits)
        return p[..., 0] + p[..., -1]

    def quantile(self, logits: torch.Tensor, q: float | torch.Tensor) -> torch.Tensor:
        """Quantile of the histogram density (uniform within each bin)."""
        p = self.probs(logits)
        cdf = torch.cumsum(p, dim=-1)
        cdf_lo = torch.cat([torch.zeros_like(cdf[..., :1]), cdf[..., :-1]], dim=-1)
        q = torch.as_tensor(q, dtype=p.dtype, device=p.device).expand(p.shape[:-1])
        k = torch.searchsorted(cdf.contiguous(), q.unsqueeze(-1).contiguous()).clamp(
            max=self.num_bins - 1
        )
        p_k = p.gather(-1, k).squeeze(-1)
        below = cdf_lo.gather(-1, k).squeeze(-1)
        frac = ((q - below) / p_k.clamp_min(1e-12)).clamp(0.0, 1.0)
        return self.edges[k.squeeze(-1)] + frac * self.width

    def median(self, logits: torch.Tensor) -> torch.Tensor:
        return self.quantile(logits, 0.5)

    def interval(self, logits: torch.Tensor, coverage: float = 0.9) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
        """Central interval holding ``coverage`` of the predicted mass."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        tail = (1.0 - coverage) / 2.0
        return self.quantile(logits, tail), self.quantile(logits, 1.0 - tail)

    def decode(self, logits: torch.Tensor, value: str = "mean") -> torch.Tensor:
        decoders = {"mean": self.mean, "mode": self.mode, "median": self.median}
        if value not in decoders:
            raise ValueError(f"unknown decoded value {value!r}; choose one of {list(decoders)}")
        return decoders[value](logits)

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
