"""Epistemic uncertainty from the energy head's own features (pure torch, both lines).

The histogram's width is learned like a mean-variance estimator: it says how noisy the
training targets were near similar inputs, not how far an input lies from the training
data, so nothing makes it grow on inputs unlike the training set. The distance of an
input's features from the training set's does. After training, one streaming pass of
the trained model over its training data (``FeatureStatistics``) collects the first and
second moments of the head's features; ``fit_state`` turns them into a few small
tensors that live in the checkpoint (``EpistemicState``, a submodule of the energy
head), so every line and every loader scores new structures the same way.

Methods (all from one pass, all evaluated by ``EpistemicState.scores``):

- ``mahalanobis_tied`` (the default): a Gaussian density of the per-atom hidden features
  h_i (the node block's output, what the mean pool averages) per element, with one shared
  covariance (the pooled within-element one, as in Lee et al.'s 2018 Mahalanobis
  detector). Atom score ``a_i = (h_i - mu_Z)^T Sigma^-1 (h_i - mu_Z) / H``: the squared
  Mahalanobis distance per feature dimension, about 1 for training atoms of any element
  (chi^2_H / H). The structure's score is the mean over its atoms. ``Sigma`` is shrunk
  towards a multiple of the identity by the Oracle Approximating Shrinkage rule (Chen et
  al. 2010): no tuned constants. An element absent from training has no density of its
  own; its atoms get the distance to the nearest element that was seen (the smallest of
  the per-element scores): as familiar as the closest thing the model knows. (The Gaussian
  of all training atoms would not do: its covariance holds the spread between elements,
  so an unseen element whose features fall between known ones looks typical.)
- ``mahalanobis``: the same with a covariance per element, shrunk towards the shared one
  with the weight of H prior atoms (a conjugate Normal-inverse-Wishart prior).
- ``mahalanobis_max``: the per-element atom scores, the structure's score the largest of
  them (one unfamiliar site is enough to make an energy unreliable).
- ``llpr``: last-layer prediction rigidity (Bigi et al. 2024, arXiv 2403.02251) of the
  output layer's input, the mean-pooled feature with a bias entry f = [mean_i h_i, 1]:
  ``u = f^T C^-1 f`` with C = (1 - rho) F^T F / n + rho (tr(F^T F / n) / p) I, the OAS
  shrinkage (below) of the training structures' second moment F^T F / n (not the paper's
  F^T F / n + eps I: the shrinkage weight rho comes from the data, no eps to tune). For a
  linear last layer, sigma^2 = alpha^2 u is the variance of its prediction under a
  Gaussian posterior of its weights. Atom scores are the local rigidities h_i^T C^-1 h_i
  of each atom's feature.

Each structure score U becomes an epistemic variance ``alpha^2 U`` (or ``alpha^2 U^2``, as
the validation likelihood prefers) in the binning space of the energy (per-atom energy in
units of the transform's std), added to the predictive distribution's kernel
(``predictive``); ``alpha`` is fitted with the predictive temperature and the members'
disagreement weight on validation data (``calibration.fit_predictive``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Container, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairchem_categorical.predictive import PredictiveParams, Recalibration

METHODS = ("mahalanobis", "mahalanobis_max", "mahalanobis_tied", "llpr")
DEFAULT_METHOD = "mahalanobis_tied"
STATE_VERSION = 1


def oas_shrink(cov: torch.Tensor, n: float) -> tuple[torch.Tensor, float]:
    """Oracle Approximating Shrinkage of a sample covariance (p, p) from ``n`` samples.

    ``(1 - rho) S + rho (tr S / p) I`` with Chen et al.'s (2010) rho, as scikit-learn's
    ``oas`` computes it: the shrinkage that minimises the expected squared error for
    Gaussian data, so a covariance from few samples in many dimensions stays invertible.
    """
    p = cov.shape[-1]
    mu = torch.trace(cov) / p
    alpha = (cov**2).mean()
    num = alpha + mu**2
    den = (n + 1.0) * (alpha - mu**2 / p)
    rho = 1.0 if float(den) <= 0 else min(float(num / den), 1.0)
    eye = torch.eye(p, dtype=cov.dtype, device=cov.device)
    return (1.0 - rho) * cov + rho * mu * eye, rho


def _precision(cov: torch.Tensor) -> torch.Tensor:
    """Inverse of a symmetric positive-definite matrix, with jitter if round-off needs it."""
    cov = (cov + cov.transpose(-1, -2)) / 2
    scale = float(torch.diagonal(cov).mean()) or 1.0
    for jitter in (0.0, 1e-10, 1e-8, 1e-6, 1e-4):
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        chol, info = torch.linalg.cholesky_ex(cov + jitter * scale * eye)
        if int(info) == 0:
            return torch.cholesky_inverse(chol)
    raise ValueError("feature covariance is not positive definite (constant features?)")


class FeatureStatistics:
    """Streaming first and second moments of the head's features, in float64.

    ``add`` takes one batch: per-atom hidden features (N, H) with their atomic numbers, and
    the structures' pooled features (B, H). Memory is O(elements x H^2), whatever the size
    of the training set.
    """

    def __init__(self) -> None:
        self.atom_count: dict[int, int] = {}
        self.atom_sum: dict[int, torch.Tensor] = {}
        self.atom_outer: dict[int, torch.Tensor] = {}
        self.struct_count = 0
        self.struct_outer: torch.Tensor | None = None

    @property
    def num_atoms(self) -> int:
        return sum(self.atom_count.values())

    @torch.no_grad()
    def add(self, hidden: torch.Tensor, atomic_numbers: torch.Tensor,
            pooled: torch.Tensor) -> None:
        h = hidden.detach().double().cpu()
        z = atomic_numbers.detach().long().cpu().reshape(-1)
        if h.ndim != 2 or z.shape[0] != h.shape[0]:
            raise ValueError(f"need hidden features (N, H) and N atomic numbers, got "
                             f"{tuple(h.shape)} and {tuple(z.shape)}")
        if not bool(torch.isfinite(h).all()):
            raise ValueError("hidden features hold NaN or inf; cannot fit the feature density")
        for element in torch.unique(z).tolist():
            x = h[z == element]
            self.atom_count[element] = self.atom_count.get(element, 0) + x.shape[0]
            if element in self.atom_sum:
                self.atom_sum[element] += x.sum(0)
                self.atom_outer[element] += x.T @ x
            else:
                self.atom_sum[element] = x.sum(0)
                self.atom_outer[element] = x.T @ x
        f = _with_bias(pooled.detach().double().cpu())
        outer = f.T @ f
        self.struct_outer = outer if self.struct_outer is None else self.struct_outer + outer
        self.struct_count += f.shape[0]


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def fit_state(stats: FeatureStatistics, method: str = DEFAULT_METHOD) -> dict[str, Any]:
    """The fitted tensors (float64) every method scores with; see the module docstring."""
    if method not in METHODS:
        raise ValueError(f"unknown epistemic method {method!r}; choose one of {METHODS}")
    n = stats.num_atoms
    if stats.struct_count < 2 or n < 2 or stats.struct_outer is None:
        raise ValueError(f"fitting the feature density needs at least 2 structures, got "
                         f"{stats.struct_count}")
    elements = sorted(stats.atom_count)
    dim = stats.atom_sum[elements[0]].shape[0]
    counts = torch.tensor([stats.atom_count[e] for e in elements], dtype=torch.float64)
    means = torch.stack([stats.atom_sum[e] / stats.atom_count[e] for e in elements])
    covs = torch.stack([stats.atom_outer[e] / stats.atom_count[e] - torch.outer(m, m)
                        for e, m in zip(elements, means, strict=True)])
    # pooled within-element covariance, shrunk towards a multiple of the identity
    pooled, _ = oas_shrink((counts[:, None, None] * covs).sum(0) / n, n)
    # each element shrunk towards the pooled one with the weight of `dim` prior atoms
    prior = float(dim)
    per_element = (counts[:, None, None] * covs + prior * pooled) / (counts[:, None, None]
                                                                    + prior)
    second, _ = oas_shrink(stats.struct_outer / stats.struct_count, stats.struct_count)
    return {
        "version": STATE_VERSION,
        "method": method,
        "dim": dim,
        "elements": torch.tensor(elements, dtype=torch.long),
        "element_counts": counts,
        "means": means,
        "precisions": torch.stack([_precision(c) for c in per_element]),
        "tied_precision": _precision(pooled),
        "llpr_precision": _precision(second),
        "num_structures": stats.struct_count,
        # fitted on validation data by calibrate; 1 until then
        "alpha": dict.fromkeys(METHODS, 1.0),
    }


def _quadratic(x: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """x_i^T P x_i per row of x (N, H), for one P (H, H)."""
    return ((x @ precision) * x).sum(-1)


def _segment_mean(x: torch.Tensor, batch: torch.Tensor, num: int) -> torch.Tensor:
    out = torch.zeros(num, dtype=x.dtype, device=x.device).index_add_(0, batch, x)
    count = torch.zeros(num, dtype=x.dtype, device=x.device).index_add_(
        0, batch, torch.ones_like(x))
    return out / count.clamp_min(1)


def _segment_max(x: torch.Tensor, batch: torch.Tensor, num: int) -> torch.Tensor:
    out = torch.full((num,), -math.inf, dtype=x.dtype, device=x.device)
    return out.scatter_reduce(0, batch, x, reduce="amax", include_self=True)


class EpistemicState(nn.Module):
    """The fitted feature statistics, saved in (and restored from) the head's state dict.

    Unfitted (``state is None``) it adds nothing: checkpoints written before it existed
    load without its key and predict exactly as before. Once fitted, ``scores`` gives every
    method's per-atom and per-structure scores and the designated method's epistemic
    variance. While ``collecting`` a ``FeatureStatistics``, the head feeds it every batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, Any] | None = None
        self.collector: FeatureStatistics | None = None
        self._device_cache: dict[str, Any] = {}

    # -- checkpoint ----------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any] | None:
        return self.state

    def set_extra_state(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
                raise ValueError("the checkpoint's epistemic state has an unknown format "
                                 f"(version {getattr(state, 'get', lambda _: None)('version')},"
                                 f" this code reads {STATE_VERSION}); refit it with "
                                 "fit-uncertainty")
            if state.get("method") not in METHODS:
                raise ValueError(f"unknown epistemic method {state.get('method')!r} in the "
                                 f"checkpoint; choose one of {METHODS}")
        self.load(state)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,  # noqa: ANN001
                              missing_keys, unexpected_keys, error_msgs) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        key = prefix + "_extra_state"
        if key in missing_keys:  # a checkpoint from before the epistemic state existed
            missing_keys.remove(key)
            self.load(None)

    def load(self, state: dict[str, Any] | None) -> None:
        self.state = state
        self._device_cache = {}

    def forget(self, why: str) -> None:
        """Drop a fitted state (once, with a warning naming ``why``); refit with
        fit-uncertainty."""
        if self.state is not None:
            logging.warning(f"the fitted epistemic state is dropped: {why}; run "
                            "fit-uncertainty on the new checkpoint")
            self.load(None)

    @property
    def fitted(self) -> bool:
        return self.state is not None

    @property
    def method(self) -> str:
        if self.state is None:
            raise ValueError("the epistemic state is not fitted (run fit-uncertainty)")
        return self.state["method"]

    @contextlib.contextmanager
    def collecting(self, stats: FeatureStatistics) -> Iterator[FeatureStatistics]:
        """Feed ``stats`` with every batch the head sees (in eval mode) inside the block."""
        self.collector = stats
        try:
            yield stats
        finally:
            self.collector = None

    def _tensors(self, device: torch.device) -> dict[str, Any]:
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = {k: v.to(device) if torch.is_tensor(v) else v
                                       for k, v in self.state.items()}
        return self._device_cache[key]

    # -- scoring -------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, hidden: torch.Tensor, pooled: torch.Tensor,
               atomic_numbers: torch.Tensor, batch: torch.Tensor
               ) -> dict[str, dict[str, torch.Tensor]]:
        """Every method's ``{"atom": (N,), "structure": (B,)}`` scores (float64).

        Higher means less like the training data; about 1 (Mahalanobis) on training atoms.
        """
        s = self._tensors(hidden.device)
        h = hidden.detach().double()
        z = atomic_numbers.detach().long().reshape(-1)
        num = pooled.shape[0]
        dim = s["dim"]
        if h.shape[-1] != dim:
            raise ValueError(f"the epistemic state was fitted on {dim} features, the head has "
                             f"{h.shape[-1]}")
        # element -> row of the fitted statistics, or -1 for an element never seen
        lookup = torch.full((int(max(int(z.max()), int(s["elements"].max()))) + 1,), -1,
                            dtype=torch.long, device=h.device)
        lookup[s["elements"]] = torch.arange(len(s["elements"]), device=h.device)
        row = lookup[z]
        unseen = row < 0
        safe = row.clamp_min(0)
        diff = h - s["means"][safe]
        maha = torch.empty_like(h[:, 0])
        for i in torch.unique(safe).tolist():  # one (n_i, H) x (H, H) product per element
            rows = safe == i
            maha[rows] = _quadratic(diff[rows], s["precisions"][i])
        maha = maha / dim
        maha_tied = _quadratic(diff, s["tied_precision"]) / dim
        if bool(unseen.any()):  # the nearest element that was seen
            x = h[unseen]
            each = [(x - mean, s["precisions"][i]) for i, mean in enumerate(s["means"])]
            maha[unseen] = torch.stack([_quadratic(d, p) for d, p in each]).min(0).values / dim
            maha_tied[unseen] = torch.stack([_quadratic(d, s["tied_precision"])
                                             for d, _ in each]).min(0).values / dim
        llpr_atom = _quadratic(_with_bias(h), s["llpr_precision"])
        llpr = _quadratic(_with_bias(pooled.detach().double()), s["llpr_precision"])
        return {
            "mahalanobis": {"atom": maha, "structure": _segment_mean(maha, batch, num)},
            "mahalanobis_max": {"atom": maha, "structure": _segment_max(maha, batch, num)},
            "mahalanobis_tied": {"atom": maha_tied,
                                 "structure": _segment_mean(maha_tied, batch, num)},
            "llpr": {"atom": llpr_atom, "structure": llpr},
        }

    def predictive_params(self, method: str | None = None) -> PredictiveParams:
        """The fitted scales of the predictive distribution with ``method``'s alpha (states
        fitted before the predictive temperature and disagreement existed: 1 and 0)."""
        p = (self.state.get("predictive") or {}).get(method or self.method) or {}
        return PredictiveParams(temperature=float(p.get("temperature", 1.0)),
                                disagreement=float(p.get("disagreement", 0.0)),
                                alpha=self.alpha(method), power=float(p.get("power", 1.0)))

    def force_scale(self) -> float:
        """The factor that sizes a shallow ensemble's member force spread to its errors
        (fitted on validation forces by calibrate; 1 until then)."""
        return 1.0 if self.state is None else float(self.state.get("force_scale", 1.0))

    def recalibration(self, method: str | None = None) -> Recalibration | None:
        p = (self.state.get("predictive") or {}).get(method or self.method) or {}
        return Recalibration.from_dict(p.get("recalibration"))

    def alpha(self, method: str | None = None) -> float:
        return float(self.state["alpha"][method or self.method])

    def set_alpha(self, alpha: float, method: str | None = None) -> None:
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"epistemic scale must be finite and >= 0, got {alpha}")
        self.state["alpha"][method or self.method] = float(alpha)


