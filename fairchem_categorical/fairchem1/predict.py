"""Run a fairchem-core 1.10 checkpoint (categorical or scalar) over ASE data.

The model is rebuilt from the checkpoint's config the way fairchem's own
``load_model_and_weights_from_checkpoint`` does; its EMA weights are used when
the checkpoint has them (as the OCP trainer's ``predict`` does), and scalar
models get their saved normalizers and element references back.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from fairchem.core.common.registry import registry
from fairchem.core.common.utils import load_state_dict, match_state_dict, setup_imports
from fairchem.core.datasets import data_list_collater
from fairchem.core.modules.exponential_moving_average import ExponentialMovingAverage
from fairchem.core.modules.normalization.element_references import create_element_references
from fairchem.core.modules.normalization.normalizer import create_normalizer
from fairchem.core.preprocessing import AtomsToGraphs

from fairchem_categorical.fairchem1.heads import CategoricalDirectForceHead, CategoricalEnergyHead
from fairchem_categorical.predictions import (
    StructurePrediction,
    UnseenElements,
    reported,
    seeded,
    stream_frames,
)
from fairchem_categorical.readout import epistemic_items

# the OCP trainer's names for normalizers of checkpoints older than fairchem 1.0
_OLD_KEYS = {"target": "energy", "grad_target": "forces"}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A fairchem 1.x trainer checkpoint, on the CPU; a clear error for a missing or foreign
    file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a fairchem 1.x trainer checkpoint (no config/state_dict)")
    return ckpt


def model_config(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's model config, with a fine-tuned model's backbone config filled in.

    A fine-tuning run names its starting checkpoint instead of a backbone; the
    weights are all in this checkpoint, only the backbone's hyperparameters are
    read from the starting one (as fairchem's convert_hydra_to_release does).
    """
    cfg = copy.deepcopy(ckpt["config"]["model"])
    seen = {path.resolve()}
    while "finetune_config" in cfg:
        start = Path(cfg.pop("finetune_config")["starting_checkpoint"])
        if cfg.get("backbone") is not None:
            break
        if not start.is_file():
            raise FileNotFoundError(
                f"{path} was fine-tuned from {start}, which holds the backbone's config and is "
                "not on this machine; copy it there (or convert the checkpoint with fairchem's "
                "scripts/convert_hydra_to_release.py)"
            )
        if start.resolve() in seen:
            raise ValueError(f"fine-tuning checkpoints refer to each other in a loop: {start}")
        seen.add(start.resolve())
        parent = load_checkpoint(start)["config"]["model"]
        cfg["backbone"] = copy.deepcopy(parent.get("backbone"))
        if cfg["backbone"] is None and "finetune_config" in parent:
            cfg["finetune_config"] = parent["finetune_config"]
    return cfg


def apply_ema(model: torch.nn.Module, ckpt: dict[str, Any]) -> None:
    """Copy a checkpoint's EMA weights (if it has them) into ``model``."""
    if ckpt.get("ema"):
        decay = ckpt["config"].get("optim", {}).get("ema_decay") or 0.999
        ema = ExponentialMovingAverage(model.parameters(), decay)
        ema.load_state_dict(ckpt["ema"])
        ema.copy_to()


