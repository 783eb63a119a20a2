"""Pickled torch-geometric LMDB files ("pyg-lmdb"), the dataset format of fairchem-core 1.10.

fairchem 1.10's ``LmdbDataset`` reads a folder of ``*.lmdb`` files (opened with
``subdir=False``) whose values are pickled ``torch_geometric.data.Data`` objects under the
ascii keys ``"0"`` .. ``"n-1"`` plus an optional pickled ``"length"``; its samplers read
``metadata.npz`` (``natoms``) from the same folder. The fields and dtypes written here are
those of fairchem 1.10's own S2EF preprocessing (``AtomsToGraphs`` without edges, plus ``sid``,
``fid`` and int64 ``tags``), so items loaded for training match the graphs ``AtomsToGraphs``
builds at prediction time.

fairchem is never imported; ``torch_geometric`` (only in the fairchem1 environment) is imported
where a ``Data`` object is built or unpickled.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.geometry import wrap_positions
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from fairchem_categorical.data.common import (
    check_lmdb_file,
    label_stress,
    labels,
    plain,
    safe_write,
)

__all__ = ["read_pyg_lmdb", "write_pyg_lmdb"]

SUFFIX = ".lmdb"
_LENGTH_KEY = b"length"


def data_cls() -> type:
    """``torch_geometric.data.Data``, with an actionable error when it is missing."""
    try:
        from torch_geometric.data import Data
    except ImportError as exc:
        raise ImportError(
            "pyg-lmdb (.lmdb) datasets need the 'torch_geometric' package (torch-geometric), "
            "which comes with the fairchem1 environment: create it with `make venv-fairchem1` "
            "and use .venv-fairchem1/bin/python"
        ) from exc
    return Data


def _ident(value: Any, default: int) -> Any:
    """``sid``/``fid`` as fairchem stores them: Python ints (or strings), never numpy."""
    value = plain(value)
    if value is None:
        return default
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, str) else str(value)


def _to_data(atoms: Atoms, index: int, data_cls: type, stress_field: bool = False) -> Any:
    """One labelled frame -> ``Data`` as AtomsToGraphs(r_energy, r_forces, r_stress, r_fixed,
    r_pbc) makes it (stress only where the frame has one)."""
    energy, forces = labels(atoms, f"frames[{index}]")
    cell = np.array(atoms.get_cell(complete=True), dtype=float)
    pbc = np.array(atoms.pbc, dtype=bool)
    # AtomsToGraphs wraps (eps=0) before building a graph; the stored positions are the
    # model inputs here, so wrap the same way.
    pos = wrap_positions(atoms.get_positions(), cell, pbc=pbc, eps=0)
    fixed = torch.zeros(len(atoms), dtype=torch.int)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            fixed[torch.as_tensor(np.asarray(constraint.index), dtype=torch.long)] = 1
    # stress as AtomsToGraphs(r_stress) stores it, (3, 3); with ``stress_field`` every item
    # has the field (fairchem 1.10's collater needs the same fields in every item of a
    # batch), NaN where the frame has no stress
    stress = label_stress(atoms, f"frames[{index}]")
    extra = {}
    if stress is not None or stress_field:
        full = np.full((3, 3), np.nan) if stress is None else voigt_6_to_full_3x3_stress(stress)
        extra["stress"] = torch.as_tensor(full, dtype=torch.float32)
    return data_cls(
        **extra,
        pos=torch.as_tensor(pos, dtype=torch.float32),
        cell=torch.as_tensor(cell, dtype=torch.float32).view(1, 3, 3),
        atomic_numbers=torch.as_tensor(atoms.numbers, dtype=torch.uint8),
        natoms=len(atoms),
        tags=torch.as_tensor(atoms.get_tags(), dtype=torch.long),
        fixed=fixed,
        pbc=torch.as_tensor(pbc),
        energy=energy,
        forces=torch.as_tensor(forces, dtype=torch.float32),
        sid=_ident(atoms.info.get("sid"), index),
        fid=_ident(atoms.info.get("fid"), 0),
    )


def _put_all(path: Path, values: list[bytes]) -> None:
    """Write ``"0"``..``"n-1"`` and ``"length"`` in one transaction."""
    # LMDB needs its maximum size up front; pages are only allocated as they fill.
    map_size = 2 * sum(len(v) for v in values) + 8192 * (len(values) + 1) + (1 << 20)
    env = lmdb.open(str(path), map_size=map_size, subdir=False, meminit=False, map_async=True)
    try:
        with env.begin(write=True) as txn:
            for i, value in enumerate(values):
                txn.put(f"{i}".encode("ascii"), value)
            txn.put(_LENGTH_KEY, pickle.dumps(len(values), protocol=-1))
        env.sync()
    finally:
        env.close()


def write_pyg_lmdb(frames: Sequence[Atoms], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write labelled structures to a pyg-lmdb file that fairchem 1.10's LmdbDataset reads.

    Each frame becomes one ``Data`` with ``pos``, ``cell`` (1, 3, 3), ``atomic_numbers``,
    ``natoms``, ``tags``, ``fixed`` (1 under FixAtoms), ``pbc``, ``energy``, unconstrained
    ``forces`` and ``sid``/``fid`` from ``atoms.info`` (default: frame index / 0), and ``stress``
    (3, 3) when any frame has one (NaN in the frames without: one batch needs the same fields
    in every item; reading back skips them). Positions are wrapped into the cell as
    AtomsToGraphs does. ``metadata.npz`` is rewritten for the folder.

    All frames are validated before the file is touched; an existing file is only replaced
    with ``overwrite=True``; a partially written file is removed on error.
    """
    path = Path(path)
    cls = data_cls()
    stress_field = any(a.calc is not None and a.calc.results.get("stress") is not None
                       for a in frames)
    items = [_to_data(atoms, i, cls, stress_field) for i, atoms in enumerate(frames)]
    values = [pickle.dumps(item, protocol=-1) for item in items]
    return safe_write(path, SUFFIX, [int(item.natoms) for item in items], overwrite,
                      lambda target: _put_all(target, values),
                      "fairchem 1.10's LmdbDataset reads the *.lmdb files of a folder")


