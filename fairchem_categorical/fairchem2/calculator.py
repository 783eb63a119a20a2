"""An ASE calculator for fairchem-core 2.x checkpoints that keeps the uncertainty.

``CategoricalCalculator`` *is* fairchem's ``FAIRChemCalculator`` (same constructor,
same ``from_model_checkpoint``, the same checks on the atoms and the same
``AtomicData`` conversion), running on a ``CategoricalPredictUnit`` (fairchem's
``MLIPPredictUnit``: EMA weights, inference settings). Each calculation goes
through the adapter's ``predict_batch``, the very call ``predict`` makes, and
``ase_results.structure_results`` turns it into ``results``: beside energy,
free_energy, forces and stress, ``energy_uncertainty``, ``energy_std``, the 90%
interval, ``ood_score``, per-atom ``forces_uncertainty`` and ``atom_ood_score``
(whichever the checkpoint provides; a scalar checkpoint gives none of them). The
per-structure scalars are copied into ``atoms.info``.

``calculate_batch`` evaluates many structures in batches (what screening and
active learning call) with exactly the numbers ``predict_atoms`` gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from fairchem.core.calculate.ase_calculator import AllZeroUnitCellError, FAIRChemCalculator
from fairchem.core.calculate.pretrained_mlip import resolve_checkpoint
from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch
from fairchem.core.units.mlip_unit.api.inference import (
    InferenceSettings,
    UMATask,
    guess_inference_settings,
)
from fairchem.core.units.mlip_unit.predict import MLIPPredictUnit

from fairchem_categorical.ase_results import (
    copy_to_info,
    implemented,
    mark_unseen_elements,
    structure_results,
)
from fairchem_categorical.devices import fairchem_device
from fairchem_categorical.fairchem2.heads import CategoricalEnergyHead
from fairchem_categorical.fairchem2.predict import (
    DEFAULT_SETTINGS,
    CategoricalPredictUnit,
    predict_batch,
)

#: the properties fairchem's calculator fills from its tasks
_ASE_PROPERTIES = ("energy", "free_energy", "forces", "stress", "hessian")


class CategoricalCalculator(FAIRChemCalculator):
    """fairchem's ASE calculator with the categorical heads' uncertainties in ``results``.

    ``predict_unit``: a ``CategoricalPredictUnit`` (``fairchem2.predict.load_unit``);
    a plain ``MLIPPredictUnit`` (fairchem's ``load_predict_unit``) is taken too and
    gains the record of the heads' outputs. ``seed`` fixes the random edge-frame
    rolls of eSCN backbones for every call (default: the unit's seed), so a
    calculation is repeatable and equals ``predict_atoms(..., seed=seed)``.
    ``forces_uncertainty``: a conservative shallow ensemble's per-atom
    ``forces_uncertainty``, the spread of its members' forces (one more backward pass per
    member); without members it changes nothing.
    """

    def __init__(self, predict_unit: MLIPPredictUnit, task_name: UMATask | str | None = None,
                 seed: int | None = None, forces_uncertainty: bool = True) -> None:
        if not isinstance(predict_unit, MLIPPredictUnit):
            raise TypeError(f"predict_unit must be fairchem's MLIPPredictUnit, got "
                            f"{type(predict_unit).__name__}")
        if not isinstance(predict_unit, CategoricalPredictUnit):
            # the subclass only adds the record of the heads' raw outputs (a method
            # override, no state), so an already loaded unit can take it on in place
            predict_unit.__class__ = CategoricalPredictUnit
        super().__init__(predict_unit, task_name=task_name)
        self.seed = int(predict_unit._seed if seed is None else seed)
        self.base_properties = [p for p in self.implemented_properties if p in _ASE_PROPERTIES]
        self.implemented_properties = list(self.base_properties)
        head = predict_unit.head(CategoricalEnergyHead)
        self.energy_transform = None if head is None else head.energy_transform.spec
        if head is not None:
            head.member_forces = bool(forces_uncertainty)
        self._warned: set[int] = set()

    @classmethod
    def from_model_checkpoint(
        cls,
        name_or_path: str | Path,
        task_name: UMATask | None = None,
        inference_settings: InferenceSettings | str = DEFAULT_SETTINGS,
        overrides: dict | None = None,
        device: str | None = None,
        seed: int = 41,
        workers: int = 1,
    ) -> CategoricalCalculator:
        """A calculator for a checkpoint file (or a fairchem model name, resolved by fairchem).

        As fairchem's (``device`` None: CUDA when there is a GPU, else the CPU; ``cuda:N``
        runs on GPU N; ``seed`` 41), except that ``inference_settings`` defaults to
        ``predict``'s preset (``"batch"``); with ``seed=0`` (``predict``'s) the calculator and
        ``predict`` give the same numbers.
        """
        if workers != 1:
            raise ValueError("CategoricalCalculator runs one worker (the heads' outputs are "
                             f"read in this process); got workers={workers}")
        checkpoint = resolve_checkpoint(str(name_or_path))
        unit = CategoricalPredictUnit(
            checkpoint.path, device=fairchem_device(device), overrides=overrides,
            inference_settings=guess_inference_settings(inference_settings), seed=seed,
            atom_refs=checkpoint.atom_refs, form_elem_refs=checkpoint.form_elem_refs)
        return cls(unit, task_name=task_name, seed=seed)

    def _check(self, atoms: Atoms) -> None:
        """fairchem's checks before a calculation."""
        if len(atoms) == 0:
            raise ValueError("Atoms object has no atoms inside.")
        if np.all(atoms.pbc) and np.allclose(atoms.cell, 0):
            raise AllZeroUnitCellError
        self.predictor.validate_atoms_data(atoms, self.task_name)

    def calculate_batch(self, frames: Sequence[Atoms], batch_size: int = 8
                        ) -> list[dict[str, Any]]:
        """Results of many structures, ``batch_size`` at a time (nothing cached or attached).

        Batch ``b`` (starting at frame ``start``) is seeded with ``seed + start``, as
        ``predict_atoms`` seeds it, so both give the same numbers for the same frames.
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        results: list[dict[str, Any]] = []
        for start in range(0, len(frames), batch_size):
            chunk = frames[start:start + batch_size]
            for atoms in chunk:
                self._check(atoms)
            batch = atomicdata_list_to_batch([self.a2g(a) for a in chunk])
            out, extras = predict_batch(self.predictor, batch, self.seed + start,
                                        self.task_name)
            chunk_results = structure_results(out, extras, batch.natoms)
            mark_unseen_elements(chunk_results, (a.numbers for a in chunk),
                                 self.energy_transform, self._warned)
            results.extend(chunk_results)
        return results

    def calculate(self, atoms: Atoms, properties: list[str], system_changes: list[str]
                  ) -> None:
        self._check(atoms)
        Calculator.calculate(self, atoms, properties, system_changes)
        self.results = self.calculate_batch([atoms])[0]
        self.implemented_properties = implemented(self.base_properties, self.results)
        copy_to_info(self.results, atoms.info, self.atoms.info)


def load_calculator(checkpoint: str | Path, device: str | None = None, seed: int = 41
                    ) -> CategoricalCalculator:
    """The calculator for a checkpoint (both adapters offer this function)."""
    return CategoricalCalculator.from_model_checkpoint(checkpoint, device=device, seed=seed)
