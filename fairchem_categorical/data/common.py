"""What every dataset format shares: label checks, the one safe writer, ``metadata.npz``.

A dataset is a folder holding exactly one data file (``data.aselmdb`` for fairchem-core
2.x, ``data.lmdb`` for 1.10) and the ``metadata.npz`` (atom counts) that both lines'
batch samplers read from that folder. One writer enforces that, validates every frame
before the file is touched, and removes a half-written file on error, so a failed write
never leaves a partial dataset behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

#: Dataset formats -> data file suffix: ASE-LMDB for fairchem-core 2.x, pickled
#: torch-geometric LMDB for fairchem-core 1.10.
FORMATS: dict[str, str] = {"aselmdb": ".aselmdb", "pyg-lmdb": ".lmdb"}
METADATA = "metadata.npz"


def format_suffix(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[fmt]


def check_structure(atoms: Atoms, where: str) -> None:
    """A structure a model can take: atoms, finite positions, known elements, a cell along
    every periodic direction; otherwise a ValueError naming ``where``."""
    if len(atoms) == 0:
        raise ValueError(f"{where}: no atoms")
    numbers = atoms.get_atomic_numbers()
    if (numbers < 1).any() or (numbers > 118).any():
        raise ValueError(f"{where}: atomic numbers must lie in 1..118, found "
                         f"{sorted({int(z) for z in numbers if not 1 <= z <= 118})}")
    if not np.isfinite(atoms.get_positions()).all():
        raise ValueError(f"{where}: non-finite positions")
    cell = np.asarray(atoms.get_cell())
    if not np.isfinite(cell).all():
        raise ValueError(f"{where}: non-finite cell")
    missing = [axis for axis, periodic, vector in zip("abc", atoms.pbc, cell, strict=True)
               if periodic and not np.linalg.norm(vector) > 1e-8]
    if missing:
        raise ValueError(f"{where}: periodic along {', '.join(missing)} but no cell vector "
                         "there (a file without a lattice, or pbc set without a cell)")
    if atoms.pbc.all() and abs(np.linalg.det(cell)) < 1e-8:
        raise ValueError(f"{where}: periodic but the cell has zero volume")


def labels(atoms: Atoms, where: str) -> tuple[float, np.ndarray]:
    """(energy, unconstrained forces) of a frame, or a ValueError naming ``where``.

    Reads calculator results directly, so nothing is (re)computed and constraints do not
    zero the stored forces. The structure itself is checked too (``check_structure``).
    """
    check_structure(atoms, where)
    energy = label_energy(atoms, where, required=True)
    forces = label_forces(atoms, where, required=True)
    return energy, forces


def _results(atoms: Atoms, where: str) -> dict[str, Any]:
    calc = atoms.calc
    if calc is None:
        raise ValueError(f"{where}: no energy and no forces (no calculator attached)")
    changed = calc.check_state(atoms) if hasattr(calc, "check_state") else []
    if changed:
        raise ValueError(
            f"{where}: stale labels (atoms changed after the calculation: {', '.join(changed)})"
        )
    return getattr(calc, "results", {}) or {}


def label_energy(atoms: Atoms, where: str, required: bool = True) -> float | None:
    """The stored energy as a finite float; None if absent and not ``required``."""
    results = _results(atoms, where)
    energy = results.get("energy")
    if energy is None:
        if not required:
            return None
        missing = ["energy"] + ([] if results.get("forces") is not None else ["forces"])
        raise ValueError(f"{where}: no {' and no '.join(missing)}")
    try:
        value = float(np.asarray(energy).reshape(()))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: energy is not a scalar ({energy!r})") from exc
    if not math.isfinite(value):
        raise ValueError(f"{where}: non-finite energy ({value})")
    return value


def label_forces(atoms: Atoms, where: str, required: bool = True) -> np.ndarray | None:
    """The stored (N, 3) forces, all finite; None if absent and not ``required``."""
    forces = _results(atoms, where).get("forces")
    if forces is None:
        if not required:
            return None
        raise ValueError(f"{where}: no forces")
    out = np.asarray(forces, dtype=float)
    if out.shape != (len(atoms), 3):
        raise ValueError(f"{where}: forces have shape {out.shape}, expected ({len(atoms)}, 3)")
    if not np.all(np.isfinite(out)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(out))[:, 0]})
        raise ValueError(f"{where}: non-finite forces on atoms {bad[:10]}")
    return out


def plain(value: Any) -> Any:
    """Numpy scalars -> Python scalars, so key-value pairs and JSON stay simple."""
    return value.item() if isinstance(value, np.generic) else value


def remove_lmdb(path: Path) -> None:
    """Remove an LMDB file together with its ``-lock`` sidecar."""
    for p in (path, path.with_name(path.name + "-lock")):
        if p.exists() or p.is_symlink():
            p.unlink()


def dataset_files(folder: Path) -> list[Path]:
    """The data files of every known format in ``folder``."""
    return sorted(p for s in FORMATS.values() for p in folder.glob(f"*{s}"))


def check_one_dataset(path: Path) -> None:
    """Refuse to add a second data file to a folder: one folder holds one dataset.

    fairchem reads every data file of a folder as one dataset and its samplers read one
    ``metadata.npz`` there, so a second file would silently merge two datasets.
    """
    others = [p for p in dataset_files(path.parent) if p.name != path.name]
    if others:
        raise ValueError(
            f"{path.parent} already holds the dataset {others[0].name}; one folder holds one "
            f"dataset (fairchem reads every data file of a folder together), so write "
            f"{path.stem} to its own folder, e.g. --out {path.parent / path.stem}"
        )


def write_metadata(folder: Path, natoms: Sequence[int]) -> Path:
    """``metadata.npz`` with the atom count of every structure, as fairchem's samplers read it."""
    out = folder / METADATA
    np.savez(out, natoms=np.asarray(natoms, dtype=np.int64))
    return out


def safe_write(path: Path, suffix: str, natoms: Sequence[int], overwrite: bool,
               write: Callable[[Path], None], describe: str) -> Path:
    """Write one dataset file through ``write(path)``, then its folder's ``metadata.npz``.

    Call it after every frame has been validated. An existing file is only replaced with
    ``overwrite``; a folder holding another dataset is refused; a failed write removes the
    partial file (and the metadata it would have described).
    """
    if path.suffix != suffix:
        raise ValueError(f"{path}: file name must end in {suffix} ({describe})")
    if len(natoms) == 0:
        raise ValueError(f"{path}: no structures to write")
    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory, refusing to replace it")
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if path.parent.is_dir():
        check_one_dataset(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_lmdb(path)
    (path.parent / METADATA).unlink(missing_ok=True)
    try:
        write(path)
        write_metadata(path.parent, natoms)
    except BaseException:
        remove_lmdb(path)
        (path.parent / METADATA).unlink(missing_ok=True)
        raise
    # The writer's lock sidecar is useless to readers (they open with lock=False).
    path.with_name(path.name + "-lock").unlink(missing_ok=True)
    return path
