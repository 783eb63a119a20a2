"""Target space: element references, normalisation and the binning-space scalar.

The categorical energy head predicts a histogram over
``y = ((E - sum_i ref[Z_i]) / N - mean) / std`` (the ``per_atom`` level) or
``y = (E - sum_i ref[Z_i] - mean) / std`` (the ``total`` level). This module
holds that transform in plain torch so the dataset binner, the heads, ``fit-bins``
(``bins.py``) and ``predict`` agree by construction.

The heads take the ``per_atom`` level only (``require_head_level``): a histogram over the
total energy on a fixed support is not size-extensive, so a 2x supercell would get the
energy of the cell it repeats. ``elements`` records which atomic numbers the references
were fitted on; ``unseen_elements`` names those of a structure the model never saw (their
reference is 0 eV, so its target lands far from the support and its energy is unreliable).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

LEVELS = ("per_atom", "total")
HEAD_LEVELS = ("per_atom",)
MAX_Z = 100


def require_head_level(level: str, what: str = "the categorical energy head") -> None:
    """Refuse the ``total`` level where a head would decode it: it cannot be extensive."""
    if level not in HEAD_LEVELS:
        raise ValueError(
            f"{what} does not support energy level {level!r}: a histogram over the total "
            "energy on a fixed support is not size-extensive (a 2x supercell would get the "
            "same energy as the cell it repeats, and its target would fall outside the "
            "support); use level 'per_atom' (the default: per-atom bins, energy = N x the "
            "decoded value + element references)"
        )


@dataclass
class EnergyTransform:
    """Maps total energies to the binning space and back."""

    element_references: list[float] = field(default_factory=lambda: [0.0] * MAX_Z)
    mean: float = 0.0
    std: float = 1.0
    level: str = "per_atom"
    #: atomic numbers the references were fitted on; None: not recorded (older bins)
    elements: list[int] | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown energy level {self.level!r}; choose one of {LEVELS}")
        if not (math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"energy std must be finite and > 0, got {self.std}")
        if not math.isfinite(self.mean):
            raise ValueError(f"energy mean must be finite, got {self.mean}")
        if len(self.element_references) < MAX_Z:
            raise ValueError(
                f"element_references needs {MAX_Z} entries (index = atomic number), "
                f"got {len(self.element_references)}"
            )
        if self.elements is not None:
            self.elements = sorted({int(z) for z in self.elements})
            if any(not 0 < z < len(self.element_references) for z in self.elements):
                raise ValueError(f"elements must be atomic numbers in 1..{MAX_Z - 1}, got "
                                 f"{self.elements}")

    def known_elements(self) -> set[int] | None:
        """The atomic numbers the references were fitted on, if known.

        Older bins files and checkpoints do not record them; then the elements with a
        non-zero reference count as fitted (None if every reference is 0, e.g. bins
        fitted without references: nothing can be said).
        """
        if self.elements is not None:
            return set(self.elements)
        nonzero = {z for z, ref in enumerate(self.element_references) if ref != 0.0}
        return nonzero or None

    def unseen_elements(self, atomic_numbers: Any) -> list[int]:
        """Atomic numbers in ``atomic_numbers`` the references were not fitted on (sorted).

        The one check every entry point shares (training's dataset, ``predict``, the ASE
        calculator): such an element has a reference of 0 eV, so the structure's energy
        target lies far outside what the model saw and its prediction is unreliable.
        """
        known = self.known_elements()
        if known is None:
            return []
        present = {int(z) for z in torch.as_tensor(atomic_numbers).reshape(-1).tolist()}
        return sorted(present - known)

    def reference(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """sum_i ref[Z_i] of one structure (float64)."""
        return torch.tensor(self._reference(atomic_numbers), dtype=torch.float64)

    def _reference(self, atomic_numbers: torch.Tensor) -> float:
        # numpy on the item's CPU tensor: a dataset calls this for every item it loads,
        # where a handful of tiny torch ops would cost more than the arithmetic
        if torch.is_tensor(atomic_numbers):
            z = (atomic_numbers.numpy() if atomic_numbers.device.type == "cpu"
                 and not atomic_numbers.requires_grad else atomic_numbers.detach().cpu().numpy())
        else:
            z = np.asarray(atomic_numbers)
        try:
            return float(self._refs_np[z].sum())
        except IndexError:
            raise ValueError(
                f"atomic number {int(z.max())} has no element reference "
                f"(references cover Z < {len(self.element_references)})"
            ) from None

    def batch_references(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                         num_systems: int) -> torch.Tensor:
        """sum_i ref[Z_i] per system of a batch (float64), for heads that return total energy."""
        per_atom = self._refs_on(atomic_numbers.device)[atomic_numbers.long()]
        out = torch.zeros(num_systems, dtype=per_atom.dtype, device=per_atom.device)
        return out.index_add_(0, batch, per_atom)

    def _refs_on(self, device: torch.device) -> torch.Tensor:
        """The references as a tensor made on ``device`` (once per device: a head calls
        ``batch_references`` for every batch, on the GPU a copy each time would cost)."""
        cache = self.__dict__.setdefault("_refs_by_device", {})
        key = str(device)
        if key not in cache:
            cache[key] = torch.as_tensor(self.element_references, dtype=torch.float64,
                                         device=device)
        return cache[key]

    @functools.cached_property
    def _refs_np(self) -> np.ndarray:
        return np.asarray(self.element_references, dtype=np.float64)

    def to_target(self, energy: float | torch.Tensor, atomic_numbers: torch.Tensor
                  ) -> torch.Tensor:
        """Total energy of one structure -> binning-space scalar (float32, shape ())."""
        return torch.tensor(self.target_value(energy, atomic_numbers), dtype=torch.float32)

    def target_value(self, energy: float | torch.Tensor, atomic_numbers: torch.Tensor
                     ) -> float:
        """``to_target`` as a Python float (float64 arithmetic throughout)."""
        e = float(energy.item() if hasattr(energy, "item") else energy)
        if not math.isfinite(e):
            raise ValueError(f"energy target is not finite: {e}")
        referenced = e - self._reference(atomic_numbers)
        if self.level == "per_atom":
            referenced = referenced / len(atomic_numbers)
        return (referenced - self.mean) / self.std

    def batch_target_values(self, energy: torch.Tensor, atomic_numbers: torch.Tensor,
                            batch: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
        """``target_value`` of every system of a batch at once (float64 arithmetic, float32
        result, on the batch's device): a trainer bins per batch what a dataset would
        otherwise do per item."""
        e = energy.reshape(-1).to(torch.float64)
        if not bool(torch.isfinite(e).all()):
            raise ValueError(f"energy target is not finite: {e[~torch.isfinite(e)][0]}")
        if int(atomic_numbers.max()) >= len(self.element_references):
            raise ValueError(
                f"atomic number {int(atomic_numbers.max())} has no element reference "
                f"(references cover Z < {len(self.element_references)})")
        referenced = e - self.batch_references(atomic_numbers, batch, e.numel())
        if self.level == "per_atom":
            referenced = referenced / natoms.reshape(-1).to(torch.float64)
        return ((referenced - self.mean) / self.std).to(torch.float32)

    def to_energy(self, value: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
        """Binning-space value (batched) -> referenced total energy (no refs added)."""
        e = value * self.std + self.mean
        return e * natoms.to(e.dtype) if self.level == "per_atom" else e

    def spread_to_energy(self, spread: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
        """A width in binning space (std, interval half-width) -> eV of total energy."""
        s = spread * self.std
        return s * natoms.to(s.dtype) if self.level == "per_atom" else s

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "element_references": [float(x) for x in self.element_references],
            "mean": float(self.mean),
            "std": float(self.std),
            "level": self.level,
        }
        if self.elements is not None:
            out["elements"] = list(self.elements)
        return out


def element_symbols(atomic_numbers: list[int]) -> str:
    """``[79, 46]`` -> ``"Au Pd"`` (the order given), for messages and the CSV column."""
    from ase.data import chemical_symbols

    return " ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)
                    for z in atomic_numbers)
