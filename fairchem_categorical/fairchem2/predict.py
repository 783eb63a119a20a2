"""Run a fairchem-core 2.x checkpoint (categorical or scalar) over ASE data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
import torch
from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
from fairchem.core.units.mlip_unit.utils import load_inference_model

from fairchem_categorical.fairchem2.heads import CategoricalDirectForceHead, CategoricalEnergyHead
from fairchem_categorical.predictions import (
    StructurePrediction,
    predict_in_chunks,
    seeded,
    split_batch,
)


def load_model(checkpoint: str | Path, device: str = "cpu"):
    """Model and its tasks from an inference checkpoint, ready for eval."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    model, ckpt = load_inference_model(str(checkpoint))
    tasks = [hydra.utils.instantiate(t) for t in ckpt.tasks_config]
    model.to(device).eval()
    for task in tasks:
        task.normalizer.to(device)
        if task.element_references is not None:
            task.element_references.to(device)
    return model, tasks


def _find_head(model: torch.nn.Module, cls: type) -> torch.nn.Module | None:
    return next((h for h in model.output_heads.values() if isinstance(h, cls)), None)


def _task(tasks, prop: str):
    return next((t for t in tasks if t.property == prop and not t.inference_only), None)


def _to_data(atoms, dataset_name: str) -> AtomicData:
    calc = atoms.calc
    has_energy = calc is not None and "energy" in calc.results
    has_forces = calc is not None and "forces" in calc.results
    data = AtomicData.from_ase(atoms, r_energy=has_energy, r_forces=has_forces,
                               task_name=dataset_name)
    data.dataset = dataset_name
    return data


def predict_atoms(
    checkpoint: str | Path,
    frames: Sequence,
    batch_size: int = 8,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
) -> list[StructurePrediction]:
    """Energies, forces and (for categorical heads) uncertainties for each frame."""
    model, tasks = load_model(checkpoint, device)
    energy_task, forces_task = _task(tasks, "energy"), _task(tasks, "forces")
    if energy_task is None:
        raise ValueError(f"{checkpoint} has no energy task; cannot predict energies")
    dataset_name = energy_task.datasets[0]
    energy_head = _find_head(model, CategoricalEnergyHead)
    force_head = _find_head(model, CategoricalDirectForceHead)

    def chunk_predictions(chunk: Sequence, start: int) -> list[StructurePrediction]:
        batch = atomicdata_list_to_batch([_to_data(a, dataset_name) for a in chunk]).to(device)
        with seeded(seed + start, device):
            out = model(batch)
        return _collect(out, batch, chunk, start, energy_task, forces_task, energy_head,
                        force_head)

    return predict_in_chunks(frames, batch_size, chunk_predictions, progress)


def _collect(out, batch, chunk, start, energy_task, forces_task, energy_head, force_head):
    with torch.no_grad():
        e_out = out[energy_task.name]
        energy = energy_task.normalizer.denorm(e_out["energy"].detach().reshape(-1))
        refs = torch.zeros_like(energy)
        if energy_task.element_references is not None:
            refs = energy_task.element_references.undo_refs(batch, refs)
        energy = energy + refs
        outputs: dict[str, torch.Tensor] = {}
        if energy_head is not None:
            logits = out[energy_head.logits_task]["logits"].detach()
            outputs.update({k: e_out[k] for k in ("energy_std", "energy_entropy",
                                                  "energy_edge_mass")})
            outputs.update(energy_head.histogram_in_ev(logits, batch.natoms, refs))
        forces = None
        if forces_task is not None and forces_task.name in out:
            forces = forces_task.normalizer.denorm(out[forces_task.name]["forces"].detach())
        if force_head is not None:
            outputs.update({k: out[force_head.forces_task][k].detach()
                            for k in ("forces_std", "forces_entropy")})
    return split_batch(
        chunk, start, batch.natoms.cpu().numpy(), energy.cpu().numpy(),
        None if forces is None else forces.cpu().numpy(),
        {k: v.cpu().numpy() for k, v in outputs.items()},
        fixed=batch.fixed.cpu().numpy() if "fixed" in batch else None)
