"""Categorical output heads for fairchem-core 2.x ``escn_md`` backbones (eSEN, UMA).

The heads return fairchem's nested ``{task_name: {property: tensor}}`` layout, so
models using them set ``pass_through_head_outputs: True`` as fairchem's own
MLP_EFS_Head configs do.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from fairchem.core.common.registry import registry
from fairchem.core.common.utils import conditional_grad
from fairchem.core.models.base import HeadInterface
from fairchem.core.models.uma.nn.so3_layers import SO3_Linear
from fairchem.core.models.uma.outputs import (
    compute_forces,
    compute_forces_and_stress,
    get_l_component_range,
)
from torch import nn

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.logits import LocationScaleLogits
from fairchem_categorical.targets import EnergyTransform


def _mean_pool(x: torch.Tensor, batch: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(natoms.numel(), x.shape[-1], dtype=x.dtype, device=x.device)
    out.index_add_(0, batch, x)
    return out / natoms.to(x.dtype).unsqueeze(-1)


class _EnergyTransformModule(nn.Module):
    """The head's EnergyTransform (mean, std, level), saved in and checked against checkpoints."""

    def __init__(self, energy: dict[str, Any]) -> None:
        super().__init__()
        self.spec = EnergyTransform(**energy)

    def transform(self) -> EnergyTransform:
        return self.spec

    def get_extra_state(self) -> dict[str, Any]:
        return {"mean": self.spec.mean, "std": self.spec.std, "level": self.spec.level}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        mine = self.get_extra_state()
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


@registry.register_model("categorical_energy_head")
class CategoricalEnergyHead(nn.Module, HeadInterface):
    """Mean-pooled node embeddings -> logits over binned (per-atom) energy.

    The decoded (expected) energy is returned under the energy task in eV of
    referenced total energy (pair it with an identity normalizer and the element
    references); forces and stress, when the backbone's regress config asks for
    gradients, are derivatives of that decoded energy.
    """

    def __init__(
        self,
        backbone: nn.Module,
        support: dict[str, Any],
        energy: dict[str, Any],
        hidden_channels: int | None = None,
        energy_task: str = "energy",
        logits_task: str = "energy_categorical",
        forces_task: str = "forces",
        stress_task: str = "stress",
    ) -> None:
        super().__init__()
        self.support = HistogramSupport.from_spec(dict(support))
        self.energy_transform = _EnergyTransformModule(dict(energy))
        self.energy_task, self.logits_task = energy_task, logits_task
        self.forces_task, self.stress_task = forces_task, stress_task
        hidden = hidden_channels or backbone.hidden_channels
        self.node_block = nn.Sequential(
            nn.Linear(backbone.sphere_channels, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
        )
        # binning-space targets are standardised: start at N(0, 1), the data's spread;
        # the location regresses eV (per atom), then is standardised by 1/std.
        self.logits_block = LocationScaleLogits(
            hidden, self.support, loc0=0.0, scale0=1.0,
            loc_gain=1.0 / self.energy_transform.spec.std)
        self.regress_config = backbone.regress_config
        backbone.energy_block = None
        backbone.force_block = None

    def logits(self, data: Any, emb: dict[str, torch.Tensor]) -> torch.Tensor:
        scalars = get_l_component_range(emb["node_embedding"], l_min=0, l_max=0).squeeze(1)
        pooled = _mean_pool(self.node_block(scalars), data["batch"], data["natoms"])
        return self.logits_block(pooled)

    @conditional_grad(torch.enable_grad())
    def forward(self, data: Any, emb: dict[str, torch.Tensor]) -> dict[str, dict]:
        logits = self.logits(data, emb)
        natoms = data["natoms"]
        et = self.energy_transform.spec
        energy = et.to_energy(self.support.mean(logits).double(), natoms)
        with torch.no_grad():
            std = et.spread_to_energy(self.support.std(logits).double(), natoms)
            entropy = self.support.entropy(logits)
            edge_mass = self.support.edge_mass(logits)
        out: dict[str, dict] = {
            self.energy_task: {
                "energy": energy,
                "energy_std": std,
                "energy_entropy": entropy,
                "energy_edge_mass": edge_mass,
            },
            self.logits_task: {"logits": logits},
        }
        rc = self.regress_config
        if rc.stress and not rc.direct_stress:
            forces, stress = compute_forces_and_stress(
                energy, data["pos"], data["cell"], batch=data["batch"],
                training=self.training,
            )
            out[self.forces_task] = {"forces": forces}
            out[self.stress_task] = {"stress": stress}
        elif rc.forces and not rc.direct_forces:
            out[self.forces_task] = {"forces": compute_forces(energy, data["pos"],
                                                              training=self.training)}
        return out


@registry.register_model("categorical_direct_force_head")
class CategoricalDirectForceHead(nn.Module, HeadInterface):
    """Per-atom force = E[|F|] * unit direction; rotation-equivariant by construction.

    Invariant l=0 features give logits over force-magnitude bins; an SO(3)
    linear map of the l=0,1 features gives the direction. The magnitude
    histogram's entropy is the per-atom force uncertainty. ``prior_mean`` (the
    data's mean |F|, from fit-bins) centres the starting distribution.
    """

    def __init__(
        self,
        backbone: nn.Module,
        force_support: dict[str, Any],
        hidden_channels: int | None = None,
        forces_task: str = "forces",
        logits_task: str = "force_magnitude",
        eps: float = 1e-6,
        prior_mean: float | None = None,
    ) -> None:
        super().__init__()
        self.support = HistogramSupport.from_spec(dict(force_support))
        if self.support.low < 0:
            raise ValueError(f"force-magnitude support must start at >= 0, got {self.support.low}")
        hidden = hidden_channels or backbone.hidden_channels
        typical = prior_mean or (self.support.high - self.support.low) / 10
        self.magnitude_block = nn.Sequential(
            nn.Linear(backbone.sphere_channels, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            LocationScaleLogits(hidden, self.support, loc0=typical,
                                scale0=max(typical, self.support.width)),
        )
        self.direction = SO3_Linear(backbone.sphere_channels, 1, lmax=1)
        self.forces_task, self.logits_task = forces_task, logits_task
        self.eps = eps

    def forward(self, data: Any, emb: dict[str, torch.Tensor]) -> dict[str, dict]:
        node = emb["node_embedding"]
        scalars = get_l_component_range(node, l_min=0, l_max=0).squeeze(1)
        logits = self.magnitude_block(scalars)
        vec = get_l_component_range(self.direction(get_l_component_range(node, 0, 1)), 1, 1)
        vec = vec.reshape(-1, 3)
        unit = vec / vec.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        magnitude = self.support.mean(logits)
        with torch.no_grad():
            mag_std = self.support.std(logits)
            mag_entropy = self.support.entropy(logits)
        return {
            self.forces_task: {
                "forces": magnitude.unsqueeze(-1).to(unit.dtype) * unit,
                "forces_std": mag_std,
                "forces_entropy": mag_entropy,
            },
            self.logits_task: {"logits": logits},
        }
