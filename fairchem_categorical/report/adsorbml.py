"""AdsorbML's measure of a screening: success rate against reference calls per system.

A system's reference minimum is the lowest energy the reference (DFT, or a stand-in for it)
finds by relaxing every initial placement. A strategy picks some of the model's relaxed
configurations to send to the reference; it succeeds on a system when the best reference
energy among its picks is within ``tolerance`` (0.1 eV) of the reference minimum, or lower
(Lan et al., AdsorbML, npj Comput. Mater. 2023). Two variants: the picks get a reference
single point at the model's geometry (``sp``) or a reference relaxation from it (``rx``).

Everything here works on numbers per system (``SystemOutcome``), so strategies, tolerances
and the P(lowest) that ranks are re-scored without redoing any relaxation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import comb

from fairchem_categorical.screening import recommend

#: AdsorbML's success threshold (eV)
TOLERANCE = 0.1
VARIANTS = ("sp", "rx")
TOP_K = (1, 2, 3, 4, 5)
COVERAGES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
BUDGETS = (1, 2, 3)


@dataclass
class SystemOutcome:
    """One screened system: the model's view and the reference's, per configuration.

    ``predicted``: the model's energies (NaN where the model's relaxation is anomalous, so
    no strategy picks it); ``p_lowest``: P(configuration is the lowest), 0 where anomalous;
    ``reference``: per variant, the reference energy of each configuration (NaN where the
    reference's result is anomalous); ``reference_min``: the lowest valid reference energy
    over relaxations of every initial placement (NaN: none valid, the system is not scored).
    """

    name: str
    predicted: np.ndarray
    p_lowest: np.ndarray
    reference: dict[str, np.ndarray]
    reference_min: float

    def __post_init__(self) -> None:
        self.predicted = np.asarray(self.predicted, float)
        self.p_lowest = np.asarray(self.p_lowest, float)
        self.reference = {k: np.asarray(v, float) for k, v in self.reference.items()}
        n = len(self.predicted)
        if len(self.p_lowest) != n or any(len(v) != n for v in self.reference.values()):
            raise ValueError(f"{self.name}: predicted, p_lowest and reference energies need "
                             f"one value per configuration ({n})")

    @property
    def valid(self) -> np.ndarray:
        """Indices of the configurations the model did not flag as anomalous."""
        return np.flatnonzero(np.isfinite(self.predicted))

    def to_json(self) -> dict[str, Any]:
        def plain(a: np.ndarray) -> list[float | None]:
            return [float(v) if math.isfinite(v) else None for v in a]

        return {"name": self.name, "predicted": plain(self.predicted),
                "p_lowest": plain(self.p_lowest),
                "reference": {k: plain(v) for k, v in self.reference.items()},
                "reference_min": self.reference_min if math.isfinite(self.reference_min)
                else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SystemOutcome:
        def arr(v: list[float | None]) -> np.ndarray:
            return np.array([math.nan if x is None else x for x in v], float)

        ref_min = data["reference_min"]
        return cls(data["name"], arr(data["predicted"]), arr(data["p_lowest"]),
                   {k: arr(v) for k, v in data["reference"].items()},
                   math.nan if ref_min is None else float(ref_min))


# -- strategies: which configurations to send to the reference ------------------------------------
def top_k(outcome: SystemOutcome, k: int) -> np.ndarray:
    """AdsorbML: the ``k`` lowest predicted energies among the valid configurations."""
    valid = outcome.valid
    return valid[np.argsort(outcome.predicted[valid], kind="stable")[:k]]


def by_coverage(outcome: SystemOutcome, coverage: float) -> np.ndarray:
    """The fewest most-probable configurations whose P(lowest) sums to ``coverage``."""
    valid = outcome.valid
    if not len(valid):
        return valid
    return valid[recommend(outcome.p_lowest[valid], coverage=coverage)]


def by_budget(outcome: SystemOutcome, budget: int) -> np.ndarray:
    """The ``budget`` configurations of highest P(lowest)."""
    valid = outcome.valid
    if not len(valid):
        return valid
    return valid[recommend(outcome.p_lowest[valid], coverage=None, budget=budget)]


Strategy = Callable[[SystemOutcome], np.ndarray]


def strategies(ks: Iterable[int] = TOP_K, coverages: Iterable[float] = COVERAGES,
               budgets: Iterable[int] = BUDGETS) -> dict[tuple[str, float], Strategy]:
    """The deterministic strategies by (family, parameter); random is scored exactly apart."""
    out: dict[tuple[str, float], Strategy] = {}
    for k in ks:
        out["top-k", k] = lambda o, k=k: top_k(o, k)
    for c in coverages:
        out["p_lowest coverage", c] = lambda o, c=c: by_coverage(o, c)
    for b in budgets:
        out["p_lowest budget", b] = lambda o, b=b: by_budget(o, b)
    return out


# -- success -------------------------------------------------------------------------------------
def successes(outcome: SystemOutcome, variant: str, tolerance: float = TOLERANCE
              ) -> np.ndarray:
    """Per configuration: does sending it alone to the reference succeed?"""
    ref = outcome.reference[variant]
    with np.errstate(invalid="ignore"):
        return np.isfinite(ref) & (ref <= outcome.reference_min + tolerance)


def success(outcome: SystemOutcome, picks: np.ndarray, variant: str,
            tolerance: float = TOLERANCE) -> bool:
    """Whether the best reference energy among ``picks`` is within ``tolerance`` of the
    reference minimum, or lower (the best is within it iff any pick is)."""
    return bool(successes(outcome, variant, tolerance)[np.asarray(picks, int)].any())


def random_success(outcome: SystemOutcome, k: int, variant: str,
                   tolerance: float = TOLERANCE) -> float:
    """Expected success of ``k`` valid configurations drawn uniformly without replacement:
    1 - C(n - s, k) / C(n, k), with s of the n valid ones successful."""
    valid = outcome.valid
    n = len(valid)
    if n == 0:
        return 0.0
    k = min(k, n)
    s = int(successes(outcome, variant, tolerance)[valid].sum())
    return float(1.0 - comb(n - s, k, exact=True) / comb(n, k, exact=True))


def scored(outcomes: Sequence[SystemOutcome]) -> list[SystemOutcome]:
    """The systems AdsorbML scores: those with a valid reference minimum."""
    return [o for o in outcomes if math.isfinite(o.reference_min)]


def score(outcomes: Sequence[SystemOutcome], variant: str, tolerance: float = TOLERANCE,
          plan: dict[tuple[str, float], Strategy] | None = None,
          random_ks: Iterable[int] = TOP_K) -> list[dict[str, Any]]:
    """One row per strategy: success rate and mean reference calls per scored system."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    systems = scored(outcomes)
    if not systems:
        raise ValueError("no system has a valid reference minimum to score against")
    rows = []
    for (family, param), pick in (plan or strategies()).items():
        picks = [pick(o) for o in systems]
        rows.append({"variant": variant, "strategy": family, "parameter": param,
                     "success": float(np.mean([success(o, p, variant, tolerance)
                                               for o, p in zip(systems, picks, strict=True)])),
                     "calls": float(np.mean([len(p) for p in picks])),
                     "systems": len(systems)})
    for k in random_ks:
        rows.append({"variant": variant, "strategy": "random", "parameter": k,
                     "success": float(np.mean([random_success(o, k, variant, tolerance)
                                               for o in systems])),
                     "calls": float(np.mean([min(k, len(o.valid)) for o in systems])),
                     "systems": len(systems)})
    return rows


def calls_to_success(calls: Sequence[float], success_rate: Sequence[float], target: float
                     ) -> float:
    """Mean reference calls a family of strategies needs to reach ``target`` success:
    along its points sorted by calls (best success so far), linearly interpolated between
    the two points around the target (mixing the two strategies over systems); NaN if it
    never reaches it."""
    order = np.argsort(np.asarray(calls, float), kind="stable")
    c = np.asarray(calls, float)[order]
    s = np.maximum.accumulate(np.asarray(success_rate, float)[order])
    hit = np.flatnonzero(s >= target - 1e-12)
    if not len(hit):
        return math.nan
    i = int(hit[0])
    if i == 0 or s[i] == s[i - 1]:
        return float(c[i])
    return float(c[i - 1] + (target - s[i - 1]) / (s[i] - s[i - 1]) * (c[i] - c[i - 1]))


def reliability(outcomes: Sequence[SystemOutcome], variant: str, bins: int = 10
                ) -> list[dict[str, float]]:
    """P(lowest) against how often the configuration is the reference's lowest.

    Over the valid configurations of systems with a valid reference for some of them: the
    event is "lowest ``variant`` reference energy among the system's valid configurations";
    binned by predicted probability into ``bins`` equal-width bins (empty bins left out).
    """
    p_all, hit_all = [], []
    for o in outcomes:
        valid = o.valid
        ref = o.reference[variant][valid]
        if not np.isfinite(ref).any():
            continue
        hit = np.zeros(len(valid), bool)
        hit[int(np.nanargmin(ref))] = True
        p_all.append(o.p_lowest[valid])
        hit_all.append(hit)
    if not p_all:
        return []
    p, hit = np.concatenate(p_all), np.concatenate(hit_all)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(mask.sum()),
                         "predicted": float(p[mask].mean()),
                         "observed": float(hit[mask].mean())})
    return rows
