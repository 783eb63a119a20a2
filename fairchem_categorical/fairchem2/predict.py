"""Run a fairchem-core 2.x checkpoint (categorical or scalar) over ASE data.

The model loads through fairchem's own ``MLIPPredictUnit``, so predictions come from the
same weights (EMA) and the same inference settings as fairchem's inference and its ASE
calculator. ``CategoricalPredictUnit`` only adds a record of the heads' raw outputs of
the last call: fairchem keeps one property per task (energy, forces, stress), and the
categorical heads' uncertainties ride beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
from fairchem.core.units.mlip_unit.api.inference import (
    NAME_TO_INFERENCE_SETTING,
    InferenceSettings,
    guess_inference_settings,
)
from fairchem.core.units.mlip_unit.predict import MLIPPredictUnit

from fairchem_categorical.devices import fairchem_device
from fairchem_categorical.fairchem2.heads import CategoricalDirectForceHead, CategoricalEnergyHead
from fairchem_categorical.predictions import (
    StructurePrediction,
    UnseenElements,
    reported,
    seeded,
    stream_frames,
)
from fairchem_categorical.readout import epistemic_items

#: prediction over many different structures: MOLE experts unmerged, no compile (the
#: "batch" preset of fairchem's inference settings)
DEFAULT_SETTINGS = "batch"
#: fairchem's inference-settings presets (names for ``--inference-settings``)
PRESETS = tuple(NAME_TO_INFERENCE_SETTING)


def share_regress_config(model: torch.nn.Module) -> None:
    """Let the backbone and the heads share one gradient config again after a MOLE merge.

    fairchem's heads (``MLP_EFS_Head`` and ours) keep the backbone's ``regress_config``
    object, which ``add_tasks`` edits for the untrained tasks (the stress that
    ``eSCNMDBackbone`` adds by default). ``merge_mole`` swaps in a new backbone built from
    the config with a fresh ``regress_config``, so the heads would differentiate with
    respect to a cell the backbone no longer marks for gradients ("One of the
    differentiated Tensors does not require grad"); that happens to fairchem's own
    scalar head too. The heads' config is the edited one: the backbone takes it back.
    """
    backbone = getattr(model, "backbone", None)
    heads = getattr(model, "output_heads", {})
    configs = {id(h.regress_config): h.regress_config for h in heads.values()
               if getattr(h, "regress_config", None) is not None}
    if backbone is not None and len(configs) == 1:
        backbone.regress_config = next(iter(configs.values()))


class CategoricalPredictUnit(MLIPPredictUnit):
    """fairchem's predict unit, keeping the heads' raw outputs of the last ``predict`` call.

    ``last_outputs[task][key]`` holds what each head returned (detached): for the
    categorical energy head ``energy_std``, ``energy_entropy``, ``energy_edge_mass`` and
    the logits under its logits task; for the direct-force head ``forces_std`` and
    ``forces_entropy``. Scalar checkpoints load too (their heads add nothing).
    """

    last_outputs: dict[str, dict[str, torch.Tensor]]

    def _process_outputs(self, data: AtomicData, output: dict, undo_refs: bool) -> dict:
        self.last_outputs = {
            task: {k: v.detach() for k, v in out.items() if torch.is_tensor(v)}
            for task, out in output.items() if isinstance(out, dict)}
        return super()._process_outputs(data, output, undo_refs)

    def _lazy_init(self, data: AtomicData) -> None:
        super()._lazy_init(data)
        share_regress_config(self.hydra_model)

    @property
    def hydra_model(self) -> torch.nn.Module:
        """The HydraModel inside fairchem's EMA / compile wrappers."""
        model = getattr(self.model, "_orig_mod", self.model)
        return model.module

    def head(self, cls: type) -> torch.nn.Module | None:
        heads = getattr(self.hydra_model, "output_heads", {})
        return next((h for h in heads.values() if isinstance(h, cls)), None)

    @property
    def energy_task(self) -> Any:
        """The first energy task (a checkpoint with one dataset has only that one)."""
        return self.energy_task_for(None)

    def energy_task_for(self, dataset: str | None) -> Any:
        """The energy task that predicts for ``dataset`` (a task/dataset name such as
        ``oc20``; None: the first); an unknown name is an error listing the choices."""
        tasks = [t for t in self.tasks.values()
                 if t.property == "energy" and not t.inference_only]
        if not tasks:
            raise ValueError(f"{self._inference_model_path} has no energy task; cannot predict "
                             "energies")
        if dataset is None:
            return tasks[0]
        task = next((t for t in tasks if dataset in t.datasets), None)
        if task is None:
            choices = sorted({d for t in tasks for d in t.datasets})
            raise ValueError(f"task {dataset!r}: {Path(self._inference_model_path).name} "
                             f"predicts energies for {', '.join(choices)}; choose one of them")
        return task


def settings_for(inference_settings: str | InferenceSettings) -> InferenceSettings:
    """fairchem's settings for a preset name (or given settings); unknown names are an error.

    Every preset of this fairchem runs the categorical heads (``PRESETS``): "batch"
    (unmerged, uncompiled: any mix of structures), "traineval", "high-precision" and
    "multigpu" (``merge_mole`` + ``torch.compile``; fairchem falls back to the unmerged,
    uncompiled model when a batch mixes compositions), "default"/"nitro" (UMA Nitro serves
    only the released UMA-S-1.2.1 weights, so fairchem runs "multigpu" instead, with its
    warning). "turbo" is gone from fairchem 2.24 (fairchem's error says what replaced it).
    """
    if isinstance(inference_settings, str) and inference_settings != "turbo" and \
            inference_settings not in NAME_TO_INFERENCE_SETTING:
        raise ValueError(f"unknown inference settings {inference_settings!r}; fairchem's "
                         f"presets are {', '.join(PRESETS)}")
    return guess_inference_settings(inference_settings)



def load_unit(checkpoint: str | Path, device: str = "cpu",
              inference_settings: str | InferenceSettings = DEFAULT_SETTINGS
              ) -> CategoricalPredictUnit:
    """A predict unit for an inference checkpoint (EMA weights, fairchem's settings) on
    ``device`` (cpu, cuda or cuda:N)."""
    checkpoint = Path(checkpoint)
    settings = settings_for(inference_settings)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    return CategoricalPredictUnit(str(checkpoint), device=fairchem_device(device),
                                  inference_settings=settings)


def to_data(atoms: Any, dataset_name: str) -> AtomicData:
    """AtomicData for one structure, with its labels when it carries them."""
    calc = atoms.calc
    has_energy = calc is not None and "energy" in calc.results
    has_forces = calc is not None and "forces" in calc.results
    data = AtomicData.from_ase(atoms, r_energy=has_energy, r_forces=has_forces,
                               task_name=dataset_name)
    data.dataset = dataset_name
    return data


def predict_batch(unit: CategoricalPredictUnit, batch: AtomicData, seed: int,
                  dataset: str | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(energy (B,) and forces (N, 3) in eV, eV/A, stress when the model has it; the
    uncertainty outputs) of one batch.

    The uncertainty outputs are the per-structure ``energy_std``/``energy_entropy``/
    ``energy_edge_mass``, the histogram on the eV axis with its 90% interval (see
    ``CategoricalEnergyReadout.histogram_in_ev``), once the epistemic state is fitted
    ``energy_uncertainty``/``ood_score`` (B,) and ``atom_ood_score`` (N,) (see
    ``CategoricalEnergyReadout.epistemic_outputs``), and per-atom ``forces_std``/
    ``forces_entropy`` for a direct-force head; empty for a scalar checkpoint.
    ``dataset``: the task the batch was built for (None: the first energy task's).
    """
    with seeded(seed, str(unit.device)):  # eSCN draws a random roll per edge frame
        preds = unit.predict(batch)
    raw = unit.last_outputs
    task = unit.energy_task_for(dataset)
    energy = preds["energy"].detach().reshape(-1).double()
    out = {"energy": energy}
    if "forces" in preds:
        out["forces"] = preds["forces"].detach()
    if "stress" in preds:  # (B, 9) or (B, 3, 3), when the model predicts it
        out["stress"] = preds["stress"].detach()
    extras: dict[str, torch.Tensor] = {}
    energy_head = unit.head(CategoricalEnergyHead)
    if energy_head is not None:
        head_out = raw[energy_head.energy_task]
        # what fairchem added to the head's (referenced) energy: the element references
        refs = energy - task.normalizer.denorm(head_out["energy"]).reshape(-1).double()
        extras.update({k: head_out[k] for k in ("energy_std", "energy_entropy",
                                                "energy_edge_mass", "energy_disagreement")
                       if k in head_out})
        extras.update(epistemic_items(head_out))
        logits = raw[energy_head.logits_task]["logits"]
        extras.update(energy_head.histogram_in_ev(logits, batch.natoms.to(refs.device),
                                                  refs, head_out.get("ood_score")))
        spread = raw.get(energy_head.forces_task, {}).get("forces_std")
        if spread is not None:  # a shallow ensemble's member forces (member_forces)
            extras["forces_std"] = spread
    force_head = unit.head(CategoricalDirectForceHead)
    if force_head is not None:
        extras.update({k: raw[force_head.forces_task][k] for k in ("forces_std",
                                                                   "forces_entropy")})
    return out, extras


def stream_unit(unit: CategoricalPredictUnit, frames: Iterable, batch_size: int = 8,
                progress: Callable[[str], None] | None = None, seed: int = 0,
                task: str | None = None, unseen: UnseenElements | None = None
                ) -> Iterator[list[StructurePrediction]]:
    """``predict_stream`` with a unit already loaded: each batch's records as they come."""
    dataset_name = task if task is not None else unit.energy_task.datasets[0]
    unit.energy_task_for(dataset_name)  # an unknown task: the error, before any batch
    return stream_frames(
        frames, batch_size,
        lambda chunk: atomicdata_list_to_batch([to_data(a, dataset_name) for a in chunk]),
        lambda batch, start: predict_batch(unit, batch, seed + start, dataset_name),
        progress, unseen)


def predict_unit(unit: CategoricalPredictUnit, frames: Iterable, batch_size: int = 8,
                 progress: Callable[[str], None] | None = None, seed: int = 0,
                 task: str | None = None) -> list[StructurePrediction]:
    """``predict_atoms`` with a unit already loaded."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return [p for chunk in stream_unit(unit, frames, batch_size, progress, seed, task)
            for p in chunk]


def predict_stream(
    checkpoint: str | Path,
    frames: Iterable,
    batch_size: int = 8,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
    member_forces: bool = False,
    inference_settings: str | InferenceSettings = DEFAULT_SETTINGS,
    task: str | None = None,
) -> Iterator[list[StructurePrediction]]:
    """``predict_atoms`` one batch at a time: ``frames`` may be a stream (``iter_frames``),
    drawn ``batch_size`` at a time, so memory holds one batch of structures whatever the
    dataset's size. The model loads (and a bad checkpoint or task fails) at the call;
    structures holding elements the bins never saw are marked per batch and reported
    after the last. ``member_forces``: a conservative shallow ensemble's per-atom
    ``forces_std`` (the spread of its members' forces; one backward pass per member)."""
    unit = load_unit(checkpoint, device, inference_settings)
    head = unit.head(CategoricalEnergyHead)
    if head is not None and member_forces:
        head.member_forces = True
    unseen = UnseenElements(None if head is None else head.energy_transform.spec)
    return reported(stream_unit(unit, frames, batch_size, progress, seed, task, unseen),
                    unseen, progress)


def predict_atoms(
    checkpoint: str | Path,
    frames: Sequence,
    batch_size: int = 8,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
    member_forces: bool = False,
    inference_settings: str | InferenceSettings = DEFAULT_SETTINGS,
    task: str | None = None,
) -> list[StructurePrediction]:
    """Energies, forces and (for categorical heads) uncertainties for each frame.

    Frames go to the model ``batch_size`` at a time (one graph per batch). ``task``: which
    of the checkpoint's tasks (datasets, e.g. ``oc20`` or ``omat`` for UMA) to predict;
    None: the first energy task's first dataset.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return [p for chunk in predict_stream(checkpoint, frames, batch_size, device, progress,
                                          seed, member_forces, inference_settings, task)
            for p in chunk]
