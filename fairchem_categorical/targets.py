"""Target space: element references, normalisation and the binning-space scalar.

The categorical energy head predicts a histogram over
``y = ((E - sum_i ref[Z_i]) / N - mean) / std`` (the ``per_atom`` level) or
``y = (E - sum_i ref[Z_i] - mean) / std`` (the ``total`` level). This module
holds that transform in plain torch so the dataset binner, the heads, ``fit-bins``
(``bins.py``) and ``predict`` agree by construction.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

LEVELS = ("per_atom", "total")
MAX_Z = 100


@dataclass
class EnergyTransform:
    """Maps total energies to the binning space and back."""

    element_references: list[float] = field(default_factory=lambda: [0.0] * MAX_Z)
    mean: float = 0.0
    std: float = 1.0
    level: str = "per_atom"

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

    def reference(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        if atomic_numbers.numel() and int(atomic_numbers.max()) >= len(self.element_references):
            raise ValueError(
                f"atomic number {int(atomic_numbers.max())} has no element reference "
                f"(references cover Z < {len(self.element_references)})"
            )
        return self._refs.to(atomic_numbers.device)[atomic_numbers.long()].sum()

    def batch_references(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                         num_systems: int) -> torch.Tensor:
        """sum_i ref[Z_i] per system of a batch (float64), for heads that return total energy."""
        per_atom = self._refs.to(atomic_numbers.device)[atomic_numbers.long()]
        out = torch.zeros(num_systems, dtype=per_atom.dtype, device=per_atom.device)
        return out.index_add_(0, batch, per_atom)

    @functools.cached_property
    def _refs(self) -> torch.Tensor:
        # built once: reference() runs for every item a dataset loads
        return torch.as_tensor(self.element_references, dtype=torch.float64)

    def to_target(self, energy: float | torch.Tensor, atomic_numbers: torch.Tensor
                  ) -> torch.Tensor:
        """Total energy of one structure -> binning-space scalar."""
        e = torch.as_tensor(energy, dtype=torch.float64).reshape(())
        if not torch.isfinite(e):
            raise ValueError(f"energy target is not finite: {float(e)}")
        referenced = e - self.reference(atomic_numbers)
        if self.level == "per_atom":
            referenced = referenced / atomic_numbers.numel()
        return ((referenced - self.mean) / self.std).float()

    def to_energy(self, value: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
        """Binning-space value (batched) -> referenced total energy (no refs added)."""
        e = value * self.std + self.mean
        return e * natoms.to(e.dtype) if self.level == "per_atom" else e

    def spread_to_energy(self, spread: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
        """A width in binning space (std, interval half-width) -> eV of total energy."""
        s = spread * self.std
        return s * natoms.to(s.dtype) if self.level == "per_atom" else s

    def to_dict(self) -> dict[str, Any]:
        return {
            "element_references": [float(x) for x in self.element_references],
            "mean": float(self.mean),
            "std": float(self.std),
            "level": self.level,
        }
