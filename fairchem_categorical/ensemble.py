"""Deep-ensemble baseline: combine the predictions of several scalar models."""

from __future__ import annotations

import numpy as np

from fairchem_categorical.predictions import StructurePrediction


def combine(members: list[list[StructurePrediction]]) -> list[StructurePrediction]:
    """Mean energy/forces of the members; energy_std = their standard deviation (ddof=1).

    That is the uncertainty a fairchem user gets today from an ensemble of scalar models.
    """
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    sizes = {len(m) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"ensemble members predicted different numbers of structures: {sizes}")
    out = []
    for group in zip(*members, strict=True):
        first = group[0]
        if any(p.sid != first.sid or p.natoms != first.natoms for p in group):
            raise ValueError(f"ensemble members disagree on structure {first.index}")
        energies = np.array([p.energy for p in group])
        forces = np.stack([p.forces for p in group])
        force_spread = np.linalg.norm(forces.std(axis=0, ddof=1), axis=-1)
        out.append(StructurePrediction(
            index=first.index, sid=first.sid, natoms=first.natoms,
            energy=float(energies.mean()), forces=forces.mean(axis=0),
            energy_std=float(energies.std(ddof=1)), energy_target=first.energy_target,
            forces_target=first.forces_target, fixed=first.fixed, forces_std=force_spread,
        ))
    return out
