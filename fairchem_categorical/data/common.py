"""What every dataset format shares: label checks, the one safe writer, ``metadata.npz``.

A dataset is a folder holding exactly one data file (``data.aselmdb`` for fairchem-core
2.x, ``data.lmdb`` for 1.10) and the ``metadata.npz`` (atom counts) that both lines'
batch samplers read from that folder. One writer enforces that, validates every frame
before the file is touched, and removes a half-written file on error, so a failed write
never leaves a partial dataset behind.
"""

from __future__ import annotations

import math
import os
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


def label_stress(atoms: Atoms, where: str) -> np.ndarray | None:
    """The stored stress as 6 Voigt components (ASE's order, eV/A^3), all finite; None
    if the frame has none. A 3x3 tensor is accepted and converted."""
    calc = atoms.calc
    stress = None if calc is None else calc.results.get("stress")
    if stress is None:
        return None
    out = np.asarray(stress, dtype=float)
    if out.shape == (3, 3):
        out = out[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    if out.shape != (6,):
        raise ValueError(f"{where}: stress has shape {out.shape}, expected (6,) Voigt or "
                         "(3, 3)")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{where}: non-finite stress")
    return out


def plain(value: Any) -> Any:
    """Numpy scalars -> Python scalars, so key-value pairs and JSON stay simple."""
    return value.item() if isinstance(value, np.generic) else value


_LMDB_MAGIC = 0xBEEFC0DE
_NO_PAGE = 2**64 - 1  # an empty database's root


def check_lmdb_file(path: Path) -> None:
    """Refuse an LMDB file that is truncated or not LMDB, before LMDB maps it.

    LMDB reads its pages through a memory map; a page beyond the end of a truncated file
    kills the process (SIGBUS) instead of raising. Its two meta pages (page 0 and 1, the
    newer one by transaction id) say how many pages the file holds: mm_last_pg + 1 pages
    of mm_psize bytes (64-bit little-endian layout: magic at byte 16, psize at 40, the
    root pages at 80 and 128, last page and txnid at 136 of each meta page). Damage
    inside the data pages is LMDB's to find (it raises for most, not all of it).
    """
    import struct

    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(64 * 1024 * 2)
    if len(head) < 152 or struct.unpack_from("<I", head, 16)[0] != _LMDB_MAGIC:
        raise ValueError(f"{path}: not an LMDB file (no LMDB header)")
    psize = struct.unpack_from("<I", head, 40)[0]
    if not 512 <= psize <= 64 * 1024 or size < 2 * psize or len(head) < psize + 152:
        raise ValueError(f"{path}: truncated or corrupt LMDB file ({size} bytes, page size "
                         f"{psize})")
    metas = []
    for offset in (0, psize):
        magic = struct.unpack_from("<I", head, offset + 16)[0]
        # the two databases' root pages (free list, main), then last page and txnid
        roots = struct.unpack_from("<Q", head, offset + 80)[0], struct.unpack_from(
            "<Q", head, offset + 128)[0]
        last, txnid = struct.unpack_from("<QQ", head, offset + 136)
        if magic == _LMDB_MAGIC:
            metas.append((txnid, last, roots))
    _, last, roots = max(metas)
    if any(r != _NO_PAGE and not 2 <= r <= last for r in roots):
        raise ValueError(f"{path}: corrupt LMDB file (its header points outside the file)")
    needed = (last + 1) * psize
    if size < needed:
        raise ValueError(f"{path}: truncated LMDB file ({size} bytes; its header says "
                         f"{needed}); the file was cut short (copy it again)")


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


def write_metadata(folder: Path, natoms: Sequence[int], name: str = METADATA) -> Path:
    """``metadata.npz`` with the atom count of every structure, as fairchem's samplers read it."""
    out = folder / name
    with out.open("wb") as fh:  # a file handle: np.savez would append .npz to other names
        np.savez(fh, natoms=np.asarray(natoms, dtype=np.int64))
    return out


def safe_write(path: Path, suffix: str, natoms: Sequence[int], overwrite: bool,
               write: Callable[[Path], None], describe: str) -> Path:
    """Write one dataset file through ``write(path)``, then its folder's ``metadata.npz``.

    Call it after every frame has been validated. An existing file is only replaced with
    ``overwrite``; a folder holding another dataset is refused. Both files are written
    under temporary names (which no reader takes for a dataset) and moved into place when
    complete, so a failed write leaves no partial dataset and an overwritten dataset
    stays intact until its replacement is whole.
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
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial_meta = path.with_name(f".{METADATA}.partial-{os.getpid()}")
    try:
        remove_lmdb(partial)
        write(partial)
        write_metadata(path.parent, natoms, partial_meta.name)
        os.replace(partial, path)
        os.replace(partial_meta, path.parent / METADATA)
    finally:
        remove_lmdb(partial)
        partial_meta.unlink(missing_ok=True)
    # The writer's lock sidecar is useless to readers (they open with lock=False).
    path.with_name(path.name + "-lock").unlink(missing_ok=True)
    return path
