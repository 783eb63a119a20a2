"""Feature -> histogram -> energy/force readouts (pure torch, shared by both fairchem lines).

A fairchem head on either line only has to pull the invariant (l=0) node features
and, for direct forces, an l=1 vector out of its backbone's embedding; the
pooling, the logits, the decoding and the uncertainty outputs live here once.
Both lines subclass these modules, so their parameter names (``node_block``,
``logits_block``, ``magnitude_block``, ``support``, ``energy_transform``,
``epistemic``) are the same in every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from fairchem_categorical.epistemic import EpistemicState
from fairchem_categorical.histogram import (
    HistogramSupport,
    SupportSpec,
    moments,
    same_support,
)
from fairchem_categorical.logits import LocationScaleLogits
from fairchem_categorical.predictive import (
    PredictiveDistribution,
    PredictiveParams,
    kernel_variance,
    member_probs,
)
from fairchem_categorical.targets import EnergyTransform, require_head_level

INTERVAL = 0.9
#: the designated epistemic outputs (``epistemic_outputs``); every method's scores come
#: along as ``ood_<method>`` and ``epistemic_std_<method>``
EPISTEMIC_OUTPUTS = ("energy_uncertainty", "ood_score", "atom_ood_score")
#: how the epistemic score U enters the predictive variance (``PredictiveParams.power``) ->
#: the output holding each method's epistemic std at alpha = 1 (eV): sqrt(U) for alpha^2 U,
#: U for alpha^2 U^2 (a std linear in U: the distance grows like the error far out)
EPISTEMIC_POWERS = {1.0: "epistemic_std", 2.0: "epistemic_linear_std"}


def epistemic_items(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The epistemic outputs among a head's outputs (what ``predict_batch`` passes on)."""
    return {k: v for k, v in outputs.items()
            if k in EPISTEMIC_OUTPUTS
            or k.startswith(("ood_", *(f"{key}_" for key in EPISTEMIC_POWERS.values())))}


def mean_pool(x: torch.Tensor, batch: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
    """Per-system mean of node features (per-atom energy bins want an intensive input)."""
    out = torch.zeros(natoms.numel(), x.shape[-1], dtype=x.dtype, device=x.device)
    out.index_add_(0, batch, x)
    return out / natoms.to(x.dtype).unsqueeze(-1)


class EnergyTransformState(nn.Module):
    """An EnergyTransform saved in, and checked against, checkpoints.

    ``elements`` (the atomic numbers the references were fitted on) rides along when
    known; a checkpoint written before it was recorded loads as before.
    """

    def __init__(self, energy: dict[str, Any]) -> None:
        super().__init__()
        self.spec = EnergyTransform(**energy)

    def transform(self) -> EnergyTransform:
        return self.spec

    def get_extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"mean": self.spec.mean, "std": self.spec.std,
                                 "level": self.spec.level,
                                 "element_references": list(self.spec.element_references)}
        if self.spec.elements is not None:
            state["elements"] = list(self.spec.elements)
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        stored_refs = state.get("element_references")  # absent in older checkpoints
        if stored_refs is not None:
            mine = EnergyTransform(**{**self.spec.to_dict(),
                                      "element_references": list(stored_refs)})
            diffs = transform_differences(mine, self.spec, ("checkpoint", "config"))
            if diffs:
                raise ValueError(
                    "energy transform in the checkpoint disagrees with the config ("
                    + "; ".join(diffs) + "). Use the checkpoint's bins block or train new "
                    "heads.")
        stored = state.get("elements")
        if stored is not None:
            if self.spec.elements is None:
                self.spec.elements = sorted(int(z) for z in stored)
            elif sorted(stored) != self.spec.elements:
                raise ValueError(
                    "energy transform in the checkpoint disagrees with the config (elements: "
                    f"checkpoint {sorted(stored)} vs config {self.spec.elements}). Use the "
                    "checkpoint's bins block or train new heads.")
        mine = {k: v for k, v in self.get_extra_state().items()
                if k not in ("elements", "element_references")}
        diffs = [
            f"{k}: checkpoint {state[k]!r} vs config {mine[k]!r}"
            for k in mine
            if (state[k] != mine[k] if k == "level"
                else not math.isclose(state[k], mine[k], rel_tol=1e-9, abs_tol=1e-12))
        ]
        if diffs:
            raise ValueError(
                "energy transform in the checkpoint disagrees with the config ("
                + "; ".join(diffs) + "). Use the checkpoint's bins block or train new heads."
            )


