"""Shared builders for the fairchem-core 1.10 adapter tests (helpers, not a conftest).

Tiny EquiformerV2 / eSEN hydra models and PyG batches built with fairchem's own
AtomsToGraphs and collater. Importing this module imports fairchem 1.10.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ase import Atoms
from fairchem.core.datasets import data_list_collater
from fairchem.core.models.base import HydraModel
from fairchem.core.preprocessing import AtomsToGraphs

import fairchem_categorical.fairchem1  # noqa: F401  (registers heads, loss and dataset)
from tests.reference import (  # noqa: F401  (re-exported for the fairchem1 test modules)
    ENERGY,
    FORCE_SUPPORT,
    SUPPORT,
    np_centers,
    np_hl_gauss,
    np_log_softmax,
    np_probs,
    one_torch_thread,
    rotated,
    single_torch_thread,
    small_frames,
)

ENERGY_HEAD = "fairchem_categorical.fairchem1.heads.CategoricalEnergyHead"
FORCE_HEAD = "fairchem_categorical.fairchem1.heads.CategoricalDirectForceHead"
EQV2 = "fairchem.core.models.equiformer_v2.equiformer_v2.EquiformerV2Backbone"
ESEN = "fairchem.core.models.esen.esen.eSEN_Backbone"


def eqv2_backbone(max_neighbors: int = 20, lmax: int = 2) -> dict[str, Any]:
    return {
        "model": EQV2, "use_pbc": True, "otf_graph": True,
        "max_neighbors": max_neighbors, "max_radius": 6.0, "max_num_elements": 90,
        "num_layers": 1, "sphere_channels": 16, "attn_hidden_channels": 16, "num_heads": 2,
        "attn_alpha_channels": 8, "attn_value_channels": 4, "ffn_hidden_channels": 16,
        "lmax_list": [lmax], "mmax_list": [lmax], "edge_channels": 16, "num_distance_basis": 32,
        "alpha_drop": 0.0, "drop_path_rate": 0.0,
    }


def esen_backbone(max_neighbors: int = 20) -> dict[str, Any]:
    return {
        "model": ESEN, "use_pbc": True, "otf_graph": True,
        "max_neighbors": max_neighbors, "cutoff": 6.0, "sphere_channels": 16,
        "hidden_channels": 16, "edge_channels": 16, "lmax": 1, "mmax": 1, "num_layers": 1,
        "num_distance_basis": 32, "regress_forces": True, "direct_forces": False,
    }


def categorical_model(backbone: dict[str, Any], direct: bool, seed: int = 0,
                      support: dict[str, Any] | None = None,
                      energy: dict[str, Any] | None = None) -> HydraModel:
    """eSEN-style (gradient forces) or EquiformerV2-style (direct force head) categorical model,
    with random (not zero) logit layers so the outputs depend on the input."""
    heads: dict[str, Any] = {"energy": {"module": ENERGY_HEAD, "support": support or SUPPORT,
                                        "energy": energy or ENERGY,
                                        "gradient_forces": not direct}}
    if direct:
        heads["forces"] = {"module": FORCE_HEAD, "force_support": FORCE_SUPPORT,
                           "prior_mean": 0.5}
    torch.manual_seed(seed)
    model = HydraModel(backbone=backbone, heads=heads, pass_through_head_outputs=True)
    perturb_outputs(model, seed=seed + 1)
    return model


def run(model: torch.nn.Module, batch, seed: int = 0) -> dict[str, torch.Tensor]:
    """Forward pass with a fixed seed: both backbones draw random edge-frame vectors."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model(batch)


def batch_of(frames: Sequence[Atoms], dtype: torch.dtype = torch.float32):
    a2g = AtomsToGraphs(r_energy=True, r_forces=True, r_distances=False, r_edges=False,
                        r_fixed=True, r_pbc=True)
    data = []
    for i, atoms in enumerate(frames):
        d = a2g.convert(atoms)
        d.sid = i
        data.append(d)
    batch = data_list_collater(data, otf_graph=True)
    batch.pos, batch.cell = batch.pos.to(dtype), batch.cell.to(dtype)
    return batch


def perturb_outputs(model: HydraModel, seed: int = 1, scale: float = 0.05) -> None:
    """Random weights in the zero-initialised logit layers, so outputs depend on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in model.output_heads.values():
            for p in head.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
