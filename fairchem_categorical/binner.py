"""Attach binning-space targets to dataset items as they load (both fairchem lines).

A dataset wrapper on either line hands each item (a PyG ``Data`` or fairchem's
``AtomicData``; both support ``item[key]``) to ``TargetBinner``, which adds

* ``energy_categorical``: the energy in the binning space, as a scalar (1,)
  or, with ``histograms=True``, as its encoded histogram (1, K);
* ``force_magnitude``: |F_i| per atom, as scalars (N,) or histograms (N, K_f)
  over ``force_support``.

The ``categorical`` config block carries ``energy`` (EnergyTransform fields,
as fit-bins writes them), ``support``, ``force_support`` and optional key names.

With ``tally_fields=True`` each item also marks which of its targets were clamped
(``<target_key>_outside`` (1,), ``<force_magnitude_key>_outside`` (N,), 1 = clamped):
counts made in a dataloader worker would stay there, so they travel with the batch to
the trainer.

``BatchBinner`` does the same per batch, in a trainer's loss path (fairchem 1.10's
``CategoricalTrainer``): the targets are encoded where the loss runs, with the batch's
own vectorised arithmetic, and the dataset's item load stays that of the scalar dataset.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fairchem_categorical.histogram import HistogramSupport
from fairchem_categorical.targets import EnergyTransform, element_symbols


class TargetBinner:
    """Adds categorical targets to items; counts and warns about clipped targets."""

    def __init__(self, categorical: dict[str, Any] | None, histograms: bool = False,
                 owner: str = "dataset", tally_fields: bool = False) -> None:
        cat = dict(categorical or {})
        if "energy" not in cat:
            raise ValueError(
                f"{owner} needs a 'categorical: {{energy: {{...}}}}' block with the element "
                "references, mean, std and level that fit-bins wrote"
            )
        if histograms and not cat.get("support"):
            raise ValueError(f"{owner} bins targets on load and needs 'categorical.support'")
        self.histograms = histograms
        self.energy_transform = EnergyTransform(**dict(cat["energy"]))
        self.energy_key = cat.get("energy_key", "energy")
        self.forces_key = cat.get("forces_key", "forces")
        self.target_key = cat.get("target_key", "energy_categorical")
        self.force_magnitude_key = cat.get("force_magnitude_key", "force_magnitude")
        support, force_support = cat.get("support"), cat.get("force_support")
        self.support = HistogramSupport.from_spec(dict(support)) if support else None
        self.force_support = (HistogramSupport.from_spec(dict(force_support))
                              if force_support and histograms else None)
        #: targets clamped to the support's edge so far, per kind ("energy", "force magnitude")
        self.clipped: dict[str, int] = {}
        self.tally_fields = tally_fields
        self.unseen: set[int] = set()  # elements met that the bins were not fitted on

    def __call__(self, data: Any, idx: int) -> Any:
        if self.energy_key not in data or data[self.energy_key] is None:
            raise ValueError(
                f"item {idx} has no '{self.energy_key}' target (check the data holds energies "
                "and the dataset's key_mapping / a2g_args r_energy)"
            )
        self._check_elements(data["atomic_numbers"], idx)
        y = torch.tensor([self.energy_transform.target_value(data[self.energy_key],
                                                             data["atomic_numbers"])],
                         dtype=torch.float32)
        outside = 0
        if self.histograms:
            data[self.target_key], outside = self._encode(self.support, y, idx, "energy")
        else:
            data[self.target_key] = y
            if self.support is not None:
                data[f"{self.target_key}_histogram"], outside = self._encode(
                    self.support, y, idx, "energy")
        if self.tally_fields:
            data[f"{self.target_key}_outside"] = torch.tensor([outside])
        forces = data[self.forces_key] if self.forces_key in data else None
        if forces is not None:
            magnitude = torch.linalg.vector_norm(forces, dim=-1).float()
            if self.force_support is not None:
                if self.tally_fields:
                    data[f"{self.force_magnitude_key}_outside"] = self.force_support.outside(
                        magnitude).to(torch.uint8)
                magnitude, _ = self._encode(self.force_support, magnitude, idx,
                                            "force magnitude")
            data[self.force_magnitude_key] = magnitude
        return data

    def _check_elements(self, atomic_numbers: torch.Tensor, idx: int) -> None:
        """Warn (once per element) about elements the bins' references never saw."""
        new = set(self.energy_transform.unseen_elements(atomic_numbers)) - self.unseen
        if new:
            self.unseen |= new
            logging.warning(
                "item %d holds %s, which the bins were never fitted on (the model never saw "
                "them): their element reference is 0 eV, so these targets land far from the "
                "support; refit the bins (fit-bins) on data that holds them", idx,
                element_symbols(sorted(new)))

    def _encode(self, support: HistogramSupport, values: torch.Tensor, idx: int,
                what: str) -> tuple[torch.Tensor, int]:
        """The encoded targets and how many of them were clamped to the edge."""
        probs, outside = support.encode_counting(values)
        if outside:
            if what not in self.clipped:
                logging.warning(
                    "%s target (|value| up to %.3f) of item %d lies outside the support "
                    "[%.3f, %.3f]; it is clamped to the edge bin (see fit-bins)", what,
                    float(values.abs().max()), idx, support.low, support.high,
                )
            self.clipped[what] = self.clipped.get(what, 0) + outside
        return probs, outside

    @property
    def num_clipped(self) -> int:
        return sum(self.clipped.values())


