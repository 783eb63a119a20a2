"""An ASE calculator for fairchem-core 1.10 checkpoints that keeps the uncertainty.

``CategoricalCalculator`` is fairchem 1.10's ``OCPCalculator`` (same constructor: the
OCP trainer is built from the checkpoint's config and loads its weights; the
checkpoint's EMA weights, which fairchem's inference-only trainer drops, are copied
in as ``predict`` uses them); each calculation then runs the adapter's ``predict_batch`` on the
trainer's model, the call ``predict`` makes, so the two agree, and
``ase_results.structure_results`` fills ``results`` with energy, free_energy and
forces plus ``energy_uncertainty``, ``energy_std``, the 90% interval, per-atom
``forces_uncertainty`` and, when the model provides them, ``ood_score`` and
``atom_ood_score``. Scalar checkpoints give only energy and forces. The
per-structure scalars are copied into ``atoms.info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator
from fairchem.core.common.relaxation.ase_utils import OCPCalculator
from fairchem.core.datasets import data_list_collater

from fairchem_categorical.ase_results import (
    copy_to_info,
    implemented,
    mark_unseen_elements,
    structure_results,
)
from fairchem_categorical.devices import fairchem_device
from fairchem_categorical.fairchem1.predict import LoadedModel, predict_batch

_ASE_PROPERTIES = ("energy", "free_energy", "forces", "stress")


class CategoricalCalculator(OCPCalculator):
    """fairchem 1.10's ``OCPCalculator`` with the categorical heads' uncertainties.

    Takes ``OCPCalculator``'s arguments (``checkpoint_path=...``, ``cpu=True``, ``seed``);
    ``seed`` also fixes the random edge frames of the backbones on every call (default
    0, ``predict``'s), so a calculation equals ``predict_atoms(..., seed=seed)``.
    ``forces_uncertainty``: a conservative shallow ensemble's per-atom spread of its
    members' forces (one more backward pass per member; nothing without members).
    """

    def __init__(self, *args: Any, seed: int | None = None, forces_uncertainty: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, seed=seed, **kwargs)
        self.seed = 0 if seed is None else int(seed)
        self.loaded = LoadedModel.from_trainer(self.trainer, self.config["checkpoint"])
        if self.loaded.energy_head is not None:  # a shallow ensemble's member forces
            self.loaded.energy_head.member_forces = bool(forces_uncertainty)
        base = ["energy", "free_energy", *(["forces"] if "forces" in self.config["outputs"]
                                           else [])]
        self.base_properties = [p for p in base if p in _ASE_PROPERTIES]
        self.implemented_properties = list(self.base_properties)
        self._warned: set[int] = set()

    def calculate_batch(self, frames: Sequence[Atoms], batch_size: int = 8
                        ) -> list[dict[str, Any]]:
        """Results of many structures, ``batch_size`` at a time, seeded as ``predict_atoms``
        seeds its batches (``seed + start``), so both give the same numbers."""
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        results: list[dict[str, Any]] = []
        for start in range(0, len(frames), batch_size):
            chunk = frames[start:start + batch_size]
            if any(len(a) == 0 for a in chunk):
                raise ValueError("Atoms object has no atoms inside.")
            batch = data_list_collater([self.a2g.convert(a) for a in chunk], otf_graph=True)
            out, extras = predict_batch(self.loaded, batch, self.seed + start)
            chunk_results = structure_results(out, extras, batch.natoms)
            head = self.loaded.energy_head
            mark_unseen_elements(chunk_results, (a.numbers for a in chunk),
                                 None if head is None else head.energy_transform.spec,
                                 self._warned)
            results.extend(chunk_results)
        return results

    def calculate(self, atoms: Atoms, properties: list[str], system_changes: list[str]
                  ) -> None:
        Calculator.calculate(self, atoms, properties, system_changes)
        self.results = self.calculate_batch([atoms])[0]
        self.implemented_properties = implemented(self.base_properties, self.results)
        copy_to_info(self.results, atoms.info, self.atoms.info)


def load_calculator(checkpoint: str | Path, device: str = "cpu", seed: int = 0
                    ) -> CategoricalCalculator:
    """The calculator for a checkpoint (both adapters offer this function)."""
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    return CategoricalCalculator(checkpoint_path=str(checkpoint),
                                 cpu=fairchem_device(device) == "cpu",
                                 seed=seed)