# -- checkpoints: both lines store the head's state under the same names ----------------------

_TEMPERATURE = "support.temperature"
_EPISTEMIC = "epistemic._extra_state"


def head_prefixes(state_dict: MutableMapping[str, Any], head: str) -> list[str]:
    """Key prefixes of output head ``head`` in a model state dict (plain, DDP or EMA keys)."""
    key = f"output_heads.{head}.{_TEMPERATURE}"
    return [k[: -len(_TEMPERATURE)] for k in state_dict if k == key or k.endswith("." + key)]


def categorical_energy_heads(modules: Mapping[str, str], accepted: Container[str],
                             path: str | Path = "the checkpoint", what: str = "this"
                             ) -> list[str]:
    """The names of a checkpoint's categorical energy heads (``modules``: head name -> its
    class or registry name, as the line's config names it); a clear error if none."""
    heads = [name for name, module in modules.items() if module in accepted]
    if not heads:
        found = ", ".join(modules.values()) or "none"
        raise ValueError(
            f"{what} needs a categorical checkpoint (one with a CategoricalEnergyHead); "
            f"{path} has no categorical energy head (its heads: {found}), so there is no "
            "histogram to calibrate or fit an uncertainty to")
    return heads


def read_head_state(state_dict: MutableMapping[str, Any], head: str) -> dict[str, Any] | None:
    """The fitted epistemic state of ``head`` in a state dict, or None."""
    for prefix in head_prefixes(state_dict, head):
        if state_dict.get(prefix + _EPISTEMIC) is not None:
            return state_dict[prefix + _EPISTEMIC]
    return None


