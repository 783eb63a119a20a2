"""Shared builders for the fairchem-core 2.x adapter tests (helpers, not a conftest).

Tiny eSEN / UMA-MoE backbones, AtomicData batches built the way fairchem builds them,
and numpy versions of the histogram math so expected numbers never come from the code
under test. Importing this module imports ``fairchem.core`` (slow, once per process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ase import Atoms
from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
from fairchem.core.models.base import HydraModel

import fairchem_categorical.fairchem2  # noqa: F401  (registers the heads, loss and dataset)
from tests.reference import (  # noqa: F401  (re-exported for the fairchem2 test modules)
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

ENERGY_HEAD = "fairchem_categorical.fairchem2.heads.CategoricalEnergyHead"
FORCE_HEAD = "fairchem_categorical.fairchem2.heads.CategoricalDirectForceHead"
ESCN = "fairchem.core.models.uma.escn_md.eSCNMDBackbone"
ESCN_MOE = "fairchem.core.models.uma.escn_moe.eSCNMDMoeBackbone"
DATASET = "oc20"


def backbone_config(direct_forces: bool = False, moe: bool = False, **overrides: Any
                    ) -> dict[str, Any]:
    """A tiny escn_md (or escn_moe) backbone config in fairchem's ``model:`` form."""
    cfg: dict[str, Any] = {
        "model": ESCN_MOE if moe else ESCN,
        "max_num_elements": 100,
        "sphere_channels": 8,
        "lmax": 1,
        "mmax": 1,
        "num_layers": 1,
        "hidden_channels": 8,
        "num_distance_basis": 16,
        "edge_channels": 8,
        "cutoff": 6.0,
        "max_neighbors": 20,
        "otf_graph": True,
        "use_dataset_embedding": False,
        "regress_forces": True,
        "direct_forces": direct_forces,
        "regress_stress": False,
        "always_use_pbc": True,
    }
    if moe:
        # fairchem's own MoE test settings (UMA's mixture-of-linear-experts backbone)
        cfg.update(
            num_experts=2,
            moe_dropout=0.0,
            moe_layer_type="pytorch",
            use_global_embedding=False,
            use_composition_embedding=True,
            dataset_list=[DATASET],
        )
    cfg.update(overrides)
    return cfg


def build_model(
    direct_forces: bool = False,
    *,
    moe: bool = False,
    support: dict[str, Any] | None = None,
    energy: dict[str, Any] | None = None,
    force_support: dict[str, Any] | None = None,
    seed: int = 0,
    head_weight_std: float | None = 2.0,
    **backbone_overrides: Any,
) -> HydraModel:
    """HydraModel wired like configs/fairchem2/*categorical*.yaml (pass-through outputs).

    The heads' output layers start at a fixed prior histogram (zero weights), so a fresh
    model's energy does not depend on the geometry: no forces, no gradient into the
    backbone. ``head_weight_std`` redraws the weights of every linear map inside those
    output layers from N(0, std^2), as after some training; ``None`` keeps them as built.
    """
    heads: dict[str, dict[str, Any]] = {
        "energy": {
            "module": ENERGY_HEAD,
            "support": dict(support or SUPPORT),
            "energy": dict(energy or ENERGY),
        }
    }
    if direct_forces:
        heads["forces"] = {"module": FORCE_HEAD,
                           "force_support": dict(force_support or FORCE_SUPPORT)}
    with torch.random.fork_rng(devices=[]):  # leave the session's global RNG alone
        torch.manual_seed(seed)
        model = HydraModel(
            backbone=backbone_config(direct_forces, moe, **backbone_overrides),
            heads=heads,
            pass_through_head_outputs=True,
        )
    if head_weight_std is not None:
        gen = torch.Generator().manual_seed(1000 + seed)
        outputs = [model.output_heads["energy"].logits_block]
        if direct_forces:
            outputs.append(model.output_heads["forces"].magnitude_block[-1])
        with torch.no_grad():
            for output in outputs:
                for layer in output.modules():
                    if isinstance(layer, torch.nn.Linear):
                        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen)
                                           * head_weight_std)
    return model


def to_data(atoms: Atoms, dtype: torch.dtype = torch.float32) -> AtomicData:
    data = AtomicData.from_ase(atoms, r_energy=True, r_forces=True, task_name=DATASET,
                               target_dtype=dtype)
    data.dataset = DATASET
    return data


def to_batch(frames: Sequence[Atoms], dtype: torch.dtype = torch.float32) -> AtomicData:
    return atomicdata_list_to_batch([to_data(a, dtype) for a in frames])


def run(model: torch.nn.Module, batch: AtomicData, seed: int = 0) -> dict[str, Any]:
    """Forward pass with the RNG seeded: escn_md draws a random roll angle for every
    edge frame on each call, so repeated calls only agree bitwise with the same seed."""
    with torch.random.fork_rng(devices=[]):  # leave the session's global RNG alone
        torch.manual_seed(seed)
        return model(batch)


# A config's model as fairchem -c builds it, at the size of backbone_config() above.
TINY_OVERRIDES = [
    "train_data=unused", "val_data=unused",  # composed, never loaded
    "backbone.sphere_channels=8", "backbone.hidden_channels=8", "backbone.edge_channels=8",
    "backbone.lmax=1", "backbone.mmax=1", "backbone.num_layers=1",
    "backbone.num_distance_basis=16",
]


def config_checkpoint(config: str, path: Any, seed: int = 0, head_weight_std: float = 0.5,
                      overrides: Sequence[str] = ()) -> Any:
    """An inference checkpoint of a shipped configs/fairchem2 config (tiny backbone),
    with random output layers so energies depend on the geometry."""
    from tests.conftest import CONFIGS
    from tests.fairchem2.checkpoints import compose, write_inference_checkpoint

    composed = compose(CONFIGS / config, [*TINY_OVERRIDES, *overrides], seed=seed)
    gen = torch.Generator().manual_seed(2000 + seed)
    with torch.no_grad():
        for p in composed.model.output_heads.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * head_weight_std)
    return write_inference_checkpoint(composed, path)
