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

from fairchem_categorical.readout import CategoricalEnergyReadout, ForceMagnitudeReadout


@registry.register_model("categorical_energy_head")
class CategoricalEnergyHead(CategoricalEnergyReadout, HeadInterface):
    """Mean-pooled node embeddings -> logits over binned (per-atom) energy.

    The decoded (expected) energy is returned under the energy task in eV of
    referenced total energy (pair it with an identity normalizer and the element
    references); forces and stress, when the backbone's regress config asks for
    gradients, are derivatives of that decoded energy. A shallow ensemble
    (``num_members`` > 1) with ``member_forces`` also returns, in eval mode, each atom's
    ``forces_std``: the spread of its members' forces (one extra backward pass per
    member, so off unless asked for; the calculator asks).
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
        num_members: int = 1,
        member_forces: bool = False,
    ) -> None:
        super().__init__(backbone.sphere_channels, hidden_channels or backbone.hidden_channels,
                         support, energy, num_members=num_members)
        self.energy_task, self.logits_task = energy_task, logits_task
        self.forces_task, self.stress_task = forces_task, stress_task
        self.regress_config = backbone.regress_config
        self.member_forces = bool(member_forces)
        backbone.energy_block = None
        backbone.force_block = None

    def logits(self, data: Any, emb: dict[str, torch.Tensor]) -> torch.Tensor:
        scalars = get_l_component_range(emb["node_embedding"], l_min=0, l_max=0).squeeze(1)
        return self.system_logits(scalars, data["batch"], data["natoms"])

    @conditional_grad(torch.enable_grad())
    def forward(self, data: Any, emb: dict[str, torch.Tensor]) -> dict[str, dict]:
        scalars = get_l_component_range(emb["node_embedding"], l_min=0, l_max=0).squeeze(1)
        logits, decoded = self.energy_outputs(scalars, data["batch"], data["natoms"],
                                              data["atomic_numbers"])
        energy = decoded["energy"]
        out: dict[str, dict] = {
            self.energy_task: decoded,
            self.logits_task: {"logits": logits},
        }
        rc = self.regress_config
        spread = None
        if (self.member_forces and self.num_members > 1 and not self.training
                and rc.forces and not rc.direct_forces):
            # before the model's own forces: their backward pass frees the graph
            spread = self.force_spread(logits, data["natoms"], data["pos"])
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
        if spread is not None:
            out[self.forces_task]["forces_std"] = spread
        return out


@registry.register_model("categorical_direct_force_head")
class CategoricalDirectForceHead(ForceMagnitudeReadout, HeadInterface):
    """Per-atom force = E[|F|] * unit direction; rotation-equivariant by construction.

    Invariant l=0 features give logits over force-magnitude bins; an SO(3)
    linear map of the l=0,1 features gives the direction.
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
        direction_softening: float = 0.0,
    ) -> None:
        super().__init__(backbone.sphere_channels, hidden_channels or backbone.hidden_channels,
                         force_support, prior_mean=prior_mean, eps=eps,
                         direction_softening=direction_softening)
        self.direction = SO3_Linear(backbone.sphere_channels, 1, lmax=1)
        self.forces_task, self.logits_task = forces_task, logits_task

    def forward(self, data: Any, emb: dict[str, torch.Tensor]) -> dict[str, dict]:
        node = emb["node_embedding"]
        scalars = get_l_component_range(node, l_min=0, l_max=0).squeeze(1)
        vec = get_l_component_range(self.direction(get_l_component_range(node, 0, 1)), 1, 1)
        out = self.readout(scalars, vec)
        return {self.logits_task: {"logits": out.pop("logits")}, self.forces_task: out}