def _describe(spec: SupportSpec) -> str:
    return (f"[{spec.low:.6g}, {spec.high:.6g}] in {spec.num_bins} bins, {spec.encoding} "
            f"sigma {spec.sigma_abs:.4g}")


def transform_differences(head: EnergyTransform, bins: EnergyTransform,
                          names: tuple[str, str] = ("head", "bins")) -> list[str]:
    """What differs between two energy transforms (mean, std, level, element references),
    each as ``"<field>: <names[0]> a vs <names[1]> b"``."""
    from ase.data import chemical_symbols

    h, b_ = names
    diffs = [f"{k}: {h} {getattr(head, k)!r} vs {b_} {getattr(bins, k)!r}"
             for k in ("mean", "std") if not math.isclose(getattr(head, k), getattr(bins, k),
                                                          rel_tol=1e-9, abs_tol=1e-12)]
    if head.level != bins.level:
        diffs.append(f"level: {h} {head.level!r} vs {b_} {bins.level!r}")
    refs = [(z, a, b) for z, (a, b) in enumerate(zip(head.element_references,
                                                      bins.element_references, strict=False))
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)]
    if refs:
        shown = ", ".join(f"{chemical_symbols[z]} {h} {a:.6g} vs {b_} {b:.6g}"
                          for z, a, b in refs[:4])
        diffs.append(f"element references of {len(refs)} element(s) ({shown}"
                     f"{', ...' if len(refs) > 4 else ''})")
    return diffs


class HeadsMismatchError(ValueError):
    """A model's heads decode on another support or energy transform than the one the
    training targets are binned with (e.g. a fine-tune that keeps a checkpoint's heads but
    takes new bins): training would silently fit targets in one space to outputs in another."""


def check_head_matches(what: str, head: SupportSpec, bins: SupportSpec,
                       head_energy: EnergyTransform | None = None,
                       bins_energy: EnergyTransform | None = None) -> None:
    """Refuse (``HeadsMismatchError``, naming both supports) a head whose support or energy
    transform differs from what the training targets use."""
    diffs = []
    if not same_support(head, bins):
        diffs.append(f"support: head {_describe(head)} vs bins {_describe(bins)}")
    if head_energy is not None and bins_energy is not None:
        diffs += transform_differences(head_energy, bins_energy)
    if diffs:
        raise HeadsMismatchError(
            f"the model's {what} decodes differently from how this run's bins encode its "
            f"targets ({'; '.join(diffs)}). A fine-tune with model.heads=null keeps the "
            "checkpoint's heads: train with the bins the checkpoint was trained with, or let "
            "the config build new heads (drop model.heads=null) to start them afresh.")


