"""Categorical output heads for fairchem-core 2.x ``escn_md`` backbones (eSEN, UMA).

The heads return fairchem's nested ``{task_name: {property: tensor}}`` layout, so
models using them set ``pass_through_head_outputs: True`` as fairchem's own
MLP_EFS_Head configs do.
"""

from __future__ import annotations

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
from fairchem_categorical.targets import EnergyTransform


def _mlp(in_channels: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
        nn.Linear(hidden, out),
    )


def _prior_linear(in_features: int, prior_logits: torch.Tensor) -> nn.Linear:
    """Output layer that starts at ``prior_logits`` for every input (zero weights)."""
    layer = nn.Linear(in_features, prior_logits.numel())
    nn.init.zeros_(layer.weight)
    with torch.no_grad():
        layer.bias.copy_(prior_logits)
    return layer


def _mean_pool(x: torch.Tensor, batch: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(natoms.numel(), x.shape[-1], dtype=x.dtype, device=x.device)
    out.index_add_(0, batch, x)
    return out / natoms.to(x.dtype).unsqueeze(-1)


class _EnergyTransformModule(nn.Module):
    """EnergyTransform as buffers, so a checkpoint carries it."""

    def __init__(self, energy: dict[str, Any]) -> None:
        super().__init__()
        spec = EnergyTransform(**energy)
        self.level = spec.level
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float64))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float64))

    def transform(self) -> EnergyTransform:
        return EnergyTransform(mean=float(self.mean), std=float(self.std), level=self.level)


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
        self.logits_block = _prior_linear(hidden, self.support.prior_logits("normal"))
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
        et = self.energy_transform
        value = self.support.mean(logits).double()
        per_unit = value * et.std + et.mean
        energy = per_unit * natoms if et.level == "per_atom" else per_unit
        scale = et.std * natoms if et.level == "per_atom" else et.std.expand_as(value)
        with torch.no_grad():
            std = self.support.std(logits).double() * scale
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
    data's mean |F|, from fit-bins) sets the exponential starting distribution.
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
        scale = prior_mean or (self.support.high - self.support.low) / 10
        self.magnitude_block = _mlp(backbone.sphere_channels, hidden, self.support.num_bins)
        self.magnitude_block[-1] = _prior_linear(
            hidden, self.support.prior_logits("exponential", scale))
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
