"""Target space: element references, normalisation and the binning-space scalar.

The categorical energy head predicts a histogram over
``y = ((E - sum_i ref[Z_i]) / N - mean) / std`` (the ``per_atom`` level) or
``y = (E - sum_i ref[Z_i] - mean) / std`` (the ``total`` level). This module
holds that transform in plain numpy/torch so the dataset wrapper, the heads,
``fit-bins`` and ``predict`` agree by construction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fairchem_categorical.histogram import DEFAULT_NUM_BINS, DEFAULT_SIGMA_RATIO, SupportSpec

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


def fit_element_references(compositions: list[np.ndarray], energies: np.ndarray,
                           ridge: float = 1e-8) -> np.ndarray:
    """Least-squares per-element energies (index = atomic number), as fairchem's linear refs."""
    counts = np.zeros((len(compositions), MAX_Z))
    for row, z in enumerate(compositions):
        if len(z) and int(np.max(z)) >= MAX_Z:
            raise ValueError(f"structure {row}: atomic number {int(np.max(z))} >= {MAX_Z}")
        np.add.at(counts[row], np.asarray(z, dtype=int), 1.0)
    present = counts.sum(0) > 0
    a = counts[:, present]
    coef = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ energies)
    refs = np.zeros(MAX_Z)
    refs[present] = coef
    return refs


@dataclass
class BinsFit:
    """What ``fit-bins`` proposes: energy transform, energy support, force support."""

    energy: EnergyTransform
    support: SupportSpec
    force_support: SupportSpec
    num_structures: int
    target_range: tuple[float, float]
    force_max: float
    force_mean: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "energy": self.energy.to_dict(),
            "support": self.support.to_dict(),
            "force_support": self.force_support.to_dict(),
            "stats": {
                "num_structures": self.num_structures,
                "target_min": self.target_range[0],
                "target_max": self.target_range[1],
                "force_max": self.force_max,
                "force_mean": self.force_mean,
            },
        }


def fit_bins(
    structures: Iterable[tuple[np.ndarray, float, np.ndarray | None]],
    num_bins: int = DEFAULT_NUM_BINS,
    level: str = "per_atom",
    margin: float = 0.25,
    sigma_ratio: float = DEFAULT_SIGMA_RATIO,
    fit_references: bool = True,
) -> BinsFit:
    """Propose references, normalisation and supports from (Z, energy, forces) triples.

    ``margin`` widens each support by that fraction of the observed range on each
    side, so a test structure slightly beyond the training range still decodes.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    zs, energies, fmax, fsum, fcount = [], [], 0.0, 0.0, 0
    for i, (z, energy, forces) in enumerate(structures):
        if not np.isfinite(energy):
            raise ValueError(f"structure {i}: energy is not finite ({energy})")
        zs.append(np.asarray(z, dtype=int))
        energies.append(float(energy))
        if forces is not None:
            forces = np.asarray(forces, dtype=float)
            if not np.isfinite(forces).all():
                raise ValueError(f"structure {i}: forces contain NaN or inf")
            if forces.size:
                norms = np.linalg.norm(forces, axis=-1)
                fmax = max(fmax, float(norms.max()))
                fsum, fcount = fsum + float(norms.sum()), fcount + norms.size
    if not energies:
        raise ValueError("cannot fit bins on an empty dataset (no structures)")
    e = np.asarray(energies)
    refs = fit_element_references(zs, e) if fit_references else np.zeros(MAX_Z)
    referenced = np.array([en - refs[z].sum() for z, en in zip(zs, e, strict=True)])
    if level == "per_atom":
        referenced = referenced / np.array([len(z) for z in zs])
    elif level not in LEVELS:
        raise ValueError(f"unknown energy level {level!r}; choose one of {LEVELS}")
    mean = float(referenced.mean())
    std = float(referenced.std()) if len(referenced) > 1 else 1.0
    if not std > 1e-12:
        std = 1.0
    transform = EnergyTransform(element_references=refs.tolist(), mean=mean, std=std,
                                level=level)
    y = (referenced - mean) / std
    lo, hi = float(y.min()), float(y.max())
    span = max(hi - lo, 1.0)
    support = SupportSpec(low=lo - margin * span, high=hi + margin * span, num_bins=num_bins,
                          sigma_ratio=sigma_ratio)
    force_high = max(fmax, 1e-3) * (1.0 + margin)
    force_support = SupportSpec(low=0.0, high=force_high, num_bins=num_bins,
                                sigma_ratio=sigma_ratio)
    return BinsFit(energy=transform, support=support, force_support=force_support,
                   num_structures=len(e), target_range=(lo, hi), force_max=fmax,
                   force_mean=fsum / fcount if fcount else 1.0)