class CategoricalEnergyReadout(nn.Module):
    """Invariant node features -> mean-pooled -> logits over binned (per-atom) energy.

    ``decode`` gives the expected energy in eV of referenced total energy (a
    differentiable function of the logits, so conservative forces are its
    gradient) and, without gradients, the uncertainty outputs. ``energy_outputs``
    does both and, in eval mode with a fitted ``epistemic`` state, adds the
    feature-distance outputs (see ``epistemic_outputs``).
    """

    def __init__(self, in_channels: int, hidden_channels: int, support: dict[str, Any],
                 energy: dict[str, Any], num_members: int = 1) -> None:
        super().__init__()
        require_head_level(dict(energy).get("level", "per_atom"))
        if int(num_members) != num_members or num_members < 1:
            raise ValueError(f"num_members must be an integer >= 1, got {num_members}")
        self.support = HistogramSupport.from_spec(dict(support))
        self.energy_transform = EnergyTransformState(dict(energy))
        # member 0 keeps the single head's parameter names (node_block, logits_block), so
        # checkpoints from before the shallow ensemble load as its one member
        self.node_block, self.logits_block = self._member(in_channels, hidden_channels)
        self.members = nn.ModuleList(
            nn.ModuleDict(dict(zip(("node_block", "logits_block"),
                                   self._member(in_channels, hidden_channels), strict=True)))
            for _ in range(int(num_members) - 1))
        # fitted after training (fit-uncertainty); empty, and inert, until then
        self.epistemic = EpistemicState()

    def _member(self, in_channels: int, hidden_channels: int) -> tuple[nn.Module, nn.Module]:
        """One output layer of the shallow ensemble: its own MLP on the shared node
        features (randomly initialised, so members differ) and its own logits."""
        node_block = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.SiLU(),
            nn.Linear(hidden_channels, hidden_channels), nn.SiLU(),
        )
        # binning-space targets are standardised: start at N(0, 1), the data's spread;
        # the location regresses eV (per atom), then is standardised by 1/std.
        logits_block = LocationScaleLogits(
            hidden_channels, self.support, loc0=0.0, scale0=1.0,
            loc_gain=1.0 / self.energy_transform.spec.std)
        return node_block, logits_block

    @property
    def num_members(self) -> int:
        return 1 + len(self.members)

    def _blocks(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.node_block, self.logits_block)] + [
            (m["node_block"], m["logits_block"]) for m in self.members]

    def system_logits(self, node_scalars: torch.Tensor, batch: torch.Tensor,
                      natoms: torch.Tensor) -> torch.Tensor:
        """(B, K) logits of a single head; (B, M, K) of a shallow ensemble's M members."""
        return self._member_logits(node_scalars, batch, natoms)[0]

    def _member_logits(self, node_scalars: torch.Tensor, batch: torch.Tensor,
                       natoms: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, member 0's per-atom hidden features, member 0's pooled features)."""
        logits, first = [], None
        for node_block, logits_block in self._blocks():
            hidden = node_block(node_scalars)
            pooled = mean_pool(hidden, batch, natoms)
            logits.append(logits_block(pooled))
            first = first or (hidden, pooled)
        out = logits[0] if len(logits) == 1 else torch.stack(logits, dim=1)
        return out, *first

    def energy_outputs(self, node_scalars: torch.Tensor, batch: torch.Tensor,
                       natoms: torch.Tensor, atomic_numbers: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, ``decode``'s outputs plus, in eval mode, ``epistemic_outputs``)."""
        logits, hidden, pooled = self._member_logits(node_scalars, batch, natoms)
        out = self.decode(logits, natoms)
        if self.training:
            # a training step moves the features the fitted statistics describe (fine-tuning
            # a fitted checkpoint): drop them rather than score against stale ones
            self.epistemic.forget("training changes the features it was fitted on")
        else:
            out.update(self.epistemic_outputs(hidden, pooled, logits, atomic_numbers, batch,
                                              natoms))
        return logits, out

    def predictive(self, logits: torch.Tensor, natoms: torch.Tensor,
                   epistemic_score: torch.Tensor | None = None,
                   offset: torch.Tensor | None = None) -> PredictiveDistribution:
        """The predictive distribution of total energy (eV; + ``offset``, the references).

        Before fit-uncertainty: the members' mixture smoothed by the HL-Gauss kernel. Once
        fitted: re-tempered, widened by the members' disagreement and ``alpha^2 U`` and
        recalibrated, with the scales ``calibrate`` fitted (see ``predictive``).
        """
        et = self.energy_transform.spec
        ep = self.epistemic
        params = ep.predictive_params() if ep.fitted else PredictiveParams()
        members = member_probs(self.support.probs(logits).log(), params.temperature)
        centers = self.support.centers_like(logits).double().expand(members.shape[0], -1)
        dist = PredictiveDistribution(members, centers, 1.0)
        var = kernel_variance(self.support.width, dist.disagreement_variance(),
                              epistemic_score, params)
        n = natoms.unsqueeze(-1)
        offset = torch.zeros_like(natoms, dtype=torch.float64) if offset is None \
            else offset.double()
        centers_ev = et.to_energy(centers, n) + offset.unsqueeze(-1)
        return PredictiveDistribution(members, centers_ev, et.spread_to_energy(var.sqrt(),
                                                                               natoms),
                                      ep.recalibration() if ep.fitted else None)

    @torch.no_grad()
    def epistemic_outputs(self, hidden: torch.Tensor, pooled: torch.Tensor,
                          logits: torch.Tensor, atomic_numbers: torch.Tensor,
                          batch: torch.Tensor, natoms: torch.Tensor
                          ) -> dict[str, torch.Tensor]:
        """The designated uncertainty outputs, when the epistemic state is fitted.

        ``energy_uncertainty`` (B,): eV of total energy, the standard deviation of the
        predictive distribution (``predictive``): the members' re-tempered mixture
        convolved with a Gaussian of variance ``energy_kernel_std^2`` (eV^2) =
        ``(TAIL_KERNEL_BINS w)^2 + gamma D + alpha^2 U`` in binning units (D the members'
        variance of means, U the structure's epistemic score, the scales fitted on
        validation data by ``calibrate``; U squared where the fit chose ``power`` 2);
        ``ood_score`` (B,) = U and ``atom_ood_score`` (N,): higher = less like the training
        data. Every fitted method's ``ood_<method>`` (B,) and its epistemic stds at alpha
        = 1 (eV, ``EPISTEMIC_POWERS``, for calibration) come along.
        """
        ep = self.epistemic
        if ep.collector is not None:
            ep.collector.add(hidden, atomic_numbers, pooled)
        if not ep.fitted:
            return {}
        et = self.energy_transform.spec
        scores = ep.scores(hidden, pooled, atomic_numbers, batch)
        out: dict[str, torch.Tensor] = {}
        for method, s in scores.items():
            out[f"ood_{method}"] = s["structure"]
            u = s["structure"].clamp_min(0.0)
            for power, key in EPISTEMIC_POWERS.items():
                out[f"{key}_{method}"] = et.spread_to_energy(u ** (power / 2), natoms)
        chosen = scores[ep.method]
        dist = self.predictive(logits, natoms, chosen["structure"])
        out["energy_uncertainty"] = dist.std()
        out["energy_kernel_std"] = dist.kernel_std
        out["ood_score"] = chosen["structure"]
        out["atom_ood_score"] = chosen["atom"]
        return out

    def decode(self, logits: torch.Tensor, natoms: torch.Tensor) -> dict[str, torch.Tensor]:
        """energy (eV, referenced, with grad; a shallow ensemble's: the mean of its members'
        means, so conservative forces stay one backward pass), energy_std (eV, of the
        members' mixture), entropy (nats), edge mass; with members, ``energy_disagreement``
        (eV, the std of their means) and the mutual information ``energy_entropy_epistemic``.
        """
        et = self.energy_transform.spec
        if logits.dim() == 2:
            decoded = self.support.decode_with_uncertainty(logits)
            energy = et.to_energy(decoded["mean"].double(), natoms)
            with torch.no_grad():
                std = et.spread_to_energy(decoded["std"].double(), natoms)
            return {"energy": energy, "energy_std": std, "energy_entropy": decoded["entropy"],
                    "energy_edge_mass": decoded["edge_mass"]}
        probs = self.support.probs(logits)
        centers = self.support.centers_like(probs)
        energy = et.to_energy((probs * centers).sum(-1).mean(1).double(), natoms)
        with torch.no_grad():
            dist = PredictiveDistribution(probs.detach(), centers.double().expand(
                probs.shape[0], -1), 1.0)
            mix = dist.probs
            terms = dist.entropy_terms()
            return {"energy": energy,
                    "energy_std": et.spread_to_energy(moments(mix, dist.centers)[1], natoms),
                    "energy_entropy": terms["total"].to(probs.dtype),
                    "energy_entropy_epistemic": terms["epistemic"].to(probs.dtype),
                    "energy_disagreement": et.spread_to_energy(
                        dist.disagreement_variance().sqrt(), natoms),
                    "energy_edge_mass": (mix[..., 0] + mix[..., -1]).to(probs.dtype)}

    def force_spread(self, logits: torch.Tensor, natoms: torch.Tensor, pos: torch.Tensor
                     ) -> torch.Tensor:
        """(N,) the members' force spread (``member_force_spread``), times the scale
        calibrate fitted on validation forces (``EpistemicState.force_scale``)."""
        return member_force_spread(self.member_energies(logits, natoms), pos) \
            * self.epistemic.force_scale()

    def member_energies(self, logits: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
        """(B, M) each member's decoded energy (eV, referenced; with grad): what
        ``member_force_spread`` differentiates."""
        probs = self.support.probs(logits if logits.dim() == 3 else logits.unsqueeze(1))
        means = (probs * self.support.centers_like(probs)).sum(-1).double()
        return self.energy_transform.spec.to_energy(means, natoms.unsqueeze(-1))

    @torch.no_grad()
    def histogram_in_ev(self, logits: torch.Tensor, natoms: torch.Tensor,
                        offset: torch.Tensor, epistemic_score: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """The predicted distribution on the eV axis of total energy (``offset``: refs).

        ``energy_bin_centers``/``energy_probs`` per structure and the central ``INTERVAL``
        interval, for prediction files and calibration plots. Once the epistemic state is
        fitted (``epistemic_score``: the structures' ``ood_score``), these are the
        predictive distribution's (``predictive``): its re-tempered mixture, its
        recalibrated interval, and ``energy_kernel_std`` (eV), which with the histogram
        rebuilds it exactly, with ``energy_recalibration`` ((2, n), the CDF map's knots) where
        calibrate fitted one. A shallow ensemble adds each member's histogram
        (``energy_member_probs``, (B, M, K)) for joint samples.
        """
        et = self.energy_transform.spec
        offset = offset.double()
        if not self.epistemic.fitted:
            probs = self.support.probs(logits)
            out = {}
            if probs.dim() == 3:
                out["energy_member_probs"] = probs
                probs = probs.mean(1)
            lo, hi = self.support.interval_of_probs(probs, INTERVAL)
            centers = et.to_energy(self.support.centers_like(probs).double().expand_as(probs),
                                   natoms.unsqueeze(-1)) + offset.unsqueeze(-1)
            return {**out,
                    "energy_bin_centers": centers,
                    "energy_probs": probs,
                    "energy_low90": et.to_energy(lo.double(), natoms) + offset,
                    "energy_high90": et.to_energy(hi.double(), natoms) + offset}
        dist = self.predictive(logits, natoms, epistemic_score, offset)
        lo, hi = dist.interval(INTERVAL)
        out = {"energy_bin_centers": dist.centers, "energy_probs": dist.probs,
               "energy_low90": lo, "energy_high90": hi, "energy_kernel_std": dist.kernel_std}
        if dist.num_members > 1:
            out["energy_member_probs"] = dist.members
        if dist.recalibration is not None:  # (2, n) knots, the same for every structure
            out["energy_recalibration"] = torch.as_tensor(np.stack(
                [dist.recalibration.levels, dist.recalibration.values]))
        return out


def member_force_spread(member_energies: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(N,) per-atom force uncertainty of a conservative shallow ensemble (eV/A).

    Each member's forces F_m = -dE_m/dx (one backward pass per member, on the graph the
    model's own forces use), and their spread sqrt(mean_m |F_m - mean_m F_m|^2): the
    committee force deviation MACE and metatrain report, here from one backbone.
    """
    forces = torch.stack([
        torch.autograd.grad(member_energies[:, m].sum(), pos, retain_graph=True)[0]
        for m in range(member_energies.shape[1])])
    return (forces - forces.mean(0)).square().sum(-1).mean(0).sqrt().detach()


def is_symmetric_force_support(low: float, high: float) -> bool:
    """A signed force-magnitude support ``[-F_max, F_max]`` (see ``ForceMagnitudeReadout``)."""
    return math.isclose(low, -high, rel_tol=1e-9, abs_tol=1e-12)


class ForceMagnitudeReadout(nn.Module):
    """Per-atom force = E[m] * unit direction; equivariant when the direction is.

    Invariant features give logits over force-magnitude bins; the line's head
    supplies an equivariant vector for the direction. The magnitude histogram's
    std and entropy are the per-atom force uncertainty. ``prior_mean`` (the
    data's mean |F|, from fit-bins) centres the starting distribution.

    The support is either symmetric, ``[-F_max, F_max]`` (what fit-bins writes), or
    ``[0, F_max]`` (checkpoints before it). On ``[0, F_max]`` the decoded magnitude is
    a probability-weighted mean of centers >= half a bin, and an HL-Gauss target near
    0 is truncated there, so small forces come out biased up (measured: +0.1 eV/A at
    |F| = 0 with the embedded bins) and relaxations cannot reach fmax 0.05. On the
    symmetric support m is a signed amplitude along the direction: the target of
    |F| = 0 is a Gaussian centred on 0, which decodes to 0, and small targets are
    no longer truncated (``benchmarks/small_forces.py`` measures both).
    """

    def __init__(self, in_channels: int, hidden_channels: int, force_support: dict[str, Any],
                 prior_mean: float | None = None, eps: float = 1e-6,
                 direction_softening: float = 0.0) -> None:
        super().__init__()
        if direction_softening < 0:
            raise ValueError(f"direction_softening must be >= 0, got {direction_softening}")
        self.direction_softening = float(direction_softening)
        self.support = HistogramSupport.from_spec(dict(force_support))
        self.signed = is_symmetric_force_support(self.support.low, self.support.high)
        if self.support.low < 0 and not self.signed:
            raise ValueError(
                f"force-magnitude support must be [0, F_max] or symmetric [-F_max, F_max], got "
                f"[{self.support.low}, {self.support.high}]")
        typical = prior_mean or self.support.high / 10
        self.magnitude_block = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.SiLU(),
            nn.Linear(hidden_channels, hidden_channels), nn.SiLU(),
            LocationScaleLogits(hidden_channels, self.support, loc0=typical,
                                scale0=max(typical, self.support.width)),
        )
        self.eps = eps

    def readout(self, node_scalars: torch.Tensor, vector: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """forces (N, 3), forces_std and forces_entropy (N,), logits (N, K).

        ``forces_std`` is the std of the magnitude histogram (eV/A), also on the
        symmetric support, where the decoded amplitude may be (slightly) negative.
        """
        logits = self.magnitude_block(node_scalars)
        vector = vector.reshape(-1, 3)
        norm = vector.norm(dim=-1, keepdim=True)
        decoded = self.support.decode_with_uncertainty(logits)
        std = decoded["std"]
        if self.direction_softening > 0:
            # v / sqrt(|v|^2 + s^2): the force goes to 0 where v does, so the field stays
            # continuous where the direction flips (v / |v| jumps there, and a relaxation
            # stalls at a force of m on either side of the flip); the std scales with it
            shrink = norm / (norm.square() + self.direction_softening ** 2).sqrt()
            unit = vector / norm.clamp_min(self.eps) * shrink
            std = std * shrink.squeeze(-1).to(std.dtype)
        else:
            unit = vector / norm.clamp_min(self.eps)
        return {"forces": decoded["mean"].unsqueeze(-1).to(unit.dtype) * unit,
                "forces_std": std, "forces_entropy": decoded["entropy"], "logits": logits}