class BatchBinner:
    """Adds histogram targets to whole batches; returns what was clamped to the support.

    The per-batch counterpart of ``TargetBinner(histograms=True)``, from the same
    ``categorical`` block: ``energy_categorical`` (B, K) from the batch's energies,
    atomic numbers and system index, ``force_magnitude`` (N, K_f) from its forces (with a
    ``force_support``). The batch is any mapping-like graph batch (PyG's ``Batch``) with
    ``atomic_numbers``, ``batch`` and ``natoms``.
    """

    def __init__(self, categorical: dict[str, Any] | None, owner: str = "trainer") -> None:
        cat = dict(categorical or {})
        if "energy" not in cat or not cat.get("support"):
            raise ValueError(f"{owner} bins the targets and needs a 'categorical' block with "
                             "the 'energy' transform and the 'support' fit-bins wrote")
        self.items = TargetBinner(cat, owner=owner)  # the keys, the transform, the supports
        self.support = self.items.support
        force_support = cat.get("force_support")
        self.force_support = (HistogramSupport.from_spec(dict(force_support))
                              if force_support else None)
        known = self.items.energy_transform.known_elements()
        self._known = None if known is None else torch.tensor(
            [z in known for z in range(len(self.items.energy_transform.element_references))])
        self.unseen: set[int] = set()

    @property
    def energy_transform(self) -> EnergyTransform:
        return self.items.energy_transform

    @property
    def keys(self) -> dict[str, str]:
        """{kind: the batch key of its histogram targets}, for the kinds this bins."""
        out = {"energy": self.items.target_key}
        if self.force_support is not None:
            out["force magnitude"] = self.items.force_magnitude_key
        return out

    def __call__(self, batch: Any, counted: dict[str, torch.Tensor | None] | None = None
                 ) -> dict[str, tuple[int, int]]:
        """Put the histogram targets in ``batch``; per kind (``"energy"``, ``"force
        magnitude"``): (targets clamped to the support, targets), among the rows
        ``counted[kind]`` marks (None: all). A batch binned before is left as it is."""
        items, counted = self.items, counted or {}
        if items.target_key in batch and batch[items.target_key].dim() == 2:
            return {}
        if items.energy_key not in batch or batch[items.energy_key] is None:
            raise ValueError(
                f"the batch has no '{items.energy_key}' target (check the data holds energies "
                "and the dataset's key_mapping / a2g_args r_energy)")
        numbers = batch["atomic_numbers"].long()
        self._check_elements(numbers)
        energy = self.energy_transform.batch_target_values(
            batch[items.energy_key], numbers, batch["batch"], batch["natoms"])
        out = {"energy": self._encode(batch, items.target_key, self.support, energy,
                                      counted.get("energy"))}
        forces = batch[items.forces_key] if items.forces_key in batch else None
        if forces is not None and self.force_support is not None:
            magnitude = torch.linalg.vector_norm(forces, dim=-1).float()
            out["force magnitude"] = self._encode(
                batch, items.force_magnitude_key, self.force_support, magnitude,
                counted.get("force magnitude"))
        return out

    @staticmethod
    def _encode(batch: Any, key: str, support: HistogramSupport, values: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[int, int]:
        flags = support.outside(values)
        if mask is not None:
            flags = flags[mask.reshape(-1)]
        batch[key] = support.encode(values)
        return int(flags.sum()), flags.numel()

    def _check_elements(self, numbers: torch.Tensor) -> None:
        """Warn (once per element) about elements the bins' references never saw."""
        if self._known is None:
            return
        known = self._known.to(numbers.device)
        unseen = numbers[~known[numbers.clamp(0, len(known) - 1)]]
        if unseen.numel():
            new = {int(z) for z in unseen.unique().tolist()} - self.unseen
            if new:
                self.unseen |= new
                logging.warning(
                    "a batch holds %s, which the bins were never fitted on (the model never "
                    "saw them): their element reference is 0 eV, so these targets land far "
                    "from the support; refit the bins (fit-bins) on data that holds them",
                    element_symbols(sorted(new)))
