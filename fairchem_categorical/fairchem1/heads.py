"""Categorical heads for fairchem-core 1.10 hydra models (EquiformerV2 and eSEN backbones).

Both backbones hand heads ``emb["node_embedding"]``: a (N, (lmax+1)^2, C)
tensor (eSEN) or an ``SO3_Embedding`` holding one (EquiformerV2). The heads
read its l=0 block (invariant) and, for direct forces, its l=1 block
(equivariant), and leave everything else to the core readouts.

Outputs are flat (``energy``, ``energy_categorical``, ``forces``, ...), so
hydra models using them set ``pass_through_head_outputs: True`` and the OCP
trainer's ``outputs:`` section names them directly. Energies are total
energies in eV (element references included), so no fairchem normalizer or
element references apply to them.
"""

from __future__ import annotations

from typing import Any

import torch
from fairchem.core.common.registry import registry
from fairchem.core.common.utils import conditional_grad
from fairchem.core.models.base import HeadInterface
from torch import nn

from fairchem_categorical.readout import CategoricalEnergyReadout, ForceMagnitudeReadout


def node_coefficients(emb: dict[str, Any]) -> torch.Tensor:
    """(N, (lmax+1)^2, C) spherical coefficients from either backbone's embedding."""
    node = emb["node_embedding"]
    return getattr(node, "embedding", node)


def _hidden(backbone: nn.Module, hidden_channels: int | None) -> int:
    return hidden_channels or getattr(backbone, "hidden_channels", None) or \
        backbone.sphere_channels


@registry.register_model("categorical_energy_head")
class CategoricalEnergyHead(CategoricalEnergyReadout, HeadInterface):
    """Logits over binned (per-atom referenced, normalised) energy; decoded total energy.

    ``gradient_forces: True`` (eSEN backbones) also returns forces = -dE/dx of
    the decoded energy, as fairchem's ``esen_mlp_efs_head`` does for its scalar.
    """

    def __init__(
        self,
        backbone: nn.Module,
        support: dict[str, Any],
        energy: dict[str, Any],
        hidden_channels: int | None = None,
        gradient_forces: bool = False,
        energy_key: str = "energy",
        logits_key: str = "energy_categorical",
        forces_key: str = "forces",
        num_members: int = 1,
        member_forces: bool = False,
    ) -> None:
        super().__init__(backbone.sphere_channels, _hidden(backbone, hidden_channels),
                         support, energy, num_members=num_members)
        self.energy_key, self.logits_key, self.forces_key = energy_key, logits_key, forces_key
        self.gradient_forces = gradient_forces
        self.member_forces = bool(member_forces)  # see the 2.x head
        self.regress_forces = gradient_forces  # read by fairchem's conditional_grad
        if gradient_forces:
            if not hasattr(backbone, "direct_forces") or not hasattr(backbone, "regress_forces") \
                    or type(backbone).__name__ != "eSEN_Backbone":
                raise ValueError(
                    f"gradient_forces needs a backbone that tracks gradients w.r.t. positions "
                    f"(esen_backbone); {type(backbone).__name__} predicts forces directly: use "
                    "categorical_direct_force_head"
                )
            if getattr(backbone, "regress_stress", False):
                raise ValueError("categorical_energy_head does not compute stress; set the "
                                 "backbone's regress_stress: False")
            # the backbone then sets pos.requires_grad before building the graph
            backbone.regress_forces = True
            backbone.direct_forces = False

    @conditional_grad(torch.enable_grad())
    def forward(self, data: Any, emb: dict[str, Any]) -> dict[str, torch.Tensor]:
        scalars = node_coefficients(emb)[:, 0, :]
        natoms = data["natoms"]
        logits, out = self.energy_outputs(scalars, data["batch"], natoms,
                                          data["atomic_numbers"])
        refs = self.energy_transform.spec.batch_references(
            data["atomic_numbers"], data["batch"], natoms.numel())
        energy = (out.pop("energy") + refs).to(data["pos"].dtype)
        out = {self.energy_key: energy, self.logits_key: logits, **out}
        if self.gradient_forces:
            grad = torch.autograd.grad(energy.sum(), data["pos"], create_graph=self.training,
                                       retain_graph=self.member_forces or self.training)[0]
            out[self.forces_key] = -grad
            if self.member_forces and self.num_members > 1 and not self.training:
                out["forces_std"] = self.force_spread(logits, natoms, data["pos"])
        return out


@registry.register_model("categorical_direct_force_head")
class CategoricalDirectForceHead(ForceMagnitudeReadout, HeadInterface):
    """Force = E[|F|] from a magnitude histogram x unit vector from the l=1 features.

    The direction is a channel mix of the backbone's l=1 coefficients (no bias,
    no l=0 input), so it rotates with the structure; the magnitude logits come
    from the invariant l=0 block.
    """

    def __init__(
        self,
        backbone: nn.Module,
        force_support: dict[str, Any],
        hidden_channels: int | None = None,
        prior_mean: float | None = None,
        eps: float = 1e-6,
        direction_softening: float = 0.0,
        forces_key: str = "forces",
        logits_key: str = "force_magnitude",
    ) -> None:
        super().__init__(backbone.sphere_channels, _hidden(backbone, hidden_channels),
                         force_support, prior_mean=prior_mean, eps=eps,
                         direction_softening=direction_softening)
        self.direction = nn.Linear(backbone.sphere_channels, 1, bias=False)
        self.forces_key, self.logits_key = forces_key, logits_key

    def forward(self, data: Any, emb: dict[str, Any]) -> dict[str, torch.Tensor]:
        node = node_coefficients(emb)
        vector = self.direction(node[:, 1:4, :]).squeeze(-1)
        out = self.readout(node[:, 0, :], vector)
        return {self.forces_key: out["forces"], self.logits_key: out["logits"],
                "forces_std": out["forces_std"], "forces_entropy": out["forces_entropy"]}
