"""ASE-LMDB files (``.aselmdb``), the dataset format fairchem-core 2.x's ``AseDBDataset`` reads.

The writer is ``ase_db_backends.aselmdb.LMDBDatabase``, the class ``ase.db.connect`` (and
hence ``AseDBDataset``) opens ``.aselmdb`` files with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from fairchem_categorical.data.common import (
    check_lmdb_file,
    label_stress,
    labels,
    plain,
    safe_write,
)

SUFFIX = ".aselmdb"
_LABEL_KEYS = frozenset({"energy", "forces", "stress", "free_energy"})
_KVP_KEYS = ("sid", "fid", "metal", "facet", "adsorbate")


def lmdb_database_cls() -> type:
    """The ASE-LMDB backend class (a fairchem-core dependency), with an actionable error."""
    try:
        from ase_db_backends.aselmdb import LMDBDatabase
    except ImportError as exc:  # pragma: no cover - fairchem-core always installs it
        raise ImportError(
            ".aselmdb files need the 'ase-db-backends' package "
            "(installed with fairchem-core: pip install 'fairchem-categorical[fairchem2]')"
        ) from exc
    return LMDBDatabase


def _jsonable(value: Any) -> bool:
    """Whether ASE's JSON encoder (used by the LMDB backend) can store ``value``."""
    from ase.io.jsonio import encode

    try:
        encode(value)
    except (TypeError, ValueError):
        return False
    return True


def _queryable(value: Any) -> bool:
    """Whether ASE's database takes ``value`` as a key-value pair: numbers, and strings
    that do not read as numbers (a facet "111" stays in the row data only)."""
    if isinstance(value, str):
        from ase.db.core import str_represents

        return not any(str_represents(value, t) for t in (bool, int, float))
    return isinstance(value, (int, float))


def _row(atoms: Atoms, where: str) -> tuple[Atoms, dict[str, Any], dict[str, Any]]:
    """A validated frame as (atoms with labels, key-value pairs, row data)."""
    energy, forces = labels(atoms, where)
    clean = Atoms(
        atoms.numbers,
        positions=atoms.get_positions(),
        cell=atoms.get_cell(),
        pbc=atoms.pbc,
        tags=atoms.get_tags(),
        constraint=[c.copy() for c in atoms.constraints],
    )
    stress = label_stress(atoms, where)  # kept where present, as fairchem reads it back
    clean.calc = SinglePointCalculator(clean, energy=energy, forces=forces,
                                       **({} if stress is None else {"stress": stress}))
    data = {str(k): plain(v) for k, v in atoms.info.items()
            if k not in _LABEL_KEYS and _jsonable(plain(v))}
    kvp = {k: plain(atoms.info[k]) for k in _KVP_KEYS
           if k in atoms.info and _queryable(plain(atoms.info[k]))}
    return clean, kvp, data


def write_aselmdb(frames: Sequence[Atoms], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write labelled structures to an ASE-LMDB file readable by fairchem's AseDBDataset.

    Energy, (unconstrained) forces and stress, where a frame has it, go through a fresh
    SinglePointCalculator, tags and
    the FixAtoms constraint are stored by the row, and ``atoms.info`` is stored as row
    ``data`` (AseDBDataset copies ``data`` back into ``atoms.info``, where fairchem looks
    for ``sid``/``fid``). ``sid``/``fid``/``metal``/``facet``/``adsorbate`` are also stored
    as key-value pairs so they can be queried with ``select_args``.
    """
    db_cls = lmdb_database_cls()
    path = Path(path)
    rows = [_row(atoms, f"frames[{i}]") for i, atoms in enumerate(frames)]

    def write(target: Path) -> None:
        with db_cls(target, use_lock_file=False) as db:
            for clean, kvp, data in rows:
                db.write(clean, key_value_pairs=kvp, data=data)

    return safe_write(path, SUFFIX, [len(r[0]) for r in rows], overwrite, write,
                      "ase.db and fairchem's AseDBDataset pick the LMDB backend from it")


def read_ase_db(path: Path) -> list[Atoms]:
    """Every row of an ASE database (``.aselmdb`` or ``.db``); row data and pairs go to info.

    A row that cannot be decoded is an error naming the file and the row's index.
    """
    return list(iter_ase_db(path))


def iter_ase_db(path: Path) -> Iterator[Atoms]:
    """``read_ase_db`` one row at a time: memory stays that of one row at any size."""
    if path.suffix == SUFFIX:
        check_lmdb_file(path)  # a truncated LMDB would crash the process, not raise
        db = lmdb_database_cls()(path, readonly=True, use_lock_file=False)
    else:
        from ase.db import connect

        db = connect(str(path), use_lock_file=False)
    done = 0
    try:
        for row in db.select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            if isinstance(row.data, dict):
                atoms.info.update(row.data)
            done += 1
            yield atoms
    except Exception as exc:  # a corrupt row: say which
        raise ValueError(f"{path}[{done}]: could not decode the row "
                         f"({type(exc).__name__}: {exc})") from exc
    finally:
        if hasattr(db, "close"):
            db.close()
