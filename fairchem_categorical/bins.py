"""Bins: fit the energy transform and supports on training data; read and write the file.

``fit_bins`` proposes least-squares element references, the per-atom mean/std and the
energy and force-magnitude supports (observed range widened by ``margin`` per side);
``write_bins``/``read_bins`` are the YAML file configs include (the ``bins`` group on
fairchem-core 2.x, ``train --bins`` on either line).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fairchem_categorical.histogram import (
    DEFAULT_NUM_BINS,
    DEFAULT_SIGMA_RATIO,
    HistogramSupport,
    SupportSpec,
)
from fairchem_categorical.targets import MAX_Z, EnergyTransform, require_head_level


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
    require_head_level(level, "fit-bins")
    zs, energies, fmax, fsum, fcount = [], [], 0.0, 0.0, 0
    for i, (z, energy, forces) in enumerate(structures):
        if len(z) == 0:
            raise ValueError(f"structure {i}: no atoms")
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
    referenced = referenced / np.array([len(z) for z in zs])  # per-atom level
    mean = float(referenced.mean())
    std = float(referenced.std()) if len(referenced) > 1 else 1.0
    if not std > 1e-12:
        std = 1.0
    # the elements the references were fitted on: predict and the calculator flag others
    elements = sorted({int(z) for zz in zs for z in zz})
    transform = EnergyTransform(element_references=refs.tolist(), mean=mean, std=std,
                                level=level, elements=elements)
    y = (referenced - mean) / std
    lo, hi = float(y.min()), float(y.max())
    span = max(hi - lo, 1.0)
    support = SupportSpec(low=lo - margin * span, high=hi + margin * span, num_bins=num_bins,
                          sigma_ratio=sigma_ratio)
    force_high = max(fmax, 1e-3) * (1.0 + margin)
    # symmetric: the direct-force head decodes a signed amplitude, so |F| = 0 decodes to 0
    # (on [0, F_max] small forces come out biased up; see readout.ForceMagnitudeReadout)
    force_support = SupportSpec(low=-force_high, high=force_high, num_bins=num_bins,
                                sigma_ratio=sigma_ratio)
    return BinsFit(energy=transform, support=support, force_support=force_support,
                   num_structures=len(e), target_range=(lo, hi), force_max=fmax,
                   force_mean=fsum / fcount if fcount else 1.0)


def iter_structures(paths: Sequence[str | Path], progress: Callable[[str], None] | None = None,
                    ) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """(atomic numbers, energy, forces) of every structure, file by file."""
    from fairchem_categorical.data.formats import read_frames

    for path in paths:
        frames = read_frames([path])
        if progress:
            progress(f"read {len(frames)} structures from {path}")
        for atoms in frames:
            yield (atoms.get_atomic_numbers(), float(atoms.get_potential_energy()),
                   np.asarray(atoms.get_forces()))


def fit_bins_files(paths: Sequence[str | Path], num_bins: int = 128, level: str = "per_atom",
                   margin: float = 0.25, sigma_ratio: float = 0.75,
                   progress: Callable[[str], None] | None = None) -> BinsFit:
    return fit_bins(iter_structures(paths, progress), num_bins=num_bins, level=level,
                    margin=margin, sigma_ratio=sigma_ratio)


def count_clipped(paths: Sequence[str | Path], energy: EnergyTransform,
                  support: HistogramSupport) -> tuple[int, int]:
    """How many structures of ``paths`` the given support would clip, of how many."""
    n = clipped = 0
    for z, e, _ in iter_structures(paths):
        y = energy.to_target(e, torch.as_tensor(z))
        clipped += support.count_outside(y)
        n += 1
    return clipped, n


def write_bins(fit: BinsFit, out: str | Path, source: Sequence[str | Path]) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Written by `fairchem-categorical fit-bins` from: "
        + ", ".join(str(p) for p in source)
        + "\n# support: energy bins in the binning space "
        "((E - sum refs)/N - mean)/std; force_support: force-magnitude bins (eV/A),\n"
        "# symmetric: the direct-force head decodes a signed amplitude.\n"
    )
    out.write_text(header + yaml.safe_dump(fit.to_dict(), sort_keys=False))
    return out


def read_bins(path: str | Path) -> dict[str, Any]:
    """A fit-bins file, checked: every field builds (transform, supports) or the error says
    which file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bins file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a fit-bins file: expected a mapping with 'energy' and "
                         f"'support', found a {type(data).__name__}")
    missing = {"support", "energy"} - set(data)
    if missing:
        raise ValueError(f"{path} is not a fit-bins file: missing {sorted(missing)}")
    for key, build in (("energy", EnergyTransform), ("support", SupportSpec),
                       ("force_support", SupportSpec)):
        if key not in data:
            continue
        if not isinstance(data[key], dict):
            raise ValueError(f"{path}: '{key}' must be a mapping, found "
                             f"{type(data[key]).__name__}")
        try:
            build(**data[key])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad '{key}' block ({err})") from err
    require_head_level(data["energy"].get("level", "per_atom"), f"{path}")
    return data


def describe(fit: BinsFit) -> str:
    """What a fit proposes, in two lines a person reads (fit-bins prints them)."""
    lo, hi = fit.target_range
    s, et = fit.support, fit.energy
    per = "/atom" if et.level == "per_atom" else ""
    return (
        f"{fit.num_structures} structures; {et.level} targets span [{lo:.4f}, {hi:.4f}] "
        f"(normalised; mean {et.mean:.5f} eV{per}, std {et.std:.5f} eV{per})\n"
        f"energy support: [{s.low:.4f}, {s.high:.4f}], {s.num_bins} bins of "
        f"{s.width:.4f} ({s.width * et.std:.5f} eV{per}); force support: "
        f"[{fit.force_support.low:.3f}, {fit.force_support.high:.3f}] eV/A, signed "
        f"(max |F| {fit.force_max:.3f})"
    )
