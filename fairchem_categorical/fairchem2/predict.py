"""Run a fairchem-core 2.x checkpoint (categorical or scalar) over ASE data."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
from fairchem.core.units.mlip_unit.utils import load_inference_model

from fairchem_categorical.fairchem2.heads import CategoricalDirectForceHead, CategoricalEnergyHead
from fairchem_categorical.predictions import StructurePrediction

INTERVAL = 0.9


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
    if not len(frames):
        raise ValueError("no structures to predict")
    model, tasks = load_model(checkpoint, device)
    energy_task, forces_task = _task(tasks, "energy"), _task(tasks, "forces")
    if energy_task is None:
        raise ValueError(f"{checkpoint} has no energy task; cannot predict energies")
    dataset_name = energy_task.datasets[0]
    energy_head = _find_head(model, CategoricalEnergyHead)
    force_head = _find_head(model, CategoricalDirectForceHead)
    preds: list[StructurePrediction] = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        batch = atomicdata_list_to_batch([_to_data(a, dataset_name) for a in chunk]).to(device)
        # eSCN draws a random rotation about each edge per forward pass; a fixed seed
        # (on a forked RNG, the caller's stream untouched) makes predictions repeatable.
        with torch.random.fork_rng(devices=[] if device == "cpu" else None):
            torch.manual_seed(seed + start)
            out = model(batch)
        preds.extend(_collect(out, batch, chunk, start, energy_task, forces_task, energy_head,
                              force_head))
        if progress:
            progress(f"predicted {min(start + batch_size, len(frames))}/{len(frames)}")
    return preds


def _collect(out, batch, chunk, start, energy_task, forces_task, energy_head, force_head):
    with torch.no_grad():
        e_out = out[energy_task.name]
        energy = energy_task.normalizer.denorm(e_out["energy"].detach().reshape(-1))
        refs = torch.zeros_like(energy)
        if energy_task.element_references is not None:
            refs = energy_task.element_references.undo_refs(batch, refs)
        energy = energy + refs
        natoms = batch.natoms
        fields: dict[str, torch.Tensor] = {}
        histograms = None
        if energy_head is not None:
            logits = out[energy_head.logits_task]["logits"].detach()
            lo, hi = energy_head.support.interval(logits, INTERVAL)
            et = energy_head.energy_transform.transform()
            offset = refs.double()
            centers = et.to_energy(energy_head.support.centers.double().expand_as(logits),
                                   natoms.unsqueeze(-1)) + offset.unsqueeze(-1)
            histograms = (centers.cpu().numpy(),
                          energy_head.support.probs(logits).cpu().numpy())
            fields = {
                "energy_std": e_out["energy_std"],
                "energy_entropy": e_out["energy_entropy"],
                "energy_edge_mass": e_out["energy_edge_mass"],
                "energy_low90": et.to_energy(lo.double(), natoms) + offset,
                "energy_high90": et.to_energy(hi.double(), natoms) + offset,
            }
        forces = None
        if forces_task is not None and forces_task.name in out:
            forces = forces_task.normalizer.denorm(out[forces_task.name]["forces"].detach())
        f_std = f_ent = None
        if force_head is not None:
            f_std = out[force_head.forces_task]["forces_std"].detach()
            f_ent = out[force_head.forces_task]["forces_entropy"].detach()
    preds = []
    offsets = np.concatenate([[0], np.cumsum(natoms.cpu().numpy())])
    for i, atoms in enumerate(chunk):
        sl = slice(int(offsets[i]), int(offsets[i + 1]))
        calc = atoms.calc
        has_e = calc is not None and "energy" in calc.results
        has_f = calc is not None and "forces" in calc.results
        fixed = batch.fixed[sl].cpu().numpy() if "fixed" in batch else None
        n = int(natoms[i])
        preds.append(StructurePrediction(
            index=start + i,
            sid=str(atoms.info.get("sid", start + i)),
            natoms=n,
            energy=float(energy[i]),
            forces=(forces[sl].cpu().numpy() if forces is not None else np.full((n, 3), np.nan)),
            energy_target=float(calc.results["energy"]) if has_e else float("nan"),
            forces_target=np.asarray(calc.results["forces"]) if has_f else None,
            fixed=fixed,
            forces_std=None if f_std is None else f_std[sl].cpu().numpy(),
            forces_entropy=None if f_ent is None else f_ent[sl].cpu().numpy(),
            energy_bin_centers=None if histograms is None else histograms[0][i],
            energy_probs=None if histograms is None else histograms[1][i],
            **{k: float(v[i]) for k, v in fields.items()},
        ))
    return preds


def predict_files(checkpoint: str | Path, paths: Sequence[str | Path], **kwargs
                  ) -> list[StructurePrediction]:
    from fairchem_categorical.data import read_frames

    frames = read_frames(paths, require_labels=False)
    logging.info("predicting %d structures from %s", len(frames), [str(p) for p in paths])
    return predict_atoms(checkpoint, frames, **kwargs)