class LoadedModel:
    """A 1.10 model in eval mode, with the trainer's denormalisation of its outputs."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        path = Path(checkpoint)
        ckpt = load_checkpoint(path)
        setup_imports()
        cfg = model_config(ckpt, path)
        name = cfg.pop("name")
        self.model = registry.get_model_class(name)(**cfg)
        load_state_dict(self.model, match_state_dict(self.model.state_dict(), ckpt["state_dict"]),
                        strict=True)
        apply_ema(self.model, ckpt)
        self._attach(
            self.model,
            {_OLD_KEYS.get(k, k): create_normalizer(state_dict=v).to(device)
             for k, v in (ckpt.get("normalizers") or {}).items()},
            {k: create_element_references(state_dict=v).to(device)
             for k, v in (ckpt.get("elementrefs") or {}).items()},
            device)

    @classmethod
    def from_trainer(cls, trainer: Any, checkpoint: str | Path) -> LoadedModel:
        """The model of an OCP trainer that loaded ``checkpoint`` (``OCPCalculator``'s) and
        its normalizers, with the checkpoint's EMA weights copied in: an inference-only
        trainer drops them, ``predict`` (like the training trainer's own) uses them."""
        apply_ema(trainer._unwrapped_model, load_checkpoint(Path(checkpoint)))
        loaded = cls.__new__(cls)
        loaded._attach(trainer._unwrapped_model, dict(trainer.normalizers),
                       dict(trainer.elementrefs), str(trainer.device))
        return loaded

    def _attach(self, model: torch.nn.Module, normalizers: dict, elementrefs: dict,
                device: str) -> None:
        self.model = model.to(device).eval()
        self.normalizers, self.elementrefs = normalizers, elementrefs
        heads = getattr(self.model, "output_heads", {})
        self.energy_head = next((h for h in heads.values()
                                 if isinstance(h, CategoricalEnergyHead)), None)
        self.force_head = next((h for h in heads.values()
                                if isinstance(h, CategoricalDirectForceHead)), None)
        self.device = device

    def denorm(self, key: str, pred: torch.Tensor, batch) -> torch.Tensor:
        """What OCPTrainer._denorm_preds does: undo the normalizer, add element references."""
        if key in self.normalizers:
            pred = self.normalizers[key](pred)
        if key in self.elementrefs:
            pred = self.elementrefs[key](pred, batch)
        return pred

    def __call__(self, batch, seed: int) -> dict[str, torch.Tensor]:
        with seeded(seed, self.device):  # both backbones draw random edge-frame vectors
            out = self.model(batch.to(self.device))
        flat: dict[str, torch.Tensor] = {}
        for key, value in out.items():  # hydra models without pass_through nest per head
            flat.update(value if isinstance(value, dict) else {key: value})
        return {k: v.detach() for k, v in flat.items()}


def predict_batch(loaded: LoadedModel, batch, seed: int
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(energy (B,) and forces (N, 3) in eV, eV/A; the uncertainty outputs) of one batch.

    The same contract as the 2.x adapter's ``predict_batch``: per-structure
    ``energy_std``/``energy_entropy``/``energy_edge_mass`` and the eV histogram with its 90%
    interval for a categorical energy head (and, once fitted, its ``energy_uncertainty``/
    ``ood_score``/``atom_ood_score``), per-atom ``forces_std``/``forces_entropy`` for
    a direct-force head; empty for a scalar checkpoint.
    """
    raw = loaded(batch, seed)
    # shaped as OCPTrainer._forward shapes them: (systems, 1) and (atoms, 3)
    out = {"energy": loaded.denorm("energy", raw["energy"].reshape(-1, 1), batch)
           .reshape(-1).double()}
    if "forces" in raw:
        out["forces"] = loaded.denorm("forces", raw["forces"].reshape(-1, 3), batch)
    extras: dict[str, torch.Tensor] = {}
    head = loaded.energy_head
    if head is not None:
        refs = head.energy_transform.spec.batch_references(
            batch.atomic_numbers, batch.batch, batch.natoms.numel())
        extras.update({k: raw[k] for k in ("energy_std", "energy_entropy", "energy_edge_mass",
                                           "energy_disagreement") if k in raw})
        extras.update(epistemic_items(raw))
        extras.update(head.histogram_in_ev(raw[head.logits_key], batch.natoms, refs,
                                           raw.get("ood_score")))
    if loaded.force_head is not None:
        extras.update({k: raw[k] for k in ("forces_std", "forces_entropy")})
    elif "forces_std" in raw:  # a shallow ensemble's member forces (member_forces)
        extras["forces_std"] = raw["forces_std"]
    return out, extras


def stream_loaded(loaded: LoadedModel, frames: Iterable, batch_size: int = 8,
                  progress: Callable[[str], None] | None = None, seed: int = 0,
                  unseen: UnseenElements | None = None) -> Iterator[list[StructurePrediction]]:
    """``predict_stream`` with a model already loaded: each batch's records as they come."""
    a2g = AtomsToGraphs(r_energy=False, r_forces=False, r_distances=False, r_edges=False,
                        r_fixed=True, r_pbc=True)
    return stream_frames(
        frames, batch_size,
        lambda chunk: data_list_collater([a2g.convert(a) for a in chunk], otf_graph=True),
        lambda batch, start: predict_batch(loaded, batch, seed + start), progress, unseen)


def predict_loaded(loaded: LoadedModel, frames: Iterable, batch_size: int = 8,
                   progress: Callable[[str], None] | None = None, seed: int = 0
                   ) -> list[StructurePrediction]:
    """``predict_atoms`` with a model already loaded."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return [p for chunk in stream_loaded(loaded, frames, batch_size, progress, seed)
            for p in chunk]


def predict_stream(
    checkpoint: str | Path,
    frames: Iterable,
    batch_size: int = 8,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
    member_forces: bool = False,
) -> Iterator[list[StructurePrediction]]:
    """``predict_atoms`` one batch at a time: ``frames`` may be a stream (``iter_frames``),
    drawn ``batch_size`` at a time, so memory holds one batch of structures whatever the
    dataset's size. The model loads (and a bad checkpoint fails) at the call; structures
    holding elements the bins never saw are marked per batch and reported after the
    last. ``member_forces``: as on the 2.x line."""
    loaded = LoadedModel(checkpoint, device)
    head = loaded.energy_head
    if head is not None and member_forces:
        head.member_forces = True
    unseen = UnseenElements(None if head is None else head.energy_transform.spec)
    return reported(stream_loaded(loaded, frames, batch_size, progress, seed, unseen),
                    unseen, progress)


def predict_atoms(
    checkpoint: str | Path,
    frames: Sequence,
    batch_size: int = 8,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
    member_forces: bool = False,
) -> list[StructurePrediction]:
    """Energies, forces and (for categorical heads) uncertainties for each frame."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return [p for chunk in predict_stream(checkpoint, frames, batch_size, device, progress,
                                          seed, member_forces) for p in chunk]