def write_head_state(state_dict: MutableMapping[str, Any], head: str,
                     temperature_factor: float | None = None,
                     epistemic: dict[str, Any] | None = None,
                     alpha: dict[str, float] | None = None,
                     predictive: dict[str, Any] | None = None,
                     force_scale: float | None = None) -> float:
    """Set the head's temperature (x ``temperature_factor``), fitted state and scales in place.

    Returns the head's temperature afterwards. ``epistemic`` replaces the fitted state;
    ``alpha`` updates the scales of the (new or stored) state's methods; ``predictive``
    each method's predictive temperature, disagreement weight and recalibration
    (``{method: {"temperature", "disagreement", "recalibration"}}``); ``force_scale`` the
    factor on a shallow ensemble's member force spread.
    """
    prefixes = head_prefixes(state_dict, head)
    if not prefixes:
        raise ValueError(f"no output head {head!r} with a histogram support in the state dict")
    temperature = float(state_dict[prefixes[0] + _TEMPERATURE])
    if temperature_factor is not None:
        if not (math.isfinite(temperature_factor) and temperature_factor > 0):
            raise ValueError(f"temperature factor must be finite and > 0, got "
                             f"{temperature_factor}")
        temperature *= temperature_factor
    state = epistemic if epistemic is not None else read_head_state(state_dict, head)
    if alpha:
        if state is None:
            raise ValueError("no fitted epistemic state to scale; run fit-uncertainty first")
        state = {**state, "alpha": {**state["alpha"], **alpha}}
    if predictive is not None:
        if state is None:
            raise ValueError("no fitted epistemic state to calibrate; run fit-uncertainty "
                             "first")
        for method, p in predictive.items():  # checked before anything is written
            if method not in METHODS:
                raise ValueError(f"unknown epistemic method {method!r}; choose one of "
                                 f"{METHODS}")
            PredictiveParams(temperature=float(p.get("temperature", 1.0)),
                             disagreement=float(p.get("disagreement", 0.0)),
                             power=float(p.get("power", 1.0)))
            Recalibration.from_dict(p.get("recalibration"))
        state = {**state, "predictive": {**(state.get("predictive") or {}), **predictive}}
    if force_scale is not None:
        if state is None:
            raise ValueError("no fitted epistemic state to store a force scale in; run "
                             "fit-uncertainty first")
        if not (math.isfinite(force_scale) and force_scale > 0):
            raise ValueError(f"force scale must be finite and > 0, got {force_scale}")
        state = {**state, "force_scale": float(force_scale)}
    for prefix in prefixes:
        # the head's support is shared by its submodules (logits_block.support): every copy
        # of the buffer in the state dict must agree, or the last one loaded wins
        for key in [k for k in state_dict if k.startswith(prefix) and k.endswith(_TEMPERATURE)]:
            state_dict[key] = torch.tensor(temperature, dtype=state_dict[key].dtype)
        if state is not None:
            state_dict[prefix + _EPISTEMIC] = state
    return temperature
