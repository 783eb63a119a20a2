"""Frames of one adsorbate+slab system: snapshots along a relaxation and small rattles.

Both generators (the embedded EMT set and the realistic OC20-like set) sample their frames
here, with whichever ASE calculator labels them, so the two differ only in how systems are
built and labelled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import natural_cutoffs, neighbor_list
from ase.optimize import LBFGS

__all__ = ["OVERLAP_RATIO", "has_overlap", "labelled_frame", "relax_and_rattle"]

#: Two atoms overlap when closer than this fraction of the sum of their covalent radii.
OVERLAP_RATIO = 0.5


def labelled_frame(
    template: Atoms,
    positions: np.ndarray,
    energy: float,
    forces: np.ndarray,
    info: dict[str, Any],
) -> Atoms:
    """A standalone frame carrying its labels in a SinglePointCalculator."""
    frame = Atoms(
        template.numbers,
        positions=positions,
        cell=template.get_cell(),
        pbc=True,
        tags=template.get_tags(),
        constraint=[c.copy() for c in template.constraints],
    )
    # Wrap exactly as fairchem's AtomicData.from_ase does (eps=0), so stored positions equal
    # the model inputs; energies and forces are invariant under wrapping.
    frame.wrap(eps=0)
    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=np.array(forces))
    frame.info.update(info)
    return frame


def has_overlap(atoms: Atoms, ratio: float = OVERLAP_RATIO) -> bool:
    """Whether two atoms sit closer than ``ratio`` x the sum of their covalent radii.

    Such frames are unphysical (a placement inside the surface, a rattle too hot); their
    labels say more about the labeller's extrapolation than about chemistry.
    """
    return len(neighbor_list("i", atoms, natural_cutoffs(atoms, mult=ratio))) > 0


def relax_and_rattle(
    atoms: Atoms,
    calc: Calculator,
    rng: np.random.Generator,
    frames_per_system: int,
    base_info: dict[str, Any],
    *,
    rattle_scale: float = 1.0,
    max_steps: int = 40,
    fmax: float = 0.05,
) -> list[Atoms]:
    """``frames_per_system`` labelled frames of ``atoms``: about half are snapshots spread
    from the start of an LBFGS relaxation to its lowest-energy step, the rest rattles
    (stdev 0.02-0.1 Å x ``rattle_scale``) of random snapshots. Only free atoms (tag != 0)
    move. Forces are stored unconstrained (fixed atoms keep their physical forces)."""
    atoms.calc = calc
    free = atoms.get_tags() != 0

    # Record (positions, energy, raw forces) at every optimizer step; values are already cached.
    traj: list[tuple[np.ndarray, float, np.ndarray]] = []

    def record() -> None:
        traj.append(
            (
                atoms.get_positions(),
                atoms.get_potential_energy(),
                atoms.get_forces(apply_constraint=False),
            )
        )

    # LBFGS rather than BFGS: BFGS diagonalises its 3N x 3N Hessian every step, and once torch
    # is imported (it is, via this package) numpy's threaded OpenBLAS eigh contends with
    # torch's OpenMP threads, making generation 5-8x slower on 2 cores. LBFGS needs no BLAS.
    opt = LBFGS(atoms, logfile=None)
    opt.attach(record, interval=1)
    opt.run(fmax=fmax, steps=max_steps)

    # Quasi-Newton relaxations can wander after reaching the minimum, so snapshots are
    # spread from the start to the lowest-energy step (the "relaxed" frame).
    best = int(np.argmin([e for _, e, _ in traj]))
    n_relax = (frames_per_system + 1) // 2
    relax_idx = np.unique(np.linspace(0, best, n_relax).round().astype(int))
    n_rattle = frames_per_system - len(relax_idx)

    frames: list[Atoms] = []
    for idx in relax_idx:
        pos, energy, forces = traj[idx]
        info = {**base_info, "fid": len(frames), "kind": "relax", "relax_step": int(idx)}
        frames.append(labelled_frame(atoms, pos, energy, forces, info))

    for _ in range(n_rattle):
        idx = int(rng.integers(len(traj)))
        sigma = float(rng.uniform(0.02, 0.1)) * rattle_scale
        pos = traj[idx][0].copy()
        pos[free] += rng.normal(0.0, sigma, size=(int(free.sum()), 3))
        atoms.set_positions(pos, apply_constraint=False)
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces(apply_constraint=False)
        info = {
            **base_info,
            "fid": len(frames),
            "kind": "rattle",
            "relax_step": idx,
            "rattle_sigma": sigma,
        }
        frames.append(labelled_frame(atoms, pos, energy, forces, info))
    return frames