def _load_all(path: Path) -> list[Any]:
    """Every ``Data`` of one file, in key order (``"length"`` if stored, as LmdbDataset)."""
    return list(_iter_all(path))


def _iter_all(path: Path) -> Iterator[Any]:
    """``_load_all`` one entry at a time (memory: one entry, at any dataset size)."""
    data_cls()  # unpickling needs torch_geometric: fail with the actionable error first
    check_lmdb_file(path)  # a truncated LMDB would crash the process, not raise
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False,
                    meminit=False, max_readers=1)
    try:
        with env.begin() as txn:
            length = txn.get(_LENGTH_KEY)
            try:
                n = pickle.loads(length) if length is not None else env.stat()["entries"]
            except Exception as exc:
                raise ValueError(f"{path}: corrupt 'length' entry ({exc})") from exc
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"{path}: corrupt 'length' entry ({n!r})")
            for i in range(n):
                value = txn.get(f"{i}".encode("ascii"))
                if value is None:
                    raise ValueError(f"{path}[{i}]: key {i!r} missing (expected keys "
                                     f"0..{n - 1})")
                try:
                    data = pickle.loads(value)
                except Exception as exc:  # unpickling garbage raises almost anything
                    raise ValueError(f"{path}[{i}]: corrupt entry, not a pickled Data "
                                     f"({type(exc).__name__}: {exc})") from exc
                yield data
    finally:
        env.close()


def _field(data: Any, *names: str) -> Any:
    """The first present field (OC20's older LMDBs call energy ``y`` and forces ``force``)."""
    for name in names:
        if name in data and data[name] is not None:
            return data[name]
    return None


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return plain(value)


def _to_atoms(data: Any) -> Atoms:
    """``Data`` -> Atoms with the stored labels in a SinglePointCalculator."""
    numbers = data.atomic_numbers.long().numpy()
    pbc = _field(data, "pbc")
    tags = _field(data, "tags")
    atoms = Atoms(
        numbers,
        positions=data.pos.double().numpy(),
        cell=data.cell.double().reshape(3, 3).numpy(),
        pbc=True if pbc is None else np.asarray(pbc, dtype=bool).reshape(-1)[:3],
        tags=None if tags is None else np.asarray(tags, dtype=int),
    )
    fixed = _field(data, "fixed")
    if fixed is not None and bool((fixed != 0).any()):
        atoms.set_constraint(FixAtoms(indices=np.flatnonzero(np.asarray(fixed) != 0)))
    energy, forces = _field(data, "energy", "y"), _field(data, "forces", "force")
    results: dict[str, Any] = {}
    if energy is not None:
        results["energy"] = float(_scalar(energy))
    if forces is not None:
        results["forces"] = np.asarray(forces, dtype=float)
    stress = _field(data, "stress")
    if stress is not None and results and not np.isnan(np.asarray(stress, dtype=float)).all():
        results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(stress, dtype=float)
                                                       .reshape(3, 3))
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    for key in ("sid", "fid"):
        if key in data:
            atoms.info[key] = _scalar(data[key])
    return atoms


def read_pyg_lmdb(path: str | Path) -> list[Atoms]:
    """All structures of a pyg-lmdb file, so predict/evaluate/fit-bins take fairchem1 data.

    Energy and forces come back in a SinglePointCalculator, ``fixed`` as FixAtoms, ``tags``,
    ``pbc`` (all periodic if not stored, as fairchem 1.10 assumes) and ``sid``/``fid`` in
    ``info``. Positions are the stored (wrapped, float32) ones.
    """
    return list(iter_pyg_lmdb(path))


def iter_pyg_lmdb(path: str | Path) -> Iterator[Atoms]:
    """``read_pyg_lmdb`` one structure at a time."""
    for i, data in enumerate(_iter_all(Path(path))):
        try:
            atoms = _to_atoms(data)
        except Exception as exc:  # an entry without the fields a structure needs
            raise ValueError(f"{path}[{i}]: not a structure ({type(exc).__name__}: {exc})"
                             ) from exc
        yield atoms
